#include "ratelimit/quota.h"

namespace ratelimit {

std::string_view to_string(Provider provider) {
  switch (provider) {
    case Provider::gemini:
      return "gemini";
    case Provider::openai:
      return "openai";
    case Provider::anthropic:
      return "anthropic";
    case Provider::local:
      return "local";
  }
  return "unknown";
}

std::optional<Provider> provider_from_string(std::string_view name) {
  for (Provider p : {Provider::gemini, Provider::openai, Provider::anthropic, Provider::local}) {
    if (to_string(p) == name) return p;
  }
  return std::nullopt;
}

std::string_view to_string(DayStart day_start) {
  switch (day_start) {
    case DayStart::first_request:
      return "first_request";
    case DayStart::pacific_midnight:
      return "pacific_midnight";
  }
  return "unknown";
}

std::optional<DayStart> day_start_from_string(std::string_view name) {
  for (DayStart d : {DayStart::first_request, DayStart::pacific_midnight}) {
    if (to_string(d) == name) return d;
  }
  return std::nullopt;
}

std::string ProviderProfile::name() const {
  std::string n(to_string(provider));
  if (!tier.empty()) n += ":" + tier;
  return n;
}

std::map<Provider, ProviderProfile> default_profiles() {
  std::map<Provider, ProviderProfile> profiles;
  profiles[Provider::gemini] = {Provider::gemini,
                                {
                                    {"gemini-3-pro-preview", {150, 1'000'000, 1000}},
                                    {"gemini-3-flash-preview", {150, 1'000'000, 1000}},
                                    {"gemini-2.5-pro", {150, 1'000'000, 1000}},
                                    {"gemini-2.0-flash", {150, 1'000'000, 0}},
                                    {"gemini-2.0-flash-lite", {0, 0, 0}},
                                }};
  profiles[Provider::openai] = {Provider::openai,
                                {
                                    {"gpt-4o", {500, 30'000, 0}},
                                    {"gpt-4o-mini", {500, 200'000, 0}},
                                    {"gpt-4-turbo", {500, 30'000, 0}},
                                    {"o1", {500, 30'000, 0}},
                                    {"o1-mini", {500, 200'000, 0}},
                                    {"o3-mini", {500, 200'000, 0}},
                                }};
  profiles[Provider::anthropic] = {Provider::anthropic,
                                   {
                                       {"claude-opus-4", {50, 40'000, 0}},
                                       {"claude-sonnet-4", {50, 40'000, 0}},
                                       {"claude-haiku-3.5", {50, 50'000, 0}},
                                   }};
  profiles[Provider::local] = {Provider::local, {}};
  return profiles;
}

}  // namespace ratelimit

namespace ratelimit {

std::vector<ProviderProfile> all_profiles() {
  std::vector<ProviderProfile> out;
  for (auto& [p, profile] : default_profiles()) out.push_back(std::move(profile));
  return out;
}

Result<ProviderProfile> find_profile(std::string_view name) {
  std::string known;
  for (auto& profile : all_profiles()) {
    if (profile.name() == name) return std::move(profile);
    known += (known.empty() ? "" : ", ") + profile.name();
  }
  return make_error(ErrorCode::invalid_argument,
                    "ratelimit.find_profile: unknown provider profile \"" + std::string(name) +
                        "\"; known profiles: " + known);
}

}  // namespace ratelimit
