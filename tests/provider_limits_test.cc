// Provider-shaped limits on every store: input and output token limits, model names as callers
// send them (aliases, families), the unknown-model policy, Pacific days. Exact boundaries on a
// manual clock; the same assertions on memory, YAML and SQLite.
#include <gtest/gtest.h>

#include <fstream>

#include "store_kinds.h"

namespace ratelimit {
namespace {

using namespace std::chrono_literals;
using testing::StoreFixture;
using testing::StoreKind;

class ProviderLimits : public ::testing::TestWithParam<StoreKind> {
 protected:
  std::unique_ptr<StoreFixture> make(QuotaMap quotas) {
    return std::make_unique<StoreFixture>(GetParam(), std::move(quotas));
  }
};

ModelQuota io_quota(std::int64_t input, std::int64_t output, std::int64_t total = 0) {
  ModelQuota q;
  q.max_tpm = total;
  q.max_input_tpm = input;
  q.max_output_tpm = output;
  return q;
}

// --- input and output tokens ---

TEST_P(ProviderLimits, InputAndOutputTokensFitExactlyToTheirLimits) {
  auto f = make({{"claude", io_quota(100, 50)}});
  RateLimiter& l = *f->limiter;
  ASSERT_TRUE(l.try_acquire("claude", TokenEstimate{60, 10}));
  f->clock->advance(10s);
  ASSERT_TRUE(l.try_acquire("claude", TokenEstimate{40, 40}));  // 100/100 in, 50/50 out
  Decision d = l.decide("claude", TokenEstimate{1, 0});
  EXPECT_EQ(d.code, DecisionCode::input_tpm_exceeded);
  EXPECT_EQ(d.retry_after, 50s);  // the first 60 input tokens leave at 60 s
  EXPECT_EQ(d.stats.input_tpm, 100);
  EXPECT_EQ(d.stats.output_tpm, 50);
  EXPECT_EQ(d.stats.tpm, 150);
  EXPECT_EQ(d.stats.max_input_tpm, 100);
  EXPECT_EQ(d.stats.max_output_tpm, 50);
  d = l.decide("claude", TokenEstimate{0, 1});
  EXPECT_EQ(d.code, DecisionCode::output_tpm_exceeded);
  EXPECT_EQ(d.retry_after, 50s);
  d = l.decide("claude", TokenEstimate{0, 11});  // needs both output entries gone
  EXPECT_EQ(d.retry_after, 60s);
  d = l.decide("claude", TokenEstimate{0, 0});  // nothing more of either: allowed
  EXPECT_TRUE(d.allowed);
  // Each dimension on its own can never fit.
  d = l.decide("claude", TokenEstimate{101, 0});
  EXPECT_EQ(d.code, DecisionCode::input_tpm_exceeded);
  EXPECT_EQ(d.retry_after, Duration::max());
  d = l.decide("claude", TokenEstimate{0, 51});
  EXPECT_EQ(d.code, DecisionCode::output_tpm_exceeded);
  EXPECT_EQ(d.retry_after, Duration::max());
  f->clock->advance(50s - 1ns);
  EXPECT_FALSE(l.decide("claude", TokenEstimate{1, 0}).allowed);
  f->clock->advance(1ns);
  EXPECT_TRUE(l.decide("claude", TokenEstimate{60, 10}).allowed);
  EXPECT_FALSE(l.decide("claude", TokenEstimate{61, 0}).allowed);
}

TEST_P(ProviderLimits, ASingleCountIsInputAndTheTotalLimitStillApplies) {
  auto f = make({{"m", io_quota(100, 0, 120)}});
  RateLimiter& l = *f->limiter;
  ASSERT_TRUE(l.try_acquire("m", 100));  // input
  Decision d = l.decide("m", 1);
  EXPECT_EQ(d.code, DecisionCode::input_tpm_exceeded);
  d = l.decide("m", TokenEstimate{0, 20});  // output only: total 120 of 120
  EXPECT_TRUE(d.allowed);
  d = l.decide("m", TokenEstimate{0, 21});
  EXPECT_EQ(d.code, DecisionCode::tpm_exceeded);
  EXPECT_EQ(d.retry_after, 60s);
}

TEST_P(ProviderLimits, CommitSettlesInputAndOutput) {
  auto f = make({{"m", io_quota(100, 100)}});
  RateLimiter& l = *f->limiter;
  Reservation r = l.try_acquire("m", TokenEstimate{80, 90});
  ASSERT_TRUE(r);
  EXPECT_FALSE(l.decide("m", TokenEstimate{21, 0}).allowed);
  ASSERT_TRUE(r.commit(30, 95));  // fewer input, more output than estimated
  const ModelStats s = *l.stats("m");
  EXPECT_EQ(s.input_tpm, 30);
  EXPECT_EQ(s.output_tpm, 95);
  EXPECT_EQ(s.tpm, 125);
  EXPECT_TRUE(l.decide("m", TokenEstimate{70, 5}).allowed);
  EXPECT_FALSE(l.decide("m", TokenEstimate{70, 6}).allowed);
  // By id as well, and cancel refunds both.
  Reservation r2 = l.try_acquire("m", TokenEstimate{10, 5});
  ASSERT_TRUE(r2);
  ASSERT_TRUE(l.cancel(r2.id()));
  EXPECT_EQ(l.stats("m")->input_tpm, 30);
  EXPECT_EQ(l.stats("m")->output_tpm, 95);
  ASSERT_TRUE(l.record_usage("m", 5, 3));
  EXPECT_EQ(l.stats("m")->input_tpm, 35);
  EXPECT_EQ(l.stats("m")->output_tpm, 98);
}

TEST_P(ProviderLimits, AcquireOfAnEstimateThatCanNeverFitFailsAtOnceNamingTheLimit) {
  auto f = make({{"m", io_quota(100, 50)}});
  RateLimiter& l = *f->limiter;
  auto r = l.acquire("m", TokenEstimate{10, 51});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::never_satisfiable);
  EXPECT_NE(r.error().message.find("max_output_tpm 50"), std::string::npos) << r.error().message;
  r = l.acquire("m", TokenEstimate{101, 0});
  EXPECT_NE(r.error().message.find("max_input_tpm 100"), std::string::npos) << r.error().message;
  EXPECT_EQ(l.acquire("m", TokenEstimate{-1, 0}).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(l.decide("m", TokenEstimate{0, -1}).code, DecisionCode::invalid_tokens);
  const ModelMetrics m = l.metrics()->at("m");
  EXPECT_EQ(m.count(RequestOutcome::output_tpm_exceeded), 1u);
  EXPECT_EQ(m.count(RequestOutcome::input_tpm_exceeded), 1u);
}

TEST_P(ProviderLimits, NewQuotaFieldsRoundTripThroughTheStore) {
  ModelQuota q = io_quota(300, 200, 400);
  q.max_rpm = 5;
  q.day_start = DayStart::pacific_midnight;
  auto f = make({{"m", q}});
  ASSERT_TRUE(f->limiter->try_acquire("m", TokenEstimate{7, 3}));
  ASSERT_TRUE(f->limiter->persist());
  ASSERT_TRUE(f->limiter->close());
  if (!f->persists()) return;
  auto again = f->open(QuotaMap{});
  ASSERT_TRUE(again->load());
  EXPECT_EQ(again->quota("m")->value(), q);
  const ModelStats s = *again->stats("m");
  EXPECT_EQ(s.input_tpm, 7);
  EXPECT_EQ(s.output_tpm, 3);
}

// --- model names as callers send them ---

TEST_P(ProviderLimits, DatedAndPrefixedNamesShareTheirFamilysPool) {
  auto f = make({{"gpt-4o", {2, 0, 0}}, {"gemini-2.0-flash", {1, 0, 0}}});
  RateLimiter& l = *f->limiter;
  Reservation r = l.try_acquire("gpt-4o-2024-08-06", 1);
  ASSERT_TRUE(r);
  EXPECT_EQ(r.decision().resolved_model, "gpt-4o");
  EXPECT_EQ(r.decision().code, DecisionCode::ok);
  ASSERT_TRUE(l.try_acquire("gpt-4o-latest", 1));
  Decision d = l.decide("gpt-4o", 0);  // one pool: two of two used
  EXPECT_EQ(d.code, DecisionCode::rpm_exceeded);
  EXPECT_EQ(d.resolved_model, "gpt-4o");
  EXPECT_EQ(l.stats("gpt-4o-20240806")->rpm, 2);  // stats of the pool
  EXPECT_EQ(l.resolve_model("gpt-4o-2024-08-06-v2").value(), "gpt-4o");
  // models/ prefix and -NNN suffix (Gemini).
  ASSERT_TRUE(l.try_acquire("models/gemini-2.0-flash-001", 0));
  EXPECT_EQ(l.decide("gemini-2.0-flash", 0).code, DecisionCode::rpm_exceeded);
  // No prefix matching: a different model stays unknown.
  d = l.decide("gpt-4o-audio-preview", 1);
  EXPECT_EQ(d.code, DecisionCode::unknown_model);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(l.resolve_model("gpt-4o-audio-preview").value(), "gpt-4o-audio-preview");
  EXPECT_EQ(l.resolve_model("gpt-4o-mini").value(), "gpt-4o-mini");
  // Only the listed suffixes strip: "-2024-8-6" is not a date.
  EXPECT_EQ(l.resolve_model("gpt-4o-2024-8-6").value(), "gpt-4o-2024-8-6");
  // Stats and metrics live under the resolved name only.
  const auto all = *l.all_stats();
  EXPECT_EQ(all.count("gpt-4o-2024-08-06"), 0u);
  EXPECT_EQ(all.at("gpt-4o").rpm, 2);
  const auto metrics = *l.metrics();
  EXPECT_EQ(metrics.at("gpt-4o").count(RequestOutcome::admitted), 2u);
  EXPECT_EQ(metrics.count("gpt-4o-latest"), 0u);
}

TEST_P(ProviderLimits, AConfiguredDatedNameWinsOverItsFamilyAndAliasesApply) {
  auto f = make({{"gpt-4o", {1, 0, 0}}, {"gpt-4o-2024-05-13", {5, 0, 0}}});
  RateLimiter& l = *f->limiter;
  EXPECT_EQ(l.resolve_model("gpt-4o-2024-05-13").value(), "gpt-4o-2024-05-13");
  ASSERT_TRUE(l.try_acquire("gpt-4o-2024-05-13", 0));
  EXPECT_TRUE(l.decide("gpt-4o", 0).allowed);  // separate pools
  // An alias, then a cached resolution that must follow a change.
  ASSERT_TRUE(l.set_alias("my-model", "gpt-4o"));
  EXPECT_EQ(l.aliases()->at("my-model"), "gpt-4o");
  Reservation r = l.try_acquire("my-model", 0);
  ASSERT_TRUE(r);
  EXPECT_EQ(r.decision().resolved_model, "gpt-4o");
  EXPECT_EQ(l.decide("my-model", 0).code, DecisionCode::rpm_exceeded);
  ASSERT_TRUE(l.set_quota("my-model", {3, 0, 0}));  // an exact quota now wins
  Decision d = l.decide("my-model", 0);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.resolved_model, "my-model");
  ASSERT_TRUE(l.remove_quota("my-model"));
  EXPECT_EQ(l.decide("my-model", 0).resolved_model, "gpt-4o");
  ASSERT_TRUE(l.remove_alias("my-model"));
  EXPECT_EQ(l.decide("my-model", 0).code, DecisionCode::unknown_model);
  EXPECT_EQ(l.remove_alias("my-model").error().code, ErrorCode::not_found);
  // A dated alias name resolves through the alias after the family strip.
  ASSERT_TRUE(l.set_alias("claude-3-5-haiku", "gpt-4o-2024-05-13"));
  EXPECT_EQ(l.resolve_model("claude-3-5-haiku-20241022").value(), "gpt-4o-2024-05-13");
  // Bad aliases.
  EXPECT_EQ(l.set_alias("a", "a").error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(l.set_alias("bad\xc0\x80", "a").error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(l.set_alias("a", "").error().code, ErrorCode::invalid_argument);
}

TEST_P(ProviderLimits, AliasCyclesStopAndNeverHang) {
  auto f = make({});
  RateLimiter& l = *f->limiter;
  ASSERT_TRUE(l.set_alias("a", "b"));
  ASSERT_TRUE(l.set_alias("b", "a"));
  auto r = l.resolve_model("a");
  ASSERT_TRUE(r);
  EXPECT_TRUE(*r == "a" || *r == "b");
  EXPECT_TRUE(l.decide("a", 0).allowed);
}

// --- the unknown-model policy ---

TEST_P(ProviderLimits, UnknownModelsAreAllowedDeniedOrGivenTheDefaultQuota) {
  auto f = make({{"known", {1, 0, 0}}});
  RateLimiter& l = *f->limiter;
  EXPECT_EQ(l.unknown_models()->policy, UnknownModelPolicy::allow);
  EXPECT_EQ(l.decide("stranger", 0).code, DecisionCode::unknown_model);
  ASSERT_TRUE(l.set_unknown_models({UnknownModelPolicy::deny, {}}));
  Decision d = l.decide("stranger", 0);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.code, DecisionCode::model_not_allowed);
  EXPECT_FALSE(l.try_acquire("stranger", 0));
  auto a = l.acquire("stranger", 0);
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().code, ErrorCode::never_satisfiable);
  EXPECT_TRUE(l.try_acquire("known", 0));  // known models are not affected
  ModelQuota q{2, 0, 0};
  ASSERT_TRUE(l.set_unknown_models({UnknownModelPolicy::default_quota, q}));
  EXPECT_EQ(l.unknown_models()->quota, q);
  ASSERT_TRUE(l.try_acquire("stranger", 0));
  ASSERT_TRUE(l.try_acquire("stranger", 0));
  d = l.decide("stranger", 0);
  EXPECT_EQ(d.code, DecisionCode::rpm_exceeded);
  EXPECT_EQ(d.stats.max_rpm, 2);
  EXPECT_TRUE(l.decide("other-stranger", 0).allowed);  // a pool of its own per name
  ModelQuota bad{-1, 0, 0};
  EXPECT_EQ(l.set_unknown_models({UnknownModelPolicy::default_quota, bad}).error().code,
            ErrorCode::invalid_argument);
  const LimiterMetrics lm = l.limiter_metrics();
  EXPECT_GE(lm.unknown_models, 1u);
  EXPECT_EQ(l.metrics()->at("stranger").count(RequestOutcome::model_not_allowed), 2u);
}

TEST_P(ProviderLimits, TheFirstUnknownNameIsReportedOnce) {
  auto f = make({});
  RateLimiter& l = *f->limiter;
  const std::size_t before = f->warnings->size();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(l.try_acquire("mystery-model", 0));
  ASSERT_EQ(f->warnings->size(), before + 1);
  EXPECT_NE(f->warnings->back().find("\"mystery-model\" has no quota"), std::string::npos);
  EXPECT_EQ(l.limiter_metrics().unknown_models, 1u);
}

TEST_P(ProviderLimits, AnUnknownNameOnlyAskedAboutIsReportedOnceToo) {
  // decide() and stats() make nothing for a name without a quota, but the name is still
  // counted and logged once (what `ratelimit check` and /v1/decide show), and a later
  // try_acquire of the same name does not report it again.
  auto f = make({});
  RateLimiter& l = *f->limiter;
  const std::size_t before = f->warnings->size();
  for (int i = 0; i < 3; ++i) {
    const Decision d = l.decide("only-asked-about", 5);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.code, DecisionCode::unknown_model);
  }
  ASSERT_EQ(f->warnings->size(), before + 1);
  EXPECT_NE(f->warnings->back().find("ratelimit.decide: model \"only-asked-about\" has no quota"),
            std::string::npos)
      << f->warnings->back();
  EXPECT_EQ(l.limiter_metrics().unknown_models, 1u);
  ASSERT_TRUE(l.try_acquire("only-asked-about", 0));
  EXPECT_EQ(f->warnings->size(), before + 1);
  EXPECT_TRUE(l.decide("another-unknown", 0).allowed);
  EXPECT_EQ(f->warnings->size(), before + 2);
  EXPECT_EQ(l.limiter_metrics().unknown_models, 2u);
}

// --- days ---

// 2026-03-08 is the day Pacific time springs forward (a 23 h day), 2026-11-01 the day it falls
// back (25 h).
TimePoint utc(int y, int mo, int d, int h, int mi) {
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  return TimePoint(std::chrono::seconds(timegm(&tm)));
}

TEST_P(ProviderLimits, APacificDayEndsAtMidnightPacificAcrossDaylightSavingTime) {
  ModelQuota q{0, 0, 2};
  q.day_start = DayStart::pacific_midnight;
  auto f = make({{"gemini", q}});
  RateLimiter& l = *f->limiter;
  // 2026-03-07 22:00 PST = 2026-03-08 06:00 UTC; the next midnight PT is 2026-03-09 00:00 PDT
  // = 07:00 UTC: 25 h later on the wall, but the day of 2026-03-08 is 23 h long.
  f->clock->set(utc(2026, 3, 8, 6, 0));
  ASSERT_TRUE(l.try_acquire("gemini", 0));
  ASSERT_TRUE(l.try_acquire("gemini", 0));
  Decision d = l.decide("gemini", 0);
  EXPECT_EQ(d.code, DecisionCode::rpd_exceeded);
  EXPECT_EQ(d.retry_after, 2h);  // 2026-03-08 00:00 PST = 08:00 UTC
  EXPECT_EQ(d.stats.day_end, utc(2026, 3, 8, 8, 0));
  f->clock->set(utc(2026, 3, 8, 8, 0) - 1ns);
  EXPECT_FALSE(l.decide("gemini", 0).allowed);
  f->clock->set(utc(2026, 3, 8, 8, 0));
  ASSERT_TRUE(l.try_acquire("gemini", 0));
  ASSERT_TRUE(l.try_acquire("gemini", 0));
  d = l.decide("gemini", 0);
  EXPECT_EQ(d.retry_after, 23h);  // the short day: midnight PDT = 07:00 UTC on the 9th
  // The fall-back day: 2026-11-01 00:00 PDT = 07:00 UTC, next midnight 2026-11-02 00:00 PST =
  // 08:00 UTC.
  f->clock->set(utc(2026, 11, 1, 7, 0));
  ASSERT_TRUE(l.try_acquire("gemini", 0));
  ASSERT_TRUE(l.try_acquire("gemini", 0));
  d = l.decide("gemini", 0);
  EXPECT_EQ(d.retry_after, 25h);
}

TEST_P(ProviderLimits, AFirstRequestDayIsTwentyFourHours) {
  auto f = make({{"m", {0, 0, 1}}});
  RateLimiter& l = *f->limiter;
  f->clock->set(utc(2026, 3, 8, 6, 0));
  ASSERT_TRUE(l.try_acquire("m", 0));
  Decision d = l.decide("m", 0);
  EXPECT_EQ(d.retry_after, 24h);
  EXPECT_EQ(d.stats.day_end, utc(2026, 3, 9, 6, 0));
}

// --- learned from responses ---

ProviderResponse response(int status, std::vector<std::pair<std::string, std::string>> headers,
                          ResponseFormat format = ResponseFormat::auto_detect) {
  ProviderResponse r;
  r.format = format;
  r.status = status;
  r.headers = std::move(headers);
  return r;
}

TEST_P(ProviderLimits, A429CoolsTheModelDownUntilExactlyItsRetryAfter) {
  auto f = make({{"gpt-4o", {100, 0, 0}}});
  RateLimiter& l = *f->limiter;
  auto o = l.observe("gpt-4o-2024-08-06", response(429, {{"Retry-After", "30"}}));
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_EQ(o->resolved_model, "gpt-4o");
  EXPECT_EQ(o->learned.cooldown_until, testing::start_time() + 30s);
  Decision d = l.decide("gpt-4o", 0);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.code, DecisionCode::provider_cooldown);
  EXPECT_EQ(d.retry_after, 30s);
  EXPECT_EQ(d.stats.learned.cooldown_until, testing::start_time() + 30s);
  EXPECT_FALSE(l.try_acquire("gpt-4o", 0));
  // A shorter cooldown never shortens the one held; a longer one extends it.
  ASSERT_TRUE(l.observe("gpt-4o", response(429, {{"retry-after-ms", "5000"}})));
  EXPECT_EQ(l.decide("gpt-4o", 0).retry_after, 30s);
  f->clock->advance(30s - 1ns);
  EXPECT_EQ(l.decide("gpt-4o", 0).code, DecisionCode::provider_cooldown);
  f->clock->advance(1ns);
  d = l.decide("gpt-4o", 0);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.stats.learned, LearnedLimits{});
  EXPECT_TRUE(l.try_acquire("gpt-4o", 0));
  const ModelMetrics m = l.metrics()->at("gpt-4o");
  EXPECT_EQ(m.responses_observed, 2u);
  EXPECT_EQ(m.cooldowns_learned, 2u);
  EXPECT_EQ(m.count(RequestOutcome::provider_cooldown), 1u);
}

TEST_P(ProviderLimits, ACooldownAppliesToModelsWithoutAQuotaAndAcquireWaitsItOut) {
  auto f = make({});
  RateLimiter& l = *f->limiter;
  ASSERT_TRUE(l.observe("local-model", response(429, {{"retry-after", "2"}})));
  EXPECT_EQ(l.decide("local-model", 0).code, DecisionCode::provider_cooldown);
  auto r = l.acquire("local-model", 0);  // the manual clock jumps to the end of the cooldown
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(f->clock->now(), testing::start_time() + 2s);
  EXPECT_EQ(r->decision().code, DecisionCode::unknown_model);
}

TEST_P(ProviderLimits, ARemainingBudgetIsACeilingUntilItsReset) {
  auto f = make({{"claude-sonnet-4", io_quota(0, 0, 0)}});
  RateLimiter& l = *f->limiter;
  ASSERT_TRUE(l.set_quota("claude-sonnet-4", {50, 0, 0}));
  // Anthropic: 2 requests left until 20 s from now; plenty of tokens.
  auto o =
      l.observe("claude-sonnet-4-20250514",
                response(200, {{"anthropic-ratelimit-requests-limit", "50"},
                               {"anthropic-ratelimit-requests-remaining", "2"},
                               {"anthropic-ratelimit-requests-reset", "2026-02-19T10:00:20Z"}}));
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_EQ(o->format, ResponseFormat::anthropic);
  EXPECT_EQ(o->learned.requests.left, 2);
  EXPECT_EQ(o->learned.cooldown_until, TimePoint{});
  ASSERT_TRUE(l.try_acquire("claude-sonnet-4", 0));
  ASSERT_TRUE(l.try_acquire("claude-sonnet-4", 0));
  Decision d = l.decide("claude-sonnet-4", 0);
  EXPECT_EQ(d.code, DecisionCode::provider_limit);
  EXPECT_EQ(d.retry_after, 20s);
  EXPECT_EQ(d.stats.learned.requests.left, 0);
  f->clock->advance(20s);
  EXPECT_TRUE(l.decide("claude-sonnet-4", 0).allowed);  // the ceiling expired; the quota rules
  // A remaining of 0 with a reset is a cooldown until the reset.
  o = l.observe("claude-sonnet-4",
                response(200, {{"anthropic-ratelimit-tokens-remaining", "0"},
                               {"anthropic-ratelimit-tokens-reset", "2026-02-19T10:00:50Z"}}));
  ASSERT_TRUE(o);
  d = l.decide("claude-sonnet-4", 0);
  EXPECT_EQ(d.code, DecisionCode::provider_cooldown);
  EXPECT_EQ(d.retry_after, 30s);
  // reset() clears what was learned.
  ASSERT_TRUE(l.reset("claude-sonnet-4"));
  EXPECT_TRUE(l.decide("claude-sonnet-4", 0).allowed);
}

TEST_P(ProviderLimits, GarbageHeadersAreIgnoredAndCountedNeverAWildCooldown) {
  auto f = make({{"gpt-4o", {10, 0, 0}}});
  RateLimiter& l = *f->limiter;
  auto o = l.observe("gpt-4o", response(200,
                                        {{"x-ratelimit-remaining-requests", "lots"},
                                         {"x-ratelimit-reset-requests", "-5s"},
                                         {"x-ratelimit-remaining-tokens", "-1"},
                                         {"x-ratelimit-reset-tokens", "99999999h"}},
                                        ResponseFormat::openai));
  ASSERT_TRUE(o);
  EXPECT_FALSE(o->ignored.empty());
  EXPECT_EQ(o->learned, LearnedLimits{});
  EXPECT_GE(l.limiter_metrics().provider_values_ignored, 3u);
  EXPECT_TRUE(l.decide("gpt-4o", 0).allowed);
  // A retry-after of days is capped at 25 h.
  ASSERT_TRUE(l.observe("gpt-4o", response(429, {{"retry-after", "864000"}})));
  const Duration retry = l.decide("gpt-4o", 0).retry_after;
  EXPECT_LE(retry, 25h);
  EXPECT_EQ(l.observe("bad\xc0\x80", response(429, {})).error().code, ErrorCode::invalid_argument);
}

TEST_P(ProviderLimits, LearnedQuotasFillOnlyModelsWithoutOne) {
  auto f = make({{"gpt-4o", {7, 0, 0}}});
  Config config = f->limiter->config();
  config.learn_quotas = true;
  config.quotas = {{"gpt-4o", {7, 0, 0}}};
  config.providers = {Provider::local};
  auto opened = RateLimiter::open(config);
  if (GetParam() == StoreKind::sqlite) opened = RateLimiter::open_sqlite(config.file_path, config);
  ASSERT_TRUE(opened);
  RateLimiter& l = **opened;
  const auto headers = std::vector<std::pair<std::string, std::string>>{
      {"x-ratelimit-limit-requests", "500"},     {"x-ratelimit-limit-tokens", "30000"},
      {"x-ratelimit-remaining-requests", "499"}, {"x-ratelimit-remaining-tokens", "29000"},
      {"x-ratelimit-reset-requests", "120ms"},   {"x-ratelimit-reset-tokens", "2s"}};
  auto o = l.observe("gpt-4o-mini", response(200, headers, ResponseFormat::openai));
  ASSERT_TRUE(o) << o.error().message;
  ASSERT_TRUE(o->quota_learned.has_value());
  EXPECT_EQ(o->quota_learned->max_rpm, 500);
  EXPECT_EQ(o->quota_learned->max_tpm, 30000);
  EXPECT_EQ(l.quota("gpt-4o-mini")->value().max_rpm, 500);
  o = l.observe("gpt-4o", response(200, headers, ResponseFormat::openai));
  ASSERT_TRUE(o);
  EXPECT_FALSE(o->quota_learned.has_value());  // never over a configured quota
  EXPECT_EQ(l.quota("gpt-4o")->value().max_rpm, 7);
  EXPECT_EQ(o->learned.requests.left, 499);
}

TEST_P(ProviderLimits, AliasesThePolicyAndWhatWasLearnedSurviveAReopen) {
  ModelQuota q{5, 0, 0};
  q.max_output_tpm = 9;
  q.day_start = DayStart::pacific_midnight;
  auto f = make({{"m", q}});
  RateLimiter& l = *f->limiter;
  ASSERT_TRUE(l.set_alias("my-m", "m"));
  ASSERT_TRUE(l.set_unknown_models({UnknownModelPolicy::default_quota, ModelQuota{3, 0, 0}}));
  ASSERT_TRUE(l.try_acquire("my-m", TokenEstimate{2, 4}));
  ASSERT_TRUE(l.observe("m", response(429, {{"retry-after", "40"}})));
  ASSERT_TRUE(l.observe(
      "m", response(200, {{"anthropic-ratelimit-requests-remaining", "3"},
                          {"anthropic-ratelimit-requests-reset", "2026-02-19T10:00:50Z"},
                          {"anthropic-ratelimit-input-tokens-remaining", "100"},
                          {"anthropic-ratelimit-input-tokens-reset", "2026-02-19T10:00:50Z"}})));
  ASSERT_TRUE(l.persist());
  ASSERT_TRUE(l.close());
  if (!f->persists()) return;
  auto again = f->open(QuotaMap{});
  ASSERT_TRUE(again->load());
  EXPECT_EQ(again->aliases()->at("my-m"), "m");
  EXPECT_EQ(again->unknown_models()->policy, UnknownModelPolicy::default_quota);
  EXPECT_EQ(again->unknown_models()->quota.max_rpm, 3);
  EXPECT_EQ(again->quota("m")->value(), q);
  const ModelStats s = *again->stats("my-m");
  EXPECT_EQ(s.output_tpm, 4);
  EXPECT_EQ(s.input_tpm, 2);
  EXPECT_EQ(s.learned.cooldown_until, testing::start_time() + 40s);
  EXPECT_EQ(s.learned.requests.left, 3);
  EXPECT_EQ(s.learned.input_tokens.left, 100);
  EXPECT_EQ(again->decide("my-m", 0).code, DecisionCode::provider_cooldown);
}

// Our YAML keys: read back exactly, and a damaged one is corrupt_state naming it.
TEST(ProviderLimitsYaml, OurKeysAreCheckedWhenRead) {
  const std::pair<const char*, const char*> bad[] = {
      {"aliases: [a, b]\n", "\"aliases\" is not a map"},
      {"aliases: {a: [b]}\n", "alias target is not a scalar"},
      {"unknown_models: [deny]\n", "\"unknown_models\" is not a map"},
      {"unknown_models: {policy: maybe}\n", "unknown_models.policy"},
      {"unknown_models: {policy: default_quota, quota: 5}\n", "unknown_models.quota"},
      {"unknown_models: {quota: {max_rpm: -1}}\n", "max_rpm is negative"},
      {"learned: [m]\n", "\"learned\" is not a map"},
      {"learned: {m: 5}\n", "learned is not a map"},
      {"learned: {m: {cooldown_until: soon}}\n", "learned.cooldown_until"},
      {"learned: {m: {requests: 3}}\n", "learned.requests is not a map"},
      {"learned: {m: {requests: {left: -2, until: 2026-02-19T10:00:00Z}}}\n", "left"},
      {"quotas: {m: {max_input_tpm: x}}\n", "max_input_tpm"},
      {"quotas: {m: {day_start: noon}}\n", "day_start"},
      {"state: {m: {tokens: [{time: 2026-02-19T10:00:00Z, count: 1, output: 2}]}}\n",
       "output is more than its count"},
  };
  for (const auto& [text, why] : bad) {
    StoreFixture f(StoreKind::yaml);
    {
      std::ofstream out(f.dir.file("state.yaml"));
      out << text;
    }
    auto s = f.limiter->load();
    ASSERT_FALSE(s) << text;
    EXPECT_EQ(s.error().code, ErrorCode::corrupt_state) << text;
    EXPECT_NE(s.error().message.find(why), std::string::npos) << s.error().message;
  }
  StoreFixture f(StoreKind::yaml);
  {
    std::ofstream out(f.dir.file("state.yaml"));
    out << "quotas: {m: {max_rpm: 1, max_input_tpm: 5, day_start: pacific_midnight}}\n"
           "aliases: {a: m}\nunknown_models: {policy: deny}\n"
           "learned: {m: {cooldown_until: 2026-02-19T10:00:30Z}}\n";
  }
  ASSERT_TRUE(f.limiter->load());
  EXPECT_EQ(f.limiter->quota("m")->value().max_input_tpm, 5);
  EXPECT_EQ(f.limiter->decide("a", 0).code, DecisionCode::provider_cooldown);
  EXPECT_EQ(f.limiter->decide("other", 0).code, DecisionCode::model_not_allowed);
}

INSTANTIATE_TEST_SUITE_P(Stores, ProviderLimits, ::testing::ValuesIn(testing::all_store_kinds()),
                         [](const ::testing::TestParamInfo<StoreKind>& info) {
                           return testing::store_name(info.param);
                         });

}  // namespace
}  // namespace ratelimit
