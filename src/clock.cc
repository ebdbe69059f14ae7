#include "ratelimit/clock.h"

#include <condition_variable>
#include <mutex>

namespace ratelimit {
namespace {

class SystemClock final : public Clock {
 public:
  TimePoint now() const override { return std::chrono::system_clock::now(); }

  bool sleep_until(TimePoint until, std::stop_token stop) override {
    std::mutex mu;
    std::condition_variable_any cv;
    std::unique_lock lock(mu);
    // Returns false when woken by `stop`; the predicate is never satisfied otherwise.
    cv.wait_until(lock, stop, until, [] { return false; });
    return !stop.stop_requested();
  }
};

}  // namespace

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

void ManualClock::set(TimePoint t) {
  now_ns_.store(t.time_since_epoch().count(), std::memory_order_release);
}

void ManualClock::advance(Duration d) { now_ns_.fetch_add(d.count(), std::memory_order_acq_rel); }

}  // namespace ratelimit
