// The store conformance suite: one behaviour, asserted at its exact boundaries, on every store
// (memory, YAML, SQLite; Redis joins when it exists). A store that passes it can stand behind
// the limiter.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>

#include "store_kinds.h"

namespace ratelimit {
namespace {

using namespace std::chrono_literals;
using testing::StoreFixture;
using testing::StoreKind;

class Conformance : public ::testing::TestWithParam<StoreKind> {
 protected:
  std::unique_ptr<StoreFixture> make(QuotaMap quotas) {
    return std::make_unique<StoreFixture>(GetParam(), std::move(quotas));
  }
};

// --- decisions at the exact boundaries ---

TEST_P(Conformance, RequestsLeaveTheWindowAtExactlySixtySeconds) {
  auto f = make({{"m", {3, 0, 0}}});
  RateLimiter& l = *f->limiter;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(l.try_acquire("m", 0)) << i;
  Decision d = l.decide("m", 0);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.code, DecisionCode::rpm_exceeded);
  EXPECT_EQ(d.retry_after, 60s);
  EXPECT_EQ(d.stats.rpm, 3);
  f->clock->advance(60s - 1ns);
  d = l.decide("m", 0);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, 1ns);
  f->clock->advance(1ns);
  d = l.decide("m", 0);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.stats.rpm, 0);
}

TEST_P(Conformance, TokensFitExactlyToTheLimit) {
  auto f = make({{"m", {0, 100, 0}}});
  RateLimiter& l = *f->limiter;
  ASSERT_TRUE(l.try_acquire("m", 60));
  f->clock->advance(10s);
  ASSERT_TRUE(l.try_acquire("m", 40));  // 100 of 100
  Decision d = l.try_acquire("m", 1).decision();
  EXPECT_EQ(d.code, DecisionCode::tpm_exceeded);
  EXPECT_EQ(d.retry_after, 50s);  // the first 60 leave at 60 s
  d = l.decide("m", 61);          // needs both entries gone
  EXPECT_EQ(d.retry_after, 60s);
  d = l.decide("m", 101);  // can never fit
  EXPECT_EQ(d.code, DecisionCode::tpm_exceeded);
  EXPECT_EQ(d.retry_after, Duration::max());
  f->clock->advance(50s);
  EXPECT_TRUE(l.decide("m", 60).allowed);
  EXPECT_FALSE(l.decide("m", 61).allowed);
}

TEST_P(Conformance, TheDayResetsTwentyFourHoursAfterItsFirstRequest) {
  auto f = make({{"m", {0, 0, 2}}});
  RateLimiter& l = *f->limiter;
  ASSERT_TRUE(l.try_acquire("m", 0));
  f->clock->advance(1h);
  ASSERT_TRUE(l.try_acquire("m", 0));
  Decision d = l.decide("m", 0);
  EXPECT_EQ(d.code, DecisionCode::rpd_exceeded);
  EXPECT_EQ(d.retry_after, 23h);
  EXPECT_EQ(d.stats.rpd, 2);
  EXPECT_EQ(d.stats.day_start, testing::start_time());
  f->clock->advance(23h - 1ns);
  EXPECT_FALSE(l.decide("m", 0).allowed);
  f->clock->advance(1ns);
  d = l.decide("m", 0);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.stats.rpd, 0);
}

TEST_P(Conformance, TheFirstExhaustedLimitNamesTheCodeAndTheLatestGivesTheRetry) {
  auto f = make({{"m", {1, 10, 1}}});
  RateLimiter& l = *f->limiter;
  ASSERT_TRUE(l.try_acquire("m", 10));
  const Decision d = l.decide("m", 5);
  EXPECT_EQ(d.code, DecisionCode::rpd_exceeded);  // day, then minute requests, then tokens
  EXPECT_EQ(d.retry_after, 24h);
}

TEST_P(Conformance, CodesBeforeTheLimits) {
  auto f = make({{"limited", {1, 0, 0}}, {"free", {0, 0, 0}}});
  RateLimiter& l = *f->limiter;
  EXPECT_EQ(l.decide("limited", -1).code, DecisionCode::invalid_tokens);
  EXPECT_EQ(l.decide("nobody", -1).code, DecisionCode::invalid_tokens);
  EXPECT_EQ(l.decide(std::string(257, 'x'), -1).code, DecisionCode::invalid_tokens);
  EXPECT_EQ(l.decide(std::string(257, 'x'), 1).code, DecisionCode::invalid_model);
  EXPECT_EQ(l.decide("bad\xff", 1).code, DecisionCode::invalid_model);
  EXPECT_EQ(l.try_acquire("ctl\n", 1).decision().code, DecisionCode::invalid_model);
  const Decision unknown = l.decide("nobody", 5);
  EXPECT_TRUE(unknown.allowed);
  EXPECT_EQ(unknown.code, DecisionCode::unknown_model);
  Reservation free = l.try_acquire("free", 1'000'000);
  EXPECT_TRUE(free);
  EXPECT_EQ(free.decision().code, DecisionCode::unlimited);
  EXPECT_EQ(l.limiter_metrics().invalid_model, 3u);
  EXPECT_EQ(l.decide("", 0).code, DecisionCode::unknown_model);  // "" is a valid name
}

TEST_P(Conformance, RecordedUsageCountsWithoutBeingChecked) {
  auto f = make({{"m", {1, 10, 0}}});
  RateLimiter& l = *f->limiter;
  ASSERT_TRUE(l.record_usage("m", 30, 20));
  ASSERT_TRUE(l.record_usage("m", -5, 3));  // negative counts are 0 (seed rule)
  const ModelStats s = *l.stats("m");
  EXPECT_EQ(s.rpm, 2);
  EXPECT_EQ(s.tpm, 53);
  EXPECT_EQ(s.rpd, 2);
  EXPECT_EQ(l.decide("m", 0).code, DecisionCode::rpm_exceeded);
  EXPECT_EQ(l.record_usage("bad\x01", 1, 1).error().code, ErrorCode::invalid_argument);
}

// --- reservations ---

TEST_P(Conformance, CommitReplacesTheEstimateAtTheOriginalTime) {
  auto f = make({{"m", {10, 100, 0}}});
  RateLimiter& l = *f->limiter;
  Reservation r = l.try_acquire("m", 80);
  ASSERT_TRUE(r);
  f->clock->advance(30s);
  ASSERT_TRUE(r.commit(10, 5));
  EXPECT_EQ(l.stats("m")->tpm, 15);
  EXPECT_EQ(r.commit(1, 1).error().code, ErrorCode::invalid_argument);  // settled once
  f->clock->advance(30s);  // the entry leaves at its original time + 60 s
  EXPECT_EQ(l.stats("m")->tpm, 0);
  EXPECT_EQ(l.stats("m")->rpd, 1);
}

TEST_P(Conformance, CancelRefundsRequestTokensAndTheDay) {
  auto f = make({{"m", {1, 100, 5}}});
  RateLimiter& l = *f->limiter;
  Reservation r = l.try_acquire("m", 50);
  ASSERT_TRUE(r);
  EXPECT_FALSE(l.decide("m", 0).allowed);
  ASSERT_TRUE(r.cancel());
  const ModelStats s = *l.stats("m");
  EXPECT_EQ(s.rpm, 0);
  EXPECT_EQ(s.tpm, 0);
  EXPECT_EQ(s.rpd, 0);
  EXPECT_TRUE(l.decide("m", 100).allowed);
  EXPECT_EQ(r.cancel().error().code, ErrorCode::invalid_argument);
}

TEST_P(Conformance, ReservationsSettleByIdFromAnotherLimiterOnTheStore) {
  auto f = make({{"m", {10, 1000, 0}}});
  RateLimiter& l = *f->limiter;
  Reservation a = l.try_acquire("m", 100);
  Reservation b = l.try_acquire("m", 100);
  ASSERT_TRUE(a && b);
  ASSERT_FALSE(a.id().empty());
  EXPECT_NE(a.id(), b.id());
  // The same limiter always settles by id; a second limiter on a shared store does too.
  RateLimiter* other = &l;
  std::unique_ptr<RateLimiter> second;
  if (f->shared()) {
    second = f->open();
    other = second.get();
  }
  ASSERT_TRUE(other->commit(a.id(), 20, 10));
  ASSERT_TRUE(other->cancel(b.id()));
  EXPECT_EQ(l.stats("m")->tpm, 30);
  EXPECT_EQ(l.stats("m")->rpm, 1);
  EXPECT_EQ(other->commit(a.id(), 1, 1).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(other->cancel(b.id()).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(other->commit("not-an-id", 1, 1).error().code, ErrorCode::not_found);
  EXPECT_EQ(other->cancel("").error().code, ErrorCode::not_found);
  EXPECT_EQ(other->commit(a.id() + "0", 1, 1).error().code, ErrorCode::not_found);
  EXPECT_EQ(other->commit(a.id(), -1, 0).error().code, ErrorCode::invalid_argument);
  // An id whose entry left the window settles with nothing to change.
  Reservation c = l.try_acquire("m", 5);
  f->clock->advance(61s);
  EXPECT_TRUE(other->commit(c.id(), 500, 500));
  EXPECT_EQ(l.stats("m")->tpm, 0);
}

TEST_P(Conformance, ACancelAfterTheWindowStillRefundsTheDayFromTheReservation) {
  auto f = make({{"m", {0, 0, 3}}});
  RateLimiter& l = *f->limiter;
  Reservation r = l.try_acquire("m", 0);
  ASSERT_TRUE(r);
  f->clock->advance(2min);
  ASSERT_TRUE(r.cancel());
  EXPECT_EQ(l.stats("m")->rpd, 0);
}

// --- waiting ---

TEST_P(Conformance, AcquireWaitsForTheExactMoment) {
  auto f = make({{"m", {1, 0, 0}}});
  RateLimiter& l = *f->limiter;
  ASSERT_TRUE(l.try_acquire("m", 0));
  f->clock->advance(15s);
  auto r = l.acquire("m", 0);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(f->clock->now(), testing::start_time() + 60s);
  EXPECT_EQ(l.stats("m")->rpm, 1);
}

TEST_P(Conformance, AcquireEndsAtItsDeadlineOrAtOnceWhenItCanNeverFit) {
  auto f = make({{"m", {1, 100, 0}}});
  RateLimiter& l = *f->limiter;
  ASSERT_TRUE(l.try_acquire("m", 0));
  WaitOptions options;
  options.timeout = 3s;
  auto r = l.acquire("m", 0, options);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::deadline_exceeded);
  EXPECT_EQ(f->clock->now(), testing::start_time() + 3s);
  auto never = l.acquire("m", 101);
  EXPECT_EQ(never.error().code, ErrorCode::never_satisfiable);
  EXPECT_EQ(l.acquire("m", -1).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(l.acquire("bad\xc0\x80", 1).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(l.wait_for_capacity("m", 101).error().code, ErrorCode::never_satisfiable);
  EXPECT_TRUE(l.wait_for_capacity("m", 100));  // waits until the request leaves
  EXPECT_EQ(f->clock->now(), testing::start_time() + 60s);
  const ModelMetrics m = l.metrics()->at("m");
  EXPECT_EQ(m.count(RequestOutcome::deadline_exceeded), 1u);
  EXPECT_EQ(m.count(RequestOutcome::tpm_exceeded), 1u);
  EXPECT_EQ(m.count(RequestOutcome::invalid_tokens), 1u);
}

// A wall clock that steps back an hour during the first sleep, while its monotonic time moves
// on as real time does.
class SteppingBackClock final : public Clock {
 public:
  TimePoint now() const override { return TimePoint(Duration(wall_.load())); }
  bool sleep_until(TimePoint until, std::stop_token stop) override {
    if (stop.stop_requested()) return false;
    const std::int64_t target = until.time_since_epoch().count();
    const std::int64_t slept = std::max<std::int64_t>(0, target - wall_.load());
    mono_ += slept;
    wall_ = stepped_ ? target : target - std::chrono::nanoseconds(1h).count();
    stepped_ = true;
    return true;
  }
  std::chrono::steady_clock::time_point monotonic_now() const override {
    return std::chrono::steady_clock::time_point(Duration(mono_.load()));
  }

 private:
  std::atomic<std::int64_t> wall_{testing::start_time().time_since_epoch().count()};
  std::atomic<std::int64_t> mono_{0};
  std::atomic<bool> stepped_{false};
};

TEST_P(Conformance, ADeadlineIsKeptWhenTheWallClockStepsBack) {
  auto clock = std::make_shared<SteppingBackClock>();
  testing::StoreFixture base(GetParam());
  Config config;
  config.providers = {Provider::local};
  config.quotas = {{"m", {1, 0, 0}}};
  config.clock = clock;
  config.backend = GetParam() == StoreKind::sqlite ? Backend::sqlite : Backend::memory;
  config.file_path = base.dir.file("stepping.db");
  auto l = std::move(*RateLimiter::open(config));
  ASSERT_TRUE(l->try_acquire("m", 0));
  WaitOptions options;
  options.timeout = 3s;
  auto r = l->acquire("m", 0, options);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::deadline_exceeded);
  // Three seconds of monotonic time, not an hour and three seconds of wall time.
  EXPECT_LE(clock->monotonic_now().time_since_epoch(), 3s);
}

TEST_P(Conformance, AcquireAsyncGrantsAtOnceOrWhenCapacityFrees) {
  auto f = make({{"m", {1, 0, 0}}});
  RateLimiter& l = *f->limiter;
  std::optional<Result<Reservation>> first;
  PendingAcquire p = l.acquire_async("m", 0, [&](Result<Reservation> r) { first = std::move(r); });
  ASSERT_TRUE(first.has_value());  // answered on this thread
  ASSERT_TRUE(*first);
  EXPECT_TRUE(p.done());
  std::promise<Result<Reservation>> second;
  p = l.acquire_async("m", 0, [&](Result<Reservation> r) { second.set_value(std::move(r)); });
  // The service's thread sleeps on the manual clock until the exact moment.
  auto got = second.get_future().get();
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(f->clock->now(), testing::start_time() + 60s);
  EXPECT_TRUE(p.done());
  EXPECT_EQ(l.stats("m")->rpm, 1);
}

TEST_P(Conformance, AcquireAsyncIsCancelledOrClosedExactlyOnce) {
  auto f = make({});
  auto gated = std::make_shared<testing::GatedClock>();
  auto l = f->open(QuotaMap{{"m", {1, 0, 0}}}, gated);
  ASSERT_TRUE(l->try_acquire("m", 0));
  std::atomic<int> calls{0};
  std::promise<ErrorCode> first;
  PendingAcquire p = l->acquire_async("m", 0, [&](Result<Reservation> r) {
    ++calls;
    first.set_value(r ? ErrorCode::internal : r.error().code);
  });
  ASSERT_TRUE(gated->wait_for_sleepers(1));  // the service sleeps until the exact moment
  EXPECT_FALSE(p.done());
  p.cancel();
  EXPECT_EQ(first.get_future().get(), ErrorCode::cancelled);
  p.cancel();  // again, after it completed: nothing
  EXPECT_TRUE(p.done());
  // Pending when the limiter closes: completed with `closed`; destroying it calls nothing more.
  std::promise<ErrorCode> second;
  l->acquire_async("m", 0, [&](Result<Reservation> r) {
    ++calls;
    second.set_value(r ? ErrorCode::internal : r.error().code);
  });
  ASSERT_TRUE(gated->wait_for_sleepers(1));
  ASSERT_TRUE(l->close());
  EXPECT_EQ(second.get_future().get(), ErrorCode::closed);
  l.reset();
  EXPECT_EQ(calls.load(), 2);
  // Pending when the limiter is destroyed (never closed): `closed` too.
  auto l2 = f->open(QuotaMap{{"n", {1, 0, 0}}}, gated);
  ASSERT_TRUE(l2->try_acquire("n", 0));
  std::optional<ErrorCode> third;
  l2->acquire_async(
      "n", 0, [&](Result<Reservation> r) { third = r ? ErrorCode::internal : r.error().code; });
  ASSERT_TRUE(gated->wait_for_sleepers(1));
  l2.reset();
  EXPECT_EQ(third, ErrorCode::closed);
  // Bad arguments are answered at once, on this thread.
  std::optional<ErrorCode> bad;
  f->limiter->acquire_async("bad\xff", 0, [&](Result<Reservation> r) { bad = r.error().code; });
  EXPECT_EQ(bad, ErrorCode::invalid_argument);
}

TEST_P(Conformance, ReleasedCapacityWakesAWaiterEarly) {
  auto f = make({});
  auto gated = std::make_shared<testing::GatedClock>();
  auto l = f->open(QuotaMap{{"m", {1, 0, 0}}}, gated);
  Reservation r = l->try_acquire("m", 0);
  ASSERT_TRUE(r);
  std::promise<TimePoint> async_at;
  l->acquire_async("m", 0, [&](Result<Reservation> got) {
    EXPECT_TRUE(got);
    async_at.set_value(gated->now());
  });
  ASSERT_TRUE(gated->wait_for_sleepers(1));
  ASSERT_TRUE(r.cancel());  // in this process: the waiter is woken, not 60 s later
  EXPECT_EQ(async_at.get_future().get(), testing::start_time());
  // A blocking waiter is woken by a commit that lowers the tokens.
  ASSERT_TRUE(l->set_quota("t", {0, 100, 0}));
  Reservation big = l->try_acquire("t", 100);
  ASSERT_TRUE(big);
  auto waiter = std::async(std::launch::async, [&] { return l->acquire("t", 50); });
  ASSERT_TRUE(gated->wait_for_sleepers(1));
  ASSERT_TRUE(big.commit(20, 10));
  auto got = waiter.get();
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(gated->now(), testing::start_time());
}

// --- quotas, reset, close, persistence ---

TEST_P(Conformance, QuotasAreSetReadAndRemoved) {
  auto f = make({{"a", {1, 2, 3}}});
  RateLimiter& l = *f->limiter;
  EXPECT_EQ(*l.quota("a"), (ModelQuota{1, 2, 3}));
  EXPECT_EQ(*l.quota("b"), std::nullopt);
  ASSERT_TRUE(l.set_quota("b", {4, 5, 6}));
  EXPECT_EQ(l.quotas()->size(), 2u);
  EXPECT_EQ(l.set_quota("c", {-1, 0, 0}).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(l.set_quota("bad\x7f", {1, 0, 0}).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(l.quota("bad\x7f").error().code, ErrorCode::invalid_argument);
  ASSERT_TRUE(l.remove_quota("a"));
  EXPECT_EQ(l.remove_quota("a").error().code, ErrorCode::not_found);
  EXPECT_EQ(l.decide("a", 1).code, DecisionCode::unknown_model);
  ASSERT_TRUE(l.add_provider(Provider::openai));
  EXPECT_EQ(*l.quota("gpt-4o"), (ModelQuota{500, 30000, 0}));
  const auto models = *l.models();
  EXPECT_TRUE(std::is_sorted(models.begin(), models.end()));
}

TEST_P(Conformance, ResetClearsOneModelOrEvery) {
  auto f = make({{"a", {5, 0, 0}}, {"b", {5, 0, 0}}});
  RateLimiter& l = *f->limiter;
  ASSERT_TRUE(l.record_usage("a", 1, 1));
  ASSERT_TRUE(l.record_usage("b", 1, 1));
  ASSERT_TRUE(l.reset("a"));
  EXPECT_EQ(l.stats("a")->rpm, 0);
  EXPECT_EQ(l.stats("b")->rpm, 1);
  ASSERT_TRUE(l.reset(""));
  EXPECT_EQ(l.stats("b")->rpm, 0);
  EXPECT_EQ(*l.quota("b"), (ModelQuota{5, 0, 0}));  // quotas stay
  ASSERT_TRUE(l.reset("never-seen"));
  EXPECT_EQ(l.reset("bad\x1b").error().code, ErrorCode::invalid_argument);
}

TEST_P(Conformance, AfterCloseEveryStoreAnswersAlike) {
  auto f = make({{"m", {5, 0, 0}}});
  RateLimiter& l = *f->limiter;
  Reservation r = l.try_acquire("m", 1);
  ASSERT_TRUE(r);
  const std::string id = r.id();
  ASSERT_TRUE(l.close());
  ASSERT_TRUE(l.close());  // idempotent
  EXPECT_EQ(l.decide("m", 0).code, DecisionCode::store_unavailable);
  EXPECT_EQ(l.try_acquire("m", 0).decision().code, DecisionCode::store_unavailable);
  EXPECT_EQ(l.acquire("m", 0).error().code, ErrorCode::closed);
  EXPECT_EQ(l.wait_for_capacity("m", 0).error().code, ErrorCode::closed);
  EXPECT_EQ(l.record_usage("m", 1, 1).error().code, ErrorCode::closed);
  EXPECT_EQ(l.commit(id, 1, 1).error().code, ErrorCode::closed);
  EXPECT_EQ(l.cancel(id).error().code, ErrorCode::closed);
  EXPECT_EQ(l.stats("m").error().code, ErrorCode::closed);
  EXPECT_EQ(l.all_stats().error().code, ErrorCode::closed);
  EXPECT_EQ(l.metrics().error().code, ErrorCode::closed);
  EXPECT_EQ(l.models().error().code, ErrorCode::closed);
  EXPECT_EQ(l.quota("m").error().code, ErrorCode::closed);
  EXPECT_EQ(l.quotas().error().code, ErrorCode::closed);
  EXPECT_EQ(l.set_quota("m", {}).error().code, ErrorCode::closed);
  EXPECT_EQ(l.remove_quota("m").error().code, ErrorCode::closed);
  EXPECT_EQ(l.add_provider(Provider::openai).error().code, ErrorCode::closed);
  EXPECT_EQ(l.reset("").error().code, ErrorCode::closed);
  EXPECT_EQ(l.persist().error().code, ErrorCode::closed);
  EXPECT_EQ(l.load().error().code, ErrorCode::closed);
  EXPECT_EQ(r.commit(1, 1).error().code, ErrorCode::closed);
  std::optional<ErrorCode> async;
  l.acquire_async("m", 0, [&](Result<Reservation> got) { async = got.error().code; });
  EXPECT_EQ(async, ErrorCode::closed);
}

TEST_P(Conformance, UsageAndQuotasSurviveAReopen) {
  auto f = make({{"m", {5, 100, 10}}});
  ASSERT_TRUE(f->limiter->record_usage("m", 10, 5));
  ASSERT_TRUE(f->limiter->set_quota("n", {1, 0, 0}));
  ASSERT_TRUE(f->limiter->persist());
  f->limiter.reset();
  auto again = f->open(QuotaMap{});
  ASSERT_TRUE(again->load());
  if (!f->persists()) {
    EXPECT_EQ(again->stats("m")->rpm, 0);  // memory: nothing survives
    return;
  }
  const ModelStats s = *again->stats("m");
  EXPECT_EQ(s.rpm, 1);
  EXPECT_EQ(s.tpm, 15);
  EXPECT_EQ(s.rpd, 1);
  EXPECT_EQ(s.max_tpm, 100);
  EXPECT_EQ(*again->quota("n"), (ModelQuota{1, 0, 0}));
}

TEST_P(Conformance, ThreadsRacingForTheLastSlotsAdmitExactlyTheQuota) {
  auto f = make({{"m", {20, 0, 0}}});
  RateLimiter& l = *f->limiter;
  std::atomic<int> granted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        if (l.try_acquire("m", 0)) ++granted;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(granted.load(), 20);
  EXPECT_EQ(l.stats("m")->rpm, 20);
  const ModelMetrics m = l.metrics()->at("m");
  EXPECT_EQ(m.count(RequestOutcome::admitted), 20u);
  EXPECT_EQ(m.count(RequestOutcome::rpm_exceeded), 80u);
}

INSTANTIATE_TEST_SUITE_P(Stores, Conformance, ::testing::ValuesIn(testing::all_store_kinds()),
                         [](const auto& info) { return testing::store_name(info.param); });

}  // namespace
}  // namespace ratelimit
