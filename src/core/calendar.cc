#include "core/calendar.h"

#include <date/tz.h>

#include <chrono>
#include <exception>

namespace ratelimit::detail {
namespace {

using std::chrono::days;
using std::chrono::nanoseconds;

constexpr std::int64_t kNsPerHour = 3'600'000'000'000;
constexpr std::int64_t kNsPerDay = 24 * kNsPerHour;

// Floor division for instants before 1970.
std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  const std::int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

// --- the built-in rules ---------------------------------------------------------------------

// Days since the epoch of the n-th (1-based) Sunday of `month` in `year`.
std::int64_t nth_sunday(int year, unsigned month, unsigned n) {
  using namespace std::chrono;
  const sys_days d{
      year_month_weekday{std::chrono::year{year}, std::chrono::month{month}, Sunday[n]}};
  return d.time_since_epoch().count();
}

// The UTC offset (ns, negative) in force at UTC instant t under the 2007 US rules.
std::int64_t rules_offset_ns(std::int64_t t_ns) {
  using namespace std::chrono;
  const sys_days day{std::chrono::days{floor_div(t_ns, kNsPerDay)}};
  const int year = static_cast<int>(year_month_day{day}.year());
  // 02:00 PST = 10:00 UTC; 02:00 PDT = 09:00 UTC.
  const std::int64_t dst_start = nth_sunday(year, 3, 2) * kNsPerDay + 10 * kNsPerHour;
  const std::int64_t dst_end = nth_sunday(year, 11, 1) * kNsPerDay + 9 * kNsPerHour;
  return (t_ns >= dst_start && t_ns < dst_end) ? -7 * kNsPerHour : -8 * kNsPerHour;
}

// UTC instant of local midnight starting local day `local_day` (days since the epoch). Midnight
// is never skipped or repeated in this zone (the changes are at 02:00), so the offset in force
// at 08:00 UTC of that date (00:00 or 01:00 local) is the one at midnight.
std::int64_t rules_midnight_ns(std::int64_t local_day) {
  const std::int64_t base = local_day * kNsPerDay;
  return base - rules_offset_ns(base + 8 * kNsPerHour);
}

// --- the time-zone database -------------------------------------------------------------------

const date::time_zone* pacific_zone() {
  static const date::time_zone* const zone = []() -> const date::time_zone* {
    try {
      return date::locate_zone("America/Los_Angeles");
    } catch (const std::exception&) {
      return nullptr;
    }
  }();
  return zone;
}

// The local day containing t and the UTC instant of its midnight, shifted by `day_offset`
// days, from the database; false if it is unusable.
bool tzdb_midnight_ns(std::int64_t t_ns, int day_offset, std::int64_t& out) {
  const date::time_zone* zone = pacific_zone();
  if (zone == nullptr) return false;
  try {
    const date::sys_time<nanoseconds> tp{nanoseconds{t_ns}};
    const auto local = zone->to_local(tp);
    const auto local_day = date::floor<days>(local) + days{day_offset};
    const auto start = zone->to_sys(local_day, date::choose::earliest);
    out = std::chrono::duration_cast<nanoseconds>(start.time_since_epoch()).count();
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace

std::int64_t pacific_day_start_ns_by_rules(std::int64_t t_ns) {
  const std::int64_t local_day = floor_div(t_ns + rules_offset_ns(t_ns), kNsPerDay);
  return rules_midnight_ns(local_day);
}

std::int64_t next_pacific_midnight_ns_by_rules(std::int64_t t_ns) {
  const std::int64_t local_day = floor_div(t_ns + rules_offset_ns(t_ns), kNsPerDay);
  return rules_midnight_ns(local_day + 1);
}

bool pacific_zone_from_tzdb() { return pacific_zone() != nullptr; }

std::int64_t pacific_day_start_ns(std::int64_t t_ns) {
  std::int64_t out = 0;
  if (tzdb_midnight_ns(t_ns, 0, out)) return out;
  return pacific_day_start_ns_by_rules(t_ns);
}

std::int64_t next_pacific_midnight_ns(std::int64_t t_ns) {
  std::int64_t out = 0;
  if (tzdb_midnight_ns(t_ns, 1, out)) return out;
  return next_pacific_midnight_ns_by_rules(t_ns);
}

}  // namespace ratelimit::detail
