// Quotas and the built-in provider profiles: plain data.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace ratelimit {

struct ModelQuota {
  std::int64_t max_rpm = 0;  // requests in any 60 s window; 0 = unlimited
  std::int64_t max_tpm = 0;  // tokens in any 60 s window;   0 = unlimited
  std::int64_t max_rpd = 0;  // requests per day;            0 = unlimited
  friend bool operator==(const ModelQuota&, const ModelQuota&) = default;
};

enum class Provider { gemini, openai, anthropic, local };

// "gemini", "openai", "anthropic", "local".
std::string_view to_string(Provider provider);
// Exact names only: no trimming, no case folding. nullopt for anything else.
std::optional<Provider> provider_from_string(std::string_view name);

using QuotaMap = std::map<std::string, ModelQuota, std::less<>>;

struct ProviderProfile {
  Provider provider;
  QuotaMap models;
};

// A fresh copy on every call (mutating it changes nothing else): all four providers,
// `local` with no models.
std::map<Provider, ProviderProfile> default_profiles();

}  // namespace ratelimit
