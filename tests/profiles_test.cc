// The built-in provider profiles with tiers: names, lookup and its errors, the shape of the
// data (day starts, input/output limits, tiers that only grow) and the alias tables.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "ratelimit/quota.h"

namespace ratelimit {
namespace {

std::vector<std::string> names() {
  std::vector<std::string> out;
  for (const auto& p : all_profiles()) out.push_back(p.name());
  return out;
}

TEST(Profiles, EveryNameInAStableOrder) {
  EXPECT_EQ(names(), (std::vector<std::string>{
                         "gemini", "gemini:free", "gemini:tier1", "gemini:tier2", "gemini:tier3",
                         "openai", "openai:tier1", "openai:tier2", "openai:tier3", "openai:tier4",
                         "openai:tier5", "anthropic", "anthropic:tier1", "anthropic:tier2",
                         "anthropic:tier3", "anthropic:tier4", "local"}));
}

TEST(Profiles, BareProfilesAreTheDefaults) {
  const auto defaults = default_profiles();
  for (const auto& p : all_profiles()) {
    if (!p.tier.empty()) continue;
    const auto& d = defaults.at(p.provider);
    EXPECT_EQ(p.models, d.models) << p.name();
    EXPECT_EQ(p.aliases, d.aliases) << p.name();
    EXPECT_EQ(d.tier, "");
  }
  for (const auto& [model, q] : defaults.at(Provider::gemini).models) {
    EXPECT_EQ(q.day_start, DayStart::first_request) << model << ": the bare profile is unchanged";
  }
}

TEST(Profiles, FindEveryProfileByName) {
  for (const auto& name : names()) {
    auto p = find_profile(name);
    ASSERT_TRUE(p) << name;
    EXPECT_EQ(p->name(), name);
  }
  auto t = find_profile("anthropic:tier3");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->provider, Provider::anthropic);
  EXPECT_EQ(t->tier, "tier3");
}

TEST(Profiles, UnknownNamesNameTheKnownOnes) {
  for (const char* bad : {"", "nope", "openai:tier6", "OpenAI", " openai", "openai:", "gemini:paid",
                          "local:tier1", "anthropic:Tier1", "openai:tier1 "}) {
    auto p = find_profile(bad);
    ASSERT_FALSE(p) << bad;
    EXPECT_EQ(p.error().code, ErrorCode::invalid_argument);
    EXPECT_EQ(p.error().message.rfind("ratelimit.find_profile: unknown provider profile", 0), 0u)
        << p.error().message;
    EXPECT_NE(p.error().message.find("gemini:free"), std::string::npos);
    EXPECT_NE(p.error().message.find("openai:tier5"), std::string::npos);
  }
}

TEST(Profiles, ShapesPerProvider) {
  for (const auto& p : all_profiles()) {
    if (p.tier.empty()) continue;
    ASSERT_FALSE(p.models.empty()) << p.name();
    for (const auto& [model, q] : p.models) {
      EXPECT_GT(q.max_rpm, 0) << p.name() << " " << model;
      switch (p.provider) {
        case Provider::gemini:
          EXPECT_EQ(q.day_start, DayStart::pacific_midnight) << p.name() << " " << model;
          EXPECT_EQ(q.max_tpm, 0);
          EXPECT_GT(q.max_input_tpm, 0);
          EXPECT_EQ(q.max_output_tpm, 0);
          break;
        case Provider::anthropic:
          EXPECT_EQ(q.day_start, DayStart::first_request);
          EXPECT_EQ(q.max_tpm, 0);
          EXPECT_GT(q.max_input_tpm, 0) << p.name() << " " << model;
          EXPECT_GT(q.max_output_tpm, 0) << p.name() << " " << model;
          break;
        case Provider::openai:
          EXPECT_EQ(q.day_start, DayStart::first_request);
          EXPECT_GT(q.max_tpm, 0);
          EXPECT_EQ(q.max_input_tpm, 0);
          break;
        case Provider::local:
          ADD_FAILURE() << "local has no tiers";
      }
    }
  }
}

// A limit of 0 is "none", more than any number.
std::int64_t rank(std::int64_t limit) { return limit == 0 ? INT64_MAX : limit; }

TEST(Profiles, HigherTiersNeverLowerALimit) {
  const auto all = all_profiles();
  for (std::size_t i = 1; i < all.size(); ++i) {
    const auto& prev = all[i - 1];
    const auto& cur = all[i];
    if (prev.tier.empty() || cur.tier.empty() || prev.provider != cur.provider) continue;
    EXPECT_EQ(prev.models.size(), cur.models.size()) << cur.name();
    for (const auto& [model, q] : cur.models) {
      ASSERT_TRUE(prev.models.contains(model)) << cur.name() << " " << model;
      const ModelQuota& lower = prev.models.at(model);
      EXPECT_GE(rank(q.max_rpm), rank(lower.max_rpm)) << cur.name() << " " << model;
      EXPECT_GE(rank(q.max_tpm), rank(lower.max_tpm)) << cur.name() << " " << model;
      EXPECT_GE(rank(q.max_rpd), rank(lower.max_rpd)) << cur.name() << " " << model;
      EXPECT_GE(rank(q.max_input_tpm), rank(lower.max_input_tpm)) << cur.name() << " " << model;
      EXPECT_GE(rank(q.max_output_tpm), rank(lower.max_output_tpm)) << cur.name() << " " << model;
    }
  }
}

TEST(Profiles, SomeFiguresFromTheProvidersPages) {
  EXPECT_EQ(find_profile("openai:tier1")->models.at("gpt-4o"), (ModelQuota{500, 30'000, 0}));
  EXPECT_EQ(find_profile("openai:tier5")->models.at("gpt-4o-mini"),
            (ModelQuota{30'000, 150'000'000, 0}));
  const ModelQuota sonnet = find_profile("anthropic:tier1")->models.at("claude-sonnet-4");
  EXPECT_EQ(sonnet.max_rpm, 50);
  EXPECT_EQ(sonnet.max_input_tpm, 30'000);
  EXPECT_EQ(sonnet.max_output_tpm, 8'000);
  const ModelQuota flash = find_profile("gemini:free")->models.at("gemini-2.5-flash");
  EXPECT_EQ(flash.max_rpm, 10);
  EXPECT_EQ(flash.max_input_tpm, 250'000);
  EXPECT_EQ(flash.max_rpd, 250);
}

TEST(Profiles, AliasesLeadToTheProfilesOwnModels) {
  for (const auto& p : all_profiles()) {
    for (const auto& [from, to] : p.aliases) {
      EXPECT_TRUE(p.models.contains(to)) << p.name() << ": " << from << " -> " << to;
      EXPECT_FALSE(p.models.contains(from)) << p.name() << ": " << from << " is a model";
      EXPECT_NE(from, to);
    }
  }
  const auto bare = default_profiles();
  const AliasMap& a = bare.at(Provider::anthropic).aliases;
  EXPECT_EQ(a.at("claude-3-5-haiku-20241022"), "claude-haiku-3.5");
  EXPECT_EQ(a.at("claude-sonnet-4-20250514"), "claude-sonnet-4");
  EXPECT_EQ(a.at("claude-opus-4-1-20250805"), "claude-opus-4");
  EXPECT_FALSE(a.contains("claude-haiku-4-5"));  // the bare profile has no Haiku 4.5
  EXPECT_EQ(find_profile("anthropic:tier2")->aliases.at("claude-haiku-4-5"), "claude-haiku-4.5");
  EXPECT_EQ(bare.at(Provider::openai).aliases.at("gpt-4-turbo-preview"), "gpt-4-turbo");
  EXPECT_EQ(find_profile("gemini:tier1")->aliases.at("gemini-2.5-flash-preview-09-2025"),
            "gemini-2.5-flash");
  EXPECT_TRUE(bare.at(Provider::gemini).aliases.contains("gemini-2.5-pro-preview-06-05"));
  EXPECT_TRUE(bare.at(Provider::local).aliases.empty());
  EXPECT_TRUE(bare.at(Provider::local).models.empty());
}

TEST(DayStartNames, RoundTrip) {
  for (DayStart d : {DayStart::first_request, DayStart::pacific_midnight}) {
    EXPECT_EQ(day_start_from_string(to_string(d)), d);
  }
  EXPECT_EQ(to_string(DayStart::pacific_midnight), "pacific_midnight");
  EXPECT_EQ(to_string(static_cast<DayStart>(9)), "unknown");
  EXPECT_EQ(day_start_from_string("Pacific_Midnight"), std::nullopt);
  EXPECT_EQ(day_start_from_string(""), std::nullopt);
}

}  // namespace
}  // namespace ratelimit
