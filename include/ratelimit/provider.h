// What a provider said in a response: fed to RateLimiter::observe() so that the limiter learns
// cooldowns (429s, exhausted budgets) and ceilings (remaining budgets) from it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ratelimit/decision.h"
#include "ratelimit/quota.h"

namespace ratelimit {

// Whose header dialect a response speaks.
enum class ResponseFormat {
  auto_detect,   // from the header names (anthropic-ratelimit-*, x-ratelimit-*-req-minute, ...)
  openai,        // x-ratelimit-{limit,remaining,reset}-{requests,tokens}, retry-after(-ms)
  azure_openai,  // as openai; -1 or 0 may mean "unknown"
  groq,          // as openai, but the -requests headers describe the per-day limit
  anthropic,     // anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-*
  mistral,       // x-ratelimit-{limit,remaining}-{req-minute,tokens-minute,...}
  gemini,        // a 429 RESOURCE_EXHAUSTED body with RetryInfo and QuotaFailure
};
// "auto", "openai", "azure_openai", "groq", "anthropic", "mistral", "gemini".
std::string_view to_string(ResponseFormat format);
// The names above (and "azure" for azure_openai); nullopt for anything else.
std::optional<ResponseFormat> response_format_from_string(std::string_view name);

struct ProviderResponse {
  ResponseFormat format = ResponseFormat::auto_detect;
  int status = 200;  // the HTTP status code
  // As received: names compared case-insensitively, repeats allowed (the first valid one wins).
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;  // read for Gemini's 429 details; may be empty
};

// What RateLimiter::observe() learned from one response.
struct Observation {
  std::string resolved_model;                           // the pool it applies to
  ResponseFormat format = ResponseFormat::auto_detect;  // the dialect read (detected when auto)
  LearnedLimits learned;                    // what this response said: a cooldown, ceilings
  std::optional<ModelQuota> quota_learned;  // Config::learn_quotas: the quota written
  std::vector<std::string> ignored;         // one line per value ignored (garbage, negative, huge)
};

}  // namespace ratelimit
