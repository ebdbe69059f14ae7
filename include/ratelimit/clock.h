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
  // Monotonic time for deadlines: never steps back, whatever the wall clock does (a wait with
  // a 3 s timeout ends after 3 s even when the wall clock is set back an hour meanwhile).
  // Default: std::chrono::steady_clock. ManualClock advances it with its wall time.
  virtual std::chrono::steady_clock::time_point monotonic_now() const;
};

// The process-wide real clock (std::chrono::system_clock). Its sleep wakes at once when
// `stop` is requested, and measures the time to sleep on the monotonic clock (a wall clock
// step during the sleep neither lengthens nor shortens it).
std::shared_ptr<Clock> system_clock();

// A clock that only moves when told to; for tests. Thread-safe.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(TimePoint start);
  TimePoint now() const override;
  // Advances this clock to `until` (if later) and returns true; returns false without
  // advancing if `stop` was already requested.
  bool sleep_until(TimePoint until, std::stop_token stop) override;
  // Moves by as much as the wall time moves forward; never back (set() to an earlier time
  // leaves it where it is).
  std::chrono::steady_clock::time_point monotonic_now() const override;
  void set(TimePoint t);
  void advance(Duration d);

 private:
  std::atomic<std::int64_t> now_ns_;
  std::atomic<std::int64_t> steps_back_ns_{0};  // monotonic_now() = now + every step back
  mutable std::atomic<std::int64_t> highest_ns_{INT64_MIN};  // the highest value handed out
};

}  // namespace ratelimit
