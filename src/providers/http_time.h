// Internal: the value syntaxes of providers' rate-limit headers (durations, HTTP dates, counts),
// strict and overflow-safe. Every parser returns nullopt for anything it does not accept
// exactly; callers count that as a bad value and ignore it.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace ratelimit::detail {

inline constexpr std::int64_t kNsPerMs = 1'000'000;
inline constexpr std::int64_t kNsPerSecond = 1'000'000'000;
// The longest wait any header may announce: the longest calendar day (25 h, the day daylight
// saving time ends). Longer durations are rejected as bad values.
inline constexpr std::int64_t kMaxSignalDurationNs = 25LL * 3600 * kNsPerSecond;

// Trims spaces and horizontal tabs (HTTP optional whitespace) from both ends.
std::string_view trim_ows(std::string_view text);

// A Go time.Duration string as OpenAI and Groq send it: one or more <decimal><unit> parts,
// unit ns, us, µs, ms, s, m or h, decimals with an optional fraction ("1s", "6m0s", "20ms",
// "1h2m3.5s", "500ms", "2m59.56s", ".5s"); a bare "0" is zero. No sign (negative is
// rejected), no spaces inside. nullopt above kMaxSignalDurationNs. Fractions below 1 ns are
// truncated.
std::optional<std::int64_t> parse_go_duration_ns(std::string_view text);

// A non-negative decimal number of `unit_ns` units with an optional fraction ("30", "1.5",
// "0.25"), e.g. retry-after (unit 1 s) and retry-after-ms (unit 1 ms). nullopt above
// kMaxSignalDurationNs, for a sign, exponent, or anything else.
std::optional<std::int64_t> parse_decimal_duration_ns(std::string_view text, std::int64_t unit_ns);

// An HTTP-date (RFC 9110 §5.6.7) as Unix ns: IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT", and
// the obsolete RFC 850 ("Sunday, 06-Nov-94 08:49:37 GMT", two-digit years 70..99 → 19xx,
// 00..69 → 20xx) and asctime ("Sun Nov  6 08:49:37 1994") forms. Names are matched
// case-sensitively, as the grammar says; the weekday is checked for spelling, not against the
// date. Years 1970..9999.
std::optional<std::int64_t> parse_http_date_ns(std::string_view text);

// A non-negative decimal integer of at most 15 digits (limits and remaining budgets). No sign,
// no fraction, no spaces.
std::optional<std::int64_t> parse_count(std::string_view text);

}  // namespace ratelimit::detail
