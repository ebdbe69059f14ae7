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
  return make_error(ErrorCode::invalid_argument, "ratelimit.backend: unknown backend \"" +
                                                     std::string(name) +
                                                     "\" (use yaml, sqlite or memory)");
}

QuotaMap merged_quotas(const Config& config) {
  QuotaMap out;
  std::vector<Provider> providers = config.providers;
  if (providers.empty() && config.quotas.empty()) providers.push_back(Provider::gemini);
  const auto profiles = default_profiles();
  for (Provider p : providers) {
    auto it = profiles.find(p);
    if (it == profiles.end()) continue;  // an out-of-range enum value: unknown, skipped
    for (const auto& [model, quota] : it->second.models) out[model] = quota;
  }
  for (const auto& [model, quota] : config.quotas) out[model] = quota;
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
