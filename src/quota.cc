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
