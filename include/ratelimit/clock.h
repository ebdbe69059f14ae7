// Time: the only source of "now" in the library, injectable for tests.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <stop_token>

namespace ratelimit {

using TimePoint = std::chrono::system_clock::time_point;  // wall time; persisted as Unix ns
using Duration = std::chrono::nanoseconds;

// A source of wall time and a way to sleep on it.
// Thread-safety: implementations must be safe to call from any number of threads.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
  // Sleeps until `until`; returns false if `stop` was requested first (or already).
  virtual bool sleep_until(TimePoint until, std::stop_token stop) = 0;
};

// The process-wide real clock (std::chrono::system_clock). Its sleep wakes at once when
// `stop` is requested.
std::shared_ptr<Clock> system_clock();

// A clock that only moves when told to; for tests. Thread-safe.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(TimePoint start);
  TimePoint now() const override;
  // Advances this clock to `until` (if later) and returns true; returns false without
  // advancing if `stop` was already requested.
  bool sleep_until(TimePoint until, std::stop_token stop) override;
  void set(TimePoint t);
  void advance(Duration d);

 private:
  std::atomic<std::int64_t> now_ns_;
};

}  // namespace ratelimit
