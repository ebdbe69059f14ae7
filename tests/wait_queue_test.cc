// detail::WaitQueue: arrival order, who is woken when, and sleep() against wakes and stops.
#include "limiter/wait_queue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <optional>
#include <stop_token>
#include <thread>
#include <vector>

#include "ratelimit/clock.h"

namespace ratelimit::detail {
namespace {

using namespace std::chrono_literals;

const TimePoint kStart(std::chrono::seconds(1'771'495'200));

// A waiter that only counts its wakes.
class CountingWaiter final : public WaitQueue::Waiter {
 public:
  void wake() override { wakes_.fetch_add(1, std::memory_order_relaxed); }
  int wakes() const { return wakes_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int> wakes_{0};
};

// A clock whose sleep_until never waits: it counts the calls.
class CountingClock final : public Clock {
 public:
  TimePoint now() const override { return kStart; }
  bool sleep_until(TimePoint, std::stop_token stop) override {
    calls.fetch_add(1);
    return !stop.stop_requested();
  }
  std::atomic<int> calls{0};
};

// A clock whose sleep_until blocks until its stop token is requested, and says when it has
// started to block; `until` is ignored (a far deadline).
class BlockingClock final : public Clock {
 public:
  TimePoint now() const override { return kStart; }
  bool sleep_until(TimePoint, std::stop_token stop) override {
    {
      std::lock_guard lock(mu_);
      ++entered_;
    }
    entered_cv_.notify_all();
    std::mutex mu;
    std::condition_variable_any cv;
    std::unique_lock lock(mu);
    cv.wait(lock, stop, [] { return false; });
    return false;
  }
  // Waits (at most `limit`) until `n` sleeps have started.
  bool wait_entered(int n, std::chrono::milliseconds limit = 10s) {
    std::unique_lock lock(mu_);
    return entered_cv_.wait_for(lock, limit, [&] { return entered_ >= n; });
  }

 private:
  std::mutex mu_;
  std::condition_variable entered_cv_;
  int entered_ = 0;
};

// Runs `sleep` on another thread; if it has not returned within the safety limit, requests
// `unblock` so that the test ends (and fails) instead of hanging.
template <class F>
bool returns_in_time(F&& sleep, std::stop_source& unblock) {
  auto done = std::async(std::launch::async, std::forward<F>(sleep));
  const bool in_time = done.wait_for(10s) == std::future_status::ready;
  if (!in_time) unblock.request_stop();
  done.get();
  return in_time;
}

TEST(WaitQueueTest, JoinQueueIsFirstInFirstOut) {
  WaitQueue q;
  CountingWaiter a, b, c;
  auto pa = q.join_queue(&a);
  auto pb = q.join_queue(&b);
  auto pc = q.join_queue(&c);
  EXPECT_TRUE(q.view(&a).head);
  EXPECT_FALSE(q.view(&b).head);
  EXPECT_FALSE(q.view(&c).head);
  q.leave_queue(pa);
  EXPECT_FALSE(q.view(&a).head);
  EXPECT_TRUE(q.view(&b).head);
  EXPECT_FALSE(q.view(&c).head);
  // A late arrival goes behind c.
  CountingWaiter d;
  auto pd = q.join_queue(&d);
  q.leave_queue(pb);
  EXPECT_TRUE(q.view(&c).head);
  EXPECT_FALSE(q.view(&d).head);
  q.leave_queue(pc);
  EXPECT_TRUE(q.view(&d).head);
  q.leave_queue(pd);
  EXPECT_FALSE(q.view(&d).head);
  EXPECT_EQ(q.size(), 0u);
}

TEST(WaitQueueTest, ViewReportsHeadOnlyForTheFront) {
  WaitQueue q;
  CountingWaiter a, b, watcher, stranger;
  const WaitQueue::View empty = q.view(&a);
  EXPECT_FALSE(empty.head);
  EXPECT_EQ(empty.head_wake, std::nullopt);
  EXPECT_EQ(empty.epoch, 0u);
  q.join_queue(&a);
  q.join_queue(&b);
  q.join_watchers(&watcher);
  EXPECT_TRUE(q.view(&a).head);
  EXPECT_FALSE(q.view(&b).head);
  EXPECT_FALSE(q.view(&watcher).head);  // a watcher never is
  EXPECT_FALSE(q.view(&stranger).head);
  EXPECT_FALSE(q.view(nullptr).head);
  // Every waiter sees the same head wake time and epoch.
  q.set_head_wake(kStart + 5s);
  for (const WaitQueue::Waiter* w :
       {static_cast<WaitQueue::Waiter*>(&a), static_cast<WaitQueue::Waiter*>(&b),
        static_cast<WaitQueue::Waiter*>(&watcher)}) {
    EXPECT_EQ(q.view(w).head_wake, kStart + 5s);
    EXPECT_EQ(q.view(w).epoch, 1u);
  }
}

TEST(WaitQueueTest, LeavingAsHeadWakesOnlyTheNext) {
  WaitQueue q;
  CountingWaiter a, b, c, watcher;
  auto pa = q.join_queue(&a);
  auto pb = q.join_queue(&b);
  q.join_queue(&c);
  q.join_watchers(&watcher);
  q.set_head_wake(kStart + 1s);
  const int b_before = b.wakes(), c_before = c.wakes();
  const std::uint64_t epoch = q.view(&b).epoch;

  q.leave_queue(pa);
  EXPECT_EQ(a.wakes(), 0);
  EXPECT_EQ(b.wakes(), b_before + 1);  // the new head looks again
  EXPECT_EQ(c.wakes(), c_before);      // waits for the new head's wake time
  EXPECT_EQ(watcher.wakes(), 0);
  const WaitQueue::View after = q.view(&b);
  EXPECT_TRUE(after.head);
  EXPECT_EQ(after.head_wake, std::nullopt);  // the old head's time is gone
  EXPECT_EQ(after.epoch, epoch + 1);

  // A waiter behind the head leaving wakes nobody and keeps the epoch.
  CountingWaiter d;
  auto pd = q.join_queue(&d);
  q.leave_queue(pd);
  EXPECT_EQ(b.wakes(), b_before + 1);
  EXPECT_EQ(c.wakes(), c_before);
  EXPECT_EQ(q.view(&b).epoch, epoch + 1);

  q.leave_queue(pb);
  EXPECT_EQ(c.wakes(), c_before + 1);
  EXPECT_TRUE(q.view(&c).head);
}

TEST(WaitQueueTest, LastHeadLeavingMovesTheEpoch) {
  WaitQueue q;
  CountingWaiter a;
  auto pa = q.join_queue(&a);
  q.leave_queue(pa);
  EXPECT_EQ(q.view(&a).epoch, 1u);
  EXPECT_EQ(a.wakes(), 0);
  EXPECT_EQ(q.size(), 0u);
}

TEST(WaitQueueTest, SetHeadWakeWakesAllButTheHeadWhenTheTimeChanges) {
  WaitQueue q;
  CountingWaiter head, second, third, watcher;
  q.join_queue(&head);
  q.join_queue(&second);
  q.join_queue(&third);
  q.join_watchers(&watcher);

  q.set_head_wake(kStart + 10s);
  EXPECT_EQ(head.wakes(), 0);
  EXPECT_EQ(second.wakes(), 1);
  EXPECT_EQ(third.wakes(), 1);
  EXPECT_EQ(watcher.wakes(), 0);  // watchers take no capacity: nothing to re-plan
  EXPECT_EQ(q.view(&second).head_wake, kStart + 10s);
  EXPECT_EQ(q.view(&second).epoch, 1u);

  q.set_head_wake(kStart + 10s);  // the same time: nobody is woken, the epoch stays
  EXPECT_EQ(second.wakes(), 1);
  EXPECT_EQ(third.wakes(), 1);
  EXPECT_EQ(q.view(&second).epoch, 1u);

  q.set_head_wake(kStart + 5s);  // earlier is a change too
  EXPECT_EQ(head.wakes(), 0);
  EXPECT_EQ(second.wakes(), 2);
  EXPECT_EQ(third.wakes(), 2);
  EXPECT_EQ(q.view(&head).head_wake, kStart + 5s);
  EXPECT_EQ(q.view(&head).epoch, 2u);
}

TEST(WaitQueueTest, SetHeadWakeOnAnEmptyQueueOrAHeadAlone) {
  WaitQueue q;
  q.set_head_wake(kStart);
  EXPECT_EQ(q.view(nullptr).head_wake, kStart);
  CountingWaiter alone;
  q.join_queue(&alone);
  q.set_head_wake(kStart + 1s);
  EXPECT_EQ(alone.wakes(), 0);
  EXPECT_EQ(q.view(&alone).epoch, 2u);
}

TEST(WaitQueueTest, WakeAllWakesQueueAndWatchersAndMovesTheEpoch) {
  WaitQueue q;
  CountingWaiter a, b, w1, w2;
  q.join_queue(&a);
  q.join_queue(&b);
  auto pw1 = q.join_watchers(&w1);
  q.join_watchers(&w2);
  q.set_head_wake(kStart + 1s);  // wakes b once
  const std::uint64_t epoch = q.view(&a).epoch;

  q.wake_all();
  EXPECT_EQ(a.wakes(), 1);
  EXPECT_EQ(b.wakes(), 2);
  EXPECT_EQ(w1.wakes(), 1);
  EXPECT_EQ(w2.wakes(), 1);
  EXPECT_EQ(q.view(&a).epoch, epoch + 1);
  EXPECT_TRUE(q.view(&a).head);                  // nobody moved
  EXPECT_EQ(q.view(&a).head_wake, kStart + 1s);  // and the head's time stays

  q.leave_watchers(pw1);
  q.wake_all();
  EXPECT_EQ(w1.wakes(), 1);  // gone
  EXPECT_EQ(w2.wakes(), 2);
  EXPECT_EQ(q.view(&a).epoch, epoch + 2);

  // Without waiters nobody holds an epoch: wake_all does nothing (and takes no lock: a commit
  // or cancel calls it on the hot path).
  WaitQueue empty;
  empty.wake_all();
  EXPECT_EQ(empty.view(nullptr).epoch, 0u);
}

TEST(WaitQueueTest, SizeCountsQueueAndWatchers) {
  WaitQueue q;
  EXPECT_EQ(q.size(), 0u);
  CountingWaiter a, b, w;
  auto pa = q.join_queue(&a);
  EXPECT_EQ(q.size(), 1u);
  auto pb = q.join_queue(&b);
  auto pw = q.join_watchers(&w);
  EXPECT_EQ(q.size(), 3u);
  q.leave_watchers(pw);
  EXPECT_EQ(q.size(), 2u);
  q.leave_queue(pa);
  EXPECT_EQ(q.size(), 1u);
  q.leave_queue(pb);
  EXPECT_EQ(q.size(), 0u);
}

TEST(WaitQueueTest, SleepReturnsAtOnceWhenTheEpochMoved) {
  WaitQueue q;
  CountingClock clock;
  WaitQueue::Sleeper self;
  q.join_queue(&self);
  const std::uint64_t seen = q.view(&self).epoch;
  q.wake_all();
  std::stop_source unblock;
  // No `until`: without the epoch check this would block for ever.
  EXPECT_TRUE(returns_in_time(
      [&] { q.sleep(clock, self, seen, std::nullopt, unblock.get_token()); }, unblock));
  // With an `until`: the clock is not even asked to sleep.
  EXPECT_TRUE(returns_in_time([&] { q.sleep(clock, self, seen, kStart + 1h, unblock.get_token()); },
                              unblock));
  EXPECT_EQ(clock.calls.load(), 0);
  // Any kind of move counts: set_head_wake and the head leaving, too (a sleeper behind it).
  WaitQueue q2;
  CountingWaiter head;
  auto ph = q2.join_queue(&head);
  WaitQueue::Sleeper behind;
  q2.join_queue(&behind);
  std::uint64_t seen2 = q2.view(&behind).epoch;
  q2.set_head_wake(kStart + 1s);
  EXPECT_TRUE(returns_in_time(
      [&] { q2.sleep(clock, behind, seen2, std::nullopt, unblock.get_token()); }, unblock));
  seen2 = q2.view(&behind).epoch;
  q2.leave_queue(ph);
  EXPECT_TRUE(returns_in_time(
      [&] { q2.sleep(clock, behind, seen2, std::nullopt, unblock.get_token()); }, unblock));
  EXPECT_EQ(clock.calls.load(), 0);
  EXPECT_FALSE(unblock.stop_requested());
}

TEST(WaitQueueTest, SleepWithAManualClockAdvancesToUntil) {
  WaitQueue q;
  ManualClock clock(kStart);
  WaitQueue::Sleeper self;
  auto pos = q.join_queue(&self);
  std::stop_source unblock;
  EXPECT_TRUE(returns_in_time(
      [&] { q.sleep(clock, self, q.view(&self).epoch, kStart + 30s, unblock.get_token()); },
      unblock));
  EXPECT_EQ(clock.now(), kStart + 30s);
  // An `until` in the past returns too and does not move the clock back.
  EXPECT_TRUE(returns_in_time(
      [&] { q.sleep(clock, self, q.view(&self).epoch, kStart, unblock.get_token()); }, unblock));
  EXPECT_EQ(clock.now(), kStart + 30s);
  q.leave_queue(pos);
  EXPECT_EQ(q.size(), 0u);
}

TEST(WaitQueueTest, SleepReturnsAtOnceWhenStopWasAlreadyRequested) {
  WaitQueue q;
  CountingClock clock;
  WaitQueue::Sleeper self;
  q.join_queue(&self);
  std::stop_source stop;
  stop.request_stop();
  auto done = std::async(std::launch::async, [&] {
    q.sleep(clock, self, q.view(&self).epoch, std::nullopt, stop.get_token());
  });
  ASSERT_EQ(done.wait_for(10s), std::future_status::ready);
}

// The blocked path, made certain: the sleeper is inside the clock's sleep when it is woken.
TEST(WaitQueueTest, SleeperBlockedInTheClockIsWokenByWakeAll) {
  WaitQueue q;
  BlockingClock clock;
  WaitQueue::Sleeper self;
  q.join_queue(&self);
  const std::uint64_t seen = q.view(&self).epoch;
  std::stop_source unblock;
  auto done = std::async(std::launch::async,
                         [&] { q.sleep(clock, self, seen, kStart + 1h, unblock.get_token()); });
  ASSERT_TRUE(clock.wait_entered(1));
  q.wake_all();
  const bool woken = done.wait_for(10s) == std::future_status::ready;
  if (!woken) unblock.request_stop();
  done.get();
  EXPECT_TRUE(woken);
  // The sleep is over: a later wake does not touch its (gone) stop source.
  q.wake_all();
  q.set_head_wake(kStart);
}

TEST(WaitQueueTest, SleeperBlockedInTheClockIsWokenByItsStopToken) {
  WaitQueue q;
  BlockingClock clock;
  WaitQueue::Sleeper self;
  q.join_watchers(&self);
  std::stop_source stop;
  auto done = std::async(std::launch::async, [&] {
    q.sleep(clock, self, q.view(&self).epoch, kStart + 1h, stop.get_token());
  });
  ASSERT_TRUE(clock.wait_entered(1));
  stop.request_stop();
  ASSERT_EQ(done.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(q.view(&self).epoch, 0u);  // a stop is not a wake
}

TEST(WaitQueueTest, SleeperBehindTheHeadIsWokenBySetHeadWakeAndByTheHeadLeaving) {
  WaitQueue q;
  BlockingClock clock;
  CountingWaiter head;
  auto ph = q.join_queue(&head);
  WaitQueue::Sleeper self;
  q.join_queue(&self);
  std::stop_source unblock;
  auto sleep_once = [&] {
    return std::async(std::launch::async, [&, seen = q.view(&self).epoch] {
      q.sleep(clock, self, seen, kStart + 1h, unblock.get_token());
    });
  };

  auto first = sleep_once();
  ASSERT_TRUE(clock.wait_entered(1));
  q.set_head_wake(kStart + 2s);
  bool woken = first.wait_for(10s) == std::future_status::ready;
  if (!woken) unblock.request_stop();
  first.get();
  ASSERT_TRUE(woken) << "set_head_wake did not wake the waiter behind the head";

  auto second = sleep_once();
  ASSERT_TRUE(clock.wait_entered(2));
  q.leave_queue(ph);
  woken = second.wait_for(10s) == std::future_status::ready;
  if (!woken) unblock.request_stop();
  second.get();
  ASSERT_TRUE(woken) << "the head leaving did not wake the next";
  EXPECT_TRUE(q.view(&self).head);
  EXPECT_EQ(head.wakes(), 0);
}

// Without `until` the sleeper blocks on its own; a wake_all from another thread ends it whether
// it lands before the sleeper blocks (the epoch check) or after (the wake). Repeated so that
// both orders happen.
TEST(WaitQueueTest, SleeperWithoutUntilIsWokenByWakeAllFromAnotherThread) {
  ManualClock clock(kStart);
  for (int round = 0; round < 200; ++round) {
    WaitQueue q;
    WaitQueue::Sleeper self;
    auto pos = q.join_queue(&self);
    std::atomic<bool> about_to_sleep{false};
    std::stop_source unblock;
    auto done = std::async(std::launch::async, [&] {
      const std::uint64_t seen = q.view(&self).epoch;
      about_to_sleep.store(true);
      q.sleep(clock, self, seen, std::nullopt, unblock.get_token());
    });
    while (!about_to_sleep.load()) std::this_thread::yield();
    q.wake_all();
    const bool woken = done.wait_for(10s) == std::future_status::ready;
    if (!woken) unblock.request_stop();
    done.get();
    ASSERT_TRUE(woken) << "round " << round;
    q.leave_queue(pos);
  }
  EXPECT_EQ(clock.now(), kStart);  // no `until`: the clock was never asked to sleep
}

TEST(WaitQueueTest, SleeperWithoutUntilIsWokenByItsStopToken) {
  ManualClock clock(kStart);
  for (int round = 0; round < 50; ++round) {
    WaitQueue q;
    WaitQueue::Sleeper self;
    q.join_watchers(&self);
    std::stop_source stop;
    std::atomic<bool> about_to_sleep{false};
    auto done = std::async(std::launch::async, [&] {
      const std::uint64_t seen = q.view(&self).epoch;
      about_to_sleep.store(true);
      q.sleep(clock, self, seen, std::nullopt, stop.get_token());
    });
    while (!about_to_sleep.load()) std::this_thread::yield();
    stop.request_stop();
    ASSERT_EQ(done.wait_for(10s), std::future_status::ready) << "round " << round;
    EXPECT_EQ(q.view(&self).epoch, 0u);
  }
}

// Many sleepers on one queue, one wake_all: every one returns.
TEST(WaitQueueTest, WakeAllReleasesEverySleeper) {
  WaitQueue q;
  BlockingClock clock;
  constexpr int kSleepers = 6;
  std::vector<WaitQueue::Sleeper> sleepers(kSleepers);
  std::stop_source unblock;
  const std::uint64_t seen = q.view(nullptr).epoch;
  for (int i = 0; i < kSleepers; ++i) {
    if (i % 2 == 0) {
      q.join_queue(&sleepers[i]);
    } else {
      q.join_watchers(&sleepers[i]);
    }
  }
  EXPECT_EQ(q.size(), static_cast<std::size_t>(kSleepers));
  std::vector<std::future<void>> done;
  for (int i = 0; i < kSleepers; ++i) {
    done.push_back(std::async(std::launch::async, [&, i] {
      q.sleep(clock, sleepers[i], seen, kStart + 1h, unblock.get_token());
    }));
  }
  ASSERT_TRUE(clock.wait_entered(kSleepers));
  q.wake_all();
  int woken = 0;
  for (auto& d : done) {
    if (d.wait_for(10s) == std::future_status::ready) ++woken;
  }
  if (woken != kSleepers) unblock.request_stop();
  for (auto& d : done) d.get();
  EXPECT_EQ(woken, kSleepers);
}

}  // namespace
}  // namespace ratelimit::detail
