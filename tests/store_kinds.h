// Limiters on every kind of store, for the tests that must hold on each (the conformance
// suite, the property test): memory, YAML (memory + snapshots) and SQLite, each on a
// ManualClock in a temp dir, and Redis (a redis-server started by the test program, a key
// prefix of its own per fixture, the client's clock).
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "redis_server.h"
#include "test_util.h"

namespace ratelimit::testing {

enum class StoreKind { memory, yaml, sqlite, redis };

inline std::string store_name(StoreKind kind) {
  switch (kind) {
    case StoreKind::memory:
      return "memory";
    case StoreKind::yaml:
      return "yaml";
    case StoreKind::sqlite:
      return "sqlite";
    case StoreKind::redis:
      return "redis";
  }
  return "?";
}

inline const std::vector<StoreKind>& all_store_kinds() {
  static const std::vector<StoreKind> kinds = {StoreKind::memory, StoreKind::yaml,
                                               StoreKind::sqlite, StoreKind::redis};
  return kinds;
}

// A clock whose sleeps block until the test advances it past their end (or they are woken):
// for tests that must see a waiter asleep. Deadlines move with it (monotonic_now).
class GatedClock final : public Clock {
 public:
  TimePoint now() const override {
    std::lock_guard lock(mu_);
    return now_;
  }
  bool sleep_until(TimePoint until, std::stop_token stop) override {
    std::unique_lock lock(mu_);
    ++sleepers_;
    cv_.notify_all();
    const bool reached = cv_.wait(lock, stop, [&] { return now_ >= until; });
    --sleepers_;
    cv_.notify_all();
    return reached;
  }
  std::chrono::steady_clock::time_point monotonic_now() const override {
    std::lock_guard lock(mu_);
    return std::chrono::steady_clock::time_point(now_.time_since_epoch());
  }
  void advance(Duration d) {
    std::lock_guard lock(mu_);
    now_ += d;
    cv_.notify_all();
  }
  // Waits (at most 30 s of real time, a safety net) until `n` threads sleep on this clock.
  bool wait_for_sleepers(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(30), [&] { return sleepers_ == n; });
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable_any cv_;
  TimePoint now_ = start_time();
  int sleepers_ = 0;
};

// A limiter on one kind of store with exactly `quotas`, on a ManualClock at start_time().
struct StoreFixture {
  explicit StoreFixture(StoreKind store_kind, QuotaMap quotas = {})
      : kind(store_kind), initial(std::move(quotas)) {
    limiter = open();
  }

  // Another limiter on the same state (the same file for YAML and SQLite; memory: a new,
  // empty one) and the same clock, with `quotas` for models that have none yet.
  // `on` (null: the fixture's ManualClock) is the clock of the new limiter.
  std::unique_ptr<RateLimiter> open(std::optional<QuotaMap> quotas = std::nullopt,
                                    std::shared_ptr<Clock> on = nullptr) const {
    Config config;
    config.providers = {Provider::local};  // no provider defaults: exactly the quotas given
    config.quotas = quotas ? *quotas : initial;
    config.clock = on ? std::move(on) : clock;
    config.on_warning = [w = warnings](std::string_view message) {
      w->push_back(std::string(message));
    };
    switch (kind) {
      case StoreKind::memory:
        config.backend = Backend::memory;
        break;
      case StoreKind::yaml:
        config.backend = Backend::yaml;
        config.file_path = dir.file("state.yaml");
        break;
      case StoreKind::sqlite:
        config.backend = Backend::sqlite;
        config.file_path = dir.file("state.db");
        break;
      case StoreKind::redis:
        config.backend = Backend::redis;
        config.redis_url = shared_redis().url();
        config.key_prefix = prefix;
        config.redis_use_client_clock = true;
        break;
    }
    auto opened = RateLimiter::open(std::move(config));
    if (!opened) {
      ADD_FAILURE() << store_name(kind) << ": " << opened.error().message;
      throw std::runtime_error("cannot open the store");
    }
    return std::move(*opened);
  }

  bool persists() const { return kind != StoreKind::memory; }
  // Whether other limiters on the same state see this one's changes at once.
  bool shared() const { return kind == StoreKind::sqlite || kind == StoreKind::redis; }

  StoreKind kind;
  QuotaMap initial;
  TempDir dir;
  std::string prefix = unique_prefix();  // Redis: this fixture's keys
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>(start_time());
  std::shared_ptr<std::vector<std::string>> warnings = std::make_shared<std::vector<std::string>>();
  std::unique_ptr<RateLimiter> limiter;
};

}  // namespace ratelimit::testing
