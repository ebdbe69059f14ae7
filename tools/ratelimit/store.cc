#include "store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <utility>

namespace ratelimit::cli {
namespace {

namespace fs = std::filesystem;

bool has_yaml_extension(const std::string& path) {
  const std::string ext = fs::path(path).extension().string();
  return ext == ".yaml" || ext == ".yml";
}

// A valid SQLite database starts with this header: never move one aside as "damaged YAML".
bool looks_like_sqlite(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char header[16] = {};
  in.read(header, sizeof header);
  return in.gcount() == 16 && std::memcmp(header, "SQLite format 3", 16) == 0;
}

// "the fix" part of a store error message for a library error.
std::string hint_for(const Error& e) {
  switch (e.code) {
    case ErrorCode::corrupt_state:
      return "repair or remove the file, or pass --recover to move it aside and start fresh";
    case ErrorCode::unavailable:
      return "another process holds the database; retry, or check for a stuck process";
    case ErrorCode::invalid_argument:
      return "set HOME or CORE_HOME, or pass --state PATH";
    default:
      return "check that the path exists and is readable and writable, or pass another --state";
  }
}

// The library's message without its advice to library callers (Config::recover_corrupt):
// the CLI gives its own (--recover).
std::string describe(const Error& e) {
  std::string text = e.to_string();
  if (const auto cut = text.find("; to start fresh"); cut != std::string::npos) text.resize(cut);
  return text;
}

}  // namespace

Failure usage_error(std::string message) { return Failure{kUsageError, std::move(message)}; }
Failure store_error(std::string message) { return Failure{kStoreError, std::move(message)}; }

// The URL with its password replaced by "***" (for banners and messages).
static std::string redacted_url(const std::string& url) {
  const std::size_t scheme = url.find("://");
  const std::size_t at = url.rfind('@');
  if (scheme == std::string::npos || at == std::string::npos || at < scheme) return url;
  const std::size_t colon = url.find(':', scheme + 3);
  const std::size_t from = colon != std::string::npos && colon < at ? colon + 1 : scheme + 3;
  return url.substr(0, from) + "***" + url.substr(at);
}

Outcome<StoreLocation> resolve_store(const StoreOptions& options) {
  StoreLocation loc;
  if (options.backend == "redis" || (options.backend.empty() && !options.redis.empty())) {
    if (!options.state.empty()) {
      return tl::unexpected(usage_error(
          "--redis (or --backend redis) conflicts with --state " + options.state +
          " (also from $RATELIMIT_STATE): the Redis store has no state file; drop one of them"));
    }
    if (options.redis.empty()) {
      return tl::unexpected(
          usage_error("--backend redis needs --redis URL (or $RATELIMIT_REDIS_URL), e.g. "
                      "--redis redis://127.0.0.1:6379/0"));
    }
    loc.backend = Backend::redis;
    loc.redis_url = options.redis;
    loc.path = redacted_url(options.redis);
    return loc;
  }
  if (!options.redis.empty()) {
    return tl::unexpected(usage_error("--redis conflicts with --backend " + options.backend +
                                      "; drop --backend (or use --backend redis)"));
  }
  const bool yaml_path = !options.state.empty() && has_yaml_extension(options.state);
  if (options.backend.empty()) {
    loc.backend = yaml_path ? Backend::yaml : Backend::sqlite;
  } else if (options.backend == "yaml") {
    loc.backend = Backend::yaml;
  } else if (options.backend == "sqlite") {
    if (yaml_path) {
      return tl::unexpected(usage_error("--backend sqlite conflicts with the YAML path --state " +
                                        options.state +
                                        "; drop --backend or give a database path such as x.db"));
    }
    loc.backend = Backend::sqlite;
  } else if (options.backend == "memory") {
    return tl::unexpected(usage_error(
        "--backend memory keeps state only inside one process: use it with `ratelimit serve`, "
        "or use --backend sqlite or --backend yaml"));
  } else {
    return tl::unexpected(usage_error("unknown --backend \"" + options.backend +
                                      "\"; use --backend sqlite, yaml or redis"));
  }
  if (!options.state.empty()) {
    loc.path = options.state;
    return loc;
  }
  auto path = default_state_path(loc.backend);
  if (!path) {
    return tl::unexpected(store_error(
        "no home directory for the default state path; set HOME or CORE_HOME, or pass --state "
        "PATH"));
  }
  loc.path = *path;
  loc.default_path = true;
  return loc;
}

int lock_yaml_path(const std::string& path, std::string& error) {
  const std::string lock_path = path + ".lock";
  const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    error = "cannot open the lock file " + lock_path + ": " + std::strerror(errno) +
            "; check that its directory exists and is writable, or pass another --state";
    return -1;
  }
  int rc = ::flock(fd, LOCK_EX | LOCK_NB);
  if (rc != 0 && errno == EWOULDBLOCK) {
    // Say why we block: a `ratelimit serve` on this file holds the lock for as long as it runs.
    std::fprintf(stderr,
                 "ratelimit: waiting for %s (another ratelimit process holds it, e.g. "
                 "`ratelimit serve` on this file; use the SQLite store to share state with a "
                 "server)\n",
                 lock_path.c_str());
    rc = -1;
    errno = EINTR;
  }
  while (rc != 0 && errno == EINTR) rc = ::flock(fd, LOCK_EX);
  if (rc != 0) {
    error = "cannot lock " + lock_path + ": " + std::strerror(errno) +
            "; use a local file system for --state";
    ::close(fd);
    return -1;
  }
  return fd;
}

Session::Session(StoreLocation location, std::unique_ptr<RateLimiter> limiter, int lock_fd)
    : location_(std::move(location)),
      limiter_(std::move(limiter)),
      lock_fd_(lock_fd),
      locked_(lock_fd >= 0) {}

Session::~Session() {
  if (limiter_) (void)limiter_->close();
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

Outcome<std::unique_ptr<Session>> Session::open(const StoreOptions& options,
                                                const StoreLocation& location) {
  if (location.backend == Backend::redis) {
    Config config;
    config.backend = Backend::redis;
    config.redis_url = location.redis_url;
    config.providers = {Provider::local};
    if (!options.providers.empty()) config.providers = options.providers;
    config.profiles = options.profiles;
    auto limiter = RateLimiter::open(std::move(config));
    if (!limiter) {
      return tl::unexpected(store_error("cannot open the Redis store " + location.path + " (" +
                                        describe(limiter.error()) +
                                        "); check --redis / $RATELIMIT_REDIS_URL and that "
                                        "redis-server runs there"));
    }
    return std::unique_ptr<Session>(new Session(location, std::move(*limiter), -1));
  }
  const fs::path parent = fs::path(location.path).parent_path();
  if (location.default_path) {
    std::error_code ec;
    fs::create_directories(parent, ec);
    if (ec) {
      return tl::unexpected(store_error("cannot create the state directory " + parent.string() +
                                        ": " + ec.message() + "; pass --state PATH"));
    }
  } else if (!parent.empty()) {
    std::error_code ec;
    if (!fs::is_directory(parent, ec)) {
      return tl::unexpected(store_error("the state directory " + parent.string() +
                                        " does not exist; create it or pass another --state"));
    }
  }

  Config config;
  config.backend = location.backend;
  config.file_path = location.path;
  config.recover_corrupt = options.recover;
  // Profile Provider::local has no models: nothing is seeded unless --provider asks for it.
  config.providers = {Provider::local};

  if (location.backend == Backend::sqlite) {
    if (!options.providers.empty()) config.providers = options.providers;
    config.profiles = options.profiles;
    auto limiter = RateLimiter::open_sqlite(location.path, std::move(config));
    if (!limiter) {
      return tl::unexpected(store_error("cannot open the state database " + location.path + " (" +
                                        describe(limiter.error()) + "); " +
                                        hint_for(limiter.error())));
    }
    return std::unique_ptr<Session>(new Session(location, std::move(*limiter), -1));
  }

  std::string lock_problem;
  const int fd = lock_yaml_path(location.path, lock_problem);
  if (fd < 0) return tl::unexpected(store_error(lock_problem));
  auto limiter = RateLimiter::open(std::move(config));
  if (!limiter) {
    ::close(fd);
    return tl::unexpected(store_error("cannot open the state file " + location.path + " (" +
                                      describe(limiter.error()) + "); " +
                                      hint_for(limiter.error())));
  }
  std::unique_ptr<Session> session(new Session(location, std::move(*limiter), fd));
  if (auto loaded = session->load(options.recover); !loaded) {
    return tl::unexpected(loaded.error());
  }
  // --provider: the profile's quotas for models that have none yet (never over `quota set`),
  // and its aliases for names that have none.
  std::vector<ProviderProfile> chosen;
  const auto bare = default_profiles();
  for (Provider p : options.providers) chosen.push_back(bare.at(p));
  for (const auto& name : options.profiles) {
    if (auto profile = find_profile(name)) chosen.push_back(std::move(*profile));
  }
  for (const ProviderProfile& profile : chosen) {
    auto held = session->limiter().aliases();
    if (!held) {
      return tl::unexpected(store_error("cannot read the aliases: " + held.error().to_string()));
    }
    for (const auto& [name, target] : profile.aliases) {
      if (held->count(name) != 0) continue;
      if (auto s = session->limiter().set_alias(name, target); !s) {
        return tl::unexpected(store_error("cannot write the " + profile.name() +
                                          " aliases: " + s.error().to_string()));
      }
      session->mark_changed();
    }
    for (const auto& [model, quota] : profile.models) {
      auto existing = session->limiter().quota(model);
      if (!existing) {
        return tl::unexpected(
            store_error("cannot read the quotas: " + existing.error().to_string()));
      }
      if (*existing) continue;
      if (auto s = session->limiter().set_quota(model, quota); !s) {
        return tl::unexpected(store_error("cannot write the " + profile.name() +
                                          " quotas: " + s.error().to_string()));
      }
      session->mark_changed();
    }
  }
  return session;
}

Outcome<void> Session::load(bool recover) {
  auto loaded = limiter_->load();
  if (loaded) return {};
  const Error& e = loaded.error();
  if (e.code == ErrorCode::corrupt_state && looks_like_sqlite(location_.path)) {
    return tl::unexpected(store_error(location_.path +
                                      " is a SQLite database, not a YAML state file; pass "
                                      "--backend sqlite (or a .db path) to use it"));
  }
  // --recover (Config::recover_corrupt): the library moved a damaged file aside and said so.
  (void)recover;
  return tl::unexpected(store_error("cannot read the state file " + location_.path + " (" +
                                    describe(e) + "); " + hint_for(e)));
}

Outcome<void> Session::finish() {
  if (location_.backend == Backend::yaml && changed_) {
    if (auto s = limiter_->persist(); !s) {
      return tl::unexpected(store_error("cannot write the state file " + location_.path + " (" +
                                        s.error().to_string() + "); " + hint_for(s.error())));
    }
    changed_ = false;
  }
  if (locked_) {
    ::flock(lock_fd_, LOCK_UN);
    locked_ = false;
  }
  return {};
}

Outcome<void> Session::lock() {
  int rc;
  do {
    rc = ::flock(lock_fd_, LOCK_EX);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    return tl::unexpected(
        store_error("cannot lock " + location_.path + ".lock: " + std::strerror(errno)));
  }
  locked_ = true;
  return {};
}

Outcome<void> Session::reacquire() {
  if (location_.backend != Backend::yaml || locked_) return {};
  if (auto s = lock(); !s) return s;
  return load(false);
}

}  // namespace ratelimit::cli
