#include "store/sqlite/open.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "store/snapshot.h"
#include "store/sqlite/schema.h"

namespace ratelimit::detail {
namespace {

namespace fs = std::filesystem;

struct OpenFailure {
  Error error;
  bool damaged = false;  // really damaged: recover_corrupt may move it aside
};

// True when the file at `path` looks like a YAML state file (go-ratelimit's or ours): it has
// a top-level `quotas:` or `state:` line, or loads as a non-empty snapshot.
bool looks_like_yaml_state(const std::string& path) {
  std::string head(65536, '\0');
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return false;
  const ssize_t n = ::read(fd, head.data(), head.size());
  ::close(fd);
  head.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  for (std::string_view key : {"quotas:", "state:"}) {
    if (head.rfind(key, 0) == 0 || head.find("\n" + std::string(key)) != std::string::npos) {
      return true;
    }
  }
  auto loaded = make_yaml_store(path)->load();
  return loaded && loaded->has_value() && (!(*loaded)->quotas.empty() || !(*loaded)->state.empty());
}

// The checks on the raw file before SQLite opens it. Sets `suspicious` when the header's page
// count disagrees with the file size (a truncated file, or a checkpoint in progress elsewhere:
// an integrity check decides).
tl::expected<void, OpenFailure> check_file(const std::string& path, const char* op,
                                           bool* suspicious) {
  *suspicious = false;
  const std::string where = std::string(op) + ": sqlite " + path + ": ";
  const fs::path p(path);
  const fs::path parent = p.parent_path();
  std::error_code ec;
  if (!parent.empty()) {
    const auto st = fs::status(parent, ec);
    if (!fs::exists(st)) {
      return tl::unexpected(OpenFailure{
          {ErrorCode::io_error, where + "the directory " + parent.string() +
                                    " does not exist (create it, or leave file_path empty for "
                                    "the default path)"}});
    }
    if (!fs::is_directory(st)) {
      return tl::unexpected(
          OpenFailure{{ErrorCode::io_error, where + parent.string() + " is not a directory"}});
    }
  }
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) {
    if (errno == ENOENT) return {};  // a new database
    return tl::unexpected(
        OpenFailure{{ErrorCode::io_error, where + "stat: " + std::strerror(errno)}});
  }
  if (S_ISDIR(info.st_mode)) {
    return tl::unexpected(
        OpenFailure{{ErrorCode::io_error, where + "is a directory, not a database file"}});
  }
  if (info.st_size == 0) return {};  // SQLite treats an empty file as an empty database
  std::array<unsigned char, 100> header{};
  std::size_t got = 0;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    return tl::unexpected(
        OpenFailure{{ErrorCode::io_error, where + "open: " + std::strerror(errno)}});
  }
  while (got < header.size()) {
    const ssize_t n = ::read(fd, header.data() + got, header.size() - got);
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  static constexpr char kMagic[] = "SQLite format 3";  // 16 bytes with the NUL
  if (got < 16 || std::memcmp(header.data(), kMagic, 16) != 0) {
    if (looks_like_yaml_state(path)) {
      return tl::unexpected(OpenFailure{
          {ErrorCode::corrupt_state,
           where +
               "this is a YAML state file, not a SQLite database; migrate it with "
               "migrate_yaml_to_sqlite(\"" +
               path + "\", \"<new>.db\") (CLI: ratelimit migrate), or open it with Backend::yaml"},
          false});
    }
    return tl::unexpected(
        OpenFailure{{ErrorCode::corrupt_state,
                     where + "not a SQLite database (bad header)" + recover_hint(path)},
                    true});
  }
  if (got < header.size()) {
    return tl::unexpected(OpenFailure{
        {ErrorCode::corrupt_state,
         where + "truncated database (" + std::to_string(got) + "-byte file)" + recover_hint(path)},
        true});
  }
  std::uint32_t page_size = (std::uint32_t{header[16]} << 8) | header[17];
  if (page_size == 1) page_size = 65536;
  if (page_size < 512 || (page_size & (page_size - 1)) != 0) {
    return tl::unexpected(OpenFailure{
        {ErrorCode::corrupt_state, where + "damaged database header (page size " +
                                       std::to_string(page_size) + ")" + recover_hint(path)},
        true});
  }
  auto be32 = [&](int at) {
    return (std::uint32_t{header[at]} << 24) | (std::uint32_t{header[at + 1]} << 16) |
           (std::uint32_t{header[at + 2]} << 8) | header[at + 3];
  };
  const std::uint64_t pages = be32(28);
  const bool size_valid = be32(24) == be32(92);
  if (info.st_size % page_size != 0 ||
      (size_valid && static_cast<std::uint64_t>(info.st_size) < pages * page_size)) {
    *suspicious = true;
  }
  return {};
}

// "<path>.corrupt-20260219T100000Z" (with "-1", "-2"... when taken).
std::string corrupt_name(const std::string& path) {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
  std::string base = path + ".corrupt-" + stamp;
  std::string name = base;
  std::error_code ec;
  for (int i = 1; fs::exists(name, ec) || fs::exists(name + "-wal", ec); ++i) {
    name = base + "-" + std::to_string(i);
  }
  return name;
}

// Moves the database and its -wal/-shm files aside. Returns the new name of the database.
Result<std::string> move_aside(const std::string& path, const char* op) {
  const std::string target = corrupt_name(path);
  for (const char* suffix : {"", "-wal", "-shm"}) {
    const std::string from = path + suffix;
    if (::access(from.c_str(), F_OK) != 0) continue;
    if (std::rename(from.c_str(), (target + suffix).c_str()) != 0) {
      return make_error(ErrorCode::io_error, std::string(op) + ": sqlite " + path +
                                                 ": cannot move the damaged file aside to " +
                                                 target + suffix + ": " + std::strerror(errno));
    }
  }
  return target;
}

tl::expected<Opened, OpenFailure> try_open(const std::string& path, const Seeds& seeds,
                                           const SqliteOptions& options, const char* op) {
  bool suspicious = false;
  if (auto checked = check_file(path, op, &suspicious); !checked) {
    return tl::unexpected(checked.error());
  }
  Opened out;
  out.conn = std::make_unique<Connection>(path, options);
  Connection& c = *out.conn;
  const std::string where = std::string(op) + ": sqlite " + path + ": ";
  try {
    c.open();
    // 1 KiB pages for a new file (SQLite's default is 4 KiB; an existing file keeps its size:
    // the pragma changes nothing there). A grant changes two rl_log rows of about 40 and 80
    // bytes in one leaf, but every changed page is a whole WAL frame, copied and checksummed at
    // the commit and synced by the next checkpoint: with 1 KiB pages a call writes a quarter of
    // the bytes and a checkpoint of 4,000 frames takes 13-26 ms instead of 32-66 ms
    // (docs/benchmarks.md).
    c.exec("PRAGMA page_size=1024");
    {
      sqlite3_stmt* s = c.prepare("PRAGMA journal_mode=WAL");
      Query u(c, s);
      const std::string mode = u.row() ? u.text(0) : std::string();
      if (mode != "wal") {
        return tl::unexpected(OpenFailure{
            {ErrorCode::io_error, where + "cannot use WAL mode (journal mode \"" + mode +
                                      "\"); put the database on a local file system"}});
      }
    }
    c.exec("PRAGMA synchronous=NORMAL");
    // A 50,000-entry window is several MB: keep it in this connection's cache.
    c.exec("PRAGMA cache_size=-32768");
    // Checkpoint (it syncs the WAL and the database: 13-26 ms for 4,000 frames of 1 KiB on
    // this kind of disk) every 4,000 WAL frames instead of 1,000: a quarter as many pauses
    // (1,000 put them in the p99: docs/benchmarks.md); the pages every transaction rewrites
    // (the end of rl_log, with the totals rows) are copied once per checkpoint anyway. It runs
    // after the commit that crosses the threshold, with the write lock released. (16,000
    // frames of 1 KiB, the old WAL size in bytes, measured no better.)
    // (A checkpointing thread of our own took the pauses off the commit path but made the
    // median slower: every checkpoint by another connection invalidates our page cache.)
    c.exec("PRAGMA wal_autocheckpoint=4000");
    // The WAL grows past that only while a reader keeps a checkpoint from finishing; once one
    // finishes, the next writer restarts the WAL and truncates the file to 32 MiB.
    c.exec("PRAGMA journal_size_limit=33554432");
    if (suspicious) {
      sqlite3_stmt* s = c.prepare("PRAGMA quick_check(1)");
      Query u(c, s);
      const std::string verdict = u.row() ? u.text(0) : std::string();
      if (verdict != "ok") {
        return tl::unexpected(OpenFailure{
            {ErrorCode::corrupt_state,
             where + "damaged or truncated database (" + verdict + ")" + recover_hint(path)},
            true});
      }
    }
    c.exec("BEGIN IMMEDIATE");
    out.store_id = prepare_schema(c, seeds, op);
    c.exec("COMMIT");
  } catch (const DbFailure& e) {
    c.rollback();
    if (is_damage_code(e.rc)) {
      return tl::unexpected(
          OpenFailure{{ErrorCode::corrupt_state,
                       where + "damaged database (" + e.message + ")" + recover_hint(path)},
                      true});
    }
    if (is_busy_code(e.rc)) {
      return tl::unexpected(
          OpenFailure{{ErrorCode::unavailable,
                       where + e.message + " (another process held the lock for more than " +
                           seconds_text(c.busy_budget_ns()) + "; retry later)"}});
    }
    return tl::unexpected(OpenFailure{{ErrorCode::io_error, where + e.message}});
  } catch (const OpFailure& e) {
    c.rollback();
    return tl::unexpected(OpenFailure{e.error, false});
  }
  return out;
}

}  // namespace

Result<Opened> open_database(const std::string& path, const Seeds& seeds, bool recover_corrupt,
                             const SqliteOptions& options, const char* op) {
  auto opened = try_open(path, seeds, options, op);
  if (opened) return std::move(*opened);
  if (!recover_corrupt || !opened.error().damaged) return tl::unexpected(opened.error().error);
  auto moved = move_aside(path, op);
  if (!moved) return tl::unexpected(moved.error());
  opened = try_open(path, seeds, options, op);
  if (opened) return std::move(*opened);
  return tl::unexpected(opened.error().error);
}

}  // namespace ratelimit::detail
