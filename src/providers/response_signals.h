// Internal: what a provider response says about the caller's limits, read from its headers
// and (Gemini) its body. Pure: no limiter state; RateLimiter::observe() applies the result.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ratelimit/provider.h"

namespace ratelimit::detail {

enum class BudgetKind { requests, tokens, input_tokens, output_tokens };
// The window a budget covers. per_day is set for day and month (kept for older callers).
enum class BudgetPeriod { minute, day, month };
// "requests", "tokens", "input_tokens", "output_tokens" / "minute", "day", "month".
std::string_view to_string(BudgetKind kind);
std::string_view to_string(BudgetPeriod period);

// One budget a provider reported: "limit L, R remaining, full again at T".
struct Budget {
  BudgetKind kind = BudgetKind::requests;
  bool per_day = false;  // e.g. Groq's -requests, Mistral's month/day variants
  BudgetPeriod period = BudgetPeriod::minute;  // minute unless the provider says otherwise
  std::optional<std::int64_t> limit;           // the provider's stated limit
  std::optional<std::int64_t> remaining;       // what is left until reset_at_ns
  std::optional<std::int64_t> reset_at_ns;     // wall-clock ns since the Unix epoch
};

struct ResponseSignals {
  ResponseFormat format = ResponseFormat::auto_detect;  // the dialect used (detected when auto)
  // Blocked until this wall-clock time (ns since the epoch): a 429's retry-after, a remaining
  // of 0 that comes with a reset time, Gemini's per-day quota → the next Pacific midnight.
  // Never more than 25 h after now.
  std::optional<std::int64_t> blocked_until_ns;
  std::vector<Budget> budgets;
  int bad_values = 0;                 // headers/body fields present but unusable (ignored)
  std::vector<std::string> problems;  // one line per ignored value, for logs
};

// The cooldown after a 429 that names no wait (no retry-after, no exhausted budget with a
// reset, no Gemini RetryInfo): one minute, the window of every per-minute limit.
inline constexpr std::int64_t kDefault429CooldownNs = 60'000'000'000;
// Bodies longer than this are not parsed (one bad value).
inline constexpr std::size_t kMaxParsedBodyBytes = 1 << 20;

// The dialect `response` speaks, from its header names (and, for Gemini, its body):
// anthropic-ratelimit-* → anthropic; x-ratelimit-*-{req,tokens}-{minute,day,month} → mistral;
// x-ratelimit-* with an x-groq-* header → groq; with an x-ms-*, apim-request-id or azureml-*
// header → azure_openai; else → openai; no rate-limit header but a JSON body whose error
// status is RESOURCE_EXHAUSTED or carries google.rpc details → gemini; nothing → auto_detect.
ResponseFormat detect_format(const ProviderResponse& response);

// Reads `response` as seen at wall-clock `now_ns`. Never fails: unusable values are skipped
// and counted. Rules:
//  - Resets given as durations (OpenAI, Groq) are relative to now_ns; Anthropic's are RFC 3339
//    instants. A reset more than 25 h ahead, a negative or malformed number, is a bad value.
//  - Azure's -1 (and a remaining of 0 with no reset) mean "unknown": dropped, not counted.
//  - Cooldown on a 429: retry-after-ms, else retry-after (seconds or HTTP date), else Gemini's
//    per-day quota (next Pacific midnight, later of it and RetryInfo) or RetryInfo.retryDelay,
//    else the latest reset of an exhausted budget, else kDefault429CooldownNs. On any other
//    status: the latest reset of a budget whose remaining is 0. Never past now + 25 h; a time
//    not after now is no cooldown.
ResponseSignals read_response(const ProviderResponse& response, std::int64_t now_ns);

}  // namespace ratelimit::detail
