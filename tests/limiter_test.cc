// The seed's decision matrix (go-ratelimit's behaviour) in our terms, on a ManualClock.
#include <gtest/gtest.h>

#include <filesystem>

#include "test_util.h"

namespace ratelimit {
namespace {

using namespace std::chrono_literals;
using testing::memory_limiter;

TEST(DecideTest, RpmBoundary) {
  auto f = memory_limiter({{"m", {3, 0, 0}}});
  for (int i = 0; i < 3; ++i) {
    const Decision d = f.limiter->decide("m", 0);
    ASSERT_TRUE(d.allowed);
    EXPECT_EQ(d.code, DecisionCode::ok);
    EXPECT_EQ(d.reason(), "within quota");
    ASSERT_TRUE(f.limiter->record_usage("m", 0, 0));
  }
  const Decision d = f.limiter->decide("m", 0);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.code, DecisionCode::rpm_exceeded);
  EXPECT_EQ(d.reason(), "per-minute request limit reached");
  EXPECT_EQ(d.retry_after, 60s);
  EXPECT_EQ(d.stats.rpm, 3);
  EXPECT_EQ(d.stats.max_rpm, 3);
  f.clock->advance(59s);
  EXPECT_FALSE(f.limiter->can_send("m", 0));
  EXPECT_EQ(f.limiter->decide("m", 0).retry_after, 1s);
  f.clock->advance(1s);
  EXPECT_TRUE(f.limiter->can_send("m", 0));
}

TEST(DecideTest, TpmBoundary) {
  auto f = memory_limiter({{"m", {0, 100, 0}}});
  ASSERT_TRUE(f.limiter->record_usage("m", 60, 30));
  EXPECT_TRUE(f.limiter->can_send("m", 10));  // 90 + 10 of 100
  const Decision d = f.limiter->decide("m", 11);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.code, DecisionCode::tpm_exceeded);
  EXPECT_EQ(d.reason(), "per-minute token limit reached");
  EXPECT_EQ(d.retry_after, 60s);
  ASSERT_TRUE(f.limiter->record_usage("m", 10, 0));
  EXPECT_TRUE(f.limiter->can_send("m", 0));  // zero-token estimate at exactly full
  EXPECT_FALSE(f.limiter->can_send("m", 1));
}

TEST(DecideTest, EstimateAboveTheLimitCanNeverPass) {
  auto f = memory_limiter({{"m", {0, 100, 0}}});
  const Decision d = f.limiter->decide("m", 101);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.code, DecisionCode::tpm_exceeded);
  EXPECT_EQ(d.retry_after, Duration::max());
}

TEST(DecideTest, RpdBoundaryAndDailyReset) {
  auto f = memory_limiter({{"m", {0, 0, 2}}});
  ASSERT_TRUE(f.limiter->record_usage("m", 1, 1));
  f.clock->advance(1h);
  ASSERT_TRUE(f.limiter->record_usage("m", 1, 1));
  Decision d = f.limiter->decide("m", 0);
  EXPECT_EQ(d.code, DecisionCode::rpd_exceeded);
  EXPECT_EQ(d.reason(), "daily request limit reached");
  EXPECT_EQ(d.retry_after, 23h);
  f.clock->advance(22h);  // 23 h after the start, the day is still exhausted
  EXPECT_FALSE(f.limiter->can_send("m", 0));
  EXPECT_EQ(f.limiter->decide("m", 0).retry_after, 1h);
  f.clock->advance(2h);  // 25 h after the start
  d = f.limiter->decide("m", 0);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.stats.rpd, 0);
}

TEST(DecideTest, SingleDimensionQuotas) {
  auto f = memory_limiter({{"rpm-only", {1, 0, 0}}, {"tpm-only", {0, 50, 0}}});
  EXPECT_TRUE(f.limiter->can_send("rpm-only", 1'000'000'000));  // RPM-only ignores tokens
  ASSERT_TRUE(f.limiter->record_usage("rpm-only", 1, 1));
  EXPECT_FALSE(f.limiter->can_send("rpm-only", 0));
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(f.limiter->record_usage("tpm-only", 0, 0));
  EXPECT_TRUE(f.limiter->can_send("tpm-only", 50));  // requests are not limited
  ASSERT_TRUE(f.limiter->record_usage("tpm-only", 25, 25));
  EXPECT_FALSE(f.limiter->can_send("tpm-only", 1));
}

TEST(DecideTest, UnknownUnlimitedAndInvalid) {
  auto f = memory_limiter({{"free", {0, 0, 0}}, {"m", {1, 1, 1}}});
  Decision d = f.limiter->decide("nope", 5);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.code, DecisionCode::unknown_model);
  EXPECT_EQ(d.reason(), "model has no configured quota");
  EXPECT_EQ(d.retry_after, 0s);
  d = f.limiter->decide("free", 1'000'000);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.code, DecisionCode::unlimited);
  EXPECT_EQ(d.reason(), "all limits are unlimited");
  for (const char* model : {"m", "nope", "free"}) {
    d = f.limiter->decide(model, -1);
    EXPECT_FALSE(d.allowed) << model;
    EXPECT_EQ(d.code, DecisionCode::invalid_tokens) << model;
    EXPECT_EQ(d.reason(), "estimated tokens must be non-negative");
    EXPECT_EQ(d.retry_after, 0s);
  }
  EXPECT_FALSE(f.limiter->try_acquire("nope", -1).granted());
}

TEST(DecideTest, DecideRecordsNothing) {
  auto f = memory_limiter({{"m", {1, 0, 0}}});
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(f.limiter->can_send("m", 5));
  EXPECT_EQ(f.limiter->stats("m")->rpm, 0);
}

TEST(DecideTest, DeniedByEveryLimitReportsTheFirstCodeAndTheLatestRetry) {
  auto f = memory_limiter({{"m", {1, 10, 1}}});
  ASSERT_TRUE(f.limiter->record_usage("m", 10, 0));
  f.clock->advance(10s);
  const Decision d = f.limiter->decide("m", 1);
  EXPECT_EQ(d.code, DecisionCode::rpd_exceeded);
  EXPECT_EQ(d.retry_after, 24h - 10s);
}

TEST(WindowPruningTest, SixtySecondsLeavesFiftyNineStays) {
  auto f = memory_limiter({{"m", {10, 0, 0}}});
  ASSERT_TRUE(f.limiter->record_usage("m", 1, 1));
  f.clock->advance(59s);
  EXPECT_EQ(f.limiter->stats("m")->rpm, 1);
  f.clock->advance(1s);
  EXPECT_EQ(f.limiter->stats("m")->rpm, 0);
  EXPECT_EQ(f.limiter->stats("m")->rpd, 1);
}

TEST(WindowPruningTest, KeepsTwoOfFour) {
  auto f = memory_limiter({{"m", {10, 0, 0}}});
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(f.limiter->record_usage("m", 10, 0));
    f.clock->advance(25s);
  }
  // Entries at 0, 25, 50, 75 s; now 100 s: the ones at 50 and 75 s remain.
  const ModelStats s = *f.limiter->stats("m");
  EXPECT_EQ(s.rpm, 2);
  EXPECT_EQ(s.tpm, 20);
}

TEST(WindowPruningTest, ClockSteppingBackwardsClampsToNow) {
  auto f = memory_limiter({{"m", {10, 0, 0}}});
  f.clock->advance(1h);
  ASSERT_TRUE(f.limiter->record_usage("m", 1, 0));
  f.clock->advance(-1h);  // the wall clock went back an hour
  EXPECT_EQ(f.limiter->stats("m")->rpm, 1);
  f.clock->advance(60s);  // the entry was clamped to the earlier now, so it has left
  EXPECT_EQ(f.limiter->stats("m")->rpm, 0);
}

TEST(RecordTest, AccumulatesAndCountsTheDay) {
  auto f = memory_limiter({{"m", {100, 100000, 100}}});
  ASSERT_TRUE(f.limiter->record_usage("m", 100, 50));
  EXPECT_EQ(f.limiter->stats("m")->tpm, 150);
  ASSERT_TRUE(f.limiter->record_usage("m", 30, 10));
  ASSERT_TRUE(f.limiter->record_usage("m", 10, 10));
  ModelStats s = *f.limiter->stats("m");
  EXPECT_EQ(s.tpm, 210);
  EXPECT_EQ(s.rpm, 3);
  EXPECT_EQ(s.rpd, 3);
  ASSERT_TRUE(f.limiter->record_usage("m", 0, 0));
  ASSERT_TRUE(f.limiter->record_usage("m", 0, 0));
  EXPECT_EQ(f.limiter->stats("m")->rpd, 5);
  ASSERT_TRUE(f.limiter->record_usage("m", 0, 0));
  EXPECT_EQ(f.limiter->stats("m")->rpd, 6);
  EXPECT_EQ(f.limiter->stats("m")->day_start, testing::start_time());
}

TEST(RecordTest, NegativeCountsAreZeroAndSumsSaturate) {
  auto f = memory_limiter({{"m", {0, 0, 0}}});
  ASSERT_TRUE(f.limiter->record_usage("m", -100, 25));
  EXPECT_EQ(f.limiter->stats("m")->tpm, 25);
  ASSERT_TRUE(f.limiter->record_usage("m", INT64_MAX, INT64_MAX));
  ASSERT_TRUE(f.limiter->record_usage("m", INT64_MAX, 1));
  EXPECT_EQ(f.limiter->stats("m")->tpm, INT64_MAX);
}

TEST(RecordTest, AnyModelNameWorks) {
  auto f = memory_limiter({});
  for (std::string_view model : {"", "model/with/slash", "model with spaces", "ünïcode"}) {
    ASSERT_TRUE(f.limiter->record_usage(model, 1, 2));
    EXPECT_EQ(f.limiter->stats(model)->tpm, 3) << model;
  }
  EXPECT_EQ(*f.limiter->models(),
            (std::vector<std::string>{"", "model with spaces", "model/with/slash", "ünïcode"}));
}

TEST(StatsTest, KnownUnknownAndQuotaOnly) {
  auto f = memory_limiter({{"m", {10, 1000, 100}}, {"quota-only", {1, 2, 3}}});
  ASSERT_TRUE(f.limiter->record_usage("m", 5, 5));
  ModelStats s = *f.limiter->stats("m");
  // record_usage(5, 5): 5 input and 5 output tokens; the day ends 24 h after it started.
  EXPECT_EQ(s, (ModelStats{1, 10, 10, 1000, 1, 100, testing::start_time(), 5, 0, 5, 0,
                           testing::start_time() + 24h}));
  s = *f.limiter->stats("nope");
  EXPECT_EQ(s, ModelStats{});
  EXPECT_EQ(*f.limiter->models(), (std::vector<std::string>{"m", "quota-only"}));  // no state made
  s = *f.limiter->stats("quota-only");
  EXPECT_EQ(s, (ModelStats{0, 1, 0, 2, 0, 3, TimePoint{}, 0, 0, 0, 0, TimePoint{}}));
}

TEST(StatsTest, AllStatsIsTheUnionPrunedWithDailyReset) {
  auto f = memory_limiter({{"a", {10, 0, 10}}, {"b", {5, 0, 0}}});
  ASSERT_TRUE(f.limiter->record_usage("a", 1, 0));
  ASSERT_TRUE(f.limiter->record_usage("unquoted", 2, 0));
  auto all = *f.limiter->all_stats();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all["a"].rpm, 1);
  EXPECT_EQ(all["b"].max_rpm, 5);
  EXPECT_EQ(all["unquoted"].tpm, 2);
  f.clock->advance(25h);
  all = *f.limiter->all_stats();
  EXPECT_EQ(all["a"].rpm, 0);
  EXPECT_EQ(all["a"].rpd, 0);
  EXPECT_EQ(all.count("unquoted"), 0u);  // no usage left: dropped from state
}

TEST(ResetTest, SingleAllAndUnknown) {
  auto f = memory_limiter({{"a", {10, 0, 0}}, {"b", {10, 0, 0}}});
  ASSERT_TRUE(f.limiter->record_usage("a", 1, 1));
  ASSERT_TRUE(f.limiter->record_usage("b", 1, 1));
  ASSERT_TRUE(f.limiter->record_usage("", 1, 1));
  ASSERT_TRUE(f.limiter->reset("a"));
  EXPECT_EQ(f.limiter->stats("a")->rpm, 0);
  EXPECT_EQ(f.limiter->stats("a")->rpd, 0);
  EXPECT_EQ(f.limiter->stats("b")->rpm, 1);
  EXPECT_TRUE(f.limiter->reset("unknown"));
  EXPECT_EQ(f.limiter->models()->size(), 3u);
  ASSERT_TRUE(f.limiter->reset(""));  // all models, the one named "" included
  EXPECT_EQ(f.limiter->stats("b")->rpm, 0);
  EXPECT_EQ(f.limiter->stats("")->rpm, 0);
  EXPECT_EQ(f.limiter->quota("a"), (ModelQuota{10, 0, 0}));  // quotas untouched
}

TEST(QuotaTest, SetRemoveAndValidate) {
  auto f = memory_limiter({{"m", {1, 0, 0}}});
  ASSERT_TRUE(f.limiter->record_usage("m", 0, 0));
  EXPECT_FALSE(f.limiter->can_send("m", 0));
  ASSERT_TRUE(f.limiter->set_quota("m", {}));  // unlimited
  EXPECT_EQ(f.limiter->decide("m", 0).code, DecisionCode::unlimited);
  ASSERT_TRUE(f.limiter->set_quota("", {2, 0, 0}));
  EXPECT_EQ(f.limiter->quota(""), (ModelQuota{2, 0, 0}));
  for (ModelQuota bad : {ModelQuota{-1, 0, 0}, ModelQuota{0, -1, 0}, ModelQuota{0, 0, -5}}) {
    const Status s = f.limiter->set_quota("m", bad);
    ASSERT_FALSE(s);
    EXPECT_EQ(s.error().code, ErrorCode::invalid_argument);
    EXPECT_EQ(s.error().message.rfind("ratelimit.set_quota: model \"m\": max_", 0), 0u)
        << s.error().message;
  }
  EXPECT_EQ(f.limiter->quota("m"), ModelQuota{});  // unchanged by the bad calls
  ASSERT_TRUE(f.limiter->remove_quota("m"));
  EXPECT_EQ(f.limiter->quota("m"), std::nullopt);
  EXPECT_EQ(f.limiter->decide("m", 0).code, DecisionCode::unknown_model);
  EXPECT_EQ(f.limiter->remove_quota("m").error().code, ErrorCode::not_found);
  EXPECT_EQ(f.limiter->remove_quota("never").error().code, ErrorCode::not_found);
  EXPECT_EQ(f.limiter->quotas(), (QuotaMap{{"", {2, 0, 0}}}));
}

TEST(QuotaTest, AddProviderOverwritesAndIsIdempotent) {
  auto f = memory_limiter({{"gpt-4o", {1, 1, 1}}, {"mine", {7, 7, 7}}});
  ASSERT_TRUE(f.limiter->add_provider(Provider::openai));
  ASSERT_TRUE(f.limiter->add_provider(Provider::openai));
  EXPECT_EQ(f.limiter->quota("gpt-4o"), (ModelQuota{500, 30000, 0}));
  EXPECT_EQ(f.limiter->quota("mine"), (ModelQuota{7, 7, 7}));
  EXPECT_EQ(f.limiter->quotas()->size(), 7u);
  ASSERT_TRUE(f.limiter->add_provider(Provider::local));
  EXPECT_EQ(f.limiter->quotas()->size(), 7u);
  ASSERT_TRUE(f.limiter->add_provider(static_cast<Provider>(42)));  // unknown: no-op
  EXPECT_EQ(f.limiter->quotas()->size(), 7u);
}

TEST(OpenTest, DefaultIsGeminiAndLoadsNothing) {
  testing::TempDir dir;
  Config config;
  config.file_path = dir.file("state.yaml");
  auto limiter = RateLimiter::open(config);
  ASSERT_TRUE(limiter);
  EXPECT_EQ((*limiter)->quotas(), default_profiles()[Provider::gemini].models);
  EXPECT_EQ((*limiter)->config().backend, Backend::yaml);
  EXPECT_EQ((*limiter)->config().file_path, config.file_path);
  EXPECT_TRUE((*limiter)->models()->size() == 5);
}

TEST(OpenTest, RejectsNegativeConfiguredQuotas) {
  Config config;
  config.backend = Backend::memory;
  config.quotas["bad"] = {0, -1, 0};
  auto limiter = RateLimiter::open(config);
  ASSERT_FALSE(limiter);
  EXPECT_EQ(limiter.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(limiter.error().message.find("max_tpm"), std::string::npos);
}

TEST(OpenTest, SqliteOpensTheSharedStore) {  // more in sqlite_*_test.cc
  testing::TempDir dir;
  Config config;
  config.backend = Backend::sqlite;
  config.file_path = dir.file("state.db");
  auto limiter = RateLimiter::open(config);
  ASSERT_TRUE(limiter) << limiter.error().message;
  EXPECT_TRUE((*limiter)->try_acquire("gemini-2.5-pro", 10));
  EXPECT_TRUE(std::filesystem::exists(dir.file("state.db")));
}

TEST(OpenTest, DefaultPathFromCoreHomeThenHome) {
  testing::TempDir dir;
  const char* old_home = std::getenv("HOME");
  const std::string saved_home = old_home ? old_home : "";
  ::setenv("CORE_HOME", dir.path().c_str(), 1);
  Config config;
  auto limiter = RateLimiter::open(config);
  ASSERT_TRUE(limiter);
  EXPECT_EQ((*limiter)->config().file_path, dir.file(".core/ratelimits.yaml"));
  ASSERT_TRUE((*limiter)->record_usage("m", 1, 1));
  ASSERT_TRUE((*limiter)->persist());  // nested parent directory created
  EXPECT_TRUE(std::filesystem::exists(dir.file(".core/ratelimits.yaml")));
  ::unsetenv("CORE_HOME");
  ::unsetenv("HOME");
  auto none = RateLimiter::open(Config{});
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(none.error().message.find("CORE_HOME"), std::string::npos);
  Config memory;
  memory.backend = Backend::memory;
  EXPECT_TRUE(RateLimiter::open(memory));  // needs no path
  if (old_home) ::setenv("HOME", saved_home.c_str(), 1);
}

TEST(PersistTest, RoundTripThroughYaml) {
  testing::TempDir dir;
  auto clock = std::make_shared<ManualClock>(testing::start_time());
  Config config;
  config.file_path = dir.file("nested/dir/state.yaml");
  config.quotas = {{"m", {10, 1000, 100}}, {"model with spaces", {1, 2, 3}}};
  config.clock = clock;
  auto a = std::move(*RateLimiter::open(config));
  ASSERT_TRUE(a->record_usage("m", 100, 23));
  clock->advance(1500ms);
  Reservation r = a->try_acquire("m", 40);
  ASSERT_TRUE(r);
  ASSERT_TRUE(a->record_usage("model/with/slash", 1, 0));
  ASSERT_TRUE(a->persist());
  auto b = std::move(*RateLimiter::open(config));
  ASSERT_TRUE(b->set_quota("other", {1, 1, 1}));
  ASSERT_TRUE(b->load());
  EXPECT_EQ(*b->all_stats(), *a->all_stats());
  EXPECT_EQ(b->quotas(), a->quotas());  // the file's quotas replace the table
  EXPECT_FALSE(*b->quota("other"));
  // Usage loaded counts against the quota.
  clock->advance(58s);
  EXPECT_EQ(b->stats("m")->rpm, 2);
  clock->advance(500ms);
  EXPECT_EQ(b->stats("m")->rpm, 1);
}

TEST(PersistTest, MissingFileLoadsNothingAndCorruptKeepsState) {
  testing::TempDir dir;
  auto f = memory_limiter({});
  Config config;
  config.file_path = dir.file("state.yaml");
  config.quotas = {{"m", {10, 0, 0}}};
  config.clock = f.clock;
  auto limiter = std::move(*RateLimiter::open(config));
  ASSERT_TRUE(limiter->load());  // missing: not an error
  ASSERT_TRUE(limiter->record_usage("m", 1, 1));
  {
    std::FILE* out = std::fopen(config.file_path.c_str(), "w");
    std::fputs("quotas: [unclosed\n  state: {", out);
    std::fclose(out);
  }
  const Status s = limiter->load();
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::corrupt_state);
  EXPECT_EQ(s.error().message.rfind("ratelimit.load: yaml", 0), 0u) << s.error().message;
  EXPECT_EQ(limiter->stats("m")->rpm, 1);  // kept
  EXPECT_EQ(limiter->quota("m"), (ModelQuota{10, 0, 0}));
}

TEST(PersistTest, MemoryBackendPersistsNothingAndCloseIsIdempotent) {
  auto f = memory_limiter({{"m", {1, 0, 0}}});
  EXPECT_TRUE(f.limiter->persist());
  EXPECT_TRUE(f.limiter->load());
  EXPECT_TRUE(f.limiter->close());
  EXPECT_TRUE(f.limiter->close());
  EXPECT_EQ(f.limiter->persist().error().code, ErrorCode::closed);
  EXPECT_EQ(f.limiter->load().error().code, ErrorCode::closed);
}

}  // namespace
}  // namespace ratelimit
