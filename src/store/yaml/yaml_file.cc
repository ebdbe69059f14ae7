// The YAML snapshot store: go-ratelimit's state file, read and written with yaml-cpp.
//
// Saving writes a temporary file next to the target (`<target>.tmp-<pid>-XXXXXX`, where the
// target is `path` or the final target of a symbolic link there), syncs it and renames it over
// the target, so the file is always a complete old or new snapshot. A process killed mid-save
// can leave a stray temporary file behind; load never reads those, and a later save removes
// them while it holds the state's lock (`<path>.lock`) once their writer is gone.
#include "store/yaml/yaml_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <exception>
#include <filesystem>
#include <memory>
#include <new>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "limiter/validation.h"
#include "store/snapshot.h"
#include "store/yaml/yaml_reader.h"
#include "store/yaml/yaml_text.h"
#include "time_format.h"

namespace ratelimit::detail {
namespace {

// ---------------------------------------------------------------------------------------------
// Shared helpers

std::string errno_text(int error) { return std::strerror(error); }

// ---------------------------------------------------------------------------------------------
// Saving

// True when `name` can be written as a plain YAML scalar that every YAML reader (yaml-cpp, Go's
// yaml.v3) reads back as exactly that string: a letter followed by letters, digits and `._/-`,
// and not a word YAML 1.1 or 1.2 resolves to null or a boolean. Everything else is written
// double-quoted.
bool is_plain_safe_name(std::string_view name) {
  if (name.empty()) return false;
  const auto is_letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  if (!is_letter(name.front())) return false;
  for (const char c : name) {
    const bool ok =
        is_letter(c) || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '/' || c == '-';
    if (!ok) return false;
  }
  std::string lower(name);
  for (char& c : lower) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  for (const std::string_view word :
       {"null", "true", "false", "yes", "no", "on", "off", "y", "n"}) {
    if (lower == word) return false;
  }
  return true;
}

// True when `text` holds a character yaml-cpp writes raw in a double-quoted scalar although
// libyaml-based readers (Go's yaml.v3) reject it (DEL) or fold it as a line break (U+2028,
// U+2029).
bool needs_ascii_escapes(std::string_view text) {
  return text.find('\x7f') != std::string_view::npos ||
         text.find("\xe2\x80\xa8") != std::string_view::npos ||
         text.find("\xe2\x80\xa9") != std::string_view::npos;
}

// Writes a model name so that it reads back exactly: plain when that is safe, otherwise
// double-quoted (yaml-cpp escapes control characters; long names get the explicit `? ` form).
void emit_name(YAML::Emitter& out, const std::string& name) {
  if (is_plain_safe_name(name)) {
    out << name;
    return;
  }
  if (needs_ascii_escapes(name)) out << YAML::EscapeNonAscii;  // this scalar only
  out << YAML::DoubleQuoted << name;
}

void emit_timestamp(YAML::Emitter& out, std::int64_t unix_ns) { out << format_rfc3339(unix_ns); }

// Our quota keys, written only when they differ from the default (go-ratelimit ignores them).
void emit_quota_extras(YAML::Emitter& out, const ModelQuota& quota) {
  if (quota.max_input_tpm != 0) {
    out << YAML::Key << "max_input_tpm" << YAML::Value
        << static_cast<long long>(quota.max_input_tpm);
  }
  if (quota.max_output_tpm != 0) {
    out << YAML::Key << "max_output_tpm" << YAML::Value
        << static_cast<long long>(quota.max_output_tpm);
  }
  if (quota.day_start != DayStart::first_request) {
    out << YAML::Key << "day_start" << YAML::Value << std::string(to_string(quota.day_start));
  }
}

// Checks what load would reject, so that save never writes a file that cannot be read back.
Status validate(const Snapshot& snapshot, const std::string& path) {
  const auto invalid = [&](const std::string& model, const std::string& what) {
    return make_error(ErrorCode::invalid_argument,
                      std::string(kPersist) + path + ": model " + quote(model) + ": " + what);
  };
  const auto check_name = [&](const std::string& model) -> Status {
    if (!is_valid_utf8(model)) return invalid(model, "name is not valid UTF-8");
    return {};
  };
  for (const auto& [model, quota] : snapshot.quotas) {
    if (auto status = check_name(model); !status) return status;
    if (quota.max_rpm < 0) return invalid(model, "max_rpm is negative");
    if (quota.max_tpm < 0) return invalid(model, "max_tpm is negative");
    if (quota.max_rpd < 0) return invalid(model, "max_rpd is negative");
    if (quota.max_input_tpm < 0) return invalid(model, "max_input_tpm is negative");
    if (quota.max_output_tpm < 0) return invalid(model, "max_output_tpm is negative");
  }
  for (const auto& [model, state] : snapshot.state) {
    if (auto status = check_name(model); !status) return status;
    if (state.day_count < 0) return invalid(model, "day_count is negative");
    for (const TokenEntry& entry : state.tokens) {
      if (entry.count < 0) return invalid(model, "a token count is negative");
    }
  }
  return {};
}

// The file's text: quotas as flow maps, requests and tokens as flow sequences.
Result<std::string> render(const Snapshot& snapshot, const std::string& path) {
  YAML::Emitter out;
  out << YAML::BeginMap;

  out << YAML::Key << "quotas" << YAML::Value;
  if (snapshot.quotas.empty()) out << YAML::Flow;
  out << YAML::BeginMap;
  for (const auto& [model, quota] : snapshot.quotas) {
    out << YAML::Key;
    emit_name(out, model);
    out << YAML::Value << YAML::Flow << YAML::BeginMap;
    out << YAML::Key << "max_rpm" << YAML::Value << static_cast<long long>(quota.max_rpm);
    out << YAML::Key << "max_tpm" << YAML::Value << static_cast<long long>(quota.max_tpm);
    out << YAML::Key << "max_rpd" << YAML::Value << static_cast<long long>(quota.max_rpd);
    emit_quota_extras(out, quota);
    out << YAML::EndMap;
  }
  out << YAML::EndMap;

  out << YAML::Key << "state" << YAML::Value;
  if (snapshot.state.empty()) out << YAML::Flow;
  out << YAML::BeginMap;
  for (const auto& [model, state] : snapshot.state) {
    out << YAML::Key;
    emit_name(out, model);
    out << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "requests" << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (const std::int64_t t : state.requests) emit_timestamp(out, t);
    out << YAML::EndSeq;
    out << YAML::Key << "tokens" << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (const TokenEntry& entry : state.tokens) {
      out << YAML::BeginMap << YAML::Key << "time" << YAML::Value;
      emit_timestamp(out, entry.time_ns);
      out << YAML::Key << "count" << YAML::Value << static_cast<long long>(entry.count);
      if (entry.output != 0) {
        out << YAML::Key << "output" << YAML::Value << static_cast<long long>(entry.output);
      }
      out << YAML::EndMap;
    }
    out << YAML::EndSeq;
    out << YAML::Key << "day_start" << YAML::Value;
    if (state.day_start_ns == 0) {
      out << std::string(kGoZeroTime);
    } else {
      emit_timestamp(out, state.day_start_ns);
    }
    out << YAML::Key << "day_count" << YAML::Value << static_cast<long long>(state.day_count);
    out << YAML::EndMap;
  }
  out << YAML::EndMap;

  // Ours (go-ratelimit ignores keys it does not know): written only when set.
  if (!snapshot.aliases.empty()) {
    out << YAML::Key << "aliases" << YAML::Value << YAML::BeginMap;
    for (const auto& [name, target] : snapshot.aliases) {
      out << YAML::Key;
      emit_name(out, name);
      out << YAML::Value;
      emit_name(out, target);
    }
    out << YAML::EndMap;
  }
  if (snapshot.unknown_models) {
    out << YAML::Key << "unknown_models" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "policy" << YAML::Value
        << std::string(to_string(snapshot.unknown_models->policy));
    const ModelQuota& q = snapshot.unknown_models->quota;
    out << YAML::Key << "quota" << YAML::Value << YAML::Flow << YAML::BeginMap;
    out << YAML::Key << "max_rpm" << YAML::Value << static_cast<long long>(q.max_rpm);
    out << YAML::Key << "max_tpm" << YAML::Value << static_cast<long long>(q.max_tpm);
    out << YAML::Key << "max_rpd" << YAML::Value << static_cast<long long>(q.max_rpd);
    emit_quota_extras(out, q);
    out << YAML::EndMap << YAML::EndMap;
  }
  if (!snapshot.learned.empty()) {
    out << YAML::Key << "learned" << YAML::Value << YAML::BeginMap;
    for (const auto& [model, l] : snapshot.learned) {
      out << YAML::Key;
      emit_name(out, model);
      out << YAML::Value << YAML::BeginMap;
      if (l.cooldown_until_ns != 0) {
        out << YAML::Key << "cooldown_until" << YAML::Value;
        emit_timestamp(out, l.cooldown_until_ns);
      }
      const std::pair<const char*, const Learned::Ceiling*> ceilings[] = {
          {"requests", &l.requests},
          {"tokens", &l.tokens},
          {"input_tokens", &l.input},
          {"output_tokens", &l.output}};
      for (const auto& [key, c] : ceilings) {
        if (c->left < 0) continue;
        out << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginMap;
        out << YAML::Key << "left" << YAML::Value << static_cast<long long>(c->left);
        out << YAML::Key << "until" << YAML::Value;
        emit_timestamp(out, c->until_ns);
        out << YAML::EndMap;
      }
      out << YAML::EndMap;
    }
    out << YAML::EndMap;
  }

  out << YAML::EndMap;
  if (!out.good()) {
    return make_error(ErrorCode::internal,
                      std::string(kPersist) + path + ": yaml emitter: " + out.GetLastError());
  }
  std::string text(out.c_str(), out.size());
  text += '\n';
  return text;
}

}  // namespace

Error persist_io_error(const std::string& path, std::string_view step, int error) {
  std::string message = std::string(kPersist) + "cannot write " + path + ": " + errno_text(error) +
                        " (" + std::string(step);
  if (error == ENOSPC || error == EDQUOT) {
    const std::string directory = std::filesystem::path(path).parent_path().string();
    message += "; free disk space on the file system of " + (directory.empty() ? "." : directory) +
               ", or keep the state on another one";
  }
  message += ")";
  return Error{ErrorCode::io_error, std::move(message)};
}

int write_all(int fd, std::string_view data) {
  const char* next = data.data();
  std::size_t remaining = data.size();
  while (remaining > 0) {
    const ssize_t written = ::write(fd, next, remaining);
    if (written < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    next += written;
    remaining -= static_cast<std::size_t>(written);
  }
  return 0;
}

Result<std::string> resolve_state_target(const std::string& path) {
  constexpr int kMaxLinks = 40;  // as the kernel's ELOOP limit
  std::filesystem::path current(path);
  for (int hops = 0;; ++hops) {
    struct stat info {};
    if (::lstat(current.c_str(), &info) != 0 || !S_ISLNK(info.st_mode)) return current.string();
    if (hops == kMaxLinks) return tl::unexpected(persist_io_error(path, "resolve link", ELOOP));
    std::error_code ec;
    const std::filesystem::path link = std::filesystem::read_symlink(current, ec);
    if (ec)
      return tl::unexpected(persist_io_error(path, "read link " + current.string(), ec.value()));
    current = link.is_absolute() ? link : current.parent_path() / link;
  }
}

std::string temp_prefix(const std::string& target) { return target + ".tmp-"; }

int sweep_stale_temp_files(const std::string& target, std::chrono::system_clock::time_point now) {
  const std::filesystem::path target_path(target);
  const std::filesystem::path directory =
      target_path.parent_path().empty() ? std::filesystem::path(".") : target_path.parent_path();
  const std::string prefix = temp_prefix(target_path.filename().string());
  const pid_t self = ::getpid();
  int removed = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(directory, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    struct stat info {};
    if (::lstat(entry.path().c_str(), &info) != 0 || !S_ISREG(info.st_mode)) continue;
    // `<target>.tmp-<pid>-XXXXXX`; an older writer's `<target>.tmp-XXXXXX` has no pid.
    bool writer_gone = false;
    const std::string_view rest = std::string_view(name).substr(prefix.size());
    long pid = 0;
    const auto [end, parse] = std::from_chars(rest.data(), rest.data() + rest.size(), pid);
    if (parse == std::errc() && end != rest.data() && end < rest.data() + rest.size() &&
        *end == '-' && pid > 0 && pid != self) {
      writer_gone = ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
    }
    const auto modified = std::chrono::system_clock::time_point(
        std::chrono::seconds(info.st_mtim.tv_sec) + std::chrono::nanoseconds(info.st_mtim.tv_nsec));
    const bool old = now - modified > kStaleTempAge;
    if ((writer_gone || old) && ::unlink(entry.path().c_str()) == 0) ++removed;
  }
  return removed;
}

namespace {

Result<std::optional<std::string>> read_file(const std::string& path);

// Whether this process holds an exclusive flock on the file open as `fd`, through any of its
// descriptors: /proc/self/fdinfo/N lists the flock locks taken through descriptor N.
bool process_holds_flock(int fd) {
  struct stat lock_file {};
  if (::fstat(fd, &lock_file) != 0) return false;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    struct stat other {};
    if (::stat(entry.path().c_str(), &other) != 0) continue;
    if (other.st_dev != lock_file.st_dev || other.st_ino != lock_file.st_ino) continue;
    const std::string info = "/proc/self/fdinfo/" + entry.path().filename().string();
    Result<std::optional<std::string>> text = read_file(info);
    if (!text || !text->has_value()) continue;
    std::string_view rest = **text;
    for (std::size_t at = 0; (at = rest.find("lock:", at)) != std::string_view::npos; ++at) {
      const std::string_view line = rest.substr(at, rest.find('\n', at) - at);
      if (line.find("FLOCK") != std::string_view::npos &&
          line.find("WRITE") != std::string_view::npos) {
        return true;
      }
    }
  }
  return false;
}

// Removes the stale temporary files of `target` while holding the state's lock, `<path>.lock`
// (the lock `ratelimit` takes for a YAML state): taken here when it is free, or already held by
// this process (the `ratelimit` command persists under it). Held by another process: nothing is
// removed. Best effort: a failure here never fails the save.
void sweep_under_state_lock(const std::string& path, const std::string& target) {
  const std::string lock_path = path + ".lock";
  const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return;
  bool locked = false;
  int rc;
  do {
    rc = ::flock(fd, LOCK_EX | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  if (rc == 0) {
    locked = true;
  } else if (errno == EWOULDBLOCK) {
    locked = process_holds_flock(fd);
  }
  if (locked) (void)sweep_stale_temp_files(target, std::chrono::system_clock::now());
  ::close(fd);  // releases a lock taken here (not one held through another descriptor)
}

// Writes `data` to `path` through a synced temporary file renamed over it. On failure the
// temporary file is removed and `path` is untouched. A symbolic link at `path` is written
// through: the temporary file goes beside the link's final target and is renamed over it.
Status write_atomically(const std::string& path, std::string_view data) {
  Result<std::string> resolved = resolve_state_target(path);
  if (!resolved) return tl::unexpected(resolved.error());
  const std::string& target = *resolved;
  const auto fail = [&](std::string_view what, int error) {
    return tl::unexpected(persist_io_error(path, what, error));
  };

  const std::filesystem::path target_path(target);
  const std::filesystem::path directory = target_path.parent_path();
  if (!directory.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(directory, ec);
    if (ec) return fail("create directory " + directory.string(), ec.value());
  }

  // Only a regular file is replaced (a rename would replace a device node or a FIFO too).
  struct stat existing {};
  const bool exists = ::stat(target.c_str(), &existing) == 0;
  if (exists && S_ISDIR(existing.st_mode)) return fail("replace " + target, EISDIR);
  if (exists && !S_ISREG(existing.st_mode)) {
    return make_error(ErrorCode::io_error, std::string(kPersist) + "cannot write " + path + ": " +
                                               target + " is not a regular file");
  }

  sweep_under_state_lock(path, target);

  std::string temp = temp_prefix(target) + std::to_string(::getpid()) + "-XXXXXX";
  const int fd = ::mkostemp(temp.data(), O_CLOEXEC);
  if (fd < 0) return fail("create temporary file " + temp, errno);

  // Closes (if still open) and removes the temporary file, then reports `what`.
  bool fd_open = true;
  const auto abandon = [&](std::string_view what, int error) {
    if (fd_open) ::close(fd);
    ::unlink(temp.c_str());
    return fail(std::string(what) + " " + temp, error);
  };

  // Keep the permissions of the file being replaced (mkstemp creates 0600).
  if (exists) {
    if (::fchmod(fd, existing.st_mode & 07777) != 0) return abandon("chmod", errno);
  }
  if (const int error = write_all(fd, data); error != 0) return abandon("write", error);
  if (::fsync(fd) != 0) return abandon("fsync", errno);
  fd_open = false;
  if (::close(fd) != 0) return abandon("close", errno);
  if (::rename(temp.c_str(), target.c_str()) != 0) return abandon("rename to " + target, errno);

  // Make the rename itself durable.
  const std::string directory_name = directory.empty() ? "." : directory.string();
  const int dir_fd = ::open(directory_name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return fail("open directory " + directory_name, errno);
  const int synced = ::fsync(dir_fd);
  const int sync_error = errno;
  ::close(dir_fd);
  // Some file systems cannot sync a directory (EINVAL); the rename has happened either way.
  if (synced != 0 && sync_error != EINVAL) {
    return fail("fsync directory " + directory_name, sync_error);
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// Loading

// Reads the whole regular file at `path`; nullopt when it does not exist.
Result<std::optional<std::string>> read_file(const std::string& path) {
  const auto fail = [&](std::string_view what, int error) {
    return make_error(ErrorCode::io_error, std::string(kLoad) + path + ": " + std::string(what) +
                                               ": " + errno_text(error));
  };
  // O_NONBLOCK: opening a FIFO must not wait for a writer.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT) return std::optional<std::string>();
    return fail("open", errno);
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat info {};
  if (::fstat(fd, &info) != 0) return fail("stat", errno);
  if (S_ISDIR(info.st_mode)) return fail("read", EISDIR);
  if (!S_ISREG(info.st_mode)) {
    return make_error(ErrorCode::io_error, std::string(kLoad) + path + ": not a regular file");
  }
  std::string content;
  content.reserve(static_cast<std::size_t>(info.st_size));
  char buffer[65536];
  for (;;) {
    const ssize_t got = ::read(fd, buffer, sizeof buffer);
    if (got < 0) {
      if (errno == EINTR) continue;
      return fail("read", errno);
    }
    if (got == 0) break;
    content.append(buffer, static_cast<std::size_t>(got));
  }
  return std::optional<std::string>(std::move(content));
}

class YamlStore final : public SnapshotStore {
 public:
  explicit YamlStore(std::string path) : path_(std::move(path)) {}

  Status save(const Snapshot& snapshot) override {
    if (path_.empty()) {
      return make_error(ErrorCode::invalid_argument, std::string(kPersist) + "empty state path");
    }
    try {
      if (auto status = validate(snapshot, path_); !status) return status;
      Result<std::string> text = render(snapshot, path_);
      if (!text) return tl::unexpected(text.error());
      return write_atomically(path_, *text);
    } catch (const std::bad_alloc&) {
      return make_error(ErrorCode::internal, std::string(kPersist) + path_ + ": out of memory");
    } catch (const std::exception& e) {
      return make_error(ErrorCode::internal, std::string(kPersist) + path_ + ": " + e.what());
    }
  }

  Result<std::string> move_aside() override {
    auto target = resolve_state_target(path_);
    if (!target) return tl::unexpected(target.error());
    std::string head(16, '\0');
    if (std::FILE* f = std::fopen(target->c_str(), "rb")) {
      head.resize(std::fread(head.data(), 1, head.size(), f));
      std::fclose(f);
    }
    if (head == std::string("SQLite format 3\0", 16)) {
      return make_error(ErrorCode::corrupt_state,
                        std::string(kLoad) + *target +
                            " is a SQLite database, not a YAML state file; open it with "
                            "Backend::sqlite (CLI: --backend sqlite) instead of moving it aside");
    }
    const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    std::tm tm{};
    gmtime_r(&t, &tm);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    const std::string base = *target + ".corrupt-" + stamp;
    std::string aside = base;
    std::error_code ec;
    for (int i = 1; std::filesystem::exists(aside, ec); ++i) aside = base + "-" + std::to_string(i);
    if (std::rename(target->c_str(), aside.c_str()) != 0) {
      return make_error(ErrorCode::io_error, std::string(kLoad) +
                                                 "cannot move the damaged state "
                                                 "file " +
                                                 *target + " aside to " + aside + ": " +
                                                 errno_text(errno) + " (move it by hand)");
    }
    return aside;
  }

  Result<std::optional<Snapshot>> load() override {
    if (path_.empty()) {
      return make_error(ErrorCode::invalid_argument, std::string(kLoad) + "empty state path");
    }
    try {
      Result<std::optional<std::string>> content = read_file(path_);
      if (!content) return tl::unexpected(content.error());
      if (!content->has_value()) return std::optional<Snapshot>();
      YAML::Node root;
      try {
        root = YAML::Load(**content);
      } catch (const YAML::Exception& e) {
        std::string message = std::string(kLoad) + "yaml: " + path_ + ": ";
        if (!e.mark.is_null() && e.mark.line >= 0) {
          message += "line " + std::to_string(e.mark.line + 1) + ", column " +
                     std::to_string(e.mark.column + 1) + ": ";
        }
        message += e.msg;
        return make_error(ErrorCode::corrupt_state, std::move(message));
      }
      Result<Snapshot> snapshot = read_snapshot(root, path_);
      if (!snapshot) return tl::unexpected(snapshot.error());
      return std::optional<Snapshot>(std::move(*snapshot));
    } catch (const std::bad_alloc&) {
      return make_error(ErrorCode::internal, std::string(kLoad) + path_ + ": out of memory");
    } catch (const YAML::Exception& e) {
      return make_error(ErrorCode::corrupt_state,
                        std::string(kLoad) + "yaml: " + path_ + ": " + e.what());
    } catch (const std::exception& e) {
      return make_error(ErrorCode::internal, std::string(kLoad) + path_ + ": " + e.what());
    }
  }

 private:
  const std::string path_;
};

}  // namespace

std::unique_ptr<SnapshotStore> make_yaml_store(std::string path) {
  return std::make_unique<YamlStore>(std::move(path));
}

}  // namespace ratelimit::detail
