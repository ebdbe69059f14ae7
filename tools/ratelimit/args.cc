#include "args.h"

#include <charconv>
#include <chrono>
#include <cstdio>
#include <limits>

namespace ratelimit::cli {

std::optional<std::string> model_name_problem(std::string_view name) {
  if (name.empty()) return "the model name is empty";
  if (name.size() > kMaxModelBytes) {
    return "the model name is " + std::to_string(name.size()) + " bytes long (at most " +
           std::to_string(kMaxModelBytes) + ")";
  }
  for (std::size_t i = 0; i < name.size(); ++i) {
    const auto c = static_cast<unsigned char>(name[i]);
    const bool c1 = c == 0xC2 && i + 1 < name.size() &&
                    static_cast<unsigned char>(name[i + 1]) >= 0x80 &&
                    static_cast<unsigned char>(name[i + 1]) <= 0x9F;
    if (c < 0x20 || c == 0x7F || c1) {
      return "the model name \"" + printable(name) + "\" contains a control character";
    }
  }
  return std::nullopt;
}

std::optional<std::int64_t> parse_count(std::string_view text) {
  if (text.empty()) return std::nullopt;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::optional<Duration> parse_duration(std::string_view text) {
  std::size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0) return std::nullopt;
  const auto count = parse_count(text.substr(0, digits));
  if (!count) return std::nullopt;
  const std::string_view unit = text.substr(digits);
  std::int64_t unit_ns = 0;
  if (unit == "ms") {
    unit_ns = 1'000'000;
  } else if (unit == "s") {
    unit_ns = 1'000'000'000;
  } else if (unit == "m") {
    unit_ns = 60'000'000'000;
  } else if (unit == "h") {
    unit_ns = 3'600'000'000'000;
  } else {
    return std::nullopt;
  }
  if (*count > std::numeric_limits<std::int64_t>::max() / unit_ns) return std::nullopt;
  return Duration(*count * unit_ns);
}

std::string format_duration(Duration d) {
  using std::chrono::nanoseconds;
  if (d <= Duration::zero()) return "0s";
  if (d == Duration::max()) return "never";
  const std::int64_t ns = d.count();
  char buf[64];
  if (ns < 1'000'000'000) {
    const std::int64_t ms = (ns + 999'999) / 1'000'000;
    if (ms < 1000) {
      std::snprintf(buf, sizeof buf, "%lldms", static_cast<long long>(ms));
      return buf;
    }
  }
  const std::int64_t tenths = (ns + 99'999'999) / 100'000'000;  // rounded up
  if (tenths < 600) {
    std::snprintf(buf, sizeof buf, "%lld.%llds", static_cast<long long>(tenths / 10),
                  static_cast<long long>(tenths % 10));
    return buf;
  }
  const std::int64_t secs = (ns + 999'999'999) / 1'000'000'000;
  if (secs < 3600) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(secs / 60),
                  static_cast<long long>(secs % 60));
    return buf;
  }
  const std::int64_t mins = (secs + 59) / 60;
  std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(mins / 60),
                static_cast<long long>(mins % 60));
  return buf;
}

std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out;
}

}  // namespace ratelimit::cli
