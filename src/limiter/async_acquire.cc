// RateLimiter::acquire_async: waiting without a thread. Each pending acquire is a waiter in its
// model's queue, like a blocking one; one service thread per limiter looks at the store for it
// when it is woken or its time comes (the same look() as the blocking acquire).
#include "limiter/waiting.h"
#include "ratelimit/limiter.h"

namespace ratelimit {
namespace detail {

AsyncAcquire::AsyncAcquire(LimiterCore& core, StoreModel& model, TokenEstimate estimate,
                           std::optional<SteadyTime> deadline, std::stop_token stop,
                           AcquireCallback done)
    : core_(core),
      model_(model),
      wait_{core, model, estimate, deadline, std::move(stop), this, {}},
      done_(std::move(done)) {}

void AsyncAcquire::start() {
  AcquireCallback callback;
  std::optional<Result<Reservation>> result;
  std::stop_token stop;
  {
    MutexLock lock(step_mu_);
    stop = wait_.stop;
    watching_ = std::make_unique<LimiterCore::WatchingChanges>(core_);
    wait_.position = model_.waiters.join_queue(this);
    joined_ = true;
    run_look(false);
    if (finished()) {
      callback = std::move(done_);
      result = std::move(result_);
    }
  }
  if (callback) {
    callback(std::move(*result));
    return;
  }
  // A stop request schedules a look, which sees it and completes with `cancelled`.
  std::weak_ptr<AsyncAcquire> self = weak_from_this();
  on_stop_.emplace(stop, std::function<void()>([self, &core = core_] {
                     if (auto w = self.lock(); w && !w->finished()) core.service().look_now(w);
                   }));
}

void AsyncAcquire::step() {
  AcquireCallback callback;
  std::optional<Result<Reservation>> result;
  {
    MutexLock lock(step_mu_);
    if (finished() || !joined_) return;
    run_look(cancel_requested_.load(std::memory_order_acquire));
    if (!finished()) return;
    callback = std::move(done_);
    result = std::move(result_);
  }
  core_.service().forget(this);
  if (callback) callback(std::move(*result));
}

void AsyncAcquire::cancel() {
  cancel_requested_.store(true, std::memory_order_release);
  if (!finished()) core_.service().look_now(shared_from_this());
}

void AsyncAcquire::wake() { core_.service().look_now(shared_from_this()); }

void AsyncAcquire::run_look(bool cancelled) {
  Look l = look(wait_, cancelled);
  if (l.result) {
    result_ = std::move(l.result);
    watching_.reset();
    finished_.store(true, std::memory_order_release);
  } else if (l.until) {
    core_.service().look_at(shared_from_this(), *l.until);
  }
  // Otherwise it waits to be woken (the head acts, or capacity is released).
}

WaiterService::WaiterService(std::shared_ptr<Clock> clock)
    : clock_(std::move(clock)), thread_([this](std::stop_token stop) { run(stop); }) {}

WaiterService::~WaiterService() { shutdown(); }

void WaiterService::add(const std::shared_ptr<AsyncAcquire>& waiter) {
  MutexLock lock(mu_);
  pending_.emplace(waiter.get(), waiter);
}

void WaiterService::forget(const AsyncAcquire* waiter) {
  MutexLock lock(mu_);
  pending_.erase(waiter);
}

void WaiterService::look_now(const std::shared_ptr<AsyncAcquire>& waiter) {
  MutexLock lock(mu_);
  ready_.push_back(waiter);
  interrupt_locked();
}

void WaiterService::look_at(const std::shared_ptr<AsyncAcquire>& waiter, TimePoint when) {
  MutexLock lock(mu_);
  const bool earliest = timers_.empty() || when < timers_.begin()->first;
  timers_.emplace(when, waiter);
  if (earliest) interrupt_locked();
}

void WaiterService::interrupt_locked() {
  if (sleeping_ != nullptr) sleeping_->request_stop();
  cv_.notify_all();
}

void WaiterService::run(std::stop_token stop) {
  while (!stop.stop_requested()) {
    std::vector<std::weak_ptr<AsyncAcquire>> due;
    std::optional<TimePoint> next;
    std::stop_source interrupt;
    {
      RelockableLock lock(mu_);
      if (ready_.empty() && timers_.empty()) {
        cv_.wait(lock, stop, [this]() RL_NO_THREAD_SAFETY_ANALYSIS {
          return !ready_.empty() || !timers_.empty();
        });
        continue;
      }
      due.swap(ready_);
      // Timers of waiters that have completed (or are gone) keep nothing waiting.
      while (!timers_.empty()) {
        auto waiter = timers_.begin()->second.lock();
        if (waiter != nullptr && !waiter->finished()) break;
        timers_.erase(timers_.begin());
      }
      const TimePoint now = clock_->now();
      while (!timers_.empty() && timers_.begin()->first <= now) {
        due.push_back(timers_.begin()->second);
        timers_.erase(timers_.begin());
      }
      if (due.empty()) {
        if (timers_.empty()) continue;
        next = timers_.begin()->first;
        sleeping_ = &interrupt;
      }
    }
    if (next) {
      {
        std::stop_callback on_stop(stop, [&interrupt] { interrupt.request_stop(); });
        clock_->sleep_until(*next, interrupt.get_token());
      }
      MutexLock lock(mu_);
      sleeping_ = nullptr;
      continue;
    }
    for (const auto& weak : due) {
      if (auto waiter = weak.lock()) waiter->step();
    }
  }
}

void WaiterService::shutdown() {
  if (thread_.joinable()) {
    thread_.request_stop();
    thread_.join();
  }
  // Whatever is still pending completes now (the limiter is closed: each look says so).
  std::vector<std::shared_ptr<AsyncAcquire>> left;
  {
    MutexLock lock(mu_);
    for (const auto& [ptr, waiter] : pending_) left.push_back(waiter);
    timers_.clear();
    ready_.clear();
  }
  for (const auto& waiter : left) waiter->step();
}

}  // namespace detail

void PendingAcquire::cancel() {
  if (auto waiter = waiter_.lock()) waiter->cancel();
}

bool PendingAcquire::done() const {
  auto waiter = waiter_.lock();
  return waiter == nullptr || waiter->finished();
}

PendingAcquire RateLimiter::acquire_async(std::string_view model, std::int64_t estimated_tokens,
                                          AcquireCallback done, WaitOptions options) {
  return acquire_async(model, TokenEstimate{estimated_tokens, 0}, std::move(done),
                       std::move(options));
}

PendingAcquire RateLimiter::acquire_async(std::string_view model, TokenEstimate estimate,
                                          AcquireCallback done, WaitOptions options) {
  detail::LimiterCore& core = *core_;
  const auto deadline = detail::deadline_of(*core.clock, options);
  auto found = detail::acquire_model(core, model, estimate);
  if (!found) {
    done(tl::unexpected(found.error()));
    return PendingAcquire();
  }
  auto waiter = std::make_shared<detail::AsyncAcquire>(core, **found, estimate, deadline,
                                                       options.stop, std::move(done));
  core.service().add(waiter);
  waiter->start();
  if (waiter->finished()) core.service().forget(waiter.get());
  return detail::LimiterCore::pending(waiter);
}

}  // namespace ratelimit
