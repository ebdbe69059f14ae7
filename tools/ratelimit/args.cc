#include "args.h"

#include <charconv>
#include <chrono>
#include <cstdio>
#include <limits>

#include "ratelimit/model_name.h"

namespace ratelimit::cli {

std::optional<std::string> model_problem(std::string_view name) {
  // The fix is written only for a message (this runs on every request that names a model).
  auto fix = [] {
    return "give a model name of 1 to " + std::to_string(kMaxModelNameBytes) +
           " bytes of UTF-8 text without control characters";
  };
  if (name.empty()) return "the model name is empty; " + fix();
  if (auto problem = model_name_problem(name)) {
    return "model \"" + printable_model_name(name) + "\" " + *problem + "; " + fix();
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
  for (std::size_t i = 0; i < text.size();) {
    // The shortest prefix the model-name rule accepts is one printable code point; none (up to
    // the longest UTF-8 sequence) means a control character or a byte that is not UTF-8.
    std::size_t n = 1;
    while (n <= 4 && i + n <= text.size() && model_name_problem(text.substr(i, n))) ++n;
    if (n <= 4 && i + n <= text.size()) {
      out.append(text.substr(i, n));
      i += n;
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", static_cast<unsigned char>(text[i]));
      out += buf;
      ++i;
    }
  }
  return out;
}

}  // namespace ratelimit::cli
