// The SQLite store: every check-and-record is one BEGIN IMMEDIATE transaction on a database
// shared by the processes of one machine, so they share one quota exactly.
//
// Schema: go-ratelimit's four tables unchanged (quotas, requests, tokens, daily, and their two
// indexes), plus three of ours:
//   rl_meta          schema version and a random store id (the prefix of reservation ids, so an
//                    id from another database is not_found).
//   rl_reservations  one row per granted reservation, keyed by (model_no, seq): the id is
//                    "<store id>-<model_no>-<seq>" (rowids of the seed's tables are reused after
//                    deletes, so they are never ids; seq only grows). WITHOUT ROWID: one page
//                    written per grant, no AUTOINCREMENT bookkeeping.
//   rl_totals        per model: its number (model_no) and next seq, requests and tokens of the
//                    rows with ts > horizon, the newest and a lower bound of the oldest such
//                    row, whether rows at or below the horizon await deletion, and the day
//                    generation (bumped when the day starts over, so a cancel refunds the day
//                    count only within its own day).
// Totals are exact without COUNT/SUM over the window: each write transaction on a model moves
// its horizon to now - 60 s, subtracting the rows in (old horizon, new horizon] with an index
// range query (each row is subtracted once: amortised O(1)), then deletes at most kDeleteBatch
// expired rows per table (bounded work). A reservation whose ts <= horizon has left the window
// ("gone"); its rows are never touched by rowid again. Reads (decide, stats) prune virtually
// and take a write transaction only when that would mean walking many rows.
//
// Concurrency: one connection per limiter, guarded by a mutex (SQLite serialises writers
// anyway); WAL mode, so readers never wait for the writer. Our busy handler spins briefly, then
// sleeps 50 µs growing to 1 ms, within a 5 s budget (SQLite's default handler sleeps 1, 2, 5,
// 10 ms... which costs colliding processes milliseconds).
#include "store/sqlite/sqlite_store.h"

#include <fcntl.h>
#include <sched.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <list>
#include <map>
#include <mutex>
#include <new>
#include <random>
#include <set>
#include <stop_token>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "limiter/metrics_counters.h"
#include "ratelimit/limiter.h"
#include "store/snapshot.h"
#include "core/window.h"

namespace ratelimit::detail {
namespace {

namespace fs = std::filesystem;

constexpr std::int64_t kAppId = 0x524c4d54;  // "RLMT", in the database header
constexpr std::string_view kSchemaVersion = "1";
constexpr int kDeleteBatch = 64;  // expired rows deleted per table per pass (when that many wait)
constexpr int kReadScanCap = 64;  // rows a read may subtract virtually before it writes
constexpr std::int64_t kNone = INT64_MAX;            // "no row" for oldest_ts
constexpr std::int64_t kReadSkewNs = 1'000'000'000;  // a read may decide this far ahead of now
constexpr auto kPollInterval = std::chrono::milliseconds(25);  // cross-process wake polling

std::atomic<std::int64_t> g_busy_budget_ns{5'000'000'000};
std::atomic<std::int64_t> g_fault_after{-1};

// --- errors ---------------------------------------------------------------------------------

struct DbFailure {  // a SQLite call failed (thrown inside a transaction, caught at its edge)
  int rc;
  std::string message;
};
struct OpFailure {  // a logical failure inside a transaction: roll back and return `error`
  Error error;
};

bool is_damage_code(int rc) {
  const int primary = rc & 0xff;
  return primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB;
}
bool is_busy_code(int rc) {
  const int primary = rc & 0xff;
  return primary == SQLITE_BUSY || primary == SQLITE_LOCKED;
}

std::string model_text(std::string_view model) {
  std::string out = "model \"";
  out += model;
  out += '"';
  return out;
}

std::string seconds_text(std::int64_t ns) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g s", static_cast<double>(ns) / 1e9);
  return buf;
}

// --- the busy handler -----------------------------------------------------------------------

struct BusyState {
  std::int64_t budget_ns = 5'000'000'000;
  std::chrono::steady_clock::time_point start;
};

// Spins (yielding) for about 20 µs, then sleeps 50 µs growing by half each time to 1 ms, until
// `budget_ns` has passed since the first call for this lock event. Returns 0 to give up.
int busy_handler(void* arg, int count) {
  auto* state = static_cast<BusyState*>(arg);
  const auto now = std::chrono::steady_clock::now();
  if (count == 0) state->start = now;
  const std::int64_t elapsed =
      std::chrono::duration_cast<std::chrono::nanoseconds>(now - state->start).count();
  if (elapsed >= state->budget_ns) return 0;
  if (elapsed < 20'000) {
    sched_yield();
    return 1;
  }
  std::int64_t sleep_ns = 50'000;
  for (int i = 0; i < count && sleep_ns < 1'000'000; i += 8) sleep_ns += sleep_ns / 2;
  sleep_ns = std::min<std::int64_t>({sleep_ns, 1'000'000, state->budget_ns - elapsed});
  std::this_thread::sleep_for(std::chrono::nanoseconds(sleep_ns));
  return 1;
}

// --- the connection -------------------------------------------------------------------------

// One open database and its prepared statements. Not thread-safe (the owner locks).
class Conn {
 public:
  explicit Conn(std::string path) : path_(std::move(path)) {
    busy_.budget_ns = g_busy_budget_ns.load(std::memory_order_relaxed);
  }
  ~Conn() { close(); }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  // Opens the file (creating it). Throws DbFailure.
  void open() {
    const int rc =
        sqlite3_open_v2(path_.c_str(), &db_,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
      std::string message = db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
      throw DbFailure{rc, std::move(message)};
    }
    sqlite3_extended_result_codes(db_, 1);
    sqlite3_busy_handler(db_, &busy_handler, &busy_);
  }

  void close() {
    for (sqlite3_stmt* s : stmts_) sqlite3_finalize(s);
    stmts_.clear();
    if (db_ != nullptr) sqlite3_close_v2(db_);
    db_ = nullptr;
  }

  const std::string& path() const { return path_; }
  std::int64_t busy_budget_ns() const { return busy_.budget_ns; }
  sqlite3* db() const { return db_; }

  // A statement kept until close(). Throws DbFailure.
  sqlite3_stmt* prepare(std::string_view sql) {
    sqlite3_stmt* stmt = nullptr;
    const int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                                      SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
    if (rc != SQLITE_OK) fail(rc);
    stmts_.push_back(stmt);
    return stmt;
  }

  // sqlite3_step through the test fault hook.
  int step(sqlite3_stmt* stmt) {
    std::int64_t left = g_fault_after.load(std::memory_order_relaxed);
    while (left >= 0) {
      if (left == 0) return SQLITE_IOERR;
      if (g_fault_after.compare_exchange_weak(left, left - 1)) break;
    }
    return sqlite3_step(stmt);
  }

  // Runs one statement of `sql` to completion (not cached). Throws DbFailure.
  void exec(std::string_view sql) {
    sqlite3_stmt* stmt = nullptr;
    const int rc =
        sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
    if (rc != SQLITE_OK) fail(rc);
    int step_rc;
    while ((step_rc = step(stmt)) == SQLITE_ROW) {
    }
    sqlite3_finalize(stmt);
    if (step_rc != SQLITE_DONE) fail(step_rc);
  }

  // Ends any open transaction. Never through the fault hook.
  void rollback() {
    if (db_ != nullptr && sqlite3_get_autocommit(db_) == 0) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    }
  }

  [[noreturn]] void fail(int rc) const {
    std::string message;
    if (g_fault_after.load(std::memory_order_relaxed) == 0) {
      message = std::string(sqlite3_errstr(rc)) + " (injected by a test)";
    } else if (db_ != nullptr && sqlite3_extended_errcode(db_) == rc) {
      message = sqlite3_errmsg(db_);
    } else {
      message = sqlite3_errstr(rc);
    }
    throw DbFailure{rc, std::move(message)};
  }

 private:
  std::string path_;
  sqlite3* db_ = nullptr;
  BusyState busy_;
  std::vector<sqlite3_stmt*> stmts_;
};

// One use of a prepared statement: bind, step, read; reset on scope exit.
class Use {
 public:
  Use(Conn& conn, sqlite3_stmt* stmt) : conn_(conn), stmt_(stmt) {}
  ~Use() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  Use(const Use&) = delete;
  Use& operator=(const Use&) = delete;

  Use& bind(int i, std::int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Use& bind(int i, std::string_view text) {
    // SQLITE_STATIC: `text` outlives this Use, and the destructor clears the binding.
    sqlite3_bind_text(stmt_, i, text.empty() ? "" : text.data(), static_cast<int>(text.size()),
                      SQLITE_STATIC);
    return *this;
  }
  Use& bind_null(int i) {
    sqlite3_bind_null(stmt_, i);
    return *this;
  }
  // True for a row, false when done. Throws DbFailure.
  bool row() {
    const int rc = conn_.step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    conn_.fail(rc);
  }
  void run() {
    while (row()) {
    }
  }
  std::int64_t i64(int col) const { return sqlite3_column_int64(stmt_, col); }
  bool is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  std::string text(int col) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
    return p == nullptr ? std::string() : std::string(p, sqlite3_column_bytes(stmt_, col));
  }

 private:
  Conn& conn_;
  sqlite3_stmt* stmt_;
};

// --- schema ---------------------------------------------------------------------------------

constexpr std::string_view kSeedSchema[] = {
    "CREATE TABLE IF NOT EXISTS quotas (model TEXT PRIMARY KEY, max_rpm INTEGER NOT NULL "
    "DEFAULT 0, max_tpm INTEGER NOT NULL DEFAULT 0, max_rpd INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS requests (model TEXT NOT NULL, ts INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tokens (model TEXT NOT NULL, ts INTEGER NOT NULL, count INTEGER "
    "NOT NULL)",
    "CREATE TABLE IF NOT EXISTS daily (model TEXT PRIMARY KEY, day_start INTEGER NOT NULL, "
    "day_count INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS idx_requests_model_ts ON requests(model, ts)",
    "CREATE INDEX IF NOT EXISTS idx_tokens_model_ts ON tokens(model, ts)",
};
constexpr std::string_view kOwnSchema[] = {
    "CREATE TABLE IF NOT EXISTS rl_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) "
    "WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS rl_reservations (model_no INTEGER NOT NULL, seq INTEGER NOT "
    "NULL, ts INTEGER NOT NULL, est_tokens INTEGER NOT NULL, state INTEGER NOT NULL, "
    "request_rowid INTEGER NOT NULL, token_rowid INTEGER, day_gen INTEGER NOT NULL, "
    "PRIMARY KEY (model_no, seq)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS rl_totals (model TEXT PRIMARY KEY, model_no INTEGER NOT NULL "
    "UNIQUE, next_seq INTEGER NOT NULL, requests INTEGER NOT NULL, "
    "tokens_hi INTEGER NOT NULL, tokens_lo INTEGER NOT NULL, horizon INTEGER NOT NULL, "
    "newest_ts INTEGER NOT NULL, oldest_ts INTEGER NOT NULL, pending INTEGER NOT NULL, "
    "day_gen INTEGER NOT NULL) WITHOUT ROWID",
};
// Objects a go-ratelimit database may hold (it is adopted: our tables are added beside them).
const std::set<std::string, std::less<>> kSeedObjects = {"quotas",
                                                         "requests",
                                                         "tokens",
                                                         "daily",
                                                         "idx_requests_model_ts",
                                                         "idx_tokens_model_ts",
                                                         "sqlite_autoindex_quotas_1",
                                                         "sqlite_autoindex_daily_1",
                                                         "sqlite_sequence"};
// Statements that succeed only when the seed's tables have the seed's columns.
constexpr std::string_view kSeedColumnChecks[] = {
    "SELECT model, max_rpm, max_tpm, max_rpd FROM quotas LIMIT 0",
    "SELECT model, ts FROM requests LIMIT 0",
    "SELECT model, ts, count FROM tokens LIMIT 0",
    "SELECT model, day_start, day_count FROM daily LIMIT 0",
};

enum ReservationState : std::int64_t { kReserved = 0, kCommitted = 1, kCancelled = 2 };

// The tokens total is an exact non-negative Int128 kept as two int64 columns.
std::int64_t hi_of(Int128 v) { return static_cast<std::int64_t>(v >> 64); }
std::int64_t lo_of(Int128 v) {
  return static_cast<std::int64_t>(static_cast<std::uint64_t>(v & ~std::uint64_t{0}));
}
Int128 join_hi_lo(std::int64_t hi, std::int64_t lo) {
  return (static_cast<Int128>(hi) << 64) | static_cast<Int128>(static_cast<std::uint64_t>(lo));
}
std::int64_t clamp_to_int64(Int128 v) {
  if (v > static_cast<Int128>(kInt64Max)) return kInt64Max;
  if (v < 0) return 0;
  return static_cast<std::int64_t>(v);
}

std::string hex16(std::uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// The prepared statements of an open store.
struct Statements {
  sqlite3_stmt* begin_write;
  sqlite3_stmt* begin_read;
  sqlite3_stmt* commit;
  sqlite3_stmt* load_state;
  sqlite3_stmt* count_requests_range;
  sqlite3_stmt* tokens_range;
  sqlite3_stmt* oldest_after;
  sqlite3_stmt* delete_requests;
  sqlite3_stmt* delete_tokens;
  sqlite3_stmt* delete_reservations;
  sqlite3_stmt* clamp_requests;
  sqlite3_stmt* clamp_tokens;
  sqlite3_stmt* clamp_reservations;
  sqlite3_stmt* upsert_day;
  sqlite3_stmt* delete_day;
  sqlite3_stmt* upsert_totals;
  sqlite3_stmt* insert_request;
  sqlite3_stmt* insert_token;
  sqlite3_stmt* insert_reservation;
  sqlite3_stmt* get_reservation;
  sqlite3_stmt* set_reservation;
  sqlite3_stmt* set_token_count;
  sqlite3_stmt* delete_request_rowid;
  sqlite3_stmt* delete_token_rowid;
  sqlite3_stmt* model_by_no;
  sqlite3_stmt* next_model_no;
  sqlite3_stmt* rpm_nth;
  sqlite3_stmt* tpm_scan;
  sqlite3_stmt* all_quotas;
  sqlite3_stmt* upsert_quota;
  sqlite3_stmt* delete_quota;
  sqlite3_stmt* all_models;
  sqlite3_stmt* data_version;

  void prepare(Conn& c) {
    begin_write = c.prepare("BEGIN IMMEDIATE");
    begin_read = c.prepare("BEGIN");
    commit = c.prepare("COMMIT");
    load_state = c.prepare(
        "SELECT q.max_rpm, q.max_tpm, q.max_rpd, q.model IS NOT NULL, t.requests, t.tokens_hi, "
        "t.tokens_lo, t.horizon, t.newest_ts, t.oldest_ts, t.pending, t.day_gen, "
        "t.model IS NOT NULL, d.day_start, d.day_count, d.model IS NOT NULL, t.model_no, "
        "t.next_seq "
        "FROM (SELECT ?1 AS m) AS k LEFT JOIN quotas AS q ON q.model = k.m "
        "LEFT JOIN rl_totals AS t ON t.model = k.m LEFT JOIN daily AS d ON d.model = k.m");
    count_requests_range = c.prepare(
        "SELECT COUNT(*) FROM (SELECT 1 FROM requests WHERE model = ?1 AND ts > ?2 AND "
        "ts <= ?3 LIMIT ?4)");
    tokens_range =
        c.prepare("SELECT count FROM tokens WHERE model = ?1 AND ts > ?2 AND ts <= ?3 LIMIT ?4");
    oldest_after = c.prepare(
        "SELECT min(coalesce((SELECT ts FROM requests WHERE model = ?1 AND ts > ?2 ORDER BY ts "
        "LIMIT 1), ?3), coalesce((SELECT ts FROM tokens WHERE model = ?1 AND ts > ?2 ORDER BY "
        "ts LIMIT 1), ?3))");
    delete_requests = c.prepare(
        "DELETE FROM requests WHERE rowid IN (SELECT rowid FROM requests WHERE model = ?1 AND "
        "ts <= ?2 LIMIT ?3)");
    delete_tokens = c.prepare(
        "DELETE FROM tokens WHERE rowid IN (SELECT rowid FROM tokens WHERE model = ?1 AND "
        "ts <= ?2 LIMIT ?3)");
    delete_reservations = c.prepare(
        // Per model, seq order is time order: the expired rows are a prefix.
        "DELETE FROM rl_reservations WHERE model_no = ?1 AND seq <= (SELECT max(seq) FROM "
        "(SELECT seq, ts FROM rl_reservations WHERE model_no = ?1 ORDER BY seq LIMIT ?3) "
        "WHERE ts <= ?2)");
    clamp_requests = c.prepare("UPDATE requests SET ts = ?2 WHERE model = ?1 AND ts > ?2");
    clamp_tokens = c.prepare("UPDATE tokens SET ts = ?2 WHERE model = ?1 AND ts > ?2");
    clamp_reservations =
        c.prepare("UPDATE rl_reservations SET ts = ?2 WHERE model_no = ?1 AND ts > ?2");
    upsert_day = c.prepare(
        "INSERT INTO daily (model, day_start, day_count) VALUES (?1, ?2, ?3) ON CONFLICT(model) "
        "DO UPDATE SET day_start = excluded.day_start, day_count = excluded.day_count");
    delete_day = c.prepare("DELETE FROM daily WHERE model = ?1");
    upsert_totals = c.prepare(
        "INSERT INTO rl_totals (model, requests, tokens_hi, tokens_lo, horizon, newest_ts, "
        "oldest_ts, pending, day_gen, model_no, next_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, "
        "?8, ?9, ?10, ?11) ON CONFLICT(model) DO UPDATE SET next_seq = excluded.next_seq, "
        "requests = excluded.requests, tokens_hi = "
        "excluded.tokens_hi, tokens_lo = excluded.tokens_lo, horizon = excluded.horizon, "
        "newest_ts = excluded.newest_ts, oldest_ts = excluded.oldest_ts, pending = "
        "excluded.pending, day_gen = excluded.day_gen");
    insert_request = c.prepare("INSERT INTO requests (model, ts) VALUES (?1, ?2)");
    insert_token = c.prepare("INSERT INTO tokens (model, ts, count) VALUES (?1, ?2, ?3)");
    insert_reservation = c.prepare(
        "INSERT INTO rl_reservations (model_no, seq, ts, est_tokens, state, request_rowid, "
        "token_rowid, day_gen) VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7)");
    get_reservation = c.prepare(
        "SELECT ts, est_tokens, state, request_rowid, token_rowid, day_gen FROM "
        "rl_reservations WHERE model_no = ?1 AND seq = ?2");
    set_reservation = c.prepare(
        "UPDATE rl_reservations SET state = ?3, token_rowid = ?4 WHERE model_no = ?1 AND "
        "seq = ?2");
    set_token_count = c.prepare("UPDATE tokens SET count = ?2 WHERE rowid = ?1");
    delete_request_rowid = c.prepare("DELETE FROM requests WHERE rowid = ?1");
    delete_token_rowid = c.prepare("DELETE FROM tokens WHERE rowid = ?1");
    model_by_no = c.prepare("SELECT model FROM rl_totals WHERE model_no = ?1");
    next_model_no = c.prepare("SELECT coalesce(max(model_no), 0) + 1 FROM rl_totals");
    rpm_nth = c.prepare(
        "SELECT ts FROM requests WHERE model = ?1 AND ts > ?2 ORDER BY ts LIMIT 1 OFFSET ?3");
    tpm_scan = c.prepare("SELECT ts, count FROM tokens WHERE model = ?1 AND ts > ?2 ORDER BY ts");
    all_quotas = c.prepare("SELECT model, max_rpm, max_tpm, max_rpd FROM quotas");
    upsert_quota = c.prepare(
        "INSERT INTO quotas (model, max_rpm, max_tpm, max_rpd) VALUES (?1, ?2, ?3, ?4) "
        "ON CONFLICT(model) DO UPDATE SET max_rpm = excluded.max_rpm, max_tpm = "
        "excluded.max_tpm, max_rpd = excluded.max_rpd");
    delete_quota = c.prepare("DELETE FROM quotas WHERE model = ?1");
    all_models = c.prepare(
        "SELECT model FROM quotas UNION SELECT model FROM rl_totals UNION SELECT model FROM "
        "daily");
    data_version = c.prepare("PRAGMA data_version");
  }
};

// --- opening: file checks, schema, recovery -------------------------------------------------

struct OpenFailure {
  Error error;
  bool damaged = false;  // really damaged: recover_corrupt may move it aside
};

std::string recover_hint(const std::string& path) {
  return "; to start fresh, open with Config::recover_corrupt = true (the file is moved to " +
         path + ".corrupt-<time>, nothing is deleted), or restore it from a backup";
}

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

std::uint64_t random_u64() {
  std::random_device rd;
  std::uint64_t v = 0;
  while (v == 0) v = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  return v;
}

// Recomputes rl_totals from the rows of the seed's tables (a go-ratelimit database being
// adopted, or a migration), keeping each model's number and next reservation seq so that no
// reservation id is ever issued twice. REQUIRES: a write transaction. Throws DbFailure /
// OpFailure.
void rebuild_totals(Conn& c, std::int64_t day_gen, const char* op) {
  sqlite3_stmt* models = c.prepare(
      "SELECT model FROM requests UNION SELECT model FROM tokens UNION SELECT model FROM daily "
      "UNION SELECT model FROM rl_totals");
  sqlite3_stmt* reqs =
      c.prepare("SELECT COUNT(*), min(ts), max(ts) FROM requests WHERE model = ?1 AND ts > ?2");
  sqlite3_stmt* toks = c.prepare("SELECT ts, count FROM tokens WHERE model = ?1 AND ts > ?2");
  sqlite3_stmt* upsert = c.prepare(
      "INSERT INTO rl_totals (model, model_no, next_seq, requests, tokens_hi, tokens_lo, "
      "horizon, newest_ts, oldest_ts, pending, day_gen) VALUES (?1, (SELECT coalesce("
      "max(model_no), 0) + 1 FROM rl_totals), 1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8) ON "
      "CONFLICT(model) DO UPDATE SET requests = excluded.requests, tokens_hi = "
      "excluded.tokens_hi, tokens_lo = excluded.tokens_lo, horizon = excluded.horizon, "
      "newest_ts = excluded.newest_ts, oldest_ts = excluded.oldest_ts, pending = 1, "
      "day_gen = excluded.day_gen");
  std::vector<std::string> names;
  {
    Use m(c, models);
    while (m.row()) names.push_back(m.text(0));
  }
  for (const std::string& model : names) {
    std::int64_t requests = 0, oldest = kNone, newest = INT64_MIN;
    {
      Use r(c, reqs);
      r.bind(1, model).bind(2, INT64_MIN);
      if (r.row() && r.i64(0) > 0) {
        requests = r.i64(0);
        oldest = r.i64(1);
        newest = r.i64(2);
      }
    }
    Int128 tokens = 0;
    {
      Use t(c, toks);
      t.bind(1, model).bind(2, INT64_MIN);
      while (t.row()) {
        if (t.i64(1) < 0) {
          throw OpFailure{{ErrorCode::corrupt_state,
                           std::string(op) + ": sqlite " + c.path() + ": " + model_text(model) +
                               ": tokens.count is negative (" + std::to_string(t.i64(1)) + ")"}};
        }
        tokens += t.i64(1);
        oldest = std::min(oldest, t.i64(0));
        newest = std::max(newest, t.i64(0));
      }
    }
    Use ins(c, upsert);
    ins.bind(1, model).bind(2, requests).bind(3, hi_of(tokens)).bind(4, lo_of(tokens));
    ins.bind(5, INT64_MIN).bind(6, newest).bind(7, oldest).bind(8, day_gen);
    ins.run();
  }
}

// Creates or checks the schema, writes `seed_quotas` for models without a row, and returns the
// store id. REQUIRES: a write transaction. Throws DbFailure / OpFailure.
std::uint64_t prepare_schema(Conn& c, const QuotaMap& seed_quotas, const char* op) {
  const std::string where = std::string(op) + ": sqlite " + c.path() + ": ";
  std::int64_t app_id = 0;
  {
    sqlite3_stmt* s = c.prepare("PRAGMA application_id");
    Use u(c, s);
    if (u.row()) app_id = u.i64(0);
  }
  std::vector<std::string> objects;
  bool has_meta = false;
  {
    sqlite3_stmt* s = c.prepare("SELECT name FROM sqlite_master ORDER BY name");
    Use u(c, s);
    while (u.row()) {
      objects.push_back(u.text(0));
      if (objects.back() == "rl_meta") has_meta = true;
    }
  }
  auto foreign = [&](const std::string& why) {
    return OpFailure{{ErrorCode::corrupt_state,
                      where + "not a ratelimit database (" + why +
                          "); it was left unchanged: point file_path at another file"}};
  };
  if (app_id != 0 && app_id != kAppId) {
    throw foreign("application id " + std::to_string(app_id));
  }
  if (has_meta) {
    sqlite3_stmt* s = c.prepare("SELECT value FROM rl_meta WHERE key = 'schema_version'");
    Use u(c, s);
    const std::string version = u.row() ? u.text(0) : std::string();
    if (version != kSchemaVersion) {
      throw OpFailure{{ErrorCode::corrupt_state, where + "schema version \"" + version +
                                                     "\", this build reads version " +
                                                     std::string(kSchemaVersion) +
                                                     " (use the ratelimit version that wrote it)"}};
    }
  } else {
    std::string unknown;
    for (const std::string& name : objects) {
      if (kSeedObjects.count(name) == 0) unknown += (unknown.empty() ? "" : ", ") + name;
    }
    if (!unknown.empty()) throw foreign("it holds " + unknown);
    std::set<std::string, std::less<>> present(objects.begin(), objects.end());
    const char* tables[] = {"quotas", "requests", "tokens", "daily"};
    for (int i = 0; i < 4; ++i) {
      if (present.count(tables[i]) == 0) continue;
      sqlite3_stmt* probe = nullptr;
      const int rc =
          sqlite3_prepare_v2(c.db(), kSeedColumnChecks[i].data(),
                             static_cast<int>(kSeedColumnChecks[i].size()), &probe, nullptr);
      sqlite3_finalize(probe);
      if (is_damage_code(rc)) c.fail(rc);
      if (rc != SQLITE_OK) throw foreign(std::string("table ") + tables[i] + " has other columns");
    }
  }
  for (std::string_view sql : kSeedSchema) c.exec(sql);
  for (std::string_view sql : kOwnSchema) c.exec(sql);
  if (!has_meta) {
    c.exec("PRAGMA application_id = " + std::to_string(kAppId));
    sqlite3_stmt* s = c.prepare("INSERT INTO rl_meta (key, value) VALUES (?1, ?2)");
    {
      Use u(c, s);
      u.bind(1, std::string_view("schema_version")).bind(2, kSchemaVersion).run();
    }
    const std::string id = hex16(random_u64());
    {
      Use u(c, s);
      u.bind(1, std::string_view("store_id")).bind(2, id).run();
    }
    rebuild_totals(c, 0, op);  // a go-ratelimit database's rows become our totals
  }
  {
    sqlite3_stmt* s = c.prepare(
        "INSERT OR IGNORE INTO quotas (model, max_rpm, max_tpm, max_rpd) VALUES (?1, ?2, ?3, ?4)");
    for (const auto& [model, q] : seed_quotas) {
      Use u(c, s);
      u.bind(1, model).bind(2, q.max_rpm).bind(3, q.max_tpm).bind(4, q.max_rpd).run();
    }
  }
  sqlite3_stmt* s = c.prepare("SELECT value FROM rl_meta WHERE key = 'store_id'");
  Use u(c, s);
  std::uint64_t id = 0;
  const std::string text = u.row() ? u.text(0) : std::string();
  auto r = std::from_chars(text.data(), text.data() + text.size(), id, 16);
  if (text.size() != 16 || r.ec != std::errc() || r.ptr != text.data() + text.size()) {
    throw OpFailure{{ErrorCode::corrupt_state,
                     where + "rl_meta.store_id is missing or malformed" + recover_hint(c.path())}};
  }
  return id;
}

struct Opened {
  std::unique_ptr<Conn> conn;
  std::uint64_t store_id = 0;
};

tl::expected<Opened, OpenFailure> try_open(const std::string& path, const QuotaMap& seed_quotas,
                                           const char* op) {
  bool suspicious = false;
  if (auto checked = check_file(path, op, &suspicious); !checked) {
    return tl::unexpected(checked.error());
  }
  Opened out;
  out.conn = std::make_unique<Conn>(path);
  Conn& c = *out.conn;
  const std::string where = std::string(op) + ": sqlite " + path + ": ";
  try {
    c.open();
    {
      sqlite3_stmt* s = c.prepare("PRAGMA journal_mode=WAL");
      Use u(c, s);
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
    // Checkpoint (it syncs the WAL and the database: tens of ms on this kind of disk) every
    // 4,000 WAL pages instead of 1,000: a quarter as many pauses; the pages every transaction
    // rewrites (totals, the ends of the indexes) are copied once per checkpoint anyway.
    // (A checkpointing thread of our own took the pauses off the commit path but made the
    // median slower: every checkpoint by another connection invalidates our page cache.)
    c.exec("PRAGMA wal_autocheckpoint=4000");
    if (suspicious) {
      sqlite3_stmt* s = c.prepare("PRAGMA quick_check(1)");
      Use u(c, s);
      const std::string verdict = u.row() ? u.text(0) : std::string();
      if (verdict != "ok") {
        return tl::unexpected(OpenFailure{
            {ErrorCode::corrupt_state,
             where + "damaged or truncated database (" + verdict + ")" + recover_hint(path)},
            true});
      }
    }
    c.exec("BEGIN IMMEDIATE");
    out.store_id = prepare_schema(c, seed_quotas, op);
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

Result<Opened> open_database(const std::string& path, const QuotaMap& seed_quotas,
                             bool recover_corrupt, const char* op) {
  auto opened = try_open(path, seed_quotas, op);
  if (opened) return std::move(*opened);
  if (!recover_corrupt || !opened.error().damaged) return tl::unexpected(opened.error().error);
  auto moved = move_aside(path, op);
  if (!moved) return tl::unexpected(moved.error());
  opened = try_open(path, seed_quotas, op);
  if (opened) return std::move(*opened);
  return tl::unexpected(opened.error().error);
}

// --- the engine -----------------------------------------------------------------------------

// One model's state as read inside a transaction.
struct State {
  bool has_quota = false;
  ModelQuota quota;
  std::int64_t requests = 0;
  Int128 tokens = 0;
  std::int64_t horizon = INT64_MIN;  // rows with ts > horizon are in the totals
  std::int64_t newest = INT64_MIN;
  std::int64_t oldest = kNone;  // no row with ts > horizon is older than this
  std::int64_t pending = 0;     // rows with ts <= horizon may await deletion
  std::int64_t day_gen = 0;
  std::int64_t model_no = 0;  // 0: not assigned yet (no rl_totals row)
  std::int64_t next_seq = 1;
  bool has_totals = false;
  bool has_day = false;
  std::int64_t day_start = 0;
  std::int64_t day_count = 0;
  bool day_row = false;  // a daily row exists in the database
  std::int64_t now = 0;
};

struct Waiter {
  std::stop_source* wake = nullptr;  // set while the thread sleeps
};

struct ModelWaiters {
  std::list<Waiter*> queue;     // acquire(), in arrival order
  std::list<Waiter*> watchers;  // wait_for_capacity()
  TimePoint head_wake{};
  std::uint64_t epoch = 0;  // bumped by every notification
};

class Core;

// The Settler of one model's reservations (Reservation knows only seq and generation).
class ModelSettler final : public Settler {
 public:
  ModelSettler(std::weak_ptr<Core> core, std::string model, std::int64_t model_no,
               std::string store_prefix)
      : core_(std::move(core)),
        model_(std::move(model)),
        model_no_(model_no),
        prefix_(std::move(store_prefix)) {}
  std::int64_t model_no() const { return model_no_; }
  Status commit(std::uint64_t seq, std::uint64_t generation, std::int64_t prompt_tokens,
                std::int64_t output_tokens) override;
  Status cancel(std::uint64_t seq, std::uint64_t generation) override;
  std::string format_id(std::uint64_t seq, std::uint64_t generation) const override {
    (void)generation;
    char digits[40];
    char* p = std::to_chars(digits, digits + 16, static_cast<std::uint64_t>(model_no_), 16).ptr;
    *p++ = '-';
    p = std::to_chars(p, p + 16, seq, 16).ptr;
    std::string id = prefix_;
    id.append(digits, p);
    return id;
  }

 private:
  std::weak_ptr<Core> core_;
  std::string model_;
  std::int64_t model_no_;
  std::string prefix_;  // "<store id>-"
};

tl::unexpected<Error> closed_error(const char* op) {
  return make_error(ErrorCode::closed,
                    std::string(op) + ": the limiter is closed (open a new one)");
}

// The outcome of one attempt to grant (try_acquire, acquire).
struct Grant {
  Decision decision;
  std::shared_ptr<Settler> settler;  // set when granted
  std::uint64_t seq = 0;
  std::uint64_t generation = 0;
  std::optional<Error> error;  // a store failure (decision says store_unavailable)
  std::int64_t now = 0;
};

class Core : public std::enable_shared_from_this<Core> {
 public:
  Core(Config config, Opened opened)
      : config_(std::move(config)),
        clock_(config_.clock),
        on_system_clock_(clock_ == system_clock()),
        conn_(std::move(opened.conn)),
        store_id_(opened.store_id),
        prefix_(hex16(store_id_) + "-") {
    st_.prepare(*conn_);  // throws DbFailure (the caller catches)
    std::lock_guard lock(db_mu_);
    refresh_quotas_locked();
  }

  const Config& config() const { return config_; }
  std::int64_t now_ns() const { return to_ns(clock_->now()); }

  // --- decisions ---

  // `failure`, when given, receives the error behind a store_unavailable decision.
  Decision decide(std::string_view model, std::int64_t estimated_tokens, Error* failure = nullptr) {
    std::lock_guard lock(db_mu_);
    if (!conn_) {
      if (failure != nullptr) *failure = closed_error("ratelimit.decide").value();
      return unavailable_decision();
    }
    Decision d;
    bool done = false;
    Error error;
    // A read first; a write only when many rows expired since the last write on this model.
    bool ok = transaction(false, "ratelimit.decide", &error, [&] {
      State s = load(model);
      if (!advance(model, s, now_ns(), false)) return;
      d = evaluate(model, s, estimated_tokens);
      done = true;
    });
    if (ok && !done) {
      ok = transaction(true, "ratelimit.decide", &error, [&] {
        State s = load(model);
        advance(model, s, now_ns(), true);
        save(model, s);
        d = evaluate(model, s, estimated_tokens);
      });
    }
    if (!ok) {
      if (failure != nullptr) *failure = std::move(error);
      return unavailable_decision();
    }
    return d;
  }

  // Counts a grant and a store failure (either ends the call), and a denial only when
  // `count_denial` (try_acquire; acquire waits and counts how its wait ends).
  Grant grant(std::string_view model, std::int64_t estimated_tokens, bool count_denial) {
    Grant g;
    std::lock_guard lock(db_mu_);
    if (!conn_) {
      g.decision = unavailable_decision();
      g.error =
          Error{ErrorCode::closed, "ratelimit.acquire: the limiter is closed (open a new one)"};
      count(model, RequestOutcome::store_unavailable);
      return g;
    }
    Error error;
    std::int64_t model_no = 0;
    const bool ok = transaction(true, "ratelimit.try_acquire", &error, [&] {
      State s = load(model);
      g.now = now_ns();
      advance(model, s, g.now, true);
      g.decision = evaluate(model, s, estimated_tokens);
      if (g.decision.allowed) {
        const std::int64_t ts = append(model, s, estimated_tokens);
        const std::int64_t seq = s.next_seq++;
        Use u(*conn_, st_.insert_reservation);
        u.bind(1, model_no_of(s)).bind(2, seq).bind(3, ts).bind(4, estimated_tokens);
        u.bind(5, last_request_rowid_);
        if (last_token_rowid_ != 0) {
          u.bind(6, last_token_rowid_);
        } else {
          u.bind_null(6);
        }
        u.bind(7, s.day_gen).run();
        g.seq = static_cast<std::uint64_t>(seq);
        g.generation = static_cast<std::uint64_t>(s.day_gen);
      }
      save(model, s);
      model_no = s.model_no;
    });
    if (!ok) {
      g.decision = unavailable_decision();
      g.error = std::move(error);
      count(model, RequestOutcome::store_unavailable);
      return g;
    }
    if (g.decision.allowed) g.settler = settler_for(model, model_no);
    if (g.decision.allowed || count_denial) {
      std::lock_guard counters_lock(counters_mu_);
      counters_locked(model).decided(g.decision, estimated_tokens);
    }
    return g;
  }

  Status record_usage(std::string_view model, std::int64_t prompt, std::int64_t output) {
    std::lock_guard lock(db_mu_);
    if (!conn_) {
      count(model, RequestOutcome::store_unavailable);
      return closed_error("ratelimit.record_usage");
    }
    const std::int64_t tokens = usage_tokens(prompt, output);
    Error error;
    const bool ok = transaction(true, "ratelimit.record_usage", &error, [&] {
      State s = load(model);
      advance(model, s, now_ns(), true);
      append(model, s, tokens);
      save(model, s);
    });
    if (!ok) {
      count(model, RequestOutcome::store_unavailable);
      return tl::unexpected(std::move(error));
    }
    std::lock_guard counters_lock(counters_mu_);
    counters_locked(model).recorded(tokens);
    return {};
  }

  // Settles reservation `seq`. `model` is known when called from a Reservation object (which
  // also knows it was never settled by itself: from_reservation).
  Status settle(std::optional<std::string_view> model, std::int64_t model_no, std::int64_t seq,
                std::int64_t generation, bool is_commit, std::int64_t tokens, const char* op) {
    std::string released;  // the model whose capacity grew
    {
      std::lock_guard lock(db_mu_);
      if (!conn_) return closed_error(op);
      Error error;
      std::string settled;  // the reservation's model
      const bool ok = transaction(true, op, &error, [&] {
        settle_locked(model, model_no, seq, generation, is_commit, tokens, op, &settled, &released);
      });
      if (!ok) return tl::unexpected(std::move(error));
      // Counted once the transaction committed. An entry that had left the window settles
      // with nothing to change: still a successful commit/cancel for the caller.
      std::lock_guard counters_lock(counters_mu_);
      ModelCounters& counters = counters_locked(settled);
      if (is_commit) {
        counters.committed(tokens);
      } else {
        counters.cancelled();
      }
    }
    if (!released.empty()) notify(released);
    return {};
  }

  Status settle_by_id(std::string_view id, bool is_commit, std::int64_t tokens, const char* op) {
    const auto parsed = parse_id(id);
    if (!parsed) {
      return make_error(ErrorCode::not_found,
                        std::string(op) + ": unknown reservation id \"" + std::string(id) +
                            "\" (ids come from Reservation::id() of a limiter on this database)");
    }
    return settle(std::nullopt, parsed->first, parsed->second, 0, is_commit, tokens, op);
  }

  // --- reads ---

  Result<ModelStats> stats(std::string_view model) {
    std::lock_guard lock(db_mu_);
    if (!conn_) return closed_error("ratelimit.stats");
    ModelStats out;
    bool done = false;
    Error error;
    bool ok = transaction(false, "ratelimit.stats", &error, [&] {
      State s = load(model);
      if (!advance(model, s, now_ns(), false)) return;
      out = stats_of(s);
      done = true;
    });
    if (ok && !done) {
      ok = transaction(true, "ratelimit.stats", &error, [&] {
        State s = load(model);
        advance(model, s, now_ns(), true);
        save(model, s);
        out = stats_of(s);
      });
    }
    if (!ok) return tl::unexpected(std::move(error));
    return out;
  }

  Result<std::map<std::string, ModelStats, std::less<>>> all_stats() {
    std::map<std::string, ModelStats, std::less<>> out;
    auto status =
        for_each_model("ratelimit.all_stats", [&](const std::string& model, const State& s) {
          if (s.has_quota || !idle(s)) out.emplace(model, stats_of(s));
        });
    if (!status) return tl::unexpected(status.error());
    return out;
  }

  Result<std::map<std::string, ModelMetrics, std::less<>>> metrics() {
    // Every model's stats (idle ones too: a model known only by its counters must show what
    // stats() would), then the models to show.
    std::map<std::string, ModelStats, std::less<>> stats;
    std::set<std::string, std::less<>> shown;
    auto status =
        for_each_model("ratelimit.metrics", [&](const std::string& model, const State& s) {
          stats.emplace(model, stats_of(s));
          if (s.has_quota || !idle(s)) shown.insert(model);
        });
    if (!status) return tl::unexpected(status.error());
    std::map<std::string, ModelMetrics, std::less<>> out;
    std::lock_guard counters_lock(counters_mu_);
    for (const auto& [model, counters] : counters_) {
      if (counters.any()) out.emplace(model, counters.snapshot());
    }
    for (const std::string& model : shown) out.try_emplace(model);
    for (auto& [model, m] : out) {
      // A model missing from the database's tables has no state at all: zero stats.
      auto it = stats.find(model);
      if (it != stats.end()) m.stats = it->second;
    }
    return out;
  }

  Result<std::vector<std::string>> models() {
    std::vector<std::string> out;
    auto status = for_each_model("ratelimit.models", [&](const std::string& model, const State& s) {
      if (s.has_quota || !idle(s)) out.push_back(model);
    });
    if (!status) return tl::unexpected(status.error());
    std::sort(out.begin(), out.end());
    return out;
  }

  // Calls `visit` with each model that has a quota or state, advanced to now: in a read, or in
  // a write when a read would walk many rows.
  template <class F>
  Status for_each_model(const char* op, F&& visit) {
    std::lock_guard lock(db_mu_);
    if (!conn_) return closed_error(op);
    std::vector<std::pair<std::string, State>> states;
    bool done = false;
    Error error;
    bool ok = transaction(false, op, &error, [&] {
      states.clear();
      const std::int64_t now = now_ns();
      for (std::string& model : model_names()) {
        State s = load(model);
        if (!advance(model, s, now, false)) return;
        states.emplace_back(std::move(model), s);
      }
      done = true;
    });
    if (ok && !done) {
      ok = transaction(true, op, &error, [&] {
        states.clear();
        const std::int64_t now = now_ns();
        for (std::string& model : model_names()) {
          State s = load(model);
          advance(model, s, now, true);
          save(model, s);
          states.emplace_back(std::move(model), s);
        }
      });
    }
    if (!ok) return tl::unexpected(std::move(error));
    for (const auto& [model, s] : states) visit(model, s);
    return {};
  }

  // --- quotas ---

  std::optional<ModelQuota> quota(std::string_view model) {
    std::lock_guard lock(db_mu_);
    refresh_quotas_locked();
    auto it = quota_cache_.find(model);
    if (it == quota_cache_.end()) return std::nullopt;
    return it->second;
  }

  QuotaMap quotas() {
    std::lock_guard lock(db_mu_);
    refresh_quotas_locked();
    return quota_cache_;
  }

  Status set_quotas(const QuotaMap& quotas, const char* op) {
    for (const auto& [model, q] : quotas) {
      if (auto why = validate_quota(std::string_view(op).substr(10), model, q)) {
        return make_error(ErrorCode::invalid_argument, *why);
      }
    }
    {
      std::lock_guard lock(db_mu_);
      if (!conn_) return closed_error(op);
      Error error;
      const bool ok = transaction(true, op, &error, [&] {
        for (const auto& [model, q] : quotas) {
          Use u(*conn_, st_.upsert_quota);
          u.bind(1, model).bind(2, q.max_rpm).bind(3, q.max_tpm).bind(4, q.max_rpd).run();
        }
      });
      quota_version_ = -1;
      if (!ok) return tl::unexpected(std::move(error));
    }
    for (const auto& [model, q] : quotas) notify(model);
    return {};
  }

  Status remove_quota(std::string_view model) {
    {
      std::lock_guard lock(db_mu_);
      if (!conn_) return closed_error("ratelimit.remove_quota");
      Error error;
      bool removed = false;
      const bool ok = transaction(true, "ratelimit.remove_quota", &error, [&] {
        Use u(*conn_, st_.delete_quota);
        u.bind(1, model).run();
        removed = sqlite3_changes(conn_->db()) > 0;
      });
      quota_version_ = -1;
      if (!ok) return tl::unexpected(std::move(error));
      if (!removed) {
        return make_error(ErrorCode::not_found,
                          "ratelimit.remove_quota: " + model_text(model) + " has no quota");
      }
    }
    notify(model);
    return {};
  }

  Status reset(std::string_view model) {
    {
      std::lock_guard lock(db_mu_);
      if (!conn_) return closed_error("ratelimit.reset");
      Error error;
      const bool ok = transaction(true, "ratelimit.reset", &error, [&] {
        if (model.empty()) {
          for (const char* sql :
               {"DELETE FROM requests", "DELETE FROM tokens", "DELETE FROM daily",
                "DELETE FROM rl_reservations",
                "UPDATE rl_totals SET requests = 0, tokens_hi = 0, tokens_lo = 0, newest_ts = "
                "-9223372036854775807 - 1, oldest_ts = 9223372036854775807, pending = 0, "
                "day_gen = day_gen + 1"}) {
            conn_->exec(sql);
          }
          return;
        }
        State s = load(model);
        if (!s.has_totals && !s.day_row) return;  // an unknown model: a no-op
        for (const char* sql :
             {"DELETE FROM requests WHERE model = ?1", "DELETE FROM tokens WHERE model = ?1"}) {
          Use u(*conn_, cached(sql));
          u.bind(1, model).run();
        }
        {
          Use u(*conn_, cached("DELETE FROM rl_reservations WHERE model_no = ?1"));
          u.bind(1, s.model_no).run();
        }
        s.requests = 0;
        s.tokens = 0;
        s.newest = INT64_MIN;
        s.oldest = kNone;
        s.pending = 0;
        s.has_day = false;
        s.day_start = 0;
        s.day_count = 0;
        ++s.day_gen;
        s.has_totals = true;
        save(model, s);
      });
      if (!ok) return tl::unexpected(std::move(error));
    }
    if (model.empty()) {
      notify_all();
    } else {
      notify(model);
    }
    return {};
  }

  Status persist() {
    std::lock_guard lock(db_mu_);
    if (!conn_) return closed_error("ratelimit.persist");
    int log = 0, done = 0;
    const int rc =
        sqlite3_wal_checkpoint_v2(conn_->db(), nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
    if (rc != SQLITE_OK) {
      return tl::unexpected(
          to_error("ratelimit.persist", DbFailure{rc, sqlite3_errmsg(conn_->db())}));
    }
    return {};
  }

  Status load_quotas() {
    std::lock_guard lock(db_mu_);
    if (!conn_) return closed_error("ratelimit.load");
    quota_version_ = -1;
    Error error;
    if (!refresh_quotas_locked(&error)) return tl::unexpected(std::move(error));
    return {};
  }

  Status close() {
    {
      std::lock_guard lock(db_mu_);
      if (!conn_) return {};
      extra_.clear();
      conn_.reset();
    }
    notify_all();
    return {};
  }

  // --- counters ---

  // Counts a call that ended with `outcome` (no tokens to add). Any thread, any lock held.
  void count(std::string_view model, RequestOutcome outcome) {
    std::lock_guard lock(counters_mu_);
    counters_locked(model).request(outcome);
  }

  // --- waiting ---

  Result<Reservation> acquire_wait(std::string_view model, std::int64_t estimated_tokens,
                                   const WaitOptions& options, Reservation (*make)(Grant&&));
  Status wait_for_capacity(std::string_view model, std::int64_t tokens, const WaitOptions& options);

 private:
  // Runs `body` in one transaction; on failure rolls back and fills `error`.
  // REQUIRES: db_mu_ held and the connection open.
  template <class F>
  bool transaction(bool write, const char* op, Error* error, F&& body) {
    op_ = op;
    try {
      {
        Use u(*conn_, write ? st_.begin_write : st_.begin_read);
        u.run();
      }
      body();
      Use u(*conn_, st_.commit);
      u.run();
      return true;
    } catch (const DbFailure& e) {
      conn_->rollback();
      *error = to_error(op, e);
    } catch (const OpFailure& e) {
      conn_->rollback();
      *error = e.error;
    } catch (const std::bad_alloc&) {
      conn_->rollback();
      *error = Error{ErrorCode::internal, std::string(op) + ": out of memory"};
    }
    return false;
  }

  Error to_error(const char* op, const DbFailure& e) const {
    const std::string where = std::string(op) + ": sqlite " + conn_->path() + ": ";
    if (is_busy_code(e.rc)) {
      return Error{ErrorCode::unavailable,
                   where + e.message + " (another process held the database lock for more than " +
                       seconds_text(conn_->busy_budget_ns()) + "; retry later)"};
    }
    if (is_damage_code(e.rc)) {
      return Error{ErrorCode::corrupt_state, where + e.message +
                                                 " (the database is damaged; reopen it with "
                                                 "Config::recover_corrupt to move it aside)"};
    }
    return Error{ErrorCode::io_error, where + e.message};
  }

  static Decision unavailable_decision() {
    Decision d;
    d.allowed = false;
    d.code = DecisionCode::store_unavailable;
    return d;
  }

  // The counters of `model`, made on first sight (the only allocation; later calls only look
  // up). REQUIRES: counters_mu_ held.
  ModelCounters& counters_locked(std::string_view model) {
    auto it = counters_.find(model);
    if (it == counters_.end()) it = counters_.try_emplace(std::string(model)).first;
    return it->second;
  }

  sqlite3_stmt* cached(const char* sql) {
    auto it = extra_.find(sql);
    if (it != extra_.end()) return it->second;
    sqlite3_stmt* s = conn_->prepare(sql);
    extra_.emplace(sql, s);
    return s;
  }

  [[noreturn]] void corrupt(std::string_view model, const char* field, std::int64_t value) const {
    throw OpFailure{{ErrorCode::corrupt_state,
                     std::string(op_) + ": sqlite " + conn_->path() + ": " + model_text(model) +
                         ": " + field + " is negative (" + std::to_string(value) +
                         "); the database was changed by something else: reset the model or "
                         "restore a backup"}};
  }

  State load(std::string_view model) {
    State s;
    Use u(*conn_, st_.load_state);
    u.bind(1, model);
    if (!u.row()) return s;  // cannot happen: the query always yields one row
    if (u.i64(3) != 0) {
      s.has_quota = true;
      s.quota = ModelQuota{u.i64(0), u.i64(1), u.i64(2)};
      if (s.quota.max_rpm < 0) corrupt(model, "quotas.max_rpm", s.quota.max_rpm);
      if (s.quota.max_tpm < 0) corrupt(model, "quotas.max_tpm", s.quota.max_tpm);
      if (s.quota.max_rpd < 0) corrupt(model, "quotas.max_rpd", s.quota.max_rpd);
    }
    if (u.i64(12) != 0) {
      s.has_totals = true;
      s.requests = u.i64(4);
      s.tokens = join_hi_lo(u.i64(5), u.i64(6));
      s.horizon = u.i64(7);
      s.newest = u.i64(8);
      s.oldest = u.i64(9);
      s.pending = u.i64(10);
      s.day_gen = u.i64(11);
      s.model_no = u.i64(16);
      s.next_seq = u.i64(17);
      if (s.requests < 0) corrupt(model, "rl_totals.requests", s.requests);
      if (s.tokens < 0) corrupt(model, "rl_totals.tokens", u.i64(5));
    }
    if (u.i64(15) != 0) {
      s.day_row = true;
      s.has_day = true;
      s.day_start = u.i64(13);
      s.day_count = u.i64(14);
      if (s.day_count < 0) corrupt(model, "daily.day_count", s.day_count);
    }
    return s;
  }

  // Clamps rows after `now` to `now`, starts a new day after 24 h and moves the horizon to
  // now - 60 s. In a write (`write`) it changes the database and deletes some expired rows;
  // in a read it only adjusts `s` and returns false when that would mean walking more than
  // kReadScanCap rows (then the caller retries in a write).
  bool advance(std::string_view model, State& s, std::int64_t now, bool write) {
    std::int64_t h = now >= INT64_MIN + kWindowNs ? now - kWindowNs : INT64_MIN;
    if (s.newest > now || h < s.horizon) {
      // The clock is behind the database: it stepped back, or (a read) a writer committed
      // with a later time after this reader took `now`.
      if (!write) {
        const std::int64_t ahead = std::max(
            s.newest, s.horizon <= kInt64Max - kWindowNs ? s.horizon + kWindowNs : kInt64Max);
        if (static_cast<Int128>(ahead) - now > kReadSkewNs) return false;
        now = ahead;  // decide as of the snapshot's time
        h = now - kWindowNs;
      } else {
        if (h < s.horizon) {
          // Rows at or below the old horizon are not in the totals: delete them all (rare),
          // then lower the horizon so that rows clamped to `now` still count.
          delete_expired(model, s, -1);
          s.pending = 0;
          s.horizon = h;
        }
        if (s.newest > now) {
          for (sqlite3_stmt* stmt : {st_.clamp_requests, st_.clamp_tokens}) {
            Use u(*conn_, stmt);
            u.bind(1, model).bind(2, now).run();
          }
          Use u(*conn_, st_.clamp_reservations);
          u.bind(1, s.model_no).bind(2, now).run();
          s.newest = now;
          s.oldest = std::min(s.oldest, now);
        }
      }
    }
    s.now = now;
    if (s.has_day && s.day_start > now) s.day_start = now;
    if (s.has_day && static_cast<Int128>(now) - s.day_start >= kDayNs) {
      s.has_day = false;
      s.day_start = 0;
      s.day_count = 0;
      ++s.day_gen;
    }
    if (h > s.horizon) {
      if (s.oldest <= h) {
        const std::int64_t cap = write ? -1 : kReadScanCap + 1;
        std::int64_t n = 0;
        {
          Use u(*conn_, st_.count_requests_range);
          u.bind(1, model).bind(2, s.horizon).bind(3, h).bind(4, cap);
          if (u.row()) n = u.i64(0);
        }
        if (!write && n > kReadScanCap) return false;
        Int128 sum = 0;
        std::int64_t rows = 0;
        {
          Use u(*conn_, st_.tokens_range);
          u.bind(1, model).bind(2, s.horizon).bind(3, h).bind(4, cap);
          while (u.row()) {
            sum += std::max<std::int64_t>(0, u.i64(0));
            ++rows;
          }
        }
        if (!write && rows > kReadScanCap) return false;
        s.requests = std::max<std::int64_t>(0, s.requests - n);
        s.tokens = std::max<Int128>(0, s.tokens - sum);
        if (write) {
          Use u(*conn_, st_.oldest_after);
          u.bind(1, model).bind(2, h).bind(3, kNone);
          s.oldest = u.row() && !u.is_null(0) ? u.i64(0) : kNone;
          s.pending = saturating_add(s.pending, saturating_add(n, rows) + 1);
        }
      }
      s.horizon = h;
    }
    // Deleting in batches: a page is rewritten once per kDeleteBatch expired rows, not per row.
    if (write && s.pending >= kDeleteBatch) {
      s.pending = delete_expired(model, s, kDeleteBatch) ? s.pending - kDeleteBatch : 0;
      if (s.pending > 0 && s.pending < kDeleteBatch) s.pending = kDeleteBatch;
    }
    return true;
  }

  // Deletes up to `limit` (-1: all) rows at or below the horizon from each table. Returns
  // whether a table may hold more.
  bool delete_expired(std::string_view model, const State& s, int limit) {
    bool more = false;
    for (sqlite3_stmt* stmt : {st_.delete_requests, st_.delete_tokens}) {
      Use u(*conn_, stmt);
      u.bind(1, model).bind(2, s.horizon).bind(3, limit).run();
      if (limit >= 0 && sqlite3_changes(conn_->db()) >= limit) more = true;
    }
    if (s.model_no != 0) {
      Use u(*conn_, st_.delete_reservations);
      u.bind(1, s.model_no).bind(2, s.horizon).bind(3, limit).run();
      if (limit >= 0 && sqlite3_changes(conn_->db()) >= limit) more = true;
    }
    return more;
  }

  // The model's number, assigned on first use. REQUIRES: a write transaction.
  std::int64_t model_no_of(State& s) {
    if (s.model_no == 0) {
      Use u(*conn_, st_.next_model_no);
      s.model_no = u.row() ? u.i64(0) : 1;
    }
    return s.model_no;
  }

  // Writes the totals and the day of `s`. REQUIRES: a write transaction.
  void save(std::string_view model, State& s) {
    {
      Use u(*conn_, st_.upsert_totals);
      u.bind(1, model).bind(2, s.requests).bind(3, hi_of(s.tokens)).bind(4, lo_of(s.tokens));
      u.bind(5, s.horizon).bind(6, s.newest).bind(7, s.oldest).bind(8, s.pending);
      u.bind(9, s.day_gen).bind(10, model_no_of(s)).bind(11, s.next_seq).run();
      s.has_totals = true;
    }
    if (s.has_day) {
      Use u(*conn_, st_.upsert_day);
      u.bind(1, model).bind(2, s.day_start).bind(3, s.day_count).run();
    } else if (s.day_row) {
      Use u(*conn_, st_.delete_day);
      u.bind(1, model).run();
    }
    s.day_row = s.has_day;
  }

  // Appends a request (and its tokens) at max(now, newest). Returns its time; the new rowids
  // are in last_request_rowid_/last_token_rowid_ (0: no token row).
  std::int64_t append(std::string_view model, State& s, std::int64_t tokens) {
    const std::int64_t ts = std::max(s.now, s.newest);
    {
      Use u(*conn_, st_.insert_request);
      u.bind(1, model).bind(2, ts).run();
      last_request_rowid_ = sqlite3_last_insert_rowid(conn_->db());
    }
    last_token_rowid_ = 0;
    if (tokens > 0) {
      Use u(*conn_, st_.insert_token);
      u.bind(1, model).bind(2, ts).bind(3, tokens).run();
      last_token_rowid_ = sqlite3_last_insert_rowid(conn_->db());
    }
    ++s.requests;
    s.tokens += tokens;
    s.newest = ts;
    s.oldest = std::min(s.oldest, ts);
    if (!s.has_day) {
      s.has_day = true;
      s.day_start = ts;
      s.day_count = 0;
    }
    s.day_count = saturating_add(s.day_count, 1);
    return ts;
  }

  static ModelStats stats_of(const State& s) {
    ModelStats out;
    out.rpm = s.requests;
    out.tpm = clamp_to_int64(s.tokens);
    if (s.has_quota) {
      out.max_rpm = s.quota.max_rpm;
      out.max_tpm = s.quota.max_tpm;
      out.max_rpd = s.quota.max_rpd;
    }
    if (s.has_day) {
      out.rpd = s.day_count;
      out.day_start = TimePoint(Duration(s.day_start));
    }
    return out;
  }

  static bool idle(const State& s) {
    return s.requests == 0 && s.tokens == 0 && (!s.has_day || s.day_count == 0);
  }

  // The decision for `estimated_tokens` on state `s` (advanced to s.now), as Window::evaluate
  // and the local engine decide.
  Decision evaluate(std::string_view model, const State& s, std::int64_t estimated_tokens) {
    Decision d;
    d.stats = stats_of(s);
    if (estimated_tokens < 0) {
      d.code = DecisionCode::invalid_tokens;
      return d;
    }
    const ModelQuota& q = s.quota;
    if (!s.has_quota || (q.max_rpm == 0 && q.max_tpm == 0 && q.max_rpd == 0)) {
      d.allowed = true;
      d.code = s.has_quota ? DecisionCode::unlimited : DecisionCode::unknown_model;
      return d;
    }
    const std::int64_t now = s.now;
    bool denied = false;
    auto deny = [&](DecisionCode code, Duration retry) {
      if (!denied) d.code = code;
      denied = true;
      d.retry_after = std::max(d.retry_after, retry);
    };
    if (q.max_rpd > 0 && s.has_day && s.day_count >= q.max_rpd) {
      deny(DecisionCode::rpd_exceeded,
           std::max(Duration(0), until(saturating_add(s.day_start, kDayNs), now)));
    }
    if (q.max_rpm > 0 && s.requests >= q.max_rpm) {
      // The request at position count - max_rpm (0-based, in time order) must leave.
      std::int64_t ts = std::min(s.newest, now);
      {
        Use u(*conn_, st_.rpm_nth);
        u.bind(1, model).bind(2, s.horizon).bind(3, s.requests - q.max_rpm);
        if (u.row()) ts = std::min(u.i64(0), now);
      }
      deny(DecisionCode::rpm_exceeded, until(ts, now) + Duration(kWindowNs));
    }
    if (q.max_tpm > 0 && s.tokens + estimated_tokens > q.max_tpm) {
      if (estimated_tokens > q.max_tpm) {
        deny(DecisionCode::tpm_exceeded, Duration::max());
      } else {
        const Int128 need = s.tokens + estimated_tokens - q.max_tpm;
        std::int64_t ts = std::min(s.newest, now);
        Int128 acc = 0;
        Use u(*conn_, st_.tpm_scan);
        u.bind(1, model).bind(2, s.horizon);
        while (u.row()) {
          acc += std::max<std::int64_t>(0, u.i64(1));
          if (acc >= need) {
            ts = std::min(u.i64(0), now);
            break;
          }
        }
        deny(DecisionCode::tpm_exceeded, until(ts, now) + Duration(kWindowNs));
      }
    }
    d.allowed = !denied;
    return d;
  }

  // `settled` receives the reservation's model (by id: looked up by its number).
  void settle_locked(std::optional<std::string_view> model_hint, std::int64_t model_no,
                     std::int64_t seq, std::int64_t generation, bool is_commit, std::int64_t tokens,
                     const char* op, std::string* settled, std::string* released) {
    const bool from_reservation = model_hint.has_value();
    std::string model;
    if (from_reservation) {
      model = std::string(*model_hint);
    } else {
      Use u(*conn_, st_.model_by_no);
      u.bind(1, model_no);
      if (u.row()) model = u.text(0);
    }
    *settled = model;
    State s = load(model);
    if (!from_reservation && (model_no == 0 || s.model_no != model_no || seq >= s.next_seq)) {
      throw OpFailure{{ErrorCode::not_found,
                       std::string(op) + ": no reservation " + prefix_ + std::to_string(model_no) +
                           "-" + std::to_string(seq) + " was issued by this database"}};
    }
    std::int64_t ts = 0, est = 0, state = 0, request_rowid = 0, token_rowid = 0, day_gen = 0;
    bool found = false;
    {
      Use u(*conn_, st_.get_reservation);
      u.bind(1, model_no).bind(2, seq);
      if (u.row()) {
        found = true;
        ts = u.i64(0);
        est = u.i64(1);
        state = u.i64(2);
        request_rowid = u.i64(3);
        token_rowid = u.is_null(4) ? 0 : u.i64(4);
        day_gen = u.i64(5);
      }
    }
    advance(model, s, now_ns(), true);
    if (!found) {
      // Issued, and its rows have left the window (and were deleted): by id nothing changes;
      // a Reservation that was never settled still refunds its day.
      if (!is_commit && from_reservation && s.day_gen == generation && s.has_day &&
          s.day_count > 0) {
        --s.day_count;
      }
      save(model, s);
      return;
    }
    const bool gone = ts <= s.horizon;
    if (gone) {
      if (!is_commit && from_reservation && state == kReserved && day_gen == s.day_gen &&
          s.has_day && s.day_count > 0) {
        --s.day_count;
        set_reservation(model_no, seq, kCancelled, token_rowid);
      }
      save(model, s);
      return;
    }
    if (state != kReserved) {
      save(model, s);
      throw OpFailure{
          {ErrorCode::invalid_argument,
           std::string(op) + ": the reservation is already settled (commit or cancel it once)"}};
    }
    if (is_commit) {
      const Int128 delta = static_cast<Int128>(tokens) - est;
      if (token_rowid != 0) {
        Use u(*conn_, st_.set_token_count);
        u.bind(1, token_rowid).bind(2, tokens).run();
      } else if (tokens > 0) {
        Use u(*conn_, st_.insert_token);
        u.bind(1, model).bind(2, ts).bind(3, tokens).run();
        token_rowid = sqlite3_last_insert_rowid(conn_->db());
        s.oldest = std::min(s.oldest, ts);
      }
      s.tokens += delta;
      set_reservation(model_no, seq, kCommitted, token_rowid);
      if (delta < 0) *released = model;
    } else {
      {
        Use u(*conn_, st_.delete_request_rowid);
        u.bind(1, request_rowid).run();
      }
      if (token_rowid != 0) {
        Use u(*conn_, st_.delete_token_rowid);
        u.bind(1, token_rowid).run();
      }
      s.requests = std::max<std::int64_t>(0, s.requests - 1);
      s.tokens = std::max<Int128>(0, s.tokens - est);
      if (day_gen == s.day_gen && s.has_day && s.day_count > 0) --s.day_count;
      // Its reservation row stays until it expires: make sure a deletion pass comes then.
      s.oldest = std::min(s.oldest, ts);
      s.pending = saturating_add(s.pending, 1);
      set_reservation(model_no, seq, kCancelled, token_rowid);
      *released = model;
    }
    save(model, s);
  }

  void set_reservation(std::int64_t model_no, std::int64_t seq, std::int64_t state,
                       std::int64_t token_rowid) {
    Use u(*conn_, st_.set_reservation);
    u.bind(1, model_no).bind(2, seq).bind(3, state);
    if (token_rowid != 0) {
      u.bind(4, token_rowid);
    } else {
      u.bind_null(4);
    }
    u.run();
  }

  std::vector<std::string> model_names() {
    std::vector<std::string> names;
    Use u(*conn_, st_.all_models);
    while (u.row()) names.push_back(u.text(0));
    return names;
  }

  // "<store id>-<model_no>-<seq>" (lower-case hex, no leading zeros) → (model_no, seq).
  std::optional<std::pair<std::int64_t, std::int64_t>> parse_id(std::string_view id) const {
    if (id.substr(0, prefix_.size()) != prefix_) return std::nullopt;
    std::string_view rest = id.substr(prefix_.size());
    std::int64_t fields[2];
    for (int i = 0; i < 2; ++i) {
      const std::size_t end = i == 0 ? rest.find('-') : rest.size();
      if (end == std::string_view::npos || end == 0 || end > 15) return std::nullopt;
      const std::string_view digits = rest.substr(0, end);
      if (digits.front() == '0') return std::nullopt;
      for (char ch : digits) {
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return std::nullopt;
      }
      std::uint64_t v = 0;
      std::from_chars(digits.data(), digits.data() + digits.size(), v, 16);
      fields[i] = static_cast<std::int64_t>(v);
      rest = i == 0 ? rest.substr(end + 1) : std::string_view();
    }
    return std::make_pair(fields[0], fields[1]);
  }

  std::shared_ptr<Settler> settler_for(std::string_view model, std::int64_t model_no) {
    auto it = settlers_.find(model);
    if (it != settlers_.end() && it->second->model_no() == model_no) return it->second;
    if (it != settlers_.end()) settlers_.erase(it);
    auto settler =
        std::make_shared<ModelSettler>(weak_from_this(), std::string(model), model_no, prefix_);
    settlers_.emplace(std::string(model), settler);
    return settler;
  }

  // Reloads the quota copy when another connection changed the database (or `quota_version_`
  // was reset). Keeps the old copy when the store fails or is closed. REQUIRES: db_mu_ held.
  bool refresh_quotas_locked(Error* error = nullptr) {
    if (!conn_) return true;
    Error local;
    std::int64_t version = -1;
    if (quota_version_ >= 0) {
      try {
        Use u(*conn_, st_.data_version);
        if (u.row()) version = u.i64(0);
      } catch (const DbFailure& e) {
        if (error != nullptr) *error = to_error("ratelimit.load", e);
        return false;
      }
      if (version == quota_version_) return true;
    }
    QuotaMap fresh;
    const bool ok = transaction(false, "ratelimit.load", error ? error : &local, [&] {
      {
        Use u(*conn_, st_.data_version);
        if (u.row()) version = u.i64(0);
      }
      Use u(*conn_, st_.all_quotas);
      while (u.row()) {
        const std::string model = u.text(0);
        const ModelQuota q{u.i64(1), u.i64(2), u.i64(3)};
        if (auto why = validate_quota("load", model, q)) {
          throw OpFailure{{ErrorCode::corrupt_state, *why + " (in " + conn_->path() + ")"}};
        }
        fresh.emplace(model, q);
      }
    });
    if (!ok) return false;
    quota_cache_ = std::move(fresh);
    quota_version_ = version;
    return true;
  }

  // Whether another connection committed since `*version` (updated). REQUIRES: db_mu_ held.
  bool data_changed_locked(std::int64_t* version) {
    if (!conn_) return true;
    try {
      Use u(*conn_, st_.data_version);
      const std::int64_t v = u.row() ? u.i64(0) : -1;
      const bool changed = *version >= 0 && v != *version;
      *version = v;
      return changed;
    } catch (const DbFailure&) {
      return true;  // let the waiter re-check (and see the failure)
    }
  }

  void notify(std::string_view model) {
    std::lock_guard lock(wait_mu_);
    auto it = waiters_.find(model);
    if (it != waiters_.end()) wake_locked(it->second, false);
  }
  void notify_all() {
    std::lock_guard lock(wait_mu_);
    for (auto& [model, w] : waiters_) wake_locked(w, false);
  }
  static void wake_locked(ModelWaiters& w, bool except_head) {
    ++w.epoch;
    bool first = true;
    for (Waiter* x : w.queue) {
      if (!(first && except_head) && x->wake != nullptr) x->wake->request_stop();
      first = false;
    }
    if (except_head) return;
    for (Waiter* x : w.watchers) {
      if (x->wake != nullptr) x->wake->request_stop();
    }
  }

  std::optional<TimePoint> deadline_of(const WaitOptions& options) const {
    if (!options.timeout) return std::nullopt;
    return add_saturating(clock_->now(), *options.timeout);
  }

  // Sleeps until `wake`/`deadline` (the earlier; neither: until notified), until notified, or
  // until `stop`. On the system clock it also polls the database every kPollInterval and
  // returns when another process committed. REQUIRES: wait_mu_ held through `lock`.
  void sleep_locked(Waiter& self, std::unique_lock<std::mutex>& lock, std::optional<TimePoint> wake,
                    std::optional<TimePoint> deadline, const std::stop_token& stop) {
    std::stop_source source;
    self.wake = &source;
    std::stop_callback on_stop(stop, [&source] { source.request_stop(); });
    lock.unlock();
    std::optional<TimePoint> until_time = wake;
    if (deadline && (!until_time || *deadline < *until_time)) until_time = deadline;
    if (!on_system_clock_) {
      if (until_time) {
        clock_->sleep_until(*until_time, source.get_token());
      } else {
        block_until_stopped(source.get_token());
      }
    } else {
      std::int64_t version = -1;
      {
        std::lock_guard db_lock(db_mu_);
        data_changed_locked(&version);
      }
      for (;;) {
        TimePoint next = clock_->now() + kPollInterval;
        if (until_time && *until_time < next) next = *until_time;
        if (!clock_->sleep_until(next, source.get_token())) break;
        if (until_time && clock_->now() >= *until_time) break;
        std::lock_guard db_lock(db_mu_);
        if (data_changed_locked(&version)) break;
      }
    }
    lock.lock();
    self.wake = nullptr;
  }

  const Config config_;
  const std::shared_ptr<Clock> clock_;
  const bool on_system_clock_;

  std::mutex db_mu_;            // guards everything below up to wait_mu_
  std::unique_ptr<Conn> conn_;  // null once closed
  Statements st_{};
  std::map<std::string, sqlite3_stmt*, std::less<>> extra_;  // statements prepared on first use
  const std::uint64_t store_id_;
  const std::string prefix_;
  QuotaMap quota_cache_;
  std::int64_t quota_version_ = -1;
  std::map<std::string, std::shared_ptr<ModelSettler>, std::less<>> settlers_;
  std::int64_t last_request_rowid_ = 0;
  std::int64_t last_token_rowid_ = 0;
  const char* op_ = "ratelimit";  // the operation of the running transaction, for messages

  std::mutex wait_mu_;  // guards waiters_; never held while taking db_mu_
  std::map<std::string, ModelWaiters, std::less<>> waiters_;

  // A leaf lock: taken under db_mu_ or wait_mu_ (or neither), never the other way round.
  std::mutex counters_mu_;  // guards counters_ and every write to its counters
  std::map<std::string, ModelCounters, std::less<>> counters_;  // kept through close()
};

Status ModelSettler::commit(std::uint64_t seq, std::uint64_t generation, std::int64_t prompt_tokens,
                            std::int64_t output_tokens) {
  auto core = core_.lock();
  if (!core) {
    return make_error(ErrorCode::closed,
                      "ratelimit.commit: the limiter that granted this reservation is gone; "
                      "nothing was changed");
  }
  return core->settle(std::string_view(model_), model_no_, static_cast<std::int64_t>(seq),
                      static_cast<std::int64_t>(generation), true,
                      usage_tokens(prompt_tokens, output_tokens), "ratelimit.commit");
}

Status ModelSettler::cancel(std::uint64_t seq, std::uint64_t generation) {
  auto core = core_.lock();
  if (!core) {
    return make_error(ErrorCode::closed,
                      "ratelimit.cancel: the limiter that granted this reservation is gone; "
                      "nothing was changed");
  }
  return core->settle(std::string_view(model_), model_no_, static_cast<std::int64_t>(seq),
                      static_cast<std::int64_t>(generation), false, 0, "ratelimit.cancel");
}

Result<Reservation> Core::acquire_wait(std::string_view model, std::int64_t estimated_tokens,
                                       const WaitOptions& options, Reservation (*make)(Grant&&)) {
  // Every return counts the call once: here, or in grant() for a grant or a store failure.
  if (estimated_tokens < 0) {
    count(model, RequestOutcome::invalid_tokens);
    return make_error(ErrorCode::invalid_argument,
                      "ratelimit.acquire: estimated tokens must be non-negative (got " +
                          std::to_string(estimated_tokens) + ")");
  }
  const std::optional<TimePoint> deadline = deadline_of(options);
  std::unique_lock lock(wait_mu_);
  auto entry = waiters_.try_emplace(std::string(model)).first;
  ModelWaiters& w = entry->second;
  Waiter self;
  w.queue.push_back(&self);
  const auto position = std::prev(w.queue.end());
  auto leave = [&] {
    const bool was_head = w.queue.begin() == position;
    w.queue.erase(position);
    if (was_head) wake_locked(w, false);  // the next in line becomes the head
    if (w.queue.empty() && w.watchers.empty()) waiters_.erase(entry);
  };
  for (;;) {
    const std::uint64_t epoch = w.epoch;
    std::optional<TimePoint> wake;
    TimePoint now;
    if (w.queue.front() == &self) {
      lock.unlock();
      Grant g = grant(model, estimated_tokens, /*count_denial=*/false);
      lock.lock();
      if (g.settler) {
        leave();
        return make(std::move(g));
      }
      if (g.error) {
        leave();
        return tl::unexpected(std::move(*g.error));
      }
      if (g.decision.retry_after == Duration::max()) {
        leave();
        count(model, RequestOutcome::tpm_exceeded);
        return make_error(
            ErrorCode::never_satisfiable,
            "ratelimit.acquire: " + model_text(model) + ": " + std::to_string(estimated_tokens) +
                " tokens can never fit within max_tpm " + std::to_string(g.decision.stats.max_tpm));
      }
      now = TimePoint(Duration(g.now));
      wake = add_saturating(now, g.decision.retry_after);
      if (w.head_wake != *wake) {
        w.head_wake = *wake;
        wake_locked(w, true);
      }
    } else {
      lock.unlock();
      const std::optional<ModelQuota> q = quota(model);
      lock.lock();
      now = clock_->now();
      if (q && q->max_tpm > 0 && estimated_tokens > q->max_tpm) {
        leave();
        count(model, RequestOutcome::tpm_exceeded);
        return make_error(ErrorCode::never_satisfiable,
                          "ratelimit.acquire: " + model_text(model) + ": " +
                              std::to_string(estimated_tokens) +
                              " tokens can never fit within max_tpm " + std::to_string(q->max_tpm));
      }
      if (w.head_wake > now) wake = w.head_wake;
    }
    if (deadline && now >= *deadline) {
      leave();
      count(model, RequestOutcome::deadline_exceeded);
      return make_error(ErrorCode::deadline_exceeded,
                        "ratelimit.acquire: " + model_text(model) +
                            ": no capacity before the deadline (raise the timeout, or lower the "
                            "estimate)");
    }
    if (options.stop.stop_requested()) {
      leave();
      count(model, RequestOutcome::cancelled);
      return make_error(ErrorCode::cancelled,
                        "ratelimit.acquire: " + model_text(model) + ": cancelled while waiting");
    }
    if (w.epoch != epoch) continue;  // notified while the lock was released: re-check
    sleep_locked(self, lock, wake, wake ? deadline : std::nullopt, options.stop);
  }
}

Status Core::wait_for_capacity(std::string_view model, std::int64_t tokens,
                               const WaitOptions& options) {
  if (tokens < 0) {
    return make_error(ErrorCode::invalid_argument,
                      "ratelimit.wait_for_capacity: tokens must be non-negative (got " +
                          std::to_string(tokens) + ")");
  }
  const std::optional<TimePoint> deadline = deadline_of(options);
  std::unique_lock lock(wait_mu_);
  auto entry = waiters_.try_emplace(std::string(model)).first;
  ModelWaiters& w = entry->second;
  Waiter self;
  w.watchers.push_back(&self);
  const auto position = std::prev(w.watchers.end());
  auto leave = [&] {
    w.watchers.erase(position);
    if (w.queue.empty() && w.watchers.empty()) waiters_.erase(entry);
  };
  for (;;) {
    const std::uint64_t epoch = w.epoch;
    lock.unlock();
    const TimePoint now = clock_->now();
    Error failure;
    const Decision d = decide(model, tokens, &failure);
    lock.lock();
    if (d.allowed) break;
    if (d.code == DecisionCode::store_unavailable) {
      leave();
      constexpr std::string_view kDecide = "ratelimit.decide";
      if (failure.message.rfind(kDecide, 0) == 0) {
        failure.message = "ratelimit.wait_for_capacity" + failure.message.substr(kDecide.size());
      }
      return tl::unexpected(std::move(failure));
    }
    if (d.retry_after == Duration::max()) {
      leave();
      return make_error(ErrorCode::never_satisfiable,
                        "ratelimit.wait_for_capacity: " + model_text(model) + ": " +
                            std::to_string(tokens) + " tokens can never fit within max_tpm " +
                            std::to_string(d.stats.max_tpm));
    }
    if (deadline && now >= *deadline) {
      leave();
      return make_error(ErrorCode::deadline_exceeded,
                        "ratelimit.wait_for_capacity: " + model_text(model) +
                            ": no capacity before the deadline");
    }
    if (options.stop.stop_requested()) {
      leave();
      return make_error(ErrorCode::cancelled, "ratelimit.wait_for_capacity: " + model_text(model) +
                                                  ": cancelled while waiting");
    }
    if (w.epoch != epoch) continue;
    sleep_locked(self, lock, add_saturating(now, d.retry_after), deadline, options.stop);
  }
  leave();
  return {};
}

class SqliteEngine final : public Engine {
 public:
  explicit SqliteEngine(std::shared_ptr<Core> core) : core_(std::move(core)) {}
  ~SqliteEngine() override { core_->close(); }

  Decision decide(std::string_view model, std::int64_t estimated_tokens) override {
    return core_->decide(model, estimated_tokens);
  }
  Status record_usage(std::string_view model, std::int64_t prompt_tokens,
                      std::int64_t output_tokens) override {
    return core_->record_usage(model, prompt_tokens, output_tokens);
  }
  Reservation try_acquire(std::string_view model, std::int64_t estimated_tokens) override {
    if (estimated_tokens < 0) {
      Decision d = core_->decide(model, estimated_tokens);  // invalid_tokens (or the store's)
      core_->count(model, outcome_of(d));
      return denied(std::move(d));
    }
    return make(core_->grant(model, estimated_tokens, /*count_denial=*/true));
  }
  Result<Reservation> acquire(std::string_view model, std::int64_t estimated_tokens,
                              const WaitOptions& options) override {
    return core_->acquire_wait(model, estimated_tokens, options, &SqliteEngine::make);
  }
  Status wait_for_capacity(std::string_view model, std::int64_t tokens,
                           const WaitOptions& options) override {
    return core_->wait_for_capacity(model, tokens, options);
  }
  Status commit(std::string_view id, std::int64_t prompt_tokens,
                std::int64_t output_tokens) override {
    return core_->settle_by_id(id, true, usage_tokens(prompt_tokens, output_tokens),
                               "ratelimit.commit");
  }
  Status cancel(std::string_view id) override {
    return core_->settle_by_id(id, false, 0, "ratelimit.cancel");
  }
  Result<ModelStats> stats(std::string_view model) override { return core_->stats(model); }
  Result<std::map<std::string, ModelStats, std::less<>>> all_stats() override {
    return core_->all_stats();
  }
  Result<std::map<std::string, ModelMetrics, std::less<>>> metrics() override {
    return core_->metrics();
  }
  Result<std::vector<std::string>> models() override { return core_->models(); }
  std::optional<ModelQuota> quota(std::string_view model) override { return core_->quota(model); }
  QuotaMap quotas() override { return core_->quotas(); }
  Status set_quota(std::string_view model, ModelQuota quota) override {
    QuotaMap one;
    one.emplace(std::string(model), quota);
    return core_->set_quotas(one, "ratelimit.set_quota");
  }
  Status remove_quota(std::string_view model) override { return core_->remove_quota(model); }
  Status add_provider(Provider provider) override {
    const auto profiles = default_profiles();
    auto it = profiles.find(provider);
    if (it == profiles.end() || it->second.models.empty()) return {};  // seed rule: a no-op
    return core_->set_quotas(it->second.models, "ratelimit.add_provider");
  }
  Status reset(std::string_view model) override { return core_->reset(model); }
  Status persist() override { return core_->persist(); }
  Status load() override { return core_->load_quotas(); }
  Status close() override { return core_->close(); }
  const Config& config() const override { return core_->config(); }

 private:
  static Reservation make(Grant&& g) {
    if (!g.settler) return denied(std::move(g.decision));
    return granted(std::move(g.decision), std::move(g.settler), g.seq, g.generation);
  }

  std::shared_ptr<Core> core_;
};

}  // namespace

Result<std::unique_ptr<Engine>> make_sqlite_engine(Config config) {
  const char* op = "ratelimit.open";
  if (config.file_path.empty()) {
    return make_error(ErrorCode::invalid_argument, std::string(op) + ": empty database path");
  }
  auto opened = open_database(config.file_path, merged_quotas(config), config.recover_corrupt, op);
  if (!opened) return tl::unexpected(opened.error());
  try {
    auto core = std::make_shared<Core>(std::move(config), std::move(*opened));
    return std::unique_ptr<Engine>(std::make_unique<SqliteEngine>(std::move(core)));
  } catch (const DbFailure& e) {
    return make_error(ErrorCode::io_error,
                      std::string(op) + ": sqlite: preparing statements: " + e.message);
  }
}

void set_sqlite_busy_budget_for_testing(Duration budget) {
  g_busy_budget_ns.store(budget.count(), std::memory_order_relaxed);
}

void set_sqlite_fault_after_for_testing(std::int64_t steps) {
  g_fault_after.store(steps, std::memory_order_relaxed);
}

}  // namespace ratelimit::detail

namespace ratelimit {

Status migrate_yaml_to_sqlite(const std::string& yaml_path, const std::string& sqlite_path) {
  using namespace detail;
  const char* op = "ratelimit.migrate";
  auto rename_op = [&](Error e) {
    constexpr std::string_view kLoad = "ratelimit.load: ";
    if (e.message.rfind(kLoad, 0) == 0)
      e.message = std::string(op) + ": " + e.message.substr(kLoad.size());
    return tl::unexpected(std::move(e));
  };
  auto loaded = make_yaml_store(yaml_path)->load();
  if (!loaded) return rename_op(loaded.error());
  if (!loaded->has_value()) {
    return make_error(ErrorCode::not_found, std::string(op) + ": " + yaml_path +
                                                ": no such YAML state file (check the path)");
  }
  const Snapshot& snapshot = **loaded;
  for (const auto& [model, q] : snapshot.quotas) {
    if (auto why = validate_quota("migrate", model, q)) {
      return make_error(ErrorCode::corrupt_state, *why + " (in " + yaml_path + ")");
    }
  }
  auto opened = open_database(sqlite_path, QuotaMap{}, false, op);
  if (!opened) return tl::unexpected(opened.error());
  Conn& c = *opened->conn;
  const std::string where = std::string(op) + ": sqlite " + sqlite_path + ": ";
  try {
    c.exec("BEGIN IMMEDIATE");
    std::int64_t day_gen = 1;
    {
      sqlite3_stmt* s = c.prepare("SELECT coalesce(max(day_gen), 0) + 1 FROM rl_totals");
      Use u(c, s);
      if (u.row()) day_gen = u.i64(0);
    }
    if (!snapshot.quotas.empty()) {
      c.exec("DELETE FROM quotas");
      sqlite3_stmt* s = c.prepare(
          "INSERT INTO quotas (model, max_rpm, max_tpm, max_rpd) VALUES (?1, ?2, ?3, ?4)");
      for (const auto& [model, q] : snapshot.quotas) {
        Use u(c, s);
        u.bind(1, model).bind(2, q.max_rpm).bind(3, q.max_tpm).bind(4, q.max_rpd).run();
      }
    }
    for (const char* sql : {"DELETE FROM requests", "DELETE FROM tokens", "DELETE FROM daily",
                            "DELETE FROM rl_reservations"}) {
      c.exec(sql);
    }
    sqlite3_stmt* req = c.prepare("INSERT INTO requests (model, ts) VALUES (?1, ?2)");
    sqlite3_stmt* tok = c.prepare("INSERT INTO tokens (model, ts, count) VALUES (?1, ?2, ?3)");
    sqlite3_stmt* day =
        c.prepare("INSERT INTO daily (model, day_start, day_count) VALUES (?1, ?2, ?3)");
    // INT64_MIN is the "nothing" horizon: a row there could never leave the totals.
    auto clamp = [](std::int64_t t) { return std::max(t, INT64_MIN + 1); };
    for (const auto& [model, state] : snapshot.state) {
      for (std::int64_t t : state.requests) {
        Use u(c, req);
        u.bind(1, model).bind(2, clamp(t)).run();
      }
      for (const TokenEntry& e : state.tokens) {
        Use u(c, tok);
        u.bind(1, model)
            .bind(2, clamp(e.time_ns))
            .bind(3, std::max<std::int64_t>(0, e.count))
            .run();
      }
      if (state.day_start_ns != 0) {
        Use u(c, day);
        u.bind(1, model)
            .bind(2, state.day_start_ns)
            .bind(3, std::max<std::int64_t>(0, state.day_count))
            .run();
      }
    }
    rebuild_totals(c, day_gen, op);
    c.exec("COMMIT");
  } catch (const DbFailure& e) {
    c.rollback();
    ErrorCode code = ErrorCode::io_error;
    if (is_busy_code(e.rc)) code = ErrorCode::unavailable;
    if (is_damage_code(e.rc)) code = ErrorCode::corrupt_state;
    return make_error(code, where + e.message + " (the database was left as it was)");
  } catch (const OpFailure& e) {
    c.rollback();
    return tl::unexpected(e.error);
  }
  return {};
}

}  // namespace ratelimit
