#include "limiter/validation.h"

#include <cstdint>

#include "ratelimit/model_name.h"

namespace ratelimit {
namespace {

// The length of the valid UTF-8 sequence at the start of `s` and its code point, or 0 when
// the bytes there are not valid UTF-8 (truncated, overlong, surrogate, above U+10FFFF).
std::size_t utf8_sequence(std::string_view s, char32_t* code_point) {
  const auto b0 = static_cast<unsigned char>(s[0]);
  if (b0 < 0x80) {
    *code_point = b0;
    return 1;
  }
  std::size_t n = 0;
  char32_t cp = 0;
  char32_t min = 0;
  if ((b0 & 0xE0) == 0xC0) {
    n = 2, cp = b0 & 0x1F, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    n = 3, cp = b0 & 0x0F, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    n = 4, cp = b0 & 0x07, min = 0x10000;
  } else {
    return 0;  // a continuation byte, or 0xF8..0xFF
  }
  if (s.size() < n) return 0;
  for (std::size_t i = 1; i < n; ++i) {
    const auto b = static_cast<unsigned char>(s[i]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  *code_point = cp;
  return n;
}

bool is_control(char32_t cp) { return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F); }

void append_hex_byte(std::string& out, unsigned char b) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += "\\x";
  out += kHex[b >> 4];
  out += kHex[b & 0xF];
}

}  // namespace

std::optional<std::string> model_name_problem(std::string_view name) {
  if (name.size() > kMaxModelNameBytes) {
    return "is " + std::to_string(name.size()) + " bytes long; at most " +
           std::to_string(kMaxModelNameBytes) + " are allowed";
  }
  for (std::size_t i = 0; i < name.size();) {
    char32_t cp = 0;
    const std::size_t n = utf8_sequence(name.substr(i), &cp);
    if (n == 0) return "is not valid UTF-8 (byte " + std::to_string(i) + ")";
    if (is_control(cp)) {
      return "holds a control character (byte " + std::to_string(i) + ")";
    }
    i += n;
  }
  return std::nullopt;
}

std::string printable_model_name(std::string_view name) {
  constexpr std::size_t kShown = 80;
  std::string out;
  std::size_t i = 0;
  while (i < name.size() && out.size() < kShown) {
    char32_t cp = 0;
    const std::size_t n = utf8_sequence(name.substr(i), &cp);
    if (n == 0 || is_control(cp)) {
      append_hex_byte(out, static_cast<unsigned char>(name[i]));
      ++i;
      continue;
    }
    if (cp == '"' || cp == '\\') out += '\\';
    out.append(name.substr(i, n));
    i += n;
  }
  if (i < name.size()) out += "...";
  return out;
}

namespace detail {

bool is_valid_utf8(std::string_view text) {
  for (std::size_t i = 0; i < text.size();) {
    char32_t cp = 0;
    const std::size_t n = utf8_sequence(text.substr(i), &cp);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string quoted(std::string_view model) {
  return "model \"" + printable_model_name(model) + '"';
}

std::optional<Error> check_model_name(std::string_view operation, std::string_view model) {
  auto problem = model_name_problem(model);
  if (!problem) return std::nullopt;
  return Error{ErrorCode::invalid_argument,
               "ratelimit." + std::string(operation) + ": " + quoted(model) + " " + *problem +
                   " (model names are UTF-8 text of at most " + std::to_string(kMaxModelNameBytes) +
                   " bytes without control characters)"};
}

Error unknown_reservation_id(const char* operation, std::string_view id, std::string_view issuer) {
  return Error{ErrorCode::not_found,
               std::string(operation) + ": unknown reservation id \"" + printable_model_name(id) +
                   "\" (ids come from Reservation::id() of " + std::string(issuer) + ")"};
}

std::optional<std::string> validate_quota(std::string_view operation, std::string_view model,
                                          const ModelQuota& quota) {
  const std::pair<const char*, std::int64_t> fields[] = {{"max_rpm", quota.max_rpm},
                                                         {"max_tpm", quota.max_tpm},
                                                         {"max_rpd", quota.max_rpd},
                                                         {"max_input_tpm", quota.max_input_tpm},
                                                         {"max_output_tpm", quota.max_output_tpm}};
  for (const auto& [field, value] : fields) {
    if (value < 0) {
      return "ratelimit." + std::string(operation) + ": " + quoted(model) + ": " + field +
             " must be >= 0 (0 means unlimited), got " + std::to_string(value);
    }
  }
  if (quota.day_start != DayStart::first_request && quota.day_start != DayStart::pacific_midnight) {
    return "ratelimit." + std::string(operation) + ": " + quoted(model) +
           ": day_start must be first_request or pacific_midnight";
  }
  return std::nullopt;
}

}  // namespace detail
}  // namespace ratelimit
