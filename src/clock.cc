#include "ratelimit/clock.h"

#include <algorithm>
#include <condition_variable>

#include "util/mutex.h"

namespace ratelimit {
namespace {

class SystemClock final : public Clock {
 public:
  TimePoint now() const override { return std::chrono::system_clock::now(); }

  bool sleep_until(TimePoint until, std::stop_token stop) override {
    // Measured on the steady clock, so that a wall clock step cannot stretch the sleep.
    const auto wall = std::chrono::system_clock::now();
    const auto steady = std::chrono::steady_clock::now();
    auto deadline = std::chrono::steady_clock::time_point::max();
    if (until <= wall) {
      deadline = steady;
    } else if (until - wall < std::chrono::steady_clock::time_point::max() - steady) {
      deadline = steady + (until - wall);
    }
    // The mutex guards nothing: a condition variable needs one to wait on `stop`.
    detail::Mutex mu;
    std::condition_variable_any cv;
    detail::RelockableLock lock(mu);
    // Returns false when woken by `stop`; the predicate is never satisfied otherwise.
    cv.wait_until(lock, stop, deadline, [] { return false; });
    return !stop.stop_requested();
  }
};

}  // namespace

std::chrono::steady_clock::time_point Clock::monotonic_now() const {
  return std::chrono::steady_clock::now();
}

std::shared_ptr<Clock> system_clock() {
  static const std::shared_ptr<Clock> clock = std::make_shared<SystemClock>();
  return clock;
}

ManualClock::ManualClock(TimePoint start) : now_ns_(start.time_since_epoch().count()) {}

TimePoint ManualClock::now() const {
  return TimePoint(Duration(now_ns_.load(std::memory_order_acquire)));
}

bool ManualClock::sleep_until(TimePoint until, std::stop_token stop) {
  if (stop.stop_requested()) return false;
  const std::int64_t target = until.time_since_epoch().count();
  std::int64_t current = now_ns_.load(std::memory_order_acquire);
  while (current < target &&
         !now_ns_.compare_exchange_weak(current, target, std::memory_order_acq_rel)) {
  }
  return true;
}

// Monotonic time is the wall time plus every step back taken so far: a step back adds to the
// offset, a step forward moves both. So advance(), the benchmarks' hot loop, stays one add.
// The two are read one after the other, so a reader racing with a step back may see a value
// below one it saw before: the highest value handed out is kept, and nothing lower is ever
// returned.
std::chrono::steady_clock::time_point ManualClock::monotonic_now() const {
  const std::int64_t wall = now_ns_.load(std::memory_order_acquire);
  const std::int64_t back = steps_back_ns_.load(std::memory_order_acquire);
  const std::int64_t value = wall + back;
  std::int64_t high = highest_ns_.load(std::memory_order_acquire);
  while (value > high &&
         !highest_ns_.compare_exchange_weak(high, value, std::memory_order_acq_rel)) {
  }
  return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(std::max(value, high)));
}

void ManualClock::set(TimePoint t) {
  const std::int64_t target = t.time_since_epoch().count();
  const std::int64_t before = now_ns_.exchange(target, std::memory_order_acq_rel);
  if (target < before) steps_back_ns_.fetch_add(before - target, std::memory_order_acq_rel);
}

void ManualClock::advance(Duration d) {
  now_ns_.fetch_add(d.count(), std::memory_order_acq_rel);
  if (d.count() < 0) steps_back_ns_.fetch_add(-d.count(), std::memory_order_acq_rel);
}

}  // namespace ratelimit
