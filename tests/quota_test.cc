#include "ratelimit/quota.h"

#include <gtest/gtest.h>

namespace ratelimit {
namespace {

TEST(ProviderTest, NamesAreExact) {
  for (Provider p : {Provider::gemini, Provider::openai, Provider::anthropic, Provider::local}) {
    EXPECT_EQ(provider_from_string(to_string(p)), p);
  }
  EXPECT_EQ(provider_from_string("Gemini"), std::nullopt);
  EXPECT_EQ(provider_from_string(" openai"), std::nullopt);
  EXPECT_EQ(provider_from_string(""), std::nullopt);
  EXPECT_EQ(to_string(static_cast<Provider>(17)), "unknown");
}

TEST(ProfileTest, TheSeedTable) {
  const auto profiles = default_profiles();
  ASSERT_EQ(profiles.size(), 4u);
  const QuotaMap gemini = {
      {"gemini-3-pro-preview", {150, 1'000'000, 1000}},
      {"gemini-3-flash-preview", {150, 1'000'000, 1000}},
      {"gemini-2.5-pro", {150, 1'000'000, 1000}},
      {"gemini-2.0-flash", {150, 1'000'000, 0}},
      {"gemini-2.0-flash-lite", {0, 0, 0}},
  };
  const QuotaMap openai = {
      {"gpt-4o", {500, 30'000, 0}},      {"gpt-4o-mini", {500, 200'000, 0}},
      {"gpt-4-turbo", {500, 30'000, 0}}, {"o1", {500, 30'000, 0}},
      {"o1-mini", {500, 200'000, 0}},    {"o3-mini", {500, 200'000, 0}},
  };
  const QuotaMap anthropic = {
      {"claude-opus-4", {50, 40'000, 0}},
      {"claude-sonnet-4", {50, 40'000, 0}},
      {"claude-haiku-3.5", {50, 50'000, 0}},
  };
  EXPECT_EQ(profiles.at(Provider::gemini).models, gemini);
  EXPECT_EQ(profiles.at(Provider::openai).models, openai);
  EXPECT_EQ(profiles.at(Provider::anthropic).models, anthropic);
  EXPECT_TRUE(profiles.at(Provider::local).models.empty());
  for (const auto& [p, profile] : profiles) EXPECT_EQ(profile.provider, p);
}

TEST(ProfileTest, EachCallIsAFreshCopy) {
  auto first = default_profiles();
  first[Provider::openai].models["gpt-4o"].max_rpm = 1;
  first[Provider::local].models["mine"] = {1, 1, 1};
  const auto second = default_profiles();
  EXPECT_EQ(second.at(Provider::openai).models.at("gpt-4o").max_rpm, 500);
  EXPECT_TRUE(second.at(Provider::local).models.empty());
}

}  // namespace
}  // namespace ratelimit
