// Model names: the one rule every path into the library applies (operations, files, databases,
// migrations), and that the CLI and the server apply to what they are sent.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace ratelimit {

inline constexpr std::size_t kMaxModelNameBytes = 256;

// Why `name` cannot name a model, or nullopt when it can. A name is valid UTF-8 (no overlong
// forms, surrogates or code points above U+10FFFF), has no control character (U+0000–U+001F,
// U+007F, U+0080–U+009F) and is at most kMaxModelNameBytes bytes long. `/`, spaces and any
// other printable character are fine. "" is valid (go-ratelimit accepts it); the CLI and the
// server refuse it themselves.
std::optional<std::string> model_name_problem(std::string_view name);

// `name` made safe to print in a message or a log: printable ASCII and valid UTF-8 as they
// are, `"` and `\` escaped, every other byte as \xNN; cut to about 80 bytes with "..." after.
std::string printable_model_name(std::string_view name);

}  // namespace ratelimit
