// Internal: RFC 3339 timestamps as go-ratelimit writes and reads them, to and from Unix ns.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ratelimit::detail {

// Go's zero time.Time as Go formats it. go-ratelimit writes it as the day_start of a model whose
// day has not started. It lies outside the int64 ns range, so parse_rfc3339 rejects it: test
// for it with is_go_zero_time.
inline constexpr std::string_view kGoZeroTime = "0001-01-01T00:00:00Z";

// Formats `unix_ns` like Go's t.UTC().Format(time.RFC3339Nano): "2026-02-19T10:00:00.123456789Z",
// trailing zeros of the fraction trimmed, no fraction at all when it is zero
// ("2026-02-19T09:00:00Z"). Defined for every int64, including instants before 1970.
std::string format_rfc3339(std::int64_t unix_ns);

// Parses `YYYY-MM-DD(T|t| )HH:MM:SS[.F](Z|z|+hh:mm|-hh:mm)`, where F is 1 to 9 digits, into
// Unix ns. An offset gives local time: "12:00:00+02:00" is 10:00:00 UTC. The text must be
// exactly that: no surrounding spaces, ASCII digits only. Returns nullopt for anything
// malformed, an invalid date (month 13, February 30), an hour above 23, a minute or second
// above 59 (no leap seconds), an offset hour above 23 or minute above 59, or an instant outside
// the int64 ns range (1677-09-21T00:12:43.145224192Z .. 2262-04-11T23:47:16.854775807Z).
std::optional<std::int64_t> parse_rfc3339(std::string_view text);

// True when `text` is well-formed in parse_rfc3339's grammar (any year 0000..9999) and denotes
// Go's zero time, 0001-01-01T00:00:00Z, in any offset ("0001-01-01T02:00:00+02:00" too).
bool is_go_zero_time(std::string_view text);

}  // namespace ratelimit::detail
