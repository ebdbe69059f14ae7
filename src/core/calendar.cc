// Placeholder until the provider helper's calendar lands: Pacific days through date/tz.h.
#include "core/calendar.h"

#include <date/tz.h>

#include <chrono>

namespace ratelimit::detail {
namespace {

const date::time_zone* pacific() {
  static const date::time_zone* zone = date::locate_zone("America/Los_Angeles");
  return zone;
}

}  // namespace

std::int64_t pacific_day_start_ns(std::int64_t t_ns) {
  using namespace std::chrono;
  const sys_time<nanoseconds> t{nanoseconds(t_ns)};
  const auto local = pacific()->to_local(t);
  const auto midnight = date::floor<date::days>(local);
  const auto start = pacific()->to_sys(midnight, date::choose::earliest);
  return duration_cast<nanoseconds>(start.time_since_epoch()).count();
}

std::int64_t next_pacific_midnight_ns(std::int64_t t_ns) {
  using namespace std::chrono;
  const sys_time<nanoseconds> t{nanoseconds(t_ns)};
  const auto local = pacific()->to_local(t);
  const auto next = date::floor<date::days>(local) + date::days(1);
  const auto end = pacific()->to_sys(next, date::choose::earliest);
  return duration_cast<nanoseconds>(end.time_since_epoch()).count();
}

}  // namespace ratelimit::detail
