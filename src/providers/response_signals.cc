#include "providers/response_signals.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <functional>
#include <nlohmann/json.hpp>
#include <utility>

#include "core/calendar.h"
#include "providers/http_time.h"
#include "time_format.h"

namespace ratelimit::detail {

std::string_view to_string(BudgetKind kind) {
  switch (kind) {
    case BudgetKind::requests:
      return "requests";
    case BudgetKind::tokens:
      return "tokens";
    case BudgetKind::input_tokens:
      return "input_tokens";
    case BudgetKind::output_tokens:
      return "output_tokens";
  }
  return "unknown";
}

std::string_view to_string(BudgetPeriod period) {
  switch (period) {
    case BudgetPeriod::minute:
      return "minute";
    case BudgetPeriod::day:
      return "day";
    case BudgetPeriod::month:
      return "month";
  }
  return "unknown";
}

namespace {

using nlohmann::json;
using Parser = std::function<std::optional<std::int64_t>(std::string_view)>;

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

// A value quoted for a log line: at most 60 bytes, control bytes as '?'.
std::string quoted(std::string_view value) {
  std::string out = "\"";
  for (std::size_t i = 0; i < value.size() && i < 60; ++i) {
    const auto c = static_cast<unsigned char>(value[i]);
    out += (c < 0x20 || c == 0x7f) ? '?' : static_cast<char>(c);
  }
  if (value.size() > 60) out += "...";
  return out + "\"";
}

// The headers with lower-cased names and trimmed values, in order.
struct Headers {
  std::vector<std::pair<std::string, std::string_view>> items;

  explicit Headers(const ProviderResponse& response) {
    items.reserve(response.headers.size());
    for (const auto& [name, value] : response.headers) {
      items.emplace_back(lower(trim_ows(name)), trim_ows(value));
    }
  }
  bool any_prefix(std::string_view prefix) const {
    return std::any_of(items.begin(), items.end(),
                       [&](const auto& h) { return h.first.starts_with(prefix); });
  }
};

bool is_mistral_name(std::string_view name) {
  for (std::string_view what : {"x-ratelimit-limit-", "x-ratelimit-remaining-"}) {
    if (!name.starts_with(what)) continue;
    const std::string_view rest = name.substr(what.size());
    for (std::string_view unit : {"req-", "tokens-"}) {
      if (!rest.starts_with(unit)) continue;
      const std::string_view period = rest.substr(unit.size());
      if (period == "minute" || period == "day" || period == "month") return true;
    }
  }
  return false;
}

// The Gemini error object of a body, or nullptr: {"error": {...}} or [{"error": {...}}].
const json* gemini_error(const json& body) {
  const json* root = &body;
  if (root->is_array() && !root->empty()) root = &(*root)[0];
  if (!root->is_object()) return nullptr;
  const auto it = root->find("error");
  if (it == root->end() || !it->is_object()) return nullptr;
  return &*it;
}

bool looks_like_json(std::string_view body) {
  const std::string_view t = trim_ows(body);
  return !t.empty() && (t.front() == '{' || t.front() == '[');
}

bool is_gemini_error(const json& error) {
  const auto status = error.find("status");
  if (status != error.end() && status->is_string() &&
      status->get_ref<const std::string&>() == "RESOURCE_EXHAUSTED") {
    return true;
  }
  const auto details = error.find("details");
  if (details == error.end() || !details->is_array()) return false;
  for (const auto& d : *details) {
    if (!d.is_object()) continue;
    const auto type = d.find("@type");
    if (type != d.end() && type->is_string() &&
        contains(type->get_ref<const std::string&>(), "google.rpc.")) {
      return true;
    }
  }
  return false;
}

class Reader {
 public:
  Reader(const ProviderResponse& response, std::int64_t now_ns, ResponseSignals& out)
      : response_(response), headers_(response), now_(now_ns), out_(out) {}

  void run(ResponseFormat format) {
    out_.format = format;
    switch (format) {
      case ResponseFormat::openai:
      case ResponseFormat::azure_openai:
      case ResponseFormat::groq:
        read_openai_like(format);
        break;
      case ResponseFormat::anthropic:
        read_anthropic();
        break;
      case ResponseFormat::mistral:
        read_mistral();
        break;
      case ResponseFormat::gemini:
        read_gemini_body();
        break;
      case ResponseFormat::auto_detect:
        break;
    }
    read_retry_after();
    decide_cooldown();
  }

 private:
  void bad(std::string_view name, std::string_view value, std::string_view why) {
    ++out_.bad_values;
    out_.problems.push_back(std::string(name) + ": " + quoted(value) + " " + std::string(why) +
                            " (ignored)");
  }

  // The first value of header `name` that `parse` accepts; each rejected one is counted.
  // `unknown` values (Azure's -1) are skipped without being counted.
  std::optional<std::int64_t> first_valid(std::string_view name, const Parser& parse,
                                          std::string_view why,
                                          std::string_view unknown = std::string_view()) {
    for (const auto& [n, v] : headers_.items) {
      if (n != name) continue;
      if (!unknown.empty() && v == unknown) continue;
      if (auto parsed = parse(v)) return parsed;
      bad(name, v, why);
    }
    return std::nullopt;
  }

  std::optional<std::int64_t> count(std::string_view name, bool azure = false) {
    return first_valid(name, parse_count, "is not a non-negative integer",
                       azure ? std::string_view("-1") : std::string_view());
  }

  // An absolute reset time that must lie within 25 h from now (the past is allowed: skew).
  std::optional<std::int64_t> instant(std::string_view name) {
    return first_valid(
        name,
        [this](std::string_view v) -> std::optional<std::int64_t> {
          const auto t = parse_rfc3339(v);
          if (!t || *t - now_ > kMaxSignalDurationNs) return std::nullopt;
          return t;
        },
        "is not an RFC 3339 time within 25 h");
  }

  std::optional<std::int64_t> after_duration(std::string_view name) {
    const auto d = first_valid(name, parse_go_duration_ns, "is not a duration of at most 25 h");
    if (!d) return std::nullopt;
    return now_ + *d;
  }

  void add(Budget b) {
    if (!b.limit && !b.remaining && !b.reset_at_ns) return;
    b.per_day = b.period != BudgetPeriod::minute;
    out_.budgets.push_back(b);
  }

  void read_openai_like(ResponseFormat format) {
    const bool azure = format == ResponseFormat::azure_openai;
    for (auto [suffix, kind] :
         {std::pair{"requests", BudgetKind::requests}, std::pair{"tokens", BudgetKind::tokens}}) {
      const std::string s(suffix);
      Budget b;
      b.kind = kind;
      if (format == ResponseFormat::groq && kind == BudgetKind::requests) {
        b.period = BudgetPeriod::day;
      }
      b.limit = count("x-ratelimit-limit-" + s, azure);
      b.remaining = count("x-ratelimit-remaining-" + s, azure);
      b.reset_at_ns = after_duration("x-ratelimit-reset-" + s);
      if (azure) {
        if (b.limit == 0) b.limit.reset();  // 0 is "unknown" there too
        if (b.remaining == 0 && !b.reset_at_ns) b.remaining.reset();
      }
      add(b);
    }
  }

  void read_anthropic() {
    for (auto [part, kind] :
         {std::pair{"requests", BudgetKind::requests}, std::pair{"tokens", BudgetKind::tokens},
          std::pair{"input-tokens", BudgetKind::input_tokens},
          std::pair{"output-tokens", BudgetKind::output_tokens}}) {
      const std::string base = std::string("anthropic-ratelimit-") + part;
      Budget b;
      b.kind = kind;
      b.limit = count(base + "-limit");
      b.remaining = count(base + "-remaining");
      b.reset_at_ns = instant(base + "-reset");
      add(b);
    }
  }

  void read_mistral() {
    for (auto [unit, kind] :
         {std::pair{"req", BudgetKind::requests}, std::pair{"tokens", BudgetKind::tokens}}) {
      for (auto [period_name, period] :
           {std::pair{"minute", BudgetPeriod::minute}, std::pair{"day", BudgetPeriod::day},
            std::pair{"month", BudgetPeriod::month}}) {
        const std::string tail = std::string(unit) + "-" + period_name;
        Budget b;
        b.kind = kind;
        b.period = period;
        b.limit = count("x-ratelimit-limit-" + tail);
        b.remaining = count("x-ratelimit-remaining-" + tail);
        add(b);
      }
    }
  }

  void read_gemini_body() {
    const std::string_view body = response_.body;
    if (trim_ows(body).empty()) return;
    if (body.size() > kMaxParsedBodyBytes) {
      bad("body", body.substr(0, 20), "is larger than 1 MiB");
      return;
    }
    const json parsed = json::parse(body, nullptr, /*allow_exceptions=*/false);
    const json* error = parsed.is_discarded() ? nullptr : gemini_error(parsed);
    if (error == nullptr) {
      bad("body", body, "is not a Google API error object");
      return;
    }
    const auto details = error->find("details");
    if (details == error->end() || !details->is_array()) return;
    std::vector<const json*> violations;
    for (const auto& d : *details) {
      if (!d.is_object()) continue;
      const auto type = d.find("@type");
      if (type == d.end() || !type->is_string()) continue;
      const std::string& t = type->get_ref<const std::string&>();
      if (t.ends_with("google.rpc.RetryInfo")) {
        const auto delay = d.find("retryDelay");
        const std::string value =
            delay != d.end() && delay->is_string() ? delay->get<std::string>() : delay_text(d);
        if (auto ns = parse_go_duration_ns(value)) {
          if (!retry_at_) retry_at_ = now_ + *ns;
        } else {
          bad("RetryInfo.retryDelay", value, "is not a duration of at most 25 h");
        }
      } else if (t.ends_with("google.rpc.QuotaFailure")) {
        const auto v = d.find("violations");
        if (v == d.end() || !v->is_array()) continue;
        for (const auto& one : *v) {
          if (one.is_object()) violations.push_back(&one);
        }
      }
    }
    for (const json* v : violations) add_gemini_violation(*v);
  }

  // A retryDelay that is not a string (e.g. {"seconds": 37}), for the problem line.
  static std::string delay_text(const json& detail) {
    const auto delay = detail.find("retryDelay");
    return delay == detail.end() ? std::string("(missing)") : delay->dump();
  }

  static std::string string_field(const json& o, const char* name) {
    const auto it = o.find(name);
    return it != o.end() && it->is_string() ? it->get<std::string>() : std::string();
  }

  void add_gemini_violation(const json& v) {
    const std::string id = lower(string_field(v, "quotaId"));
    const std::string metric = lower(string_field(v, "quotaMetric"));
    Budget b;
    if (contains(metric, "input_token")) {
      b.kind = BudgetKind::input_tokens;
    } else if (contains(metric, "output_token")) {
      b.kind = BudgetKind::output_tokens;
    } else if (contains(metric, "token")) {
      b.kind = BudgetKind::tokens;
    } else {
      b.kind = BudgetKind::requests;
    }
    if (contains(id, "perday") || contains(metric, "per_day")) {
      b.period = BudgetPeriod::day;
      b.reset_at_ns = next_pacific_midnight_ns(now_);
      gemini_per_day_ = true;
    } else if (retry_at_) {
      b.reset_at_ns = retry_at_;
    }
    b.remaining = 0;  // a violation: that budget is spent
    const auto value = v.find("quotaValue");
    if (value != v.end()) {
      if (value->is_string()) {
        const std::string& s = value->get_ref<const std::string&>();
        if (auto n = parse_count(s)) {
          b.limit = n;
        } else {
          bad("QuotaFailure.quotaValue", s, "is not a non-negative integer");
        }
      } else if (value->is_number_unsigned()) {
        b.limit = static_cast<std::int64_t>(
            std::min<std::uint64_t>(value->get<std::uint64_t>(), 999'999'999'999'999));
      } else {
        bad("QuotaFailure.quotaValue", value->dump(), "is not a non-negative integer");
      }
    }
    add(b);
  }

  void read_retry_after() {
    if (auto ms = first_valid(
            "retry-after-ms",
            [](std::string_view v) { return parse_decimal_duration_ns(v, kNsPerMs); },
            "is not a number of milliseconds of at most 25 h")) {
      retry_at_ = now_ + *ms;  // the most precise header wins over RetryInfo
      return;
    }
    const auto at = first_valid(
        "retry-after",
        [this](std::string_view v) -> std::optional<std::int64_t> {
          if (auto s = parse_decimal_duration_ns(v, kNsPerSecond)) return now_ + *s;
          const auto t = parse_http_date_ns(v);
          if (!t || *t - now_ > kMaxSignalDurationNs) return std::nullopt;
          return t;
        },
        "is neither seconds nor an HTTP date within 25 h");
    if (at) retry_at_ = at;
  }

  void decide_cooldown() {
    std::optional<std::int64_t> until;
    for (const Budget& b : out_.budgets) {
      if (b.remaining == 0 && b.reset_at_ns && *b.reset_at_ns > now_) {
        until = std::max(until.value_or(0), *b.reset_at_ns);
      }
    }
    if (response_.status == 429) {
      if (retry_at_) until = std::max(until.value_or(0), *retry_at_);
      if (gemini_per_day_) until = std::max(until.value_or(0), next_pacific_midnight_ns(now_));
      if (!until && !retry_at_) until = now_ + kDefault429CooldownNs;
    }
    if (until && *until > now_) {
      out_.blocked_until_ns = std::min(*until, now_ + kMaxSignalDurationNs);
    }
  }

  const ProviderResponse& response_;
  Headers headers_;
  std::int64_t now_;
  ResponseSignals& out_;
  std::optional<std::int64_t> retry_at_;  // from retry-after(-ms) or RetryInfo
  bool gemini_per_day_ = false;
};

}  // namespace

ResponseFormat detect_format(const ProviderResponse& response) {
  const Headers headers(response);
  if (headers.any_prefix("anthropic-ratelimit-")) return ResponseFormat::anthropic;
  const bool any_mistral = std::any_of(headers.items.begin(), headers.items.end(),
                                       [](const auto& h) { return is_mistral_name(h.first); });
  if (any_mistral) return ResponseFormat::mistral;
  if (headers.any_prefix("x-ratelimit-")) {
    if (headers.any_prefix("x-groq-")) return ResponseFormat::groq;
    if (headers.any_prefix("x-ms-") || headers.any_prefix("apim-request-id") ||
        headers.any_prefix("azureml-")) {
      return ResponseFormat::azure_openai;
    }
    return ResponseFormat::openai;
  }
  if (response.body.size() <= kMaxParsedBodyBytes && looks_like_json(response.body)) {
    const json parsed = json::parse(response.body, nullptr, /*allow_exceptions=*/false);
    if (!parsed.is_discarded()) {
      const json* error = gemini_error(parsed);
      if (error != nullptr && is_gemini_error(*error)) return ResponseFormat::gemini;
    }
  }
  return ResponseFormat::auto_detect;
}

ResponseSignals read_response(const ProviderResponse& response, std::int64_t now_ns) {
  ResponseSignals out;
  const ResponseFormat format =
      response.format == ResponseFormat::auto_detect ? detect_format(response) : response.format;
  Reader(response, now_ns, out).run(format);
  return out;
}

}  // namespace ratelimit::detail
