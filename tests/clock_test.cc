#include "ratelimit/clock.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace ratelimit
