// Which state store an invocation of `ratelimit` uses, and the session that holds it open:
// the shared SQLite store by default, or a YAML file held under an exclusive flock from load
// to persist.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "ratelimit/config.h"
#include "ratelimit/limiter.h"
#include "ratelimit/quota.h"

namespace ratelimit::cli {

// Exit codes of the `ratelimit` command.
enum ExitCode : int { kOk = 0, kDenied = 1, kUsageError = 2, kStoreError = 3 };

// Why a command failed: its exit code (kUsageError or kStoreError; --json names them
// "usage_error" and "state_error") and a one-line message that says what was wrong and how to
// fix it.
struct Failure {
  int exit_code = kUsageError;
  std::string message;
};
template <class T>
using Outcome = tl::expected<T, Failure>;

Failure usage_error(std::string message);
Failure store_error(std::string message);

// The global options that choose the store.
struct StoreOptions {
  std::string state;                  // --state (or $RATELIMIT_STATE); empty: the default path
  std::string backend;                // --backend: "", "yaml", "sqlite" or "redis"
  std::string redis;                  // --redis (or $RATELIMIT_REDIS_URL): the Redis store
  std::vector<Provider> providers;    // --provider, in order
  std::vector<std::string> profiles;  // --provider with a tier ("openai:tier3"), in order
  bool recover = false;               // --recover
};

struct StoreLocation {
  Backend backend = Backend::sqlite;
  std::string path;           // resolved (Redis: the URL without its password, for messages)
  std::string redis_url;      // Redis: the URL as given (may hold the password; never printed)
  bool default_path = false;  // no --state: the path came from CORE_HOME/HOME
};

// A `.yaml`/`.yml` state path means the YAML store; --backend decides otherwise; the default is
// SQLite at `<home>/.core/ratelimits.db`; --redis URL (or --backend redis) the Redis store.
// Usage error: an unknown backend, --redis with --state, --backend redis without a URL, or
// --backend sqlite
// with a YAML path. Store error: no home directory for the default path.
Outcome<StoreLocation> resolve_store(const StoreOptions& options);

// An open store for one invocation. Not thread-safe (one per process).
class Session {
 public:
  // Opens the store (YAML: creates the lock file, takes the flock and loads the file; with
  // --recover, a damaged YAML file is moved aside first) and writes the --provider profiles'
  // quotas for models that have none yet.
  static Outcome<std::unique_ptr<Session>> open(const StoreOptions& options,
                                                const StoreLocation& location);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  RateLimiter& limiter() { return *limiter_; }
  const StoreLocation& location() const { return location_; }
  // Reservation ids outlive this invocation (SQLite only).
  bool ids_outlive_process() const {
    return location_.backend == Backend::sqlite || location_.backend == Backend::redis;
  }

  // The command changed the state: finish() persists it (YAML).
  void mark_changed() { changed_ = true; }
  // YAML: persists when something changed, then releases the lock. SQLite: nothing to do (every
  // change is already durable). Call only when the command succeeded: a failed command leaves
  // the file as it was.
  Outcome<void> finish();
  // YAML: takes the lock again after finish() and reloads the file (`acquire --wait` holds no
  // lock while it sleeps). SQLite: nothing to do.
  Outcome<void> reacquire();

 private:
  Session(StoreLocation location, std::unique_ptr<RateLimiter> limiter, int lock_fd);
  Outcome<void> load(bool recover);
  Outcome<void> lock();

  StoreLocation location_;
  std::unique_ptr<RateLimiter> limiter_;
  int lock_fd_ = -1;
  bool locked_ = false;
  bool changed_ = false;
};

// Takes an exclusive flock on `<path>.lock` (creating it); -1 and a message on failure.
int lock_yaml_path(const std::string& path, std::string& error);

}  // namespace ratelimit::cli
