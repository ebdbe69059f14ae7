#include "ratelimit/config.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <optional>
#include <string>

namespace ratelimit {
namespace {

TEST(BackendTest, NamesTrimmedAndCaseInsensitive) {
  EXPECT_EQ(backend_from_string(""), Backend::yaml);
  EXPECT_EQ(backend_from_string("yaml"), Backend::yaml);
  EXPECT_EQ(backend_from_string("  YAML \t"), Backend::yaml);
  EXPECT_EQ(backend_from_string("sqlite"), Backend::sqlite);
  EXPECT_EQ(backend_from_string(" SQLite"), Backend::sqlite);
  EXPECT_EQ(backend_from_string("Memory"), Backend::memory);
  auto bad = backend_from_string("postgres");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(bad.error().message.find("unknown backend \"postgres\""), std::string::npos);
  EXPECT_EQ(to_string(Backend::yaml), "yaml");
  EXPECT_EQ(to_string(Backend::sqlite), "sqlite");
  EXPECT_EQ(to_string(Backend::memory), "memory");
  EXPECT_EQ(to_string(static_cast<Backend>(9)), "unknown");
}

QuotaMap profile(Provider p) { return default_profiles().at(p).models; }

TEST(MergeTest, EmptyMeansGemini) { EXPECT_EQ(merged_quotas(Config{}), profile(Provider::gemini)); }

TEST(MergeTest, SingleProvider) {
  Config c;
  c.providers = {Provider::openai};
  EXPECT_EQ(merged_quotas(c), profile(Provider::openai));
}

TEST(MergeTest, ProvidersMergeInOrder) {
  Config c;
  c.providers = {Provider::gemini, Provider::openai, Provider::anthropic};
  EXPECT_EQ(merged_quotas(c).size(), 5u + 6u + 3u);
}

TEST(MergeTest, ExplicitQuotasOverride) {
  Config c;
  c.providers = {Provider::openai};
  c.quotas = {{"gpt-4o", {999, 888, 777}}};
  const QuotaMap q = merged_quotas(c);
  EXPECT_EQ(q.at("gpt-4o"), (ModelQuota{999, 888, 777}));
  EXPECT_EQ(q.at("o1"), (ModelQuota{500, 30'000, 0}));
}

TEST(MergeTest, QuotasOnlyGivesOnlyThose) {
  Config c;
  c.quotas = {{"mine", {1, 2, 3}}};
  EXPECT_EQ(merged_quotas(c), (QuotaMap{{"mine", {1, 2, 3}}}));
}

TEST(MergeTest, UnknownProviderGivesNothing) {
  Config c;
  c.providers = {static_cast<Provider>(42)};
  EXPECT_TRUE(merged_quotas(c).empty());
}

TEST(MergeTest, LocalPlusCustomModel) {
  Config c;
  c.providers = {Provider::local};
  c.quotas = {{"llama-3-70b", {30, 0, 0}}};
  EXPECT_EQ(merged_quotas(c), (QuotaMap{{"llama-3-70b", {30, 0, 0}}}));
}

// Saves and restores an environment variable around a test.
class EnvGuard {
 public:
  explicit EnvGuard(const char* name) : name_(name) {
    if (const char* v = std::getenv(name)) saved_ = v;
  }
  ~EnvGuard() {
    if (saved_) {
      ::setenv(name_, saved_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> saved_;
};

TEST(DefaultPathTest, CoreHomeThenHome) {
  EnvGuard core("CORE_HOME"), home("HOME");
  ::setenv("CORE_HOME", "/srv/core", 1);
  ::setenv("HOME", "/home/me", 1);
  EXPECT_EQ(default_state_path(Backend::yaml), "/srv/core/.core/ratelimits.yaml");
  EXPECT_EQ(default_state_path(Backend::sqlite), "/srv/core/.core/ratelimits.db");
  ::setenv("CORE_HOME", "", 1);  // empty counts as unset
  EXPECT_EQ(default_state_path(Backend::yaml), "/home/me/.core/ratelimits.yaml");
  ::setenv("HOME", "/home/me/", 1);
  EXPECT_EQ(default_state_path(Backend::yaml), "/home/me/.core/ratelimits.yaml");
  ::unsetenv("CORE_HOME");
  ::unsetenv("HOME");
  auto none = default_state_path(Backend::yaml);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, ErrorCode::invalid_argument);
}

}  // namespace
}  // namespace ratelimit
