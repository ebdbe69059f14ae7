// Argument checks and human formatting shared by the `ratelimit` commands: model names, counts,
// durations. No CLI11 or JSON here.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ratelimit/clock.h"

namespace ratelimit::cli {

// The longest model name the CLI accepts, in bytes.
inline constexpr std::size_t kMaxModelBytes = 256;

// Why `name` is not an acceptable model name ("" is empty, control characters — C0, DEL and
// C1 in UTF-8 — or more than kMaxModelBytes bytes), or nullopt when it is fine.
std::optional<std::string> model_name_problem(std::string_view name);

// A non-negative decimal integer that fits in int64 ("0", "1500"); nullopt for anything else
// ("-1", "1e3", " 5", "", "12abc", overflow).
std::optional<std::int64_t> parse_count(std::string_view text);

// "500ms", "30s", "2m", "1h" (a non-negative integer and one unit); nullopt otherwise.
std::optional<Duration> parse_duration(std::string_view text);

// A short human duration, rounded up: "0s", "250ms", "12.4s", "2m05s", "1h02m".
std::string format_duration(Duration d);

// Makes a name printable on one line: control characters become \xNN.
std::string printable(std::string_view text);

}  // namespace ratelimit::cli
