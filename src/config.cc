#include "ratelimit/config.h"

#include <cctype>
#include <cstdlib>

namespace ratelimit {

std::string_view to_string(Backend backend) {
  switch (backend) {
    case Backend::yaml:
      return "yaml";
    case Backend::sqlite:
      return "sqlite";
    case Backend::memory:
      return "memory";
    case Backend::redis:
      return "redis";
  }
  return "unknown";
}

Result<Backend> backend_from_string(std::string_view name) {
  std::string_view trimmed = name;
  auto is_space = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
  while (!trimmed.empty() && is_space(trimmed.front())) trimmed.remove_prefix(1);
  while (!trimmed.empty() && is_space(trimmed.back())) trimmed.remove_suffix(1);
  std::string lower;
  lower.reserve(trimmed.size());
  for (char c : trimmed) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower.empty() || lower == "yaml") return Backend::yaml;
  if (lower == "sqlite") return Backend::sqlite;
  if (lower == "memory") return Backend::memory;
  if (lower == "redis") return Backend::redis;
  return make_error(ErrorCode::invalid_argument, "ratelimit.backend: unknown backend \"" +
                                                     std::string(name) +
                                                     "\" (use yaml, sqlite, memory or redis)");
}

std::string_view to_string(UnknownModelPolicy policy) {
  switch (policy) {
    case UnknownModelPolicy::allow:
      return "allow";
    case UnknownModelPolicy::deny:
      return "deny";
    case UnknownModelPolicy::default_quota:
      return "default_quota";
  }
  return "unknown";
}

std::optional<UnknownModelPolicy> unknown_model_policy_from_string(std::string_view name) {
  for (auto p :
       {UnknownModelPolicy::allow, UnknownModelPolicy::deny, UnknownModelPolicy::default_quota}) {
    if (to_string(p) == name) return p;
  }
  return std::nullopt;
}

namespace {

// The profiles a Config names, in order (seed rule for `providers`).
std::vector<ProviderProfile> config_profiles(const Config& config) {
  std::vector<ProviderProfile> out;
  std::vector<Provider> providers = config.providers;
  if (providers.empty() && config.quotas.empty() && config.profiles.empty()) {
    providers.push_back(Provider::gemini);
  }
  auto bare = default_profiles();
  for (Provider p : providers) {
    auto it = bare.find(p);
    if (it == bare.end()) continue;  // an out-of-range enum value: unknown, skipped
    out.push_back(it->second);
  }
  for (const auto& name : config.profiles) {
    if (auto profile = find_profile(name)) out.push_back(std::move(*profile));
  }
  return out;
}

}  // namespace

QuotaMap merged_quotas(const Config& config) {
  QuotaMap out;
  for (const auto& profile : config_profiles(config)) {
    for (const auto& [model, quota] : profile.models) out[model] = quota;
  }
  for (const auto& [model, quota] : config.quotas) out[model] = quota;
  return out;
}

AliasMap merged_aliases(const Config& config) {
  AliasMap out;
  for (const auto& profile : config_profiles(config)) {
    for (const auto& [name, target] : profile.aliases) out[name] = target;
  }
  for (const auto& [name, target] : config.aliases) out[name] = target;
  return out;
}

Result<std::string> default_state_path(Backend backend) {
  std::string home;
  for (const char* var : {"CORE_HOME", "HOME"}) {
    const char* value = std::getenv(var);
    if (value != nullptr && *value != '\0') {
      home = value;
      break;
    }
  }
  if (home.empty()) {
    return make_error(ErrorCode::invalid_argument,
                      "ratelimit.open: no default state path: set CORE_HOME or HOME, or set "
                      "Config::file_path");
  }
  while (home.size() > 1 && home.back() == '/') home.pop_back();
  return home + (backend == Backend::sqlite ? "/.core/ratelimits.db" : "/.core/ratelimits.yaml");
}

}  // namespace ratelimit
