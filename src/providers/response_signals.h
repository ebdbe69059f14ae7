// Internal: what a provider response says about the caller's limits, read from its headers
// and (Gemini) its body. Pure: no limiter state; RateLimiter::observe() applies the result.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ratelimit/provider.h"

namespace ratelimit::detail {

enum class BudgetKind { requests, tokens, input_tokens, output_tokens };

// One budget a provider reported: "limit L, R remaining, full again at T".
struct Budget {
  BudgetKind kind = BudgetKind::requests;
  bool per_day = false;                     // e.g. Groq's -requests, Mistral's month/day variants
  std::optional<std::int64_t> limit;        // the provider's stated limit
  std::optional<std::int64_t> remaining;    // what is left until reset_at_ns
  std::optional<std::int64_t> reset_at_ns;  // wall-clock ns since the Unix epoch
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

// Reads `response` as seen at wall-clock `now_ns`.
ResponseSignals read_response(const ProviderResponse& response, std::int64_t now_ns);

}  // namespace ratelimit::detail
