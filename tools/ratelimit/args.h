// Argument checks and human formatting shared by the `ratelimit` commands: model names, counts,
// durations. No CLI11 or JSON here.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ratelimit/clock.h"

namespace ratelimit::cli {

// Why `name` cannot be a model name in a command or an HTTP request, or nullopt when it can.
// The one rule is the library's (ratelimit::model_name_problem: valid UTF-8, no control
// characters, at most kMaxModelNameBytes bytes); the CLI and the server also refuse "", which
// the library accepts. The text names the model printably (never its raw bytes) and ends with
// the fix; the caller puts the operation in front ("ratelimit check: ...", "POST /v1/decide: ...").
std::optional<std::string> model_problem(std::string_view name);

// A non-negative decimal integer that fits in int64 ("0", "1500"); nullopt for anything else
// ("-1", "1e3", " 5", "", "12abc", overflow).
std::optional<std::int64_t> parse_count(std::string_view text);

// "500ms", "30s", "2m", "1h" (a non-negative integer and one unit); nullopt otherwise.
std::optional<Duration> parse_duration(std::string_view text);

// A short human duration, rounded up: "0s", "250ms", "12.4s", "2m05s", "1h02m".
std::string format_duration(Duration d);

// Makes text printable on one line: printable ASCII and valid UTF-8 stay as they are, control
// characters (C0, DEL, C1) and bytes that are not valid UTF-8 become \xNN. Not cut short (model
// names in messages use ratelimit::printable_model_name, which is).
std::string printable(std::string_view text);

}  // namespace ratelimit::cli
