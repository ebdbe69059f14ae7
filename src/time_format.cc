#include "time_format.h"

#include <chrono>
#include <cstddef>
#include <cstdio>

namespace ratelimit::detail {
namespace {

constexpr std::int64_t kNsPerSecond = 1'000'000'000;
constexpr std::int64_t kSecondsPerDay = 86'400;

// An instant as whole seconds since the Unix epoch plus nanoseconds in [0, 1e9). Covers every
// year 0000..9999 with any offset, unlike int64 ns.
struct Instant {
  std::int64_t seconds = 0;
  std::int64_t nanos = 0;
};

// Reads exactly `count` ASCII digits at `pos`; false if there are fewer.
bool read_digits(std::string_view text, std::size_t pos, std::size_t count, int& out) {
  if (pos + count > text.size()) return false;
  int value = 0;
  for (std::size_t i = pos; i < pos + count; ++i) {
    const char c = text[i];
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
  }
  out = value;
  return true;
}

bool char_at(std::string_view text, std::size_t pos, char expected) {
  return pos < text.size() && text[pos] == expected;
}

// Parses the grammar documented at parse_rfc3339, without the int64 ns range check.
std::optional<Instant> parse_instant(std::string_view text) {
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  if (!read_digits(text, 0, 4, year) || !char_at(text, 4, '-') || !read_digits(text, 5, 2, month) ||
      !char_at(text, 7, '-') || !read_digits(text, 8, 2, day)) {
    return std::nullopt;
  }
  if (text.size() <= 10 || (text[10] != 'T' && text[10] != 't' && text[10] != ' ')) {
    return std::nullopt;
  }
  if (!read_digits(text, 11, 2, hour) || !char_at(text, 13, ':') ||
      !read_digits(text, 14, 2, minute) || !char_at(text, 16, ':') ||
      !read_digits(text, 17, 2, second)) {
    return std::nullopt;
  }
  if (hour > 23 || minute > 59 || second > 59) return std::nullopt;
  const std::chrono::year_month_day date{std::chrono::year{year},
                                         std::chrono::month{static_cast<unsigned>(month)},
                                         std::chrono::day{static_cast<unsigned>(day)}};
  if (!date.ok()) return std::nullopt;

  std::size_t pos = 19;
  std::int64_t nanos = 0;
  if (char_at(text, pos, '.')) {
    ++pos;
    std::size_t digits = 0;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
      if (++digits > 9) return std::nullopt;
      nanos = nanos * 10 + (text[pos] - '0');
      ++pos;
    }
    if (digits == 0) return std::nullopt;
    for (std::size_t i = digits; i < 9; ++i) nanos *= 10;
  }

  std::int64_t offset_seconds = 0;
  if (pos >= text.size()) return std::nullopt;
  const char zone = text[pos];
  if (zone == 'Z' || zone == 'z') {
    ++pos;
  } else if (zone == '+' || zone == '-') {
    int offset_hour = 0, offset_minute = 0;
    if (!read_digits(text, pos + 1, 2, offset_hour) || !char_at(text, pos + 3, ':') ||
        !read_digits(text, pos + 4, 2, offset_minute)) {
      return std::nullopt;
    }
    if (offset_hour > 23 || offset_minute > 59) return std::nullopt;
    offset_seconds = offset_hour * 3600 + offset_minute * 60;
    if (zone == '-') offset_seconds = -offset_seconds;
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != text.size()) return std::nullopt;

  const std::int64_t days = std::chrono::sys_days{date}.time_since_epoch().count();
  // Local time minus its offset is UTC.
  const std::int64_t seconds =
      days * kSecondsPerDay + hour * 3600 + minute * 60 + second - offset_seconds;
  return Instant{seconds, nanos};
}

// seconds * 1e9 + nanos, or nullopt when that overflows int64.
std::optional<std::int64_t> to_unix_ns(Instant instant) {
  std::int64_t seconds = instant.seconds;
  std::int64_t nanos = instant.nanos;
  // Borrow a second so that the product does not overflow for the most negative instants.
  if (seconds < 0 && nanos > 0) {
    seconds += 1;
    nanos -= kNsPerSecond;
  }
  std::int64_t result = 0;
  if (__builtin_mul_overflow(seconds, kNsPerSecond, &result)) return std::nullopt;
  if (__builtin_add_overflow(result, nanos, &result)) return std::nullopt;
  return result;
}

// Floor division and its non-negative remainder.
std::int64_t floor_div(std::int64_t a, std::int64_t b, std::int64_t& remainder) {
  std::int64_t quotient = a / b;
  remainder = a % b;
  if (remainder < 0) {
    remainder += b;
    --quotient;
  }
  return quotient;
}

}  // namespace

std::string format_rfc3339(std::int64_t unix_ns) {
  std::int64_t nanos = 0;
  const std::int64_t seconds = floor_div(unix_ns, kNsPerSecond, nanos);
  std::int64_t second_of_day = 0;
  const std::int64_t days = floor_div(seconds, kSecondsPerDay, second_of_day);
  const std::chrono::year_month_day date{std::chrono::sys_days{std::chrono::days{days}}};

  // int64 ns spans years 1677..2262: always four year digits.
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%04d-%02u-%02uT%02d:%02d:%02d",
                static_cast<int>(date.year()), static_cast<unsigned>(date.month()),
                static_cast<unsigned>(date.day()), static_cast<int>(second_of_day / 3600),
                static_cast<int>(second_of_day / 60 % 60), static_cast<int>(second_of_day % 60));
  std::string out(buffer);
  if (nanos != 0) {
    char fraction[16];
    std::snprintf(fraction, sizeof fraction, ".%09d", static_cast<int>(nanos));
    std::string_view trimmed(fraction);
    while (trimmed.back() == '0') trimmed.remove_suffix(1);
    out += trimmed;
  }
  out += 'Z';
  return out;
}

std::optional<std::int64_t> parse_rfc3339(std::string_view text) {
  const std::optional<Instant> instant = parse_instant(text);
  if (!instant) return std::nullopt;
  return to_unix_ns(*instant);
}

bool is_go_zero_time(std::string_view text) {
  const std::optional<Instant> instant = parse_instant(text);
  if (!instant) return false;
  constexpr std::chrono::year_month_day kGoZeroDate{std::chrono::year{1}, std::chrono::January,
                                                    std::chrono::day{1}};
  const std::int64_t zero_seconds =
      std::chrono::sys_days{kGoZeroDate}.time_since_epoch().count() * kSecondsPerDay;
  return instant->seconds == zero_seconds && instant->nanos == 0;
}

}  // namespace ratelimit::detail
