// Internal: calendar days in America/Los_Angeles (Gemini's daily quotas reset at midnight
// Pacific time), across daylight saving time changes.
#pragma once

#include <cstdint>

namespace ratelimit::detail {

// The latest Pacific midnight at or before `t_ns` (wall-clock ns since the Unix epoch).
std::int64_t pacific_day_start_ns(std::int64_t t_ns);
// The first Pacific midnight strictly after `t_ns`.
std::int64_t next_pacific_midnight_ns(std::int64_t t_ns);

}  // namespace ratelimit::detail
