// Quotas and the built-in provider profiles: plain data.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ratelimit/status.h"

namespace ratelimit {

// Where a model's day (max_rpd) starts.
enum class DayStart {
  first_request,     // go-ratelimit's rule: a day is the 24 h from the first request in it
  pacific_midnight,  // the provider's calendar day: midnight in America/Los_Angeles (Gemini),
                     // 23 h or 25 h long on the days daylight saving time changes
};
// "first_request", "pacific_midnight".
std::string_view to_string(DayStart day_start);
std::optional<DayStart> day_start_from_string(std::string_view name);

struct ModelQuota {
  std::int64_t max_rpm = 0;         // requests in any 60 s window; 0 = unlimited
  std::int64_t max_tpm = 0;         // tokens (input + output) in any 60 s window; 0 = unlimited
  std::int64_t max_rpd = 0;         // requests per day;            0 = unlimited
  std::int64_t max_input_tpm = 0;   // input tokens in any 60 s window; 0 = unlimited
  std::int64_t max_output_tpm = 0;  // output tokens in any 60 s window; 0 = unlimited
  DayStart day_start = DayStart::first_request;
  // All five limits are 0.
  bool unlimited() const {
    return max_rpm == 0 && max_tpm == 0 && max_rpd == 0 && max_input_tpm == 0 &&
           max_output_tpm == 0;
  }
  friend bool operator==(const ModelQuota&, const ModelQuota&) = default;
};

enum class Provider { gemini, openai, anthropic, local };

// "gemini", "openai", "anthropic", "local".
std::string_view to_string(Provider provider);
// Exact names only: no trimming, no case folding. nullopt for anything else.
std::optional<Provider> provider_from_string(std::string_view name);

using QuotaMap = std::map<std::string, ModelQuota, std::less<>>;

// Model-name aliases: the name a caller sends → the name whose quota it uses.
using AliasMap = std::map<std::string, std::string, std::less<>>;

struct ProviderProfile {
  Provider provider;
  QuotaMap models;
  std::string tier{};  // "" for the bare profile ("openai"), else e.g. "tier1" ("openai:tier1")
  AliasMap aliases{};  // the provider's real model ids → this profile's names where they differ
  // "openai" or "openai:tier1".
  std::string name() const;
};

// A fresh copy on every call (mutating it changes nothing else): all four providers' bare
// profiles, `local` with no models.
std::map<Provider, ProviderProfile> default_profiles();
// Every built-in profile, bare and tiered, in a stable order.
std::vector<ProviderProfile> all_profiles();
// "openai", "openai:tier3", "gemini:free", ...: the built-in profile of that name (exact
// match, no trimming). invalid_argument naming the known profiles for anything else.
Result<ProviderProfile> find_profile(std::string_view name);

}  // namespace ratelimit
