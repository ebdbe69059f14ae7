// Waiting: exact wake-ups through the injected clock, early wake on release, deadlines,
// cancellation, never-satisfiable requests, and arrival order for acquire.
#include <gtest/gtest.h>

#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include "store_kinds.h"
#include "test_util.h"

namespace ratelimit {
namespace {

using namespace std::chrono_literals;
using testing::memory_limiter;
using testing::start_time;

// A clock whose sleepers block until the test moves time (or they are stopped), so a test can
// see who is asleep and wake them in a known order, without real waiting.
using testing::GatedClock;

// The real clock, counting the threads asleep on it, so that a test can release capacity or
// stop a waiter exactly while it sleeps (instead of sleeping a while and hoping it fell asleep).
class CountingRealClock final : public Clock {
 public:
  TimePoint now() const override { return real_->now(); }
  bool sleep_until(TimePoint until, std::stop_token stop) override {
    {
      std::lock_guard lock(mu_);
      ++sleepers_;
      cv_.notify_all();
    }
    const bool reached = real_->sleep_until(until, std::move(stop));
    {
      std::lock_guard lock(mu_);
      --sleepers_;
      cv_.notify_all();
    }
    return reached;
  }
  // Waits (at most 30 s of real time, a safety net) until `n` threads sleep on this clock.
  bool wait_for_sleepers(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 30s, [&] { return sleepers_ == n; });
  }

 private:
  const std::shared_ptr<Clock> real_ = system_clock();
  std::mutex mu_;
  std::condition_variable cv_;
  int sleepers_ = 0;
};

std::unique_ptr<RateLimiter> limiter_on(std::shared_ptr<Clock> clock, QuotaMap quotas) {
  Config config;
  config.backend = Backend::memory;
  config.quotas = std::move(quotas);
  config.clock = std::move(clock);
  return std::move(*RateLimiter::open(std::move(config)));
}

TEST(WaitTest, ManualClockWakesAtTheExactRetryAfter) {
  auto f = memory_limiter({{"m", {1, 0, 0}}});
  ASSERT_TRUE(f.limiter->record_usage("m", 0, 0));
  f.clock->advance(15s);
  ASSERT_TRUE(f.limiter->wait_for_capacity("m", 0));
  EXPECT_EQ(f.clock->now(), start_time() + 60s);
  EXPECT_EQ(f.limiter->stats("m")->rpm, 0);  // waiting records nothing
  auto r = f.limiter->acquire("m", 0);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->granted());
  EXPECT_EQ(f.clock->now(), start_time() + 60s);  // capacity was there: no sleep
  auto next = f.limiter->acquire("m", 0);
  ASSERT_TRUE(next);
  EXPECT_EQ(f.clock->now(), start_time() + 120s);
}

TEST(WaitTest, WaitsForTokensToLeave) {
  auto f = memory_limiter({{"m", {0, 100, 0}}});
  ASSERT_TRUE(f.limiter->record_usage("m", 70, 0));
  f.clock->advance(10s);
  ASSERT_TRUE(f.limiter->record_usage("m", 30, 0));
  auto r = f.limiter->acquire("m", 50);  // the first entry leaving frees enough: at 60 s
  ASSERT_TRUE(r);
  EXPECT_EQ(f.clock->now(), start_time() + 60s);
  ASSERT_TRUE(r->cancel());
  ASSERT_TRUE(f.limiter->record_usage("m", 70, 0));
  r = f.limiter->acquire("m", 71);  // 30 + 70 in the window: both must leave, at 70 s and 120 s
  ASSERT_TRUE(r);
  EXPECT_EQ(f.clock->now(), start_time() + 120s);
}

TEST(WaitTest, DailyLimitWaitsForTheNextDay) {
  auto f = memory_limiter({{"m", {0, 0, 1}}});
  ASSERT_TRUE(f.limiter->record_usage("m", 0, 0));
  ASSERT_TRUE(f.limiter->wait_for_capacity("m", 0));
  EXPECT_EQ(f.clock->now(), start_time() + 24h);
}

TEST(WaitTest, NeverSatisfiableFailsAtOnce) {
  auto f = memory_limiter({{"m", {0, 100, 0}}});
  Status s = f.limiter->wait_for_capacity("m", 101);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::never_satisfiable);
  EXPECT_EQ(s.error().message.rfind("ratelimit.wait_for_capacity: model \"m\"", 0), 0u);
  auto r = f.limiter->acquire("m", 101);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::never_satisfiable);
  EXPECT_EQ(f.clock->now(), start_time());
}

TEST(WaitTest, NegativeTokensAreInvalid) {
  auto f = memory_limiter({{"m", {1, 0, 0}}});
  EXPECT_EQ(f.limiter->wait_for_capacity("m", -1).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(f.limiter->acquire("m", -1).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(f.limiter->wait_for_capacity("unknown", -1).error().code, ErrorCode::invalid_argument);
}

TEST(WaitTest, UnknownModelsNeverWait) {
  auto f = memory_limiter({});
  EXPECT_TRUE(f.limiter->wait_for_capacity("unknown", 1'000'000));
  auto r = f.limiter->acquire("unknown", 5);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->decision().code, DecisionCode::unknown_model);
}

TEST(WaitTest, DeadlineExceeded) {
  auto f = memory_limiter({{"m", {1, 0, 0}}});
  ASSERT_TRUE(f.limiter->record_usage("m", 0, 0));
  WaitOptions options;
  options.timeout = 10s;
  Status s = f.limiter->wait_for_capacity("m", 0, options);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::deadline_exceeded);
  EXPECT_EQ(f.clock->now(), start_time() + 10s);  // slept to the deadline, not past it
  auto r = f.limiter->acquire("m", 0, options);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::deadline_exceeded);
  EXPECT_EQ(f.clock->now(), start_time() + 20s);
  EXPECT_EQ(f.limiter->stats("m")->rpm, 1);  // nothing recorded by the failed acquire
}

TEST(WaitTest, CapacityBeatsAnExpiredDeadline) {
  auto f = memory_limiter({{"m", {1, 0, 0}}});
  WaitOptions options;
  options.timeout = 0s;
  EXPECT_TRUE(f.limiter->wait_for_capacity("m", 0, options));
  options.timeout = -5s;
  auto r = f.limiter->acquire("m", 0, options);
  ASSERT_TRUE(r);
  EXPECT_EQ(f.limiter->acquire("m", 0, options).error().code, ErrorCode::deadline_exceeded);
}

TEST(WaitTest, HugeTimeoutDoesNotOverflow) {
  auto f = memory_limiter({{"m", {1, 0, 0}}});
  ASSERT_TRUE(f.limiter->record_usage("m", 0, 0));
  WaitOptions options;
  options.timeout = Duration::max();
  EXPECT_TRUE(f.limiter->wait_for_capacity("m", 0, options));
  EXPECT_EQ(f.clock->now(), start_time() + 60s);
}

TEST(WaitTest, StopTokenCancels) {
  auto f = memory_limiter({{"m", {1, 0, 0}}});
  ASSERT_TRUE(f.limiter->record_usage("m", 0, 0));
  std::stop_source source;
  source.request_stop();
  WaitOptions options;
  options.stop = source.get_token();
  EXPECT_EQ(f.limiter->wait_for_capacity("m", 0, options).error().code, ErrorCode::cancelled);
  EXPECT_EQ(f.limiter->acquire("m", 0, options).error().code, ErrorCode::cancelled);
  EXPECT_EQ(f.clock->now(), start_time());
  f.clock->advance(60s);
  EXPECT_TRUE(f.limiter->wait_for_capacity("m", 0, options));  // capacity wins over a stop
}

TEST(WaitTest, StopFromAnotherThreadWakesARealSleep) {
  auto clock = std::make_shared<CountingRealClock>();
  auto limiter = limiter_on(clock, {{"m", {1, 0, 0}}});
  ASSERT_TRUE(limiter->record_usage("m", 0, 0));
  std::stop_source source;
  auto waiter = std::async(std::launch::async, [&] {
    WaitOptions options;
    options.stop = source.get_token();
    return limiter->acquire("m", 0, options);
  });
  ASSERT_TRUE(clock->wait_for_sleepers(1));  // asleep on the real clock, for a minute
  source.request_stop();
  ASSERT_EQ(waiter.wait_for(30s), std::future_status::ready);  // a safety net, not a timing
  EXPECT_EQ(waiter.get().error().code, ErrorCode::cancelled);
}

// Early wake on every kind of release, with the real clock (the window would free in 60 s;
// each wait must end long before the 30 s safety net).
class EarlyWakeTest : public ::testing::TestWithParam<int> {};

TEST_P(EarlyWakeTest, ReleaseWakesAWaiter) {
  auto clock = std::make_shared<CountingRealClock>();
  auto limiter = limiter_on(clock, {{"m", {1, 1000, 0}}});
  Reservation held = limiter->try_acquire("m", 900);
  ASSERT_TRUE(held);
  const int kind = GetParam();
  // The waiter needs a request slot (RPM) and 500 tokens (TPM) to pass.
  auto waiter = std::async(std::launch::async, [&] {
    WaitOptions options;
    options.timeout = 30s;
    return kind == 4 ? limiter->acquire("m", 500, options).map([](Reservation&&) {})
                     : limiter->wait_for_capacity("m", 500, options);
  });
  ASSERT_TRUE(clock->wait_for_sleepers(1));  // the release must wake a sleeping waiter
  switch (kind) {
    case 0:
      ASSERT_TRUE(held.cancel());
      break;
    case 1:
      ASSERT_TRUE(limiter->reset("m"));
      break;
    case 2:
      ASSERT_TRUE(limiter->set_quota("m", {5, 5000, 0}));
      break;
    case 3:
      ASSERT_TRUE(limiter->remove_quota("m"));
      break;
    case 4:
      ASSERT_TRUE(held.cancel());
      break;
  }
  ASSERT_EQ(waiter.wait_for(30s), std::future_status::ready);
  EXPECT_TRUE(waiter.get());
}

INSTANTIATE_TEST_SUITE_P(Kinds, EarlyWakeTest, ::testing::Values(0, 1, 2, 3, 4));

TEST(WaitTest, CommitThatLowersTokensWakesATokenWaiter) {
  auto clock = std::make_shared<GatedClock>();
  auto limiter = limiter_on(clock, {{"m", {0, 1000, 0}}});
  Reservation held = limiter->try_acquire("m", 900);
  auto waiter =
      std::async(std::launch::async, [&] { return limiter->wait_for_capacity("m", 500); });
  ASSERT_TRUE(clock->wait_for_sleepers(1));
  ASSERT_TRUE(held.commit(100, 100));  // 200 used: 500 more fit
  ASSERT_EQ(waiter.wait_for(30s), std::future_status::ready);
  EXPECT_TRUE(waiter.get());
  EXPECT_EQ(clock->now(), start_time());  // no time passed
}

TEST(WaitTest, AcquireServesWaitersInArrivalOrder) {
  auto clock = std::make_shared<GatedClock>();
  auto limiter = limiter_on(clock, {{"m", {1, 0, 0}}});
  ASSERT_TRUE(limiter->try_acquire("m", 0));
  auto start_waiter = [&] {
    return std::async(std::launch::async, [&] { return limiter->acquire("m", 0).has_value(); });
  };
  auto a = start_waiter();
  ASSERT_TRUE(clock->wait_for_sleepers(1));
  auto b = start_waiter();
  ASSERT_TRUE(clock->wait_for_sleepers(2));
  auto c = start_waiter();
  ASSERT_TRUE(clock->wait_for_sleepers(3));
  // Each minute one request leaves: exactly one waiter, the oldest, gets in.
  clock->advance(60s);
  ASSERT_EQ(a.wait_for(30s), std::future_status::ready);
  EXPECT_TRUE(a.get());
  EXPECT_NE(b.wait_for(0s), std::future_status::ready);
  EXPECT_NE(c.wait_for(0s), std::future_status::ready);
  clock->advance(60s);
  ASSERT_EQ(b.wait_for(30s), std::future_status::ready);
  EXPECT_TRUE(b.get());
  EXPECT_NE(c.wait_for(0s), std::future_status::ready);
  clock->advance(60s);
  ASSERT_EQ(c.wait_for(30s), std::future_status::ready);
  EXPECT_TRUE(c.get());
  EXPECT_EQ(limiter->stats("m")->rpm, 1);
}

TEST(WaitTest, WaiterBehindTheHeadTimesOutAtItsOwnDeadline) {
  auto clock = std::make_shared<GatedClock>();
  auto limiter = limiter_on(clock, {{"m", {1, 0, 0}}});
  ASSERT_TRUE(limiter->try_acquire("m", 0));
  auto head = std::async(std::launch::async, [&] { return limiter->acquire("m", 0).has_value(); });
  ASSERT_TRUE(clock->wait_for_sleepers(1));
  auto behind = std::async(std::launch::async, [&] {
    WaitOptions options;
    options.timeout = 10s;
    return limiter->acquire("m", 0, options);
  });
  ASSERT_TRUE(clock->wait_for_sleepers(2));
  clock->advance(10s);
  auto r = behind.get();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::deadline_exceeded);
  clock->advance(50s);
  EXPECT_TRUE(head.get());
}

TEST(WaitTest, CancelledHeadPassesTheTurnOn) {
  auto clock = std::make_shared<GatedClock>();
  auto limiter = limiter_on(clock, {{"m", {1, 0, 0}}});
  ASSERT_TRUE(limiter->try_acquire("m", 0));
  std::stop_source stop_head;
  auto head = std::async(std::launch::async, [&] {
    WaitOptions options;
    options.stop = stop_head.get_token();
    return limiter->acquire("m", 0, options);
  });
  ASSERT_TRUE(clock->wait_for_sleepers(1));
  auto second = std::async(std::launch::async, [&] { return limiter->acquire("m", 0); });
  ASSERT_TRUE(clock->wait_for_sleepers(2));
  stop_head.request_stop();
  EXPECT_EQ(head.get().error().code, ErrorCode::cancelled);
  ASSERT_TRUE(clock->wait_for_sleepers(1));  // the second is now the head, asleep until 60 s
  clock->advance(60s);
  EXPECT_TRUE(second.get());
}

}  // namespace
}  // namespace ratelimit
