// The server's lease table (server/leases.h): every lease is found until it is taken or its
// lease ends, against a plain std::map under random operations; room and counters; threads.
#include "leases.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace ratelimit::server {
namespace {

using std::chrono::seconds;

const TimePoint kT0 = TimePoint{} + std::chrono::hours(24 * 365 * 50);

std::string id_of(std::uint64_t n) {
  // The shape of the memory store's ids: a 16-digit nonce, model, sequence, generation.
  return "00000000deadbeef-1-" + std::to_string(n) + "-0";
}

TEST(Leases, HeldUntilTakenOrEnded) {
  Leases leases(10);
  ASSERT_TRUE(leases.claim());
  leases.add("a", kT0 + seconds(60), kT0);
  ASSERT_TRUE(leases.claim());
  leases.add("b", kT0 + seconds(60), kT0);
  EXPECT_EQ(leases.size(), 2u);
  EXPECT_TRUE(leases.take("a", kT0 + seconds(59)));
  EXPECT_FALSE(leases.take("a", kT0 + seconds(59)));  // once
  EXPECT_FALSE(leases.take("c", kT0 + seconds(59)));  // never held
  EXPECT_EQ(leases.size(), 1u);
  EXPECT_EQ(leases.expired(), 0u);
  // At its end (60 s exactly) the lease is gone and counted as expired.
  EXPECT_FALSE(leases.take("b", kT0 + seconds(60)));
  EXPECT_EQ(leases.size(), 0u);
  EXPECT_EQ(leases.expired(), 1u);
}

TEST(Leases, RoomIsCapped) {
  Leases leases(2);
  EXPECT_EQ(leases.cap(), 2u);
  ASSERT_TRUE(leases.claim());
  ASSERT_TRUE(leases.claim());
  EXPECT_FALSE(leases.claim());
  EXPECT_EQ(leases.size(), 2u);
  leases.unclaim();  // a claim whose acquire was refused
  leases.add("x", kT0 + seconds(1), kT0);
  EXPECT_EQ(leases.size(), 1u);
  ASSERT_TRUE(leases.claim());
  leases.add("x", kT0 + seconds(1), kT0);  // held already: the second room goes back
  EXPECT_EQ(leases.size(), 1u);
  EXPECT_EQ(leases.expire(kT0 + seconds(1)), 1u);
  EXPECT_EQ(leases.size(), 0u);
  EXPECT_TRUE(leases.claim());
}

TEST(Leases, ExpireForgetsInOrderAcrossShards) {
  Leases leases(100'000);
  for (int i = 0; i < 10'000; ++i) {
    ASSERT_TRUE(leases.claim());
    leases.add(id_of(i), kT0 + seconds(i / 1000 + 1), kT0);
  }
  EXPECT_EQ(leases.size(), 10'000u);
  EXPECT_EQ(leases.expire(kT0 + seconds(1) - std::chrono::nanoseconds(1)), 0u);
  EXPECT_EQ(leases.expire(kT0 + seconds(1)), 1'000u);
  EXPECT_FALSE(leases.take(id_of(999), kT0 + seconds(1)));
  EXPECT_TRUE(leases.take(id_of(1000), kT0 + seconds(1)));
  EXPECT_EQ(leases.expire(kT0 + seconds(5)), 3'999u);
  EXPECT_EQ(leases.size(), 5'000u);
  EXPECT_EQ(leases.expired(), 4'999u);
  for (int i = 5000; i < 10'000; ++i) ASSERT_TRUE(leases.take(id_of(i), kT0 + seconds(5)));
  EXPECT_EQ(leases.size(), 0u);
}

// Random adds, takes and expiries against a model: probing, deletion by backward shift, the
// free list and the growth of the index must never lose or invent a lease.
TEST(Leases, MatchesAModelUnderRandomOperations) {
  Leases leases(1'000'000);
  std::map<std::string, TimePoint> model;
  std::mt19937_64 rng(12345);
  TimePoint now = kT0;
  std::uint64_t next = 0;
  std::uint64_t expired = 0;
  for (int step = 0; step < 200'000; ++step) {
    const auto op = rng() % 10;
    if (op < 5) {
      const std::string id = id_of(next++);
      ASSERT_TRUE(leases.claim());
      leases.add(id, now + seconds(30), now);
      model[id] = now + seconds(30);
    } else if (op < 9 && next > 0) {
      const std::string id = id_of(rng() % next);
      auto it = model.find(id);
      const bool live = it != model.end() && it->second > now;
      ASSERT_EQ(leases.take(id, now), live) << id;
      if (it != model.end()) {
        if (!live) ++expired;
        model.erase(it);
      }
    } else {
      now += std::chrono::milliseconds(rng() % 2000);
    }
    if (step % 1000 == 0) {
      for (auto it = model.begin(); it != model.end();) {
        if (it->second <= now) {
          ++expired;
          it = model.erase(it);
        } else {
          ++it;
        }
      }
      leases.expire(now);
      ASSERT_EQ(leases.size(), model.size());
      ASSERT_EQ(leases.expired(), expired);
    }
  }
  for (const auto& [id, end] : model) EXPECT_EQ(leases.take(id, now), end > now) << id;
}

TEST(Leases, ThreadsAddAndTakeTheirOwn) {
  Leases leases(1'000'000);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20'000; ++i) {
        const std::string id = std::to_string(t) + "-" + std::to_string(i);
        ASSERT_TRUE(leases.claim());
        leases.add(id, kT0 + seconds(60), kT0);
        if (i % 2 == 0) {
          ASSERT_TRUE(leases.take(id, kT0));
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(leases.size(), 40'000u);
  EXPECT_EQ(leases.expire(kT0 + seconds(60)), 40'000u);
  EXPECT_EQ(leases.size(), 0u);
}

}  // namespace
}  // namespace ratelimit::server
