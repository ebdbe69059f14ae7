// The SQLite store in one process: the seed's decision matrix, reservations and ids, quotas
// owned by the database, waiting, exactness after idle spells, bounded deletion, and the schema.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "sqlite_test_util.h"

namespace ratelimit {
namespace {

using namespace std::chrono_literals;
using testing::exec_sql;
using testing::open_db;
using testing::query_int;
using testing::query_text;
using testing::sqlite_limiter;
using testing::start_time;

// --- the seed's decision matrix ---

TEST(SqliteDecideTest, RpmBoundary) {
  auto f = sqlite_limiter({{"m", {3, 0, 0}}});
  for (int i = 0; i < 3; ++i) {
    const Decision d = f->limiter->decide("m", 0);
    ASSERT_TRUE(d.allowed);
    EXPECT_EQ(d.code, DecisionCode::ok);
    ASSERT_TRUE(f->limiter->record_usage("m", 0, 0));
  }
  const Decision d = f->limiter->decide("m", 0);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.code, DecisionCode::rpm_exceeded);
  EXPECT_EQ(d.retry_after, 60s);
  EXPECT_EQ(d.stats.rpm, 3);
  EXPECT_EQ(d.stats.max_rpm, 3);
  f->clock->advance(59s);
  EXPECT_FALSE(f->limiter->can_send("m", 0));
  EXPECT_EQ(f->limiter->decide("m", 0).retry_after, 1s);
  f->clock->advance(1s);  // exactly 60 s old: gone
  EXPECT_TRUE(f->limiter->can_send("m", 0));
}

TEST(SqliteDecideTest, TpmBoundaryAndZeroTokensAtExactlyFull) {
  auto f = sqlite_limiter({{"m", {0, 100, 0}}});
  ASSERT_TRUE(f->limiter->record_usage("m", 60, 30));
  EXPECT_TRUE(f->limiter->can_send("m", 10));  // 90 + 10 of 100
  const Decision d = f->limiter->decide("m", 11);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.code, DecisionCode::tpm_exceeded);
  EXPECT_EQ(d.retry_after, 60s);
  ASSERT_TRUE(f->limiter->record_usage("m", 10, 0));
  EXPECT_TRUE(f->limiter->can_send("m", 0));
  EXPECT_FALSE(f->limiter->can_send("m", 1));
}

TEST(SqliteDecideTest, EstimateAboveTheLimitCanNeverPass) {
  auto f = sqlite_limiter({{"m", {0, 100, 0}}});
  const Decision d = f->limiter->decide("m", 101);
  EXPECT_EQ(d.code, DecisionCode::tpm_exceeded);
  EXPECT_EQ(d.retry_after, Duration::max());
}

TEST(SqliteDecideTest, RpdBoundaryAndDailyReset) {
  auto f = sqlite_limiter({{"m", {0, 0, 2}}});
  ASSERT_TRUE(f->limiter->record_usage("m", 1, 1));
  f->clock->advance(1h);
  ASSERT_TRUE(f->limiter->record_usage("m", 1, 1));
  Decision d = f->limiter->decide("m", 0);
  EXPECT_EQ(d.code, DecisionCode::rpd_exceeded);
  EXPECT_EQ(d.retry_after, 23h);
  EXPECT_EQ(d.stats.day_start, start_time());
  f->clock->advance(22h);  // 23 h after the start: still denied
  EXPECT_FALSE(f->limiter->can_send("m", 0));
  f->clock->advance(2h);  // 25 h: a new day
  d = f->limiter->decide("m", 0);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.stats.rpd, 0);
  EXPECT_EQ(d.stats.day_start, TimePoint{});
}

TEST(SqliteDecideTest, SingleDimensionQuotas) {
  auto f = sqlite_limiter({{"rpm", {1, 0, 0}}, {"tpm", {0, 50, 0}}});
  ASSERT_TRUE(f->limiter->record_usage("rpm", 1'000'000, 0));
  EXPECT_EQ(f->limiter->decide("rpm", 0).code, DecisionCode::rpm_exceeded);
  ASSERT_TRUE(f->limiter->record_usage("tpm", 50, 0));
  ASSERT_TRUE(f->limiter->record_usage("tpm", 0, 0));
  EXPECT_TRUE(f->limiter->can_send("tpm", 0));
  EXPECT_EQ(f->limiter->decide("tpm", 1).code, DecisionCode::tpm_exceeded);
}

TEST(SqliteDecideTest, UnknownUnlimitedAndNegativeEstimates) {
  auto f = sqlite_limiter({{"free", {}}});
  Decision d = f->limiter->decide("nope", 10);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.code, DecisionCode::unknown_model);
  d = f->limiter->decide("free", 10);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.code, DecisionCode::unlimited);
  d = f->limiter->decide("free", -1);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.code, DecisionCode::invalid_tokens);
  Reservation r = f->limiter->try_acquire("free", -1);
  EXPECT_FALSE(r);
  EXPECT_EQ(r.decision().code, DecisionCode::invalid_tokens);
}

TEST(SqliteDecideTest, PruningKeepsTwoOfFour) {
  auto f = sqlite_limiter({{"m", {10, 1000, 0}}});
  ASSERT_TRUE(f->limiter->record_usage("m", 10, 0));
  f->clock->advance(10s);
  ASSERT_TRUE(f->limiter->record_usage("m", 20, 0));
  f->clock->advance(20s);
  ASSERT_TRUE(f->limiter->record_usage("m", 30, 0));
  ASSERT_TRUE(f->limiter->record_usage("m", 40, 0));
  f->clock->advance(40s);  // the first two are 70 s and 60 s old
  const ModelStats s = *f->limiter->stats("m");
  EXPECT_EQ(s.rpm, 2);
  EXPECT_EQ(s.tpm, 70);
  EXPECT_EQ(s.rpd, 4);
}

TEST(SqliteDecideTest, RecordAccumulatesAndClampsNegatives) {
  auto f = sqlite_limiter({{"m", {100, 100000, 100}}});
  ASSERT_TRUE(f->limiter->record_usage("m", 100, 50));
  EXPECT_EQ(f->limiter->stats("m")->tpm, 150);
  ASSERT_TRUE(f->limiter->record_usage("m", 30, 30));
  EXPECT_EQ(f->limiter->stats("m")->tpm, 210);
  ASSERT_TRUE(f->limiter->record_usage("m", -100, 25));  // negative taken as 0
  EXPECT_EQ(f->limiter->stats("m")->tpm, 235);
  EXPECT_EQ(f->limiter->stats("m")->rpd, 3);
  EXPECT_EQ(f->limiter->stats("m")->rpm, 3);
}

TEST(SqliteDecideTest, TokenSumsSaturate) {
  auto f = sqlite_limiter({{"m", {0, 0, 0}}});
  constexpr std::int64_t kMax = INT64_MAX;
  ASSERT_TRUE(f->limiter->record_usage("m", kMax, kMax));
  ASSERT_TRUE(f->limiter->record_usage("m", kMax, 1));
  EXPECT_EQ(f->limiter->stats("m")->tpm, kMax);
  f->clock->advance(60s);
  EXPECT_EQ(f->limiter->stats("m")->tpm, 0);  // exact after the saturated rows leave
}

TEST(SqliteDecideTest, RetryAfterIsTheLatestOverEveryExhaustedLimit) {
  auto f = sqlite_limiter({{"m", {1, 100, 0}}});
  ASSERT_TRUE(f->limiter->record_usage("m", 0, 0));
  f->clock->advance(30s);
  ASSERT_TRUE(f->limiter->record_usage("m", 100, 0));  // rpm 2 of 1, tpm full
  const Decision d = f->limiter->decide("m", 1);
  EXPECT_EQ(d.code, DecisionCode::rpm_exceeded);  // the first failing check
  EXPECT_EQ(d.retry_after, 60s);                  // the tokens leave last
}

TEST(SqliteDecideTest, RpmRetryIsExactWhenTheQuotaWasLowered) {
  auto f = sqlite_limiter({{"m", {10, 0, 0}}});
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(f->limiter->record_usage("m", 0, 0));
    f->clock->advance(1s);
  }
  ASSERT_TRUE(f->limiter->set_quota("m", {2, 0, 0}));
  // 5 requests at 0..4 s, now 5 s: the request at position 5 - 2 = 3 (t = 3 s) must leave.
  EXPECT_EQ(f->limiter->decide("m", 0).retry_after, 58s);
}

TEST(SqliteDecideTest, TpmRetryIsTheEarliestMomentEnoughTokensLeave) {
  auto f = sqlite_limiter({{"m", {0, 100, 0}}});
  ASSERT_TRUE(f->limiter->record_usage("m", 30, 0));
  f->clock->advance(10s);
  ASSERT_TRUE(f->limiter->record_usage("m", 30, 0));
  f->clock->advance(10s);
  ASSERT_TRUE(f->limiter->record_usage("m", 30, 0));
  // 90 used; 50 more needs 40 to leave: the first two entries (at 0 s and 10 s).
  EXPECT_EQ(f->limiter->decide("m", 50).retry_after, 50s);
  EXPECT_EQ(f->limiter->decide("m", 20).retry_after, 40s);
}

TEST(SqliteDecideTest, ClockSteppingBackClampsEntriesToNow) {
  auto f = sqlite_limiter({{"m", {2, 0, 0}}});
  ASSERT_TRUE(f->limiter->record_usage("m", 0, 0));
  ASSERT_TRUE(f->limiter->record_usage("m", 0, 0));
  f->clock->advance(-1h);                   // the wall clock stepped back
  Decision d = f->limiter->decide("m", 0);  // a read: clamps virtually
  EXPECT_EQ(d.code, DecisionCode::rpm_exceeded);
  EXPECT_EQ(d.retry_after, 60s);
  ASSERT_TRUE(f->limiter->record_usage("m", 0, 0));  // a write clamps the rows
  EXPECT_EQ(query_int(f->path, "SELECT max(ts) FROM rl_log WHERE seq < 9223372036854775807"),
            (start_time() - 1h).time_since_epoch().count());
  f->clock->advance(60s);
  EXPECT_EQ(f->limiter->stats("m")->rpm, 0);
  EXPECT_EQ(f->limiter->stats("m")->day_start, start_time() - 1h);
  // A read whose clock is a little behind the database decides as of the database's time.
  ASSERT_TRUE(f->limiter->record_usage("m", 0, 0));
  ASSERT_TRUE(f->limiter->record_usage("m", 0, 0));
  f->clock->advance(-500ms);
  const Decision behind = f->limiter->decide("m", 0);
  EXPECT_EQ(behind.code, DecisionCode::rpm_exceeded);
  EXPECT_EQ(behind.retry_after, 60s);
}

TEST(SqliteDecideTest, ExactAfterAnIdleSpellAndDeletionIsBounded) {
  auto f = sqlite_limiter({{"m", {0, 0, 0}}});
  for (int i = 0; i < 300; ++i) ASSERT_TRUE(f->limiter->record_usage("m", 1, 0));
  f->clock->advance(30s);
  ASSERT_TRUE(f->limiter->record_usage("m", 5, 0));
  f->clock->advance(40s);  // the 300 left; the last one has not
  // A read walks the 300 rows without writing, exact.
  EXPECT_EQ((*f->limiter->all_stats())["m"].rpm, 1);
  EXPECT_EQ(f->limiter->models()->size(), 1u);
  ModelStats s = *f->limiter->stats("m");
  EXPECT_EQ(s.rpm, 1);
  EXPECT_EQ(s.tpm, 5);
  EXPECT_EQ(f->limiter->decide("m", 0).stats.rpm, 1);
  // Reads never delete; a write deletes at most 256 expired rows, once 64 wait.
  const char* entries = "SELECT COUNT(*) FROM rl_log WHERE seq < 9223372036854775807";
  const std::int64_t before = query_int(f->path, entries);
  EXPECT_EQ(before, 301);
  ASSERT_TRUE(f->limiter->record_usage("m", 0, 0));
  const std::int64_t after = query_int(f->path, entries);
  EXPECT_EQ(after, before + 1 - 256);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(f->limiter->record_usage("m", 0, 0));
  EXPECT_EQ(query_int(f->path, entries), 1 + 11 + 44);  // 44 < 64 wait
  EXPECT_EQ(f->limiter->stats("m")->rpm, 12);
  EXPECT_EQ(f->limiter->stats("m")->rpd, 312);
}

TEST(SqliteDecideTest, DecideAndStatsDoNotWriteToPruneEvenAfterLongIdleSpells) {
  auto f = sqlite_limiter({{"m", {1000, 0, 0}}, {"n", {1000, 0, 0}}});
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(f->limiter->record_usage("m", 1, 0));
    ASSERT_TRUE(f->limiter->record_usage("n", 1, 0));
  }
  f->clock->advance(61s);
  EXPECT_EQ(f->limiter->decide("m", 0).stats.rpm, 0);
  EXPECT_EQ(f->limiter->stats("n")->tpm, 0);
  EXPECT_EQ((*f->limiter->all_stats())["n"].rpm, 0);
  EXPECT_EQ(
      query_int(f->path,
                "SELECT g.requests FROM rl_models AS m JOIN rl_log AS g ON g.model_no = m.model_no "
                "AND g.seq = 9223372036854775807 WHERE m.model = 'n'"),
      100);
  // The first look at a new day is written once (so that it stays new if the clock steps back).
  f->clock->advance(24h);
  EXPECT_EQ(f->limiter->stats("n")->rpd, 0);
  EXPECT_EQ(
      query_int(
          f->path,
          "SELECT g.day_count FROM rl_models AS m JOIN rl_log AS g ON g.model_no = m.model_no "
          "AND g.seq = 9223372036854775807 WHERE m.model = 'n'"),
      0);
}

TEST(SqliteDecideTest, DecideAndStatsDoNotWriteOnTheCommonPath) {
  auto f = sqlite_limiter({{"m", {10, 0, 0}}});
  ASSERT_TRUE(f->limiter->record_usage("m", 1, 0));
  const std::int64_t version =
      query_int(f->path, "SELECT horizon FROM rl_log WHERE seq = 9223372036854775807");
  f->clock->advance(5s);
  f->limiter->decide("m", 0);
  f->limiter->stats("m");
  EXPECT_EQ(query_int(f->path, "SELECT horizon FROM rl_log WHERE seq = 9223372036854775807"),
            version);
}

TEST(SqliteStatsTest, KnownUnknownQuotaOnlyAndAllStats) {
  auto f = sqlite_limiter({{"a", {5, 500, 50}}, {"b", {1, 0, 0}}});
  ASSERT_TRUE(f->limiter->record_usage("a", 10, 5));
  ASSERT_TRUE(f->limiter->record_usage("free", 1, 1));
  ModelStats s = *f->limiter->stats("a");
  EXPECT_EQ(s.rpm, 1);
  EXPECT_EQ(s.tpm, 15);
  EXPECT_EQ(s.rpd, 1);
  EXPECT_EQ(s.max_rpm, 5);
  EXPECT_EQ(s.max_tpm, 500);
  EXPECT_EQ(s.max_rpd, 50);
  EXPECT_EQ(s.day_start, start_time());
  EXPECT_EQ(*f->limiter->stats("nope"), ModelStats{});
  EXPECT_EQ(f->limiter->stats("b")->max_rpm, 1);
  EXPECT_EQ(f->limiter->stats("b")->rpm, 0);
  auto all = *f->limiter->all_stats();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all["free"].tpm, 2);
  EXPECT_EQ(all["free"].max_rpm, 0);
  EXPECT_EQ((*f->limiter->models()), (std::vector<std::string>{"a", "b", "free"}));
  f->clock->advance(25h);  // windows empty and the day over: "free" drops out
  all = *f->limiter->all_stats();
  EXPECT_EQ(all.size(), 2u);
  EXPECT_EQ(all["a"].rpd, 0);
  EXPECT_EQ(all["a"].tpm, 0);
  EXPECT_EQ((*f->limiter->models()), (std::vector<std::string>{"a", "b"}));
}

TEST(SqliteStatsTest, ResetOneAllAndUnknown) {
  auto f = sqlite_limiter({{"a", {5, 0, 5}}, {"b", {5, 0, 5}}});
  ASSERT_TRUE(f->limiter->record_usage("a", 1, 0));
  ASSERT_TRUE(f->limiter->record_usage("b", 1, 0));
  ASSERT_TRUE(f->limiter->record_usage("", 1, 0));
  ASSERT_TRUE(f->limiter->reset("unknown"));
  ASSERT_TRUE(f->limiter->reset("a"));
  EXPECT_EQ(f->limiter->stats("a")->rpm, 0);
  EXPECT_EQ(f->limiter->stats("a")->rpd, 0);
  EXPECT_EQ(f->limiter->stats("b")->rpm, 1);
  EXPECT_EQ(f->limiter->quota("a"), (ModelQuota{5, 0, 5}));  // quotas untouched
  ASSERT_TRUE(f->limiter->reset(""));
  EXPECT_EQ(f->limiter->stats("b")->rpm, 0);
  EXPECT_EQ(f->limiter->stats("")->rpm, 0);
  EXPECT_EQ(query_int(f->path, "SELECT COUNT(*) FROM rl_log WHERE seq < 9223372036854775807"), 0);
  EXPECT_EQ(query_int(f->path, "SELECT sum(has_day) FROM rl_log WHERE seq = 9223372036854775807"),
            0);
  ASSERT_TRUE(f->limiter->record_usage("b", 1, 0));
  EXPECT_EQ(f->limiter->stats("b")->rpm, 1);
}

TEST(SqliteStatsTest, ModelNamesAreExact) {
  auto f = sqlite_limiter(
      {{"", {1, 0, 0}}, {"model/with/slash", {1, 0, 0}}, {"model with spaces", {1, 0, 0}}});
  for (const char* name : {"", "model/with/slash", "model with spaces"}) {
    Reservation r = f->limiter->try_acquire(name, 0);
    EXPECT_TRUE(r) << name;
    EXPECT_FALSE(f->limiter->can_send(name, 0)) << name;
  }
  EXPECT_EQ(f->limiter->models()->size(), 3u);
  EXPECT_TRUE(f->limiter->can_send("model", 0));
}

TEST(SqliteStatsTest, TwentyThreadsOnTwoConnectionsCountExactly) {
  auto f = sqlite_limiter({});
  auto other = open_db(f->path, {}, f->clock);
  std::vector<std::thread> threads;
  for (int t = 0; t < 20; ++t) {
    threads.emplace_back([&, t] {
      RateLimiter& limiter = t % 2 == 0 ? *f->limiter : *other;
      const std::string model = "model-" + std::to_string(t % 5);
      for (int i = 0; i < 50; ++i) {
        if (i % 3 == 0) {
          EXPECT_TRUE(limiter.try_acquire(model, 2).commit(1, 1));
        } else {
          EXPECT_TRUE(limiter.record_usage(model, 1, 1));
        }
        if (i % 10 == 0) {
          EXPECT_TRUE(limiter.all_stats());
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  std::int64_t requests = 0, tokens = 0, day = 0;
  const auto all = f->limiter->all_stats();
  ASSERT_TRUE(all);
  for (const auto& [model, s] : *all) {
    requests += s.rpm;
    tokens += s.tpm;
    day += s.rpd;
  }
  EXPECT_EQ(requests, 1000);
  EXPECT_EQ(tokens, 2000);
  EXPECT_EQ(day, 1000);
}

// --- reservations and ids ---

TEST(SqliteReservationTest, GrantCommitAndCancel) {
  auto f = sqlite_limiter({{"m", {2, 1000, 10}}});
  Reservation r = f->limiter->try_acquire("m", 600);
  ASSERT_TRUE(r);
  EXPECT_EQ(r.decision().code, DecisionCode::ok);
  EXPECT_EQ(f->limiter->stats("m")->tpm, 600);
  Reservation denied = f->limiter->try_acquire("m", 401);
  EXPECT_FALSE(denied);
  EXPECT_EQ(denied.decision().code, DecisionCode::tpm_exceeded);
  EXPECT_TRUE(denied.id().empty());
  f->clock->advance(30s);
  ASSERT_TRUE(r.commit(100, 20));
  EXPECT_EQ(f->limiter->stats("m")->tpm, 120);
  EXPECT_EQ(r.commit(1, 1).error().code, ErrorCode::invalid_argument);  // settled once
  Reservation up = f->limiter->try_acquire("m", 0);  // no token row: commit inserts one
  ASSERT_TRUE(up);
  ASSERT_TRUE(up.commit(900, 100));
  EXPECT_EQ(f->limiter->stats("m")->tpm, 1120);
  EXPECT_FALSE(f->limiter->can_send("m", 0));
  f->clock->advance(30s);  // the first entry leaves at its original time
  EXPECT_EQ(f->limiter->stats("m")->tpm, 1000);
  EXPECT_EQ(f->limiter->stats("m")->rpm, 1);
  Reservation c = f->limiter->try_acquire("m", 0);
  ASSERT_TRUE(c);
  EXPECT_EQ(f->limiter->stats("m")->rpd, 3);
  ASSERT_TRUE(c.cancel());
  EXPECT_EQ(f->limiter->stats("m")->rpd, 2);
  EXPECT_EQ(f->limiter->stats("m")->rpm, 1);
  EXPECT_EQ(c.cancel().error().code, ErrorCode::invalid_argument);
}

TEST(SqliteReservationTest, SettlingAfterTheEntryLeftTheWindowChangesNothing) {
  auto f = sqlite_limiter({{"m", {10, 1000, 10}}});
  Reservation a = f->limiter->try_acquire("m", 500);
  Reservation b = f->limiter->try_acquire("m", 500);
  const std::string b_id = b.id();
  f->clock->advance(61s);
  ASSERT_TRUE(a.commit(100, 20));
  EXPECT_EQ(f->limiter->stats("m")->tpm, 0);
  EXPECT_EQ(f->limiter->stats("m")->rpd, 2);
  ASSERT_TRUE(f->limiter->cancel(b_id));  // by id: ok, nothing changes (not even the day)
  EXPECT_EQ(f->limiter->stats("m")->rpd, 2);
  ASSERT_TRUE(b.cancel());  // the Reservation knows it was never settled: the day is refunded
  EXPECT_EQ(f->limiter->stats("m")->rpd, 1);
}

TEST(SqliteReservationTest, CancelAfterRowsWereDeletedStillRefundsTheDayOnce) {
  auto f = sqlite_limiter({{"m", {0, 0, 1000}}});
  Reservation r = f->limiter->try_acquire("m", 5);
  for (int i = 0; i < 70; ++i) ASSERT_TRUE(f->limiter->record_usage("m", 1, 0));
  f->clock->advance(61s);
  // Expired rows are deleted in batches of 64, once that many wait.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(f->limiter->record_usage("m", 0, 0));
  EXPECT_EQ(query_int(f->path, "SELECT COUNT(*) FROM rl_log WHERE state = 0"), 0);
  ASSERT_TRUE(r.cancel());
  EXPECT_EQ(f->limiter->stats("m")->rpd, 73);
  EXPECT_EQ(f->limiter->stats("m")->rpm, 3);
}

TEST(SqliteReservationTest, CancelAfterTheDayRolledOverKeepsTheNewDay) {
  auto f = sqlite_limiter({{"m", {0, 0, 10}}});
  Reservation r = f->limiter->try_acquire("m", 1);
  f->clock->advance(25h);
  ASSERT_TRUE(f->limiter->record_usage("m", 0, 0));
  ASSERT_TRUE(r.cancel());
  EXPECT_EQ(f->limiter->stats("m")->rpd, 1);
}

TEST(SqliteReservationTest, ReservationsIssuedBeforeAResetSettleAsGone) {
  auto f = sqlite_limiter({{"m", {5, 0, 5}}});
  Reservation r = f->limiter->try_acquire("m", 1);
  ASSERT_TRUE(f->limiter->reset("m"));
  ASSERT_TRUE(f->limiter->record_usage("m", 0, 0));
  ASSERT_TRUE(r.cancel());
  EXPECT_EQ(f->limiter->stats("m")->rpm, 1);
  EXPECT_EQ(f->limiter->stats("m")->rpd, 1);
}

TEST(SqliteReservationTest, IdsSettleFromAnotherLimiterOnTheSameDatabase) {
  auto f = sqlite_limiter({{"m", {3, 1000, 0}}});
  Reservation a = f->limiter->try_acquire("m", 100);
  Reservation b = f->limiter->try_acquire("m", 100);
  auto other = open_db(f->path, {}, f->clock);
  ASSERT_TRUE(other->commit(a.id(), 10, 0));
  ASSERT_TRUE(other->cancel(b.id()));
  EXPECT_EQ(f->limiter->stats("m")->tpm, 10);
  EXPECT_EQ(f->limiter->stats("m")->rpm, 1);
  EXPECT_EQ(a.commit(1, 1).error().code, ErrorCode::invalid_argument);  // settled elsewhere
  EXPECT_EQ(other->commit(a.id(), 1, 1).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(other->commit(a.id(), -1, 1).error().code, ErrorCode::invalid_argument);
}

TEST(SqliteReservationTest, UnknownForeignAndMalformedIdsAreNotFound) {
  auto f = sqlite_limiter({{"m", {3, 0, 0}}});
  Reservation a = f->limiter->try_acquire("m", 1);
  const std::string id = a.id();
  const std::string prefix = id.substr(0, 17);
  testing::TempDir other_dir;
  auto foreign = open_db(other_dir.file("other.db"), {{"m", {3, 0, 0}}});
  Reservation x = foreign->try_acquire("m", 1);
  EXPECT_EQ(id, prefix + "1-1");
  for (const std::string& bad :
       {x.id(), prefix + "1-2", prefix + "1-ff", prefix + "2-1", prefix + "1-0", prefix + "0-1",
        prefix + "01-1", prefix + "1-01", prefix + "1-1A", prefix + "1-", prefix + "-1",
        prefix + "1", prefix, std::string(""), std::string("garbage"), prefix + "1-zz",
        prefix + "1-1111111111111111", prefix + "1-1-1", prefix + "g-1"}) {
    auto s = f->limiter->commit(bad, 1, 1);
    ASSERT_FALSE(s) << bad;
    EXPECT_EQ(s.error().code, ErrorCode::not_found) << bad;
    EXPECT_EQ(f->limiter->cancel(bad).error().code, ErrorCode::not_found) << bad;
  }
  // An id this database issued whose rows were deleted: ok, nothing changes.
  f->clock->advance(61s);
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(f->limiter->record_usage("m", 0, 0));
  EXPECT_TRUE(f->limiter->cancel(id));
  EXPECT_TRUE(f->limiter->commit(id, 5, 5));
}

TEST(SqliteReservationTest, SettlingAfterCloseOrAfterTheLimiterIsGone) {
  auto f = sqlite_limiter({{"m", {3, 0, 0}}});
  Reservation a = f->limiter->try_acquire("m", 1);
  Reservation b = f->limiter->try_acquire("m", 1);
  ASSERT_TRUE(f->limiter->close());
  EXPECT_EQ(a.commit(1, 1).error().code, ErrorCode::closed);
  f->limiter.reset();
  EXPECT_EQ(b.cancel().error().code, ErrorCode::closed);
}

TEST(SqliteReservationTest, UnknownAndUnlimitedModelsAreGrantedAndRecorded) {
  auto f = sqlite_limiter({{"free", {}}});
  Reservation a = f->limiter->try_acquire("nope", 5);
  ASSERT_TRUE(a);
  EXPECT_EQ(a.decision().code, DecisionCode::unknown_model);
  Reservation b = f->limiter->try_acquire("free", 5);
  EXPECT_EQ(b.decision().code, DecisionCode::unlimited);
  EXPECT_EQ(f->limiter->stats("nope")->tpm, 5);
  EXPECT_EQ(f->limiter->stats("free")->tpm, 5);
}

// --- quotas owned by the database ---

TEST(SqliteQuotaTest, ConfigQuotasAreWrittenOnlyForModelsWithoutARow) {
  testing::TempDir dir;
  const std::string path = dir.file("q.db");
  auto first = open_db(path, {{"a", {1, 2, 3}}});
  ASSERT_TRUE(first->set_quota("a", {7, 8, 9}));
  auto second = open_db(path, {{"a", {1, 2, 3}}, {"b", {4, 5, 6}}});
  EXPECT_EQ(second->quota("a"), (ModelQuota{7, 8, 9}));
  EXPECT_EQ(second->quota("b"), (ModelQuota{4, 5, 6}));
  EXPECT_EQ(first->quota("b"), (ModelQuota{4, 5, 6}));  // seen through data_version
  ASSERT_TRUE(second->remove_quota("a"));
  EXPECT_EQ(first->quota("a"), std::nullopt);
  EXPECT_EQ(first->decide("a", 0).code, DecisionCode::unknown_model);
  EXPECT_EQ(first->remove_quota("a").error().code, ErrorCode::not_found);
  ASSERT_TRUE(second->set_quota("c", {1, 0, 0}));
  EXPECT_EQ(first->quotas()->size(), 2u);
  EXPECT_EQ(first->set_quota("a", {-1, 0, 0}).error().code, ErrorCode::invalid_argument);
  ASSERT_TRUE(first->load());
  ASSERT_TRUE(first->persist());
}

TEST(SqliteQuotaTest, DefaultProfilesAndAddProvider) {
  testing::TempDir dir;
  Config config;
  config.clock = std::make_shared<ManualClock>(start_time());
  auto limiter = std::move(*RateLimiter::open_sqlite(dir.file("p.db"), config));
  EXPECT_EQ(limiter->quota("gemini-2.5-pro"), (ModelQuota{150, 1'000'000, 1000}));
  EXPECT_EQ(limiter->quota("gpt-4o"), std::nullopt);
  ASSERT_TRUE(limiter->add_provider(Provider::openai));
  ASSERT_TRUE(limiter->add_provider(Provider::openai));
  ASSERT_TRUE(limiter->add_provider(Provider::local));
  EXPECT_EQ(limiter->quota("gpt-4o"), (ModelQuota{500, 30'000, 0}));
  ASSERT_TRUE(limiter->set_quota("gpt-4o", {}));
  EXPECT_EQ(limiter->decide("gpt-4o", 1).code, DecisionCode::unlimited);
}

TEST(SqliteQuotaTest, QuotaChangesAreUsedByTheNextDecision) {
  auto f = sqlite_limiter({{"m", {1, 0, 0}}});
  auto other = open_db(f->path, {}, f->clock);
  ASSERT_TRUE(f->limiter->try_acquire("m", 0));
  EXPECT_FALSE(other->try_acquire("m", 0));
  ASSERT_TRUE(other->set_quota("m", {2, 0, 0}));
  EXPECT_TRUE(f->limiter->try_acquire("m", 0));  // decisions read the quota in the transaction
}

// --- opening, paths, persistence ---

TEST(SqliteOpenTest, StateSurvivesReopeningAndTheSchemaIsTheSeeds) {
  auto f = sqlite_limiter({{"m", {5, 100, 10}}});
  ASSERT_TRUE(f->limiter->record_usage("m", 40, 2));
  // The live window is in rl_log: the seed's tables are written by persist() only.
  EXPECT_EQ(query_int(f->path, "SELECT COUNT(*) FROM requests"), 0);
  ASSERT_TRUE(f->limiter->persist());
  ASSERT_TRUE(f->limiter->close());
  ASSERT_TRUE(f->limiter->close());  // idempotent
  auto again = open_db(f->path, {}, f->clock);
  const ModelStats s = *again->stats("m");
  EXPECT_EQ(s.rpm, 1);
  EXPECT_EQ(s.tpm, 42);
  EXPECT_EQ(s.max_tpm, 100);
  EXPECT_EQ(query_text(f->path, "PRAGMA journal_mode"), "wal");
  // The seed's tables, with columns of ours appended (defaults 0, so that go-ratelimit's
  // statements, which name their columns, still work).
  EXPECT_EQ(query_text(f->path, "SELECT sql FROM sqlite_master WHERE name = 'tokens'"),
            "CREATE TABLE tokens (model TEXT NOT NULL, ts INTEGER NOT NULL, count INTEGER NOT "
            "NULL, output INTEGER NOT NULL DEFAULT 0)");
  EXPECT_EQ(query_text(f->path, "SELECT sql FROM sqlite_master WHERE name = 'quotas'"),
            "CREATE TABLE quotas (model TEXT PRIMARY KEY, max_rpm INTEGER NOT NULL DEFAULT 0, "
            "max_tpm INTEGER NOT NULL DEFAULT 0, max_rpd INTEGER NOT NULL DEFAULT 0, "
            "max_input_tpm INTEGER NOT NULL DEFAULT 0, max_output_tpm INTEGER NOT NULL DEFAULT "
            "0, day_start INTEGER NOT NULL DEFAULT 0)");
  EXPECT_EQ(query_int(f->path, "SELECT output FROM tokens WHERE model = 'm'"), 2);
  EXPECT_EQ(query_text(f->path,
                       "SELECT sql FROM sqlite_master WHERE name = "
                       "'idx_requests_model_ts'"),
            "CREATE INDEX idx_requests_model_ts ON requests(model, ts)");
  EXPECT_EQ(query_int(f->path, "SELECT ts FROM requests"), start_time().time_since_epoch().count());
  EXPECT_EQ(query_int(f->path, "SELECT day_count FROM daily WHERE model = 'm'"), 1);
}

TEST(SqliteOpenTest, CallsAfterCloseFail) {
  auto f = sqlite_limiter({{"m", {5, 0, 0}}});
  ASSERT_TRUE(f->limiter->close());
  EXPECT_EQ(f->limiter->decide("m", 0).code, DecisionCode::store_unavailable);
  EXPECT_FALSE(f->limiter->can_send("m", 0));
  EXPECT_EQ(f->limiter->try_acquire("m", 0).decision().code, DecisionCode::store_unavailable);
  EXPECT_EQ(f->limiter->acquire("m", 0).error().code, ErrorCode::closed);
  EXPECT_EQ(f->limiter->wait_for_capacity("m", 0).error().code, ErrorCode::closed);
  EXPECT_EQ(f->limiter->record_usage("m", 1, 1).error().code, ErrorCode::closed);
  EXPECT_EQ(f->limiter->commit("x", 1, 1).error().code, ErrorCode::closed);
  EXPECT_EQ(f->limiter->stats("m").error().code, ErrorCode::closed);
  EXPECT_EQ(f->limiter->all_stats().error().code, ErrorCode::closed);
  EXPECT_EQ(f->limiter->models().error().code, ErrorCode::closed);
  EXPECT_EQ(f->limiter->set_quota("m", {}).error().code, ErrorCode::closed);
  EXPECT_EQ(f->limiter->remove_quota("m").error().code, ErrorCode::closed);
  EXPECT_EQ(f->limiter->add_provider(Provider::gemini).error().code, ErrorCode::closed);
  EXPECT_EQ(f->limiter->reset("m").error().code, ErrorCode::closed);
  EXPECT_EQ(f->limiter->persist().error().code, ErrorCode::closed);
  EXPECT_EQ(f->limiter->load().error().code, ErrorCode::closed);
  // Reads like the others: no stale copy after close().
  EXPECT_EQ(f->limiter->quota("m").error().code, ErrorCode::closed);
  EXPECT_EQ(f->limiter->quotas().error().code, ErrorCode::closed);
  EXPECT_TRUE(f->limiter->close());
}

TEST(SqliteOpenTest, PathsAndDefaultPath) {
  testing::TempDir dir;
  Config config;
  config.providers = {Provider::local};
  config.file_path = dir.file("ignored.db");
  auto opened = RateLimiter::open_sqlite(dir.file("wins.db"), config);
  ASSERT_TRUE(opened) << opened.error().message;
  EXPECT_EQ((*opened)->config().file_path, dir.file("wins.db"));
  EXPECT_TRUE(std::filesystem::exists(dir.file("wins.db")));
  EXPECT_FALSE(std::filesystem::exists(dir.file("ignored.db")));
  // Backend::sqlite through open(), with the default path: the parent is created.
  const char* old_home = std::getenv("CORE_HOME");
  const std::string saved = old_home ? old_home : "";
  ::setenv("CORE_HOME", dir.file("home").c_str(), 1);
  Config by_backend;
  by_backend.backend = Backend::sqlite;
  auto def = RateLimiter::open(by_backend);
  ASSERT_TRUE(def) << def.error().message;
  EXPECT_EQ((*def)->config().file_path, dir.file("home") + "/.core/ratelimits.db");
  EXPECT_TRUE(std::filesystem::exists(dir.file("home") + "/.core/ratelimits.db"));
  // A default parent that cannot be created.
  { std::ofstream(dir.file("plain")) << "x"; }
  ::setenv("CORE_HOME", dir.file("plain").c_str(), 1);
  auto bad = RateLimiter::open(by_backend);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::io_error);
  if (old_home) {
    ::setenv("CORE_HOME", saved.c_str(), 1);
  } else {
    ::unsetenv("CORE_HOME");
  }
  // An explicit path whose directory is missing, or under a regular file, or a directory.
  for (const std::string& path :
       {dir.file("missing/x.db"), dir.file("plain") + "/x.db", dir.path().string()}) {
    auto failed = RateLimiter::open_sqlite(path, config);
    ASSERT_FALSE(failed) << path;
    EXPECT_EQ(failed.error().code, ErrorCode::io_error) << path;
    EXPECT_EQ(failed.error().message.rfind("ratelimit.open: ", 0), 0u) << failed.error().message;
  }
  Config negative;
  negative.quotas = {{"m", {-1, 0, 0}}};
  EXPECT_EQ(RateLimiter::open_sqlite(dir.file("n.db"), negative).error().code,
            ErrorCode::invalid_argument);
}

// --- waiting ---

TEST(SqliteWaitTest, AcquireWaitsExactlyOnAManualClock) {
  auto f = sqlite_limiter({{"m", {1, 0, 0}}});
  ASSERT_TRUE(f->limiter->try_acquire("m", 0));
  auto r = f->limiter->acquire("m", 0);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->granted());
  EXPECT_EQ(f->clock->now(), start_time() + 60s);
  ASSERT_TRUE(f->limiter->wait_for_capacity("m", 0));  // waits for the one just granted
  EXPECT_EQ(f->clock->now(), start_time() + 120s);
}

TEST(SqliteWaitTest, DeadlinesNeverSatisfiableAndCancellation) {
  auto f = sqlite_limiter({{"m", {1, 100, 0}}});
  ASSERT_TRUE(f->limiter->try_acquire("m", 0));
  WaitOptions short_wait;
  short_wait.timeout = 10s;
  EXPECT_EQ(f->limiter->acquire("m", 0, short_wait).error().code, ErrorCode::deadline_exceeded);
  EXPECT_EQ(f->limiter->wait_for_capacity("m", 0, short_wait).error().code,
            ErrorCode::deadline_exceeded);
  EXPECT_EQ(f->limiter->acquire("m", 101).error().code, ErrorCode::never_satisfiable);
  EXPECT_EQ(f->limiter->wait_for_capacity("m", 101).error().code, ErrorCode::never_satisfiable);
  EXPECT_EQ(f->limiter->acquire("m", -1).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(f->limiter->wait_for_capacity("m", -1).error().code, ErrorCode::invalid_argument);
  std::stop_source stop;
  stop.request_stop();
  WaitOptions cancelled;
  cancelled.stop = stop.get_token();
  EXPECT_EQ(f->limiter->acquire("m", 0, cancelled).error().code, ErrorCode::cancelled);
  EXPECT_EQ(f->limiter->wait_for_capacity("m", 0, cancelled).error().code, ErrorCode::cancelled);
  EXPECT_TRUE(f->limiter->wait_for_capacity("other", 5));  // no quota: at once
}

// A clock that never advances by itself: sleepers wait until stopped (early wake).
class FrozenClock final : public Clock {
 public:
  TimePoint now() const override { return start_time(); }
  bool sleep_until(TimePoint, std::stop_token stop) override {
    std::unique_lock lock(mu_);
    ++sleepers_;
    cv_.notify_all();
    cv_.wait(lock, stop, [] { return false; });
    --sleepers_;
    return false;
  }
  // Waits (at most 30 s of real time, a safety net) until at least `n` threads sleep.
  bool wait_for_sleepers(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 30s, [&] { return sleepers_ >= n; });
  }

 private:
  std::mutex mu_;
  std::condition_variable_any cv_;
  int sleepers_ = 0;
};

TEST(SqliteWaitTest, WaitersWakeEarlyOnReleasesInThisProcess) {
  testing::TempDir dir;
  auto clock = std::make_shared<FrozenClock>();
  auto limiter = open_db(dir.file("w.db"), {{"m", {1, 0, 0}}, {"n", {0, 10, 0}}}, clock);
  Reservation held = limiter->try_acquire("m", 0);
  ASSERT_TRUE(held);
  Reservation held_tokens = limiter->try_acquire("n", 10);
  ASSERT_TRUE(held_tokens);
  std::thread waiter([&] {
    auto r = limiter->acquire("m", 0);
    EXPECT_TRUE(r && r->granted());
  });
  std::thread watcher([&] { EXPECT_TRUE(limiter->wait_for_capacity("n", 5)); });
  ASSERT_TRUE(clock->wait_for_sleepers(2));  // both asleep: the releases must wake them
  ASSERT_TRUE(held.cancel());
  ASSERT_TRUE(held_tokens.commit(3, 2));  // a commit below the estimate releases tokens
  waiter.join();
  watcher.join();
  // Closing wakes waiters with `closed`.
  std::thread closed_waiter([&] {
    auto r = limiter->acquire("m", 0);
    EXPECT_EQ(r.error().code, ErrorCode::closed);
  });
  ASSERT_TRUE(clock->wait_for_sleepers(1));  // asleep: close must wake it
  ASSERT_TRUE(limiter->close());
  closed_waiter.join();
}

TEST(SqliteWaitTest, AWaiterBehindTheHeadFailsAtOnceWhenItCanNeverFit) {
  testing::TempDir dir;
  auto clock = std::make_shared<FrozenClock>();
  auto limiter = open_db(dir.file("n.db"), {{"m", {1, 100, 0}}}, clock);
  Reservation held = limiter->try_acquire("m", 0);
  std::thread head([&] { EXPECT_TRUE(limiter->acquire("m", 0)); });
  ASSERT_TRUE(clock->wait_for_sleepers(1));  // the head is asleep
  EXPECT_EQ(limiter->acquire("m", 101).error().code, ErrorCode::never_satisfiable);
  ASSERT_TRUE(held.cancel());
  head.join();
}

TEST(SqliteWaitTest, QueueOrderAmongAcquireWaiters) {
  testing::TempDir dir;
  auto clock = std::make_shared<FrozenClock>();
  auto limiter = open_db(dir.file("q.db"), {{"m", {1, 0, 0}}}, clock);
  Reservation held = limiter->try_acquire("m", 0);
  std::vector<int> order;
  std::mutex mu;
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&, i] {
      auto r = limiter->acquire("m", 0);
      ASSERT_TRUE(r);
      {
        std::lock_guard lock(mu);
        order.push_back(i);
      }
      ASSERT_TRUE(r->cancel());  // hand the slot to the next waiter
    });
    ASSERT_TRUE(clock->wait_for_sleepers(i + 1));  // arrival order
  }
  ASSERT_TRUE(held.cancel());
  for (auto& t : threads) t.join();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));
}

}  // namespace
}  // namespace ratelimit
