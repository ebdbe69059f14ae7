// Internal: saturating time arithmetic and a stop-only wait, shared by the window and the
// engines.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <stop_token>

#include "ratelimit/clock.h"
#include "util/mutex.h"

namespace ratelimit::detail {

__extension__ typedef __int128 Int128;

inline constexpr std::int64_t kInt64Max = INT64_MAX;

inline std::int64_t to_ns(TimePoint t) { return t.time_since_epoch().count(); }

// when - now, saturating (either may be far from the other after a corrupt file or clock).
inline Duration until(std::int64_t when_ns, std::int64_t now_ns) {
  const Int128 d = static_cast<Int128>(when_ns) - now_ns;
  if (d > static_cast<Int128>(kInt64Max)) return Duration::max();
  if (d < static_cast<Int128>(INT64_MIN)) return Duration::min();
  return Duration(static_cast<std::int64_t>(d));
}

// t + d, saturating at the ends of the representable range.
inline TimePoint add_saturating(TimePoint t, Duration d) {
  const Int128 sum = static_cast<Int128>(to_ns(t)) + d.count();
  if (sum > static_cast<Int128>(kInt64Max)) return TimePoint::max();
  if (sum < static_cast<Int128>(INT64_MIN)) return TimePoint::min();
  return TimePoint(Duration(static_cast<std::int64_t>(sum)));
}

// Blocks until `stop` is requested (no timeout).
inline void block_until_stopped(std::stop_token stop) {
  Mutex mu;  // guards nothing: the condition variable needs one
  std::condition_variable_any cv;
  RelockableLock lock(mu);
  cv.wait(lock, stop, [] { return false; });
}

}  // namespace ratelimit::detail
