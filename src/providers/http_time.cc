#include "providers/http_time.h"

#include <array>
#include <chrono>
#include <cstddef>

namespace ratelimit::detail {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// A decimal "I[.F]" or ".F" at text[pos...]: the integer part (at most 15 digits) and the
// fraction as up to 9 digits scaled to nanos-of-a-unit (1e9 = one whole unit). Advances pos.
struct Decimal {
  std::int64_t whole = 0;
  std::int64_t frac_e9 = 0;  // [0, 1e9)
};

std::optional<Decimal> read_decimal(std::string_view text, std::size_t& pos) {
  Decimal d;
  std::size_t int_digits = 0;
  while (pos < text.size() && is_digit(text[pos])) {
    if (++int_digits > 15) return std::nullopt;
    d.whole = d.whole * 10 + (text[pos] - '0');
    ++pos;
  }
  std::size_t frac_digits = 0;
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    std::int64_t scale = 100'000'000;
    while (pos < text.size() && is_digit(text[pos])) {
      d.frac_e9 += (text[pos] - '0') * scale;  // digits past the 9th add 0 (scale reaches 0)
      scale /= 10;
      ++frac_digits;
      ++pos;
    }
    if (frac_digits == 0) return std::nullopt;  // "1." is not a number here
  }
  if (int_digits == 0 && frac_digits == 0) return std::nullopt;
  return d;
}

// d units of unit_ns each, or nullopt above kMaxSignalDurationNs.
std::optional<std::int64_t> scale_to_ns(const Decimal& d, std::int64_t unit_ns) {
  if (d.whole > kMaxSignalDurationNs / unit_ns) return std::nullopt;
  // unit_ns <= 3.6e12 and frac_e9 < 1e9: the product fits in int64 only for units up to ~9e9,
  // so split the unit into whole seconds and the rest.
  const std::int64_t frac_ns =
      (unit_ns / kNsPerSecond) * d.frac_e9 + (unit_ns % kNsPerSecond) * d.frac_e9 / kNsPerSecond;
  const std::int64_t total = d.whole * unit_ns + frac_ns;
  if (total > kMaxSignalDurationNs) return std::nullopt;
  return total;
}

constexpr std::array<std::string_view, 12> kMonths = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
constexpr std::array<std::string_view, 7> kDays = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
constexpr std::array<std::string_view, 7> kLongDays = {
    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"};

template <std::size_t N>
bool one_of(std::string_view s, const std::array<std::string_view, N>& names) {
  for (auto n : names) {
    if (s == n) return true;
  }
  return false;
}

int month_number(std::string_view s) {
  for (std::size_t i = 0; i < kMonths.size(); ++i) {
    if (s == kMonths[i]) return static_cast<int>(i) + 1;
  }
  return 0;
}

// Exactly `count` digits at text[pos...].
bool digits(std::string_view text, std::size_t pos, std::size_t count, int& out) {
  if (pos + count > text.size()) return false;
  int v = 0;
  for (std::size_t i = pos; i < pos + count; ++i) {
    if (!is_digit(text[i])) return false;
    v = v * 10 + (text[i] - '0');
  }
  out = v;
  return true;
}

// "HH:MM:SS" at text[pos...].
bool clock_time(std::string_view text, std::size_t pos, int& h, int& m, int& s) {
  return digits(text, pos, 2, h) && pos + 2 < text.size() && text[pos + 2] == ':' &&
         digits(text, pos + 3, 2, m) && pos + 5 < text.size() && text[pos + 5] == ':' &&
         digits(text, pos + 6, 2, s);
}

std::optional<std::int64_t> to_unix_ns(int year, int month, int day, int h, int m, int s) {
  using namespace std::chrono;
  if (year < 1970 || year > 9999 || h > 23 || m > 59 || s > 60) return std::nullopt;
  const year_month_day ymd{std::chrono::year{year},
                           std::chrono::month{static_cast<unsigned>(month)},
                           std::chrono::day{static_cast<unsigned>(day)}};
  if (!ymd.ok()) return std::nullopt;
  const std::int64_t days_since_epoch = sys_days{ymd}.time_since_epoch().count();
  const std::int64_t seconds = days_since_epoch * 86'400 + h * 3600 + m * 60 + (s == 60 ? 59 : s);
  // Year 9999 is past the int64 ns range (2262): reject instead of overflowing.
  if (seconds > INT64_MAX / kNsPerSecond) return std::nullopt;
  return seconds * kNsPerSecond;
}

// "Sun, 06 Nov 1994 08:49:37 GMT"
std::optional<std::int64_t> imf_fixdate(std::string_view t) {
  if (t.size() != 29 || !one_of(t.substr(0, 3), kDays) || t.substr(3, 2) != ", " || t[7] != ' ' ||
      t[11] != ' ' || t[16] != ' ' || t.substr(25) != " GMT") {
    return std::nullopt;
  }
  int day = 0, year = 0, h = 0, m = 0, s = 0;
  const int month = month_number(t.substr(8, 3));
  if (month == 0 || !digits(t, 5, 2, day) || !digits(t, 12, 4, year) || !clock_time(t, 17, h, m, s))
    return std::nullopt;
  return to_unix_ns(year, month, day, h, m, s);
}

// "Sunday, 06-Nov-94 08:49:37 GMT"
std::optional<std::int64_t> rfc850_date(std::string_view t) {
  const std::size_t comma = t.find(',');
  if (comma == std::string_view::npos || !one_of(t.substr(0, comma), kLongDays))
    return std::nullopt;
  const std::string_view r = t.substr(comma);  // ", 06-Nov-94 08:49:37 GMT"
  if (r.size() != 24 || r.substr(0, 2) != ", " || r[4] != '-' || r[8] != '-' || r[11] != ' ' ||
      r.substr(20) != " GMT") {
    return std::nullopt;
  }
  int day = 0, yy = 0, h = 0, m = 0, s = 0;
  const int month = month_number(r.substr(5, 3));
  if (month == 0 || !digits(r, 2, 2, day) || !digits(r, 9, 2, yy) || !clock_time(r, 12, h, m, s))
    return std::nullopt;
  return to_unix_ns(yy < 70 ? 2000 + yy : 1900 + yy, month, day, h, m, s);
}

// "Sun Nov  6 08:49:37 1994"
std::optional<std::int64_t> asctime_date(std::string_view t) {
  if (t.size() != 24 || !one_of(t.substr(0, 3), kDays) || t[3] != ' ' || t[7] != ' ' ||
      t[10] != ' ' || t[19] != ' ') {
    return std::nullopt;
  }
  int day = 0, year = 0, h = 0, m = 0, s = 0;
  const int month = month_number(t.substr(4, 3));
  if (t[8] == ' ') {
    if (!digits(t, 9, 1, day)) return std::nullopt;
  } else if (!digits(t, 8, 2, day)) {
    return std::nullopt;
  }
  if (month == 0 || !clock_time(t, 11, h, m, s) || !digits(t, 20, 4, year)) return std::nullopt;
  return to_unix_ns(year, month, day, h, m, s);
}

}  // namespace

std::string_view trim_ows(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

std::optional<std::int64_t> parse_go_duration_ns(std::string_view text) {
  if (text == "0") return 0;
  if (text.empty()) return std::nullopt;
  std::size_t pos = 0;
  std::int64_t total = 0;
  while (pos < text.size()) {
    const auto d = read_decimal(text, pos);
    if (!d) return std::nullopt;
    std::int64_t unit = 0;
    const std::string_view rest = text.substr(pos);
    if (rest.starts_with("ns")) {
      unit = 1, pos += 2;
    } else if (rest.starts_with("us")) {
      unit = 1'000, pos += 2;
    } else if (rest.starts_with("\xC2\xB5s") || rest.starts_with("\xCE\xBCs")) {  // µs, μs
      unit = 1'000, pos += 3;
    } else if (rest.starts_with("ms")) {
      unit = kNsPerMs, pos += 2;
    } else if (rest.starts_with("s")) {
      unit = kNsPerSecond, pos += 1;
    } else if (rest.starts_with("m")) {
      unit = 60 * kNsPerSecond, pos += 1;
    } else if (rest.starts_with("h")) {
      unit = 3600 * kNsPerSecond, pos += 1;
    } else {
      return std::nullopt;  // a missing or unknown unit
    }
    const auto part = scale_to_ns(*d, unit);
    if (!part || *part > kMaxSignalDurationNs - total) return std::nullopt;
    total += *part;
  }
  return total;
}

std::optional<std::int64_t> parse_decimal_duration_ns(std::string_view text, std::int64_t unit_ns) {
  std::size_t pos = 0;
  const auto d = read_decimal(text, pos);
  if (!d || pos != text.size()) return std::nullopt;
  return scale_to_ns(*d, unit_ns);
}

std::optional<std::int64_t> parse_http_date_ns(std::string_view text) {
  if (auto t = imf_fixdate(text)) return t;
  if (auto t = rfc850_date(text)) return t;
  return asctime_date(text);
}

std::optional<std::int64_t> parse_count(std::string_view text) {
  if (text.empty() || text.size() > 15) return std::nullopt;
  std::int64_t v = 0;
  for (char c : text) {
    if (!is_digit(c)) return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

}  // namespace ratelimit::detail
