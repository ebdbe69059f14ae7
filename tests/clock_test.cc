#include "ratelimit/clock.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <future>
#include <thread>

namespace ratelimit {
namespace {

using namespace std::chrono_literals;

TEST(ManualClockTest, MovesOnlyWhenTold) {
  const TimePoint start(std::chrono::seconds(1000));
  ManualClock clock(start);
  EXPECT_EQ(clock.now(), start);
  clock.advance(5s);
  EXPECT_EQ(clock.now(), start + 5s);
  clock.set(start);
  EXPECT_EQ(clock.now(), start);
  clock.advance(-1s);
  EXPECT_EQ(clock.now(), start - 1s);
}

TEST(ManualClockTest, SleepAdvancesToTheTargetOnlyForward) {
  const TimePoint start(std::chrono::seconds(1000));
  ManualClock clock(start);
  EXPECT_TRUE(clock.sleep_until(start + 60s, {}));
  EXPECT_EQ(clock.now(), start + 60s);
  EXPECT_TRUE(clock.sleep_until(start, {}));  // in the past: returns at once
  EXPECT_EQ(clock.now(), start + 60s);
  std::stop_source stop;
  stop.request_stop();
  EXPECT_FALSE(clock.sleep_until(start + 120s, stop.get_token()));
  EXPECT_EQ(clock.now(), start + 60s);
}

TEST(ManualClockTest, ConcurrentSleepersNeverMoveTimeBack) {
  ManualClock clock(TimePoint{});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 1000; ++i)
        clock.sleep_until(TimePoint(std::chrono::seconds(i * 4 + t)), {});
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(clock.now(), TimePoint(std::chrono::seconds(3999)));
}

TEST(SystemClockTest, IsTheWallClockAndWakesOnStop) {
  auto clock = system_clock();
  EXPECT_EQ(clock, system_clock());  // one shared instance
  const auto before = std::chrono::system_clock::now();
  const TimePoint now = clock->now();
  EXPECT_GE(now, before);
  EXPECT_TRUE(clock->sleep_until(clock->now() + 1ms, {}));
  EXPECT_TRUE(clock->sleep_until(clock->now() - 1s, {}));  // in the past: at once
  std::stop_source stop;
  auto sleeper = std::async(
      std::launch::async, [&] { return clock->sleep_until(clock->now() + 1h, stop.get_token()); });
  stop.request_stop();
  ASSERT_EQ(sleeper.wait_for(30s), std::future_status::ready);  // a safety net only
  EXPECT_FALSE(sleeper.get());
}

TEST(ManualClockTest, MonotonicNowMovesForwardWithTheWallTime) {
  const TimePoint start(std::chrono::seconds(1000));
  ManualClock clock(start);
  const auto m0 = clock.monotonic_now();
  EXPECT_EQ(clock.monotonic_now(), m0);  // stands still until told
  clock.advance(5s);
  EXPECT_EQ(clock.monotonic_now(), m0 + 5s);
  clock.set(start + 15s);
  EXPECT_EQ(clock.monotonic_now(), m0 + 15s);
  EXPECT_TRUE(clock.sleep_until(start + 16s, {}));
  EXPECT_EQ(clock.monotonic_now(), m0 + 16s);
  EXPECT_TRUE(clock.sleep_until(start, {}));  // in the past: neither clock moves
  EXPECT_EQ(clock.now(), start + 16s);
  EXPECT_EQ(clock.monotonic_now(), m0 + 16s);
  std::stop_source stop;
  stop.request_stop();
  EXPECT_FALSE(clock.sleep_until(start + 1h, stop.get_token()));
  EXPECT_EQ(clock.monotonic_now(), m0 + 16s);
  clock.advance(0s);
  EXPECT_EQ(clock.monotonic_now(), m0 + 16s);
  clock.advance(1ns);
  EXPECT_EQ(clock.monotonic_now(), m0 + 16s + 1ns);
}

TEST(ManualClockTest, MonotonicNowNeverMovesBack) {
  const TimePoint start(std::chrono::seconds(1000));
  ManualClock clock(start);
  const auto m0 = clock.monotonic_now();
  clock.advance(10s);
  const auto m1 = clock.monotonic_now();
  EXPECT_EQ(m1, m0 + 10s);

  clock.set(start - 1h);  // the wall clock steps back an hour
  EXPECT_EQ(clock.now(), start - 1h);
  EXPECT_EQ(clock.monotonic_now(), m1);
  clock.advance(-30s);  // and back again
  EXPECT_EQ(clock.now(), start - 1h - 30s);
  EXPECT_EQ(clock.monotonic_now(), m1);
  clock.set(start - 2h);
  EXPECT_EQ(clock.monotonic_now(), m1);

  // Later forward steps move it by as much as the wall time moves.
  clock.advance(3s);
  EXPECT_EQ(clock.monotonic_now(), m1 + 3s);
  clock.set(start - 2h + 10s);
  EXPECT_EQ(clock.monotonic_now(), m1 + 10s);
  EXPECT_TRUE(clock.sleep_until(start - 2h + 12s, {}));
  EXPECT_EQ(clock.monotonic_now(), m1 + 12s);
  // Forward to where the wall clock was before the steps back: it moves by the whole step
  // (2 h − 2 s), and the hour lost to the steps back is never taken back.
  clock.set(start + 10s);
  EXPECT_EQ(clock.monotonic_now(), m1 + 2h + 10s);
  clock.set(start);
  EXPECT_EQ(clock.monotonic_now(), m1 + 2h + 10s);
  clock.set(start + 10s);
  EXPECT_EQ(clock.monotonic_now(), m1 + 2h + 20s);
}

// monotonic_now() reads two atomics that a step back changes one after the other; a reader
// racing with steps back must still never see it go back.
TEST(ManualClockTest, MonotonicNowNeverMovesBackUnderConcurrentSteps) {
  ManualClock clock(TimePoint(std::chrono::seconds(1000)));
  std::atomic<bool> reading{false};
  std::atomic<bool> stop{false};
  std::atomic<int> went_back{0};
  std::atomic<std::int64_t> worst_ns{0};
  std::thread reader([&] {
    auto last = clock.monotonic_now();
    reading.store(true);
    while (!stop.load(std::memory_order_relaxed)) {
      const auto now = clock.monotonic_now();
      if (now < last) {
        went_back.fetch_add(1);
        const std::int64_t back = (last - now).count();
        if (back > worst_ns.load()) worst_ns.store(back);
      }
      last = std::max(last, now);
    }
  });
  while (!reading.load()) std::this_thread::yield();
  // One writer; at most 2,000,000 steps (a few hundredths of a second), stopping at the first
  // reversal.
  for (int i = 0; i < 2'000'000 && went_back.load(std::memory_order_relaxed) == 0; ++i) {
    clock.advance(i % 3 == 0 ? -2ms : 1ms);
  }
  stop.store(true);
  reader.join();
  EXPECT_EQ(went_back.load(), 0) << "monotonic_now() went back by up to " << worst_ns.load()
                                 << " ns";
}

// A clock that only says the wall time: monotonic_now() comes from the base class.
class WallOnlyClock final : public Clock {
 public:
  TimePoint now() const override { return TimePoint(std::chrono::seconds(42)); }
  bool sleep_until(TimePoint, std::stop_token stop) override { return !stop.stop_requested(); }
};

TEST(ClockTest, DefaultMonotonicNowIsTheSteadyClock) {
  WallOnlyClock clock;
  const auto before = std::chrono::steady_clock::now();
  const auto mono = clock.monotonic_now();
  const auto after = std::chrono::steady_clock::now();
  EXPECT_LE(before, mono);
  EXPECT_LE(mono, after);
  EXPECT_LE(mono, clock.monotonic_now());
  // Through the base class too; the wall time plays no part.
  const Clock& base = clock;
  const auto via_base = base.monotonic_now();
  EXPECT_LE(mono, via_base);
  EXPECT_LE(via_base, std::chrono::steady_clock::now());
  // The system clock has no override either.
  const auto sys_before = std::chrono::steady_clock::now();
  const auto sys = system_clock()->monotonic_now();
  EXPECT_LE(sys_before, sys);
  EXPECT_LE(sys, std::chrono::steady_clock::now());
}

TEST(SystemClockTest, SleepUntilReturnsAfterAboutTheTime) {
  auto clock = system_clock();
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(clock->sleep_until(clock->now() + 50ms, {}));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_GE(elapsed, 45ms);  // a little slack for the wall and steady clocks' granularity
  EXPECT_LT(elapsed, 5s);    // generous: a loaded machine
  // With a stop token that is never requested it is the same sleep.
  std::stop_source unused;
  const auto start2 = std::chrono::steady_clock::now();
  EXPECT_TRUE(clock->sleep_until(clock->now() + 50ms, unused.get_token()));
  const auto elapsed2 = std::chrono::steady_clock::now() - start2;
  EXPECT_GE(elapsed2, 45ms);
  EXPECT_LT(elapsed2, 5s);
}

TEST(SystemClockTest, StopWakesASleepAtOnce) {
  auto clock = system_clock();
  // Already requested: returns false without sleeping, however far the target.
  std::stop_source stopped;
  stopped.request_stop();
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(clock->sleep_until(clock->now() + 1h, stopped.get_token()));
  EXPECT_FALSE(clock->sleep_until(TimePoint::max(), stopped.get_token()));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);

  // Requested while it sleeps (a day ahead, or the end of time).
  for (const TimePoint until : {clock->now() + 24h, TimePoint::max()}) {
    std::stop_source stop;
    std::atomic<bool> entered{false};
    auto sleeper = std::async(std::launch::async, [&] {
      entered.store(true);
      return clock->sleep_until(until, stop.get_token());
    });
    while (!entered.load()) std::this_thread::yield();
    start = std::chrono::steady_clock::now();
    stop.request_stop();
    ASSERT_EQ(sleeper.wait_for(30s), std::future_status::ready);  // a safety net only
    EXPECT_FALSE(sleeper.get());
    EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  }
}

}  // namespace
}  // namespace ratelimit
