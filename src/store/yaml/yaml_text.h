// Internal: the message pieces the YAML state file's reader and writer share.
#pragma once

#include <cstddef>
#include <cstdio>
#include <string>
#include <string_view>

namespace ratelimit::detail {

inline constexpr std::string_view kPersist = "ratelimit.persist: ";
inline constexpr std::string_view kLoad = "ratelimit.load: ";

// `text` in double quotes with `"`, `\` and control bytes escaped, cut after 64 bytes; for
// error messages only.
inline std::string quote(std::string_view text) {
  constexpr std::size_t kMax = 64;
  std::string out = "\"";
  for (std::size_t i = 0; i < text.size() && i < kMax; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      char buffer[8];
      std::snprintf(buffer, sizeof buffer, "\\x%02x", c);
      out += buffer;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (text.size() > kMax) out += "...";
  out += '"';
  return out;
}

}  // namespace ratelimit::detail
