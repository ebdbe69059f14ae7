// Internal: calendar days in America/Los_Angeles (Gemini's daily quotas reset at midnight
// Pacific time), across daylight saving time changes.
//
// The zone comes from the system's time-zone database (tzdata, /usr/share/zoneinfo) through
// Howard Hinnant's date library (libdate-tz, built with USE_OS_TZDB): it follows every rule
// change tzdata knows. Without a readable database the functions fall back to the United
// States rules in force since 2007 (PST = UTC-8, PDT = UTC-7 from the second Sunday of March,
// 02:00 local, to the first Sunday of November, 02:00 local). Thread-safe: no global state but
// the database, loaded once.
#pragma once

#include <cstdint>

namespace ratelimit::detail {

// The latest Pacific midnight at or before `t_ns` (wall-clock ns since the Unix epoch).
std::int64_t pacific_day_start_ns(std::int64_t t_ns);
// The first Pacific midnight strictly after `t_ns`.
std::int64_t next_pacific_midnight_ns(std::int64_t t_ns);

// The same from the built-in 2007 rules alone (the fallback; exposed for tests).
std::int64_t pacific_day_start_ns_by_rules(std::int64_t t_ns);
std::int64_t next_pacific_midnight_ns_by_rules(std::int64_t t_ns);
// True when the time-zone database has America/Los_Angeles (else the rules are used).
bool pacific_zone_from_tzdb();

}  // namespace ratelimit::detail
