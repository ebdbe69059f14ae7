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

namespace {

// Figures and their sources: docs/providers.md.

ModelQuota rpm_tpm(std::int64_t rpm, std::int64_t tpm, std::int64_t rpd = 0) {
  return {rpm, tpm, rpd};
}

// Anthropic: requests, input tokens and output tokens per minute (RPM, ITPM, OTPM).
ModelQuota claude(std::int64_t rpm, std::int64_t itpm, std::int64_t otpm) {
  ModelQuota q;
  q.max_rpm = rpm;
  q.max_input_tpm = itpm;
  q.max_output_tpm = otpm;
  return q;
}

// Gemini: TPM counts input tokens; the day is Pacific (RPD resets at midnight Pacific).
ModelQuota gemini(std::int64_t rpm, std::int64_t itpm, std::int64_t rpd) {
  ModelQuota q;
  q.max_rpm = rpm;
  q.max_input_tpm = itpm;
  q.max_rpd = rpd;
  q.day_start = DayStart::pacific_midnight;
  return q;
}

// The providers' real ids → profile names, where the family rule (strip models/, a date,
// -latest, -NNN, -vN) does not already lead there. Kept in a profile only when its target is
// one of the profile's models.
const AliasMap& known_aliases(Provider provider) {
  static const AliasMap openai = {
      {"gpt-4-turbo-preview", "gpt-4-turbo"},
      {"gpt-4-0125-preview", "gpt-4-turbo"},
      {"gpt-4-1106-preview", "gpt-4-turbo"},
  };
  static const AliasMap anthropic = {
      {"claude-3-5-haiku-20241022", "claude-haiku-3.5"},
      {"claude-3-5-haiku-latest", "claude-haiku-3.5"},
      {"claude-3-7-sonnet-20250219", "claude-sonnet-3.7"},
      {"claude-3-7-sonnet-latest", "claude-sonnet-3.7"},
      {"claude-sonnet-4-20250514", "claude-sonnet-4"},
      {"claude-sonnet-4-0", "claude-sonnet-4"},
      {"claude-sonnet-4-5", "claude-sonnet-4"},  // Sonnet 4.x share one pool
      {"claude-sonnet-4-5-20250929", "claude-sonnet-4"},
      {"claude-opus-4-20250514", "claude-opus-4"},
      {"claude-opus-4-0", "claude-opus-4"},
      {"claude-opus-4-1", "claude-opus-4"},  // Opus 4.x share one pool
      {"claude-opus-4-1-20250805", "claude-opus-4"},
      {"claude-opus-4-5", "claude-opus-4"},
      {"claude-opus-4-5-20251101", "claude-opus-4"},
      {"claude-haiku-4-5", "claude-haiku-4.5"},
      {"claude-haiku-4-5-20251001", "claude-haiku-4.5"},
  };
  static const AliasMap gemini = {
      {"gemini-2.5-pro-preview-06-05", "gemini-2.5-pro"},
      {"gemini-2.5-flash-preview-09-2025", "gemini-2.5-flash"},
      {"gemini-2.5-flash-lite-preview-09-2025", "gemini-2.5-flash-lite"},
  };
  static const AliasMap none;
  switch (provider) {
    case Provider::openai:
      return openai;
    case Provider::anthropic:
      return anthropic;
    case Provider::gemini:
      return gemini;
    case Provider::local:
      break;
  }
  return none;
}

ProviderProfile make_profile(Provider provider, std::string tier, QuotaMap models) {
  ProviderProfile p{provider, std::move(models), std::move(tier), {}};
  for (const auto& [from, to] : known_aliases(provider)) {
    if (p.models.contains(to)) p.aliases.emplace(from, to);
  }
  return p;
}

// The tiered profiles of one provider, lowest tier first.
std::vector<ProviderProfile> tiers(Provider provider) {
  std::vector<ProviderProfile> out;
  switch (provider) {
    case Provider::openai: {
      // {tier, gpt-4o & gpt-4.1 & o1, gpt-4o-mini & gpt-4.1-mini/nano & o1-mini, gpt-4-turbo,
      //  o3-mini}
      struct Row {
        const char* tier;
        ModelQuota big, mini, turbo, o3_mini;
      };
      const Row rows[] = {
          {"tier1", rpm_tpm(500, 30'000), rpm_tpm(500, 200'000), rpm_tpm(500, 30'000),
           rpm_tpm(500, 30'000)},
          {"tier2", rpm_tpm(5'000, 450'000), rpm_tpm(5'000, 2'000'000), rpm_tpm(5'000, 450'000),
           rpm_tpm(5'000, 450'000)},
          {"tier3", rpm_tpm(5'000, 800'000), rpm_tpm(5'000, 4'000'000), rpm_tpm(5'000, 600'000),
           rpm_tpm(5'000, 800'000)},
          {"tier4", rpm_tpm(10'000, 2'000'000), rpm_tpm(10'000, 10'000'000),
           rpm_tpm(10'000, 800'000), rpm_tpm(10'000, 2'000'000)},
          {"tier5", rpm_tpm(10'000, 30'000'000), rpm_tpm(30'000, 150'000'000),
           rpm_tpm(10'000, 2'000'000), rpm_tpm(10'000, 150'000'000)},
      };
      for (const Row& r : rows) {
        out.push_back(make_profile(provider, r.tier,
                                   {
                                       {"gpt-4o", r.big},
                                       {"gpt-4.1", r.big},
                                       {"o1", r.big},
                                       {"gpt-4o-mini", r.mini},
                                       {"gpt-4.1-mini", r.mini},
                                       {"gpt-4.1-nano", r.mini},
                                       {"o1-mini", r.mini},
                                       {"gpt-4-turbo", r.turbo},
                                       {"o3-mini", r.o3_mini},
                                   }));
      }
      break;
    }
    case Provider::anthropic: {
      // {tier, Opus 4.x & Sonnet 4.x, Haiku 4.5, Sonnet 3.7, Haiku 3.5}
      struct Row {
        const char* tier;
        ModelQuota four, haiku45, sonnet37, haiku35;
      };
      const Row rows[] = {
          {"tier1", claude(50, 30'000, 8'000), claude(50, 50'000, 10'000),
           claude(50, 20'000, 8'000), claude(50, 50'000, 10'000)},
          {"tier2", claude(1'000, 450'000, 90'000), claude(1'000, 450'000, 90'000),
           claude(1'000, 40'000, 16'000), claude(1'000, 100'000, 20'000)},
          {"tier3", claude(2'000, 800'000, 160'000), claude(2'000, 1'000'000, 200'000),
           claude(2'000, 80'000, 32'000), claude(2'000, 200'000, 40'000)},
          {"tier4", claude(4'000, 2'000'000, 400'000), claude(4'000, 4'000'000, 800'000),
           claude(4'000, 200'000, 80'000), claude(4'000, 400'000, 80'000)},
      };
      for (const Row& r : rows) {
        out.push_back(make_profile(provider, r.tier,
                                   {
                                       {"claude-opus-4", r.four},
                                       {"claude-sonnet-4", r.four},
                                       {"claude-haiku-4.5", r.haiku45},
                                       {"claude-sonnet-3.7", r.sonnet37},
                                       {"claude-haiku-3.5", r.haiku35},
                                   }));
      }
      break;
    }
    case Provider::gemini: {
      // {tier, 2.5 Pro, 2.5 Flash, 2.5 Flash-Lite, 2.0 Flash, 2.0 Flash-Lite}; RPD 0 = none
      // published.
      struct Row {
        const char* tier;
        ModelQuota pro25, flash25, lite25, flash20, lite20;
      };
      const Row rows[] = {
          {"free", gemini(5, 250'000, 100), gemini(10, 250'000, 250), gemini(15, 250'000, 1'000),
           gemini(15, 1'000'000, 200), gemini(30, 1'000'000, 200)},
          {"tier1", gemini(150, 2'000'000, 10'000), gemini(1'000, 1'000'000, 10'000),
           gemini(4'000, 4'000'000, 0), gemini(2'000, 4'000'000, 0), gemini(4'000, 4'000'000, 0)},
          {"tier2", gemini(1'000, 5'000'000, 50'000), gemini(2'000, 3'000'000, 100'000),
           gemini(10'000, 10'000'000, 0), gemini(10'000, 10'000'000, 0),
           gemini(20'000, 10'000'000, 0)},
          {"tier3", gemini(2'000, 8'000'000, 0), gemini(10'000, 8'000'000, 0),
           gemini(30'000, 30'000'000, 0), gemini(30'000, 30'000'000, 0),
           gemini(30'000, 30'000'000, 0)},
      };
      for (const Row& r : rows) {
        out.push_back(make_profile(provider, r.tier,
                                   {
                                       {"gemini-2.5-pro", r.pro25},
                                       {"gemini-2.5-flash", r.flash25},
                                       {"gemini-2.5-flash-lite", r.lite25},
                                       {"gemini-2.0-flash", r.flash20},
                                       {"gemini-2.0-flash-lite", r.lite20},
                                   }));
      }
      break;
    }
    case Provider::local:
      break;
  }
  return out;
}

}  // namespace

std::map<Provider, ProviderProfile> default_profiles() {
  // go-ratelimit's figures, unchanged: tests and existing state files depend on them.
  std::map<Provider, ProviderProfile> profiles;
  profiles[Provider::gemini] = make_profile(Provider::gemini, "",
                                            {
                                                {"gemini-3-pro-preview", {150, 1'000'000, 1000}},
                                                {"gemini-3-flash-preview", {150, 1'000'000, 1000}},
                                                {"gemini-2.5-pro", {150, 1'000'000, 1000}},
                                                {"gemini-2.0-flash", {150, 1'000'000, 0}},
                                                {"gemini-2.0-flash-lite", {0, 0, 0}},
                                            });
  profiles[Provider::openai] = make_profile(Provider::openai, "",
                                            {
                                                {"gpt-4o", {500, 30'000, 0}},
                                                {"gpt-4o-mini", {500, 200'000, 0}},
                                                {"gpt-4-turbo", {500, 30'000, 0}},
                                                {"o1", {500, 30'000, 0}},
                                                {"o1-mini", {500, 200'000, 0}},
                                                {"o3-mini", {500, 200'000, 0}},
                                            });
  profiles[Provider::anthropic] = make_profile(Provider::anthropic, "",
                                               {
                                                   {"claude-opus-4", {50, 40'000, 0}},
                                                   {"claude-sonnet-4", {50, 40'000, 0}},
                                                   {"claude-haiku-3.5", {50, 50'000, 0}},
                                               });
  profiles[Provider::local] = make_profile(Provider::local, "", {});
  return profiles;
}

std::vector<ProviderProfile> all_profiles() {
  std::vector<ProviderProfile> out;
  auto bare = default_profiles();
  for (Provider p : {Provider::gemini, Provider::openai, Provider::anthropic, Provider::local}) {
    out.push_back(std::move(bare.at(p)));
    for (auto& tiered : tiers(p)) out.push_back(std::move(tiered));
  }
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
