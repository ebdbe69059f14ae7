// Internal: what a RateLimiter holds, and the pieces its methods share.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <thread>

#include "ratelimit/limiter.h"
#include "store/store.h"
#include "util/mutex.h"

namespace ratelimit::detail {

// Builds Reservations (their constructor is private to this friend).
struct Grants {
  static Reservation granted(Decision decision, std::shared_ptr<StoreModel> model, EntryRef entry) {
    return Reservation(std::move(decision), std::move(model), entry.seq, entry.generation);
  }
  static Reservation denied(Decision decision) {
    return Reservation(std::move(decision), nullptr, 0, 0);
  }
  // try_acquire's check, with the decision written straight into the Reservation.
  static Reservation check(StoreModel& model, const CheckRequest& request) {
    Reservation r;
    const CheckOutcome o = model.check_into(request, r.decision_);
    r.decision_.resolved_model = model.name;
    if (r.decision_.allowed) {
      r.model_ = model.shared_from_this();
      r.seq_ = o.entry.seq;
      r.generation_ = o.entry.generation;
    }
    return r;
  }
};

class WaiterService;

struct LimiterCore {
  LimiterCore(Config resolved, std::unique_ptr<Store> opened);
  ~LimiterCore();

  // Wraps a limiter around a store (open(), and tests that give a store options).
  static std::unique_ptr<RateLimiter> make_limiter(std::unique_ptr<LimiterCore> core);

  // The handle whose quota and usage `name` uses (itself, or what it resolves to), for an
  // operation that creates state (try_acquire, acquire, record, observe, wait_for_capacity):
  // validates a name the store has not seen. Counts an invalid name.
  Result<StoreModel*> model_for(std::string_view name, const char* operation);
  // The resolved handle for `name`, whose own handle is `own` (null: none yet). With `create`
  // false and no handle, an unknown name gives null (nothing is made for it). The exact-name
  // path is two atomic loads once resolved (the cache in StoreModel::resolution).
  Result<StoreModel*> target_of(std::string_view name, StoreModel* own, bool create,
                                const char* operation) {
    if (own != nullptr) [[likely]] {
      // The hot path: a name that resolved to itself under the current epoch.
      const std::uint64_t r = own->resolution.load(std::memory_order_acquire);
      if (static_cast<std::uint32_t>(r) == own->index &&
          (r >> 32) == (store->config_epoch() & 0xffffffffu)) {
        return own;
      }
    }
    return resolve_target(name, own, create, operation);
  }
  // target_of past its hot path: another handle's cache entry, or a resolution.
  Result<StoreModel*> resolve_target(std::string_view name, StoreModel* own, bool create,
                                     const char* operation);
  // The name whose quota `name` uses: exact, a configured alias, then the family rule (strip a
  // leading "models/", then one trailing -YYYY-MM-DD, -YYYYMMDD, -latest, -NNN or -vN at a
  // time, trying an exact name or alias after each). nullopt: no quota anywhere.
  // Store errors name `operation`.
  Result<std::optional<std::string>> resolve_name(std::string_view name, const char* operation);
  // A name check for operations that create nothing (stats, quotas, reset): a name the store
  // knows is valid; any other is checked. Counts an invalid name.
  Status check_name(std::string_view name, const char* operation);

  Error closed_error(const char* operation) const;

  // Counts a name without a quota (LimiterMetrics::unknown_models) and warns once per name
  // (Config::on_warning: the CLI and the server log it). The first kMaxUnknownReported names
  // are remembered, whether a handle was made for them (try_acquire, record) or not (decide,
  // stats); names past that bound are neither counted nor logged.
  void report_unknown(std::string_view name, const char* operation) RL_EXCLUDES(unknown_mu);
  static constexpr std::size_t kMaxUnknownReported = 10'000;

  // The thread that drives acquire_async waiters, started on first use.
  WaiterService& service() RL_EXCLUDES(watcher_mu);
  static PendingAcquire pending(const std::shared_ptr<AsyncAcquire>& waiter) {
    return PendingAcquire(waiter);
  }
  bool is_closed() const { return closed.load(std::memory_order_acquire); }

  // Wakes every waiter of every model (a change another process made, close, load).
  void wake_everyone();
  // While a waiter waits on a shared store, a thread turns the store's change signal into
  // wake-ups (started with the first such waiter, parked while none waits).
  class WatchingChanges {
   public:
    explicit WatchingChanges(LimiterCore& core);
    ~WatchingChanges();
    WatchingChanges(const WatchingChanges&) = delete;
    WatchingChanges& operator=(const WatchingChanges&) = delete;

   private:
    LimiterCore* core_;  // null: not a shared store
  };

  const Config config;
  const std::shared_ptr<Clock> clock;
  const std::unique_ptr<Store> store;
  std::atomic<bool> closed{false};
  std::atomic<std::uint64_t> invalid_model{0};
  std::atomic<std::uint64_t> unknown_models{0};
  std::atomic<std::uint64_t> provider_values_ignored{0};

  Mutex unknown_mu;
  std::set<std::string, std::less<>> unknown_names RL_GUARDED_BY(unknown_mu);

  Mutex watcher_mu;
  std::condition_variable_any watcher_cv;
  int shared_waiters RL_GUARDED_BY(watcher_mu) = 0;
  std::jthread watcher RL_GUARDED_BY(watcher_mu);
  std::unique_ptr<WaiterService> service_ RL_GUARDED_BY(watcher_mu);
};

// Settles a reservation's entry and wakes the model's waiters when capacity grew.
Status settle_entry(StoreModel& model, EntryRef entry, const SettleRequest& request);

}  // namespace ratelimit::detail
