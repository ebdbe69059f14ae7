// Internal to the CLI's commands (commands.cc, quota_commands.cc): how they check names and
// print usage, decisions and quotas.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "args.h"
#include "commands.h"
#include "json_format.h"
#include "ratelimit/model_name.h"

namespace ratelimit::cli::command_parts {

inline constexpr int kBarWidth = 10;

inline std::string one_line(std::string text) {
  for (char& c : text) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return text;
}

inline std::string quote_name(std::string_view text) { return "\"" + printable(text) + "\""; }

// The model-name rule of the CLI and the server (args.h): the library's, and not "".
inline Outcome<void> check_model(std::string_view model) {
  if (auto why = model_problem(model)) return tl::unexpected(usage_error(*why));
  return {};
}

// A decision with code invalid_model (the limiter refused the name): bad input (exit code 2)
// like a name check_model refuses, never a denial.
inline Failure invalid_model_failure(std::string_view model) {
  if (auto why = model_problem(model)) return usage_error(*why);
  return usage_error("model \"" + printable_model_name(model) + "\": the limiter refused the " +
                     std::string(reason(DecisionCode::invalid_model)));
}

inline Outcome<std::int64_t> check_count(std::string_view flag, std::string_view text,
                                         std::string_view example) {
  // The largest count: JSON's exact integer range (2^53 - 1), as the server accepts.
  constexpr std::int64_t kMaxCount = (std::int64_t{1} << 53) - 1;
  if (auto n = parse_count(text); n && *n > kMaxCount) {
    return tl::unexpected(usage_error(std::string(flag) + " " + quote_name(text) +
                                      " is too large; counts go up to " +
                                      std::to_string(kMaxCount) + " (2^53 - 1)"));
  }
  if (auto n = parse_count(text)) return *n;
  return tl::unexpected(usage_error(std::string(flag) + " " + quote_name(text) +
                                    " is not a non-negative integer; give a count such as " +
                                    std::string(flag) + " " + std::string(example)));
}

inline Outcome<Provider> check_provider(std::string_view name) {
  if (auto p = provider_from_string(name)) return *p;
  return tl::unexpected(usage_error("unknown provider " + quote_name(name) +
                                    "; choose one of gemini, openai, anthropic, local "
                                    "(see `ratelimit profiles`)"));
}

// A tiered profile name ("openai:tier3"): the library's list of known profiles on error.
inline Outcome<void> check_profile(std::string_view name) {
  auto p = find_profile(name);
  if (!p) {
    return tl::unexpected(usage_error("unknown provider profile " + quote_name(name) +
                                      " (see `ratelimit profiles`): " + p.error().message));
  }
  return {};
}

inline std::string limit_text(std::int64_t limit) {
  return limit == 0 ? "-" : std::to_string(limit);
}

inline std::string used_text(std::int64_t used, std::int64_t limit) {
  return std::to_string(used) + "/" + limit_text(limit);
}

// "[███░░░░░░░]" for used/limit; blank for unlimited.
inline std::string bar(std::int64_t used, std::int64_t limit) {
  if (limit <= 0) return std::string(kBarWidth + 2, ' ');
  std::int64_t filled = used <= 0 ? 0 : (used * kBarWidth + limit - 1) / limit;
  filled = std::min<std::int64_t>(filled, kBarWidth);
  std::string out = "[";
  for (int i = 0; i < kBarWidth; ++i) out += i < filled ? "\u2588" : "\u2591";
  return out + "]";
}

inline std::string stats_line(const ModelStats& s) {
  std::string out = "rpm " + used_text(s.rpm, s.max_rpm) + ", tpm " + used_text(s.tpm, s.max_tpm) +
                    ", rpd " + used_text(s.rpd, s.max_rpd);
  if (s.max_input_tpm > 0 || s.max_output_tpm > 0 || s.output_tpm > 0) {
    out += ", input tpm " + used_text(s.input_tpm, s.max_input_tpm) + ", output tpm " +
           used_text(s.output_tpm, s.max_output_tpm);
  }
  return out;
}

inline std::string decision_line(std::string_view model, const Decision& d) {
  std::string out = printable(model) + ": " + (d.allowed ? "allowed" : "denied") + " (" +
                    std::string(to_string(d.code)) + ": " + std::string(d.reason()) + ")";
  if (!d.allowed && d.retry_after > Duration::zero()) {
    const char* never = d.code == DecisionCode::input_tpm_exceeded
                            ? "; can never pass (the estimate exceeds max_input_tpm)"
                        : d.code == DecisionCode::output_tpm_exceeded
                            ? "; can never pass (the estimate exceeds max_output_tpm)"
                            : "; can never pass (the estimate exceeds max_tpm)";
    out +=
        d.retry_after == Duration::max() ? never : "; retry in " + format_duration(d.retry_after);
  }
  return out + "; " + stats_line(d.stats);
}

// A denial that passes by waiting (acquire --wait keeps trying).
inline bool is_limit_denial(DecisionCode code) {
  return code == DecisionCode::rpm_exceeded || code == DecisionCode::tpm_exceeded ||
         code == DecisionCode::rpd_exceeded || code == DecisionCode::input_tpm_exceeded ||
         code == DecisionCode::output_tpm_exceeded || code == DecisionCode::provider_cooldown ||
         code == DecisionCode::provider_limit;
}

// Left-aligned text columns separated by two spaces. A cell may have a suffix (a usage bar)
// written after the padded cell; a column's suffixes must share one display width.
struct Table {
  std::vector<std::vector<std::string>> rows;
  std::map<std::pair<std::size_t, std::size_t>, std::string> suffix;  // (row, column) → text

  std::string render() const {
    std::vector<std::size_t> width;
    for (const auto& row : rows) {
      width.resize(std::max(width.size(), row.size()));
      for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
    }
    std::string out;
    for (std::size_t r = 0; r < rows.size(); ++r) {
      std::string line;
      for (std::size_t i = 0; i < rows[r].size(); ++i) {
        line += rows[r][i] + std::string(width[i] - rows[r][i].size(), ' ');
        if (auto it = suffix.find({r, i}); it != suffix.end()) line += " " + it->second;
        if (i + 1 < rows[r].size()) line += "  ";
      }
      while (!line.empty() && line.back() == ' ') line.pop_back();
      out += line + "\n";
    }
    return out;
  }
};

// "rpm 500, tpm 30000, rpd -" plus the input/output limits and the day rule when set.
inline std::string quota_text(const ModelQuota& q) {
  std::string out = "rpm " + limit_text(q.max_rpm) + ", tpm " + limit_text(q.max_tpm) + ", rpd " +
                    limit_text(q.max_rpd);
  if (q.max_input_tpm != 0) out += ", input tpm " + limit_text(q.max_input_tpm);
  if (q.max_output_tpm != 0) out += ", output tpm " + limit_text(q.max_output_tpm);
  if (q.day_start != DayStart::first_request) {
    out += ", day starts at " + std::string(to_string(q.day_start));
  }
  return out;
}

inline std::string quota_table(const QuotaMap& quotas) {
  bool io = false;
  for (const auto& [model, q] : quotas) io |= q.max_input_tpm != 0 || q.max_output_tpm != 0;
  Table t;
  if (io) {
    t.rows.push_back({"MODEL", "RPM", "TPM", "RPD", "INPUT TPM", "OUTPUT TPM"});
  } else {
    t.rows.push_back({"MODEL", "RPM", "TPM", "RPD"});
  }
  for (const auto& [model, q] : quotas) {
    t.rows.push_back(
        {printable(model), limit_text(q.max_rpm), limit_text(q.max_tpm), limit_text(q.max_rpd)});
    if (io) {
      t.rows.back().push_back(limit_text(q.max_input_tpm));
      t.rows.back().push_back(limit_text(q.max_output_tpm));
    }
  }
  return t.render();
}

// The quota flags over `q`.
inline Outcome<ModelQuota> apply_quota_flags(ModelQuota q, const QuotaFlags& f) {
  const std::tuple<const char*, const std::optional<std::string>*, std::int64_t*, const char*>
      counts[] = {{"--rpm", &f.rpm, &q.max_rpm, "500"},
                  {"--tpm", &f.tpm, &q.max_tpm, "30000"},
                  {"--rpd", &f.rpd, &q.max_rpd, "1000"},
                  {"--input-tpm", &f.input_tpm, &q.max_input_tpm, "400000"},
                  {"--output-tpm", &f.output_tpm, &q.max_output_tpm, "80000"}};
  for (const auto& [flag, text, field, example] : counts) {
    if (!*text) continue;
    auto v = check_count(flag, **text, example);
    if (!v) return tl::unexpected(v.error());
    *field = *v;
  }
  if (f.day_start) {
    auto d = day_start_from_string(*f.day_start);
    if (!d) {
      return tl::unexpected(usage_error("--day-start " + quote_name(*f.day_start) +
                                        " is not first_request or pacific_midnight"));
    }
    q.day_start = *d;
  }
  return q;
}

}  // namespace ratelimit::cli::command_parts
