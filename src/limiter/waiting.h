// Internal: one waiting acquire's look at the store, shared by the blocking acquire() and
// the thread-free acquire_async(), and the service that drives the thread-free ones.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stop_token>
#include <string>
#include <thread>

#include "limiter/limiter_core.h"
#include "limiter/wait_queue.h"
#include "ratelimit/limiter.h"
#include "util/mutex.h"

namespace ratelimit::detail {

using SteadyTime = std::chrono::steady_clock::time_point;

// Whether a denial can never turn into a grant by waiting (an estimate above a per-minute
// limit, or a model the unknown-model policy denies), and the error that says so.
bool never(const Decision& d);
RequestOutcome never_outcome(TokenEstimate tokens, const Decision& d);
Error never_error(const char* operation, std::string_view model, TokenEstimate tokens,
                  const Decision& d);

// The deadline of a wait on `clock`'s monotonic time (none: no timeout).
std::optional<SteadyTime> deadline_of(const Clock& clock, const WaitOptions& options);

// One acquire waiting in a model's queue.
struct AcquireWait {
  LimiterCore& core;
  StoreModel& model;
  TokenEstimate estimate;
  std::optional<SteadyTime> deadline;
  std::stop_token stop;
  WaitQueue::Waiter* self;
  WaitQueue::Position position;  // in model.waiters' queue
  bool first_look = true;
};

// What a look decided: the acquire is over (`result` holds the reservation or the error; the
// waiter has left the queue and the outcome is counted), or it waits until `until` (none:
// until woken), unless the queue's epoch has moved past `epoch`.
struct Look {
  std::optional<Result<Reservation>> result;
  std::optional<TimePoint> until;
  std::uint64_t epoch = 0;
};
Look look(AcquireWait& wait, bool cancelled);

// The first checks of acquire and acquire_async: the model's handle (an invalid name is an
// error), and a negative estimate (counted).
Result<StoreModel*> acquire_model(LimiterCore& core, std::string_view model,
                                  TokenEstimate estimate);

// An acquire_async: a waiter that holds no thread. The service steps it when it is woken or
// its time comes.
class AsyncAcquire final : public WaitQueue::Waiter,
                           public std::enable_shared_from_this<AsyncAcquire> {
 public:
  AsyncAcquire(LimiterCore& core, StoreModel& model, TokenEstimate estimate,
               std::optional<SteadyTime> deadline, std::stop_token stop, AcquireCallback done);

  // Joins the queue and looks once on the calling thread. REQUIRES: called once, first.
  void start();
  // Looks again (the service's thread). No-op once finished.
  void step();
  // Completes with `cancelled` (any thread).
  void cancel();
  bool finished() const { return finished_.load(std::memory_order_acquire); }

  void wake() override;  // called with the queue's mutex held: schedule a look

 private:
  void run_look(bool cancelled) RL_REQUIRES(step_mu_);

  LimiterCore& core_;
  StoreModel& model_;
  Mutex step_mu_;  // one look at a time
  AcquireWait wait_ RL_GUARDED_BY(step_mu_);
  bool joined_ RL_GUARDED_BY(step_mu_) = false;
  AcquireCallback done_ RL_GUARDED_BY(step_mu_);
  std::optional<Result<Reservation>> result_ RL_GUARDED_BY(step_mu_);  // once finished
  // Cross-process wake-ups while it waits on a shared store.
  std::unique_ptr<LimiterCore::WatchingChanges> watching_ RL_GUARDED_BY(step_mu_);
  std::atomic<bool> finished_{false};
  std::atomic<bool> cancel_requested_{false};
  std::optional<std::stop_callback<std::function<void()>>> on_stop_;
};

// Drives every pending acquire_async of one limiter on one thread: due looks (by the limiter's
// clock) and looks asked for by wake-ups.
class WaiterService {
 public:
  explicit WaiterService(std::shared_ptr<Clock> clock);
  ~WaiterService();  // REQUIRES: shutdown() called
  WaiterService(const WaiterService&) = delete;
  WaiterService& operator=(const WaiterService&) = delete;

  void add(const std::shared_ptr<AsyncAcquire>& waiter) RL_EXCLUDES(mu_);
  void forget(const AsyncAcquire* waiter) RL_EXCLUDES(mu_);
  void look_now(const std::shared_ptr<AsyncAcquire>& waiter) RL_EXCLUDES(mu_);
  void look_at(const std::shared_ptr<AsyncAcquire>& waiter, TimePoint when) RL_EXCLUDES(mu_);
  // Stops the thread and completes every waiter still pending with `closed`.
  void shutdown() RL_EXCLUDES(mu_);

 private:
  void run(std::stop_token stop) RL_EXCLUDES(mu_);
  void interrupt_locked() RL_REQUIRES(mu_);

  const std::shared_ptr<Clock> clock_;
  Mutex mu_;
  std::condition_variable_any cv_;
  std::multimap<TimePoint, std::weak_ptr<AsyncAcquire>> timers_ RL_GUARDED_BY(mu_);
  std::vector<std::weak_ptr<AsyncAcquire>> ready_ RL_GUARDED_BY(mu_);
  std::map<const AsyncAcquire*, std::shared_ptr<AsyncAcquire>> pending_ RL_GUARDED_BY(mu_);
  std::stop_source* sleeping_ RL_GUARDED_BY(mu_) = nullptr;  // set while the thread sleeps
  std::jthread thread_;
};

}  // namespace ratelimit::detail
