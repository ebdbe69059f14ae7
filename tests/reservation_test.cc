// Reservations: atomic check-and-record, commit, cancel, ids, and the rules for settling.
#include <gtest/gtest.h>

#include <thread>
#include <type_traits>
#include <vector>

#include "test_util.h"

namespace ratelimit {
namespace {

using namespace std::chrono_literals;
using testing::memory_limiter;

static_assert(std::is_nothrow_move_constructible_v<Reservation>);
static_assert(std::is_nothrow_move_assignable_v<Reservation>);
static_assert(!std::is_copy_constructible_v<Reservation>);

TEST(ReservationTest, GrantRecordsTheEstimate) {
  auto f = memory_limiter({{"m", {2, 100, 10}}});
  Reservation r = f.limiter->try_acquire("m", 60);
  ASSERT_TRUE(r.granted());
  ASSERT_TRUE(r);
  EXPECT_EQ(r.decision().code, DecisionCode::ok);
  EXPECT_FALSE(r.id().empty());
  const ModelStats s = *f.limiter->stats("m");
  EXPECT_EQ(s.rpm, 1);
  EXPECT_EQ(s.tpm, 60);
  EXPECT_EQ(s.rpd, 1);
  Reservation denied = f.limiter->try_acquire("m", 41);
  EXPECT_FALSE(denied);
  EXPECT_EQ(denied.decision().code, DecisionCode::tpm_exceeded);
  EXPECT_EQ(denied.decision().retry_after, 60s);
  EXPECT_TRUE(denied.id().empty());
  EXPECT_EQ(f.limiter->stats("m")->rpm, 1);  // a denial records nothing
}

TEST(ReservationTest, UnknownAndUnlimitedModelsAreGrantedAndRecorded) {
  auto f = memory_limiter({{"free", {}}});
  Reservation a = f.limiter->try_acquire("nope", 5);
  ASSERT_TRUE(a);
  EXPECT_EQ(a.decision().code, DecisionCode::unknown_model);
  Reservation b = f.limiter->try_acquire("free", 5);
  ASSERT_TRUE(b);
  EXPECT_EQ(b.decision().code, DecisionCode::unlimited);
  EXPECT_EQ(f.limiter->stats("nope")->tpm, 5);
  EXPECT_EQ(f.limiter->stats("free")->tpm, 5);
}

TEST(ReservationTest, CommitLowersAndRaisesTokensAtTheOriginalTime) {
  auto f = memory_limiter({{"m", {10, 1000, 0}}});
  Reservation r = f.limiter->try_acquire("m", 500);
  f.clock->advance(30s);
  ASSERT_TRUE(r.commit(100, 20));
  EXPECT_EQ(f.limiter->stats("m")->tpm, 120);
  Reservation up = f.limiter->try_acquire("m", 10);
  ASSERT_TRUE(up.commit(900, 100));  // above the estimate: a fact, it may overfill
  EXPECT_EQ(f.limiter->stats("m")->tpm, 1120);
  EXPECT_FALSE(f.limiter->can_send("m", 0));
  f.clock->advance(30s);  // the first entry (committed at +30 s) still leaves at 60 s
  EXPECT_EQ(f.limiter->stats("m")->tpm, 1000);
  EXPECT_EQ(f.limiter->stats("m")->rpm, 1);
}

TEST(ReservationTest, CommitAfterTheEntryLeftTheWindowChangesNothing) {
  auto f = memory_limiter({{"m", {10, 1000, 0}}});
  Reservation r = f.limiter->try_acquire("m", 500);
  f.clock->advance(61s);
  ASSERT_TRUE(r.commit(100, 20));
  EXPECT_EQ(f.limiter->stats("m")->tpm, 0);
  EXPECT_EQ(f.limiter->stats("m")->rpd, 1);
}

TEST(ReservationTest, CancelRefundsRpmTpmAndRpd) {
  auto f = memory_limiter({{"m", {1, 100, 1}}});
  Reservation r = f.limiter->try_acquire("m", 100);
  ASSERT_TRUE(r);
  EXPECT_FALSE(f.limiter->can_send("m", 0));
  ASSERT_TRUE(r.cancel());
  const ModelStats s = *f.limiter->stats("m");
  EXPECT_EQ(s.rpm, 0);
  EXPECT_EQ(s.tpm, 0);
  EXPECT_EQ(s.rpd, 0);
  EXPECT_TRUE(f.limiter->try_acquire("m", 100));
}

TEST(ReservationTest, CancelAfterTheMinuteStillRefundsTheDay) {
  auto f = memory_limiter({{"m", {0, 0, 1}}});
  Reservation r = f.limiter->try_acquire("m", 1);
  f.clock->advance(2min);
  ASSERT_TRUE(r.cancel());
  EXPECT_EQ(f.limiter->stats("m")->rpd, 0);
  Reservation next_day = f.limiter->try_acquire("m", 1);
  f.clock->advance(25h);
  ASSERT_TRUE(f.limiter->record_usage("m", 0, 0));
  ASSERT_TRUE(next_day.cancel());  // the day rolled over: nothing to refund
  EXPECT_EQ(f.limiter->stats("m")->rpd, 1);
}

TEST(ReservationTest, SettlingTwiceAfterDenialOrWhenEmptyIsInvalid) {
  auto f = memory_limiter({{"m", {1, 0, 0}}});
  Reservation r = f.limiter->try_acquire("m", 1);
  ASSERT_TRUE(r.commit(1, 1));
  EXPECT_EQ(r.commit(1, 1).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(r.cancel().error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(r.cancel().error().message.rfind("ratelimit.cancel: ", 0), 0u);
  Reservation denied = f.limiter->try_acquire("m", 1);
  ASSERT_FALSE(denied);
  EXPECT_EQ(denied.commit(1, 1).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(denied.cancel().error().code, ErrorCode::invalid_argument);
  Reservation empty;
  EXPECT_FALSE(empty);
  EXPECT_EQ(empty.cancel().error().code, ErrorCode::invalid_argument);
  Reservation c = f.limiter->try_acquire("other", 1);
  ASSERT_TRUE(c.cancel());
  EXPECT_EQ(c.cancel().error().code, ErrorCode::invalid_argument);
  Reservation n = f.limiter->try_acquire("other", 1);
  EXPECT_EQ(n.commit(-1, 0).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(n.commit(0, -1).error().code, ErrorCode::invalid_argument);
  EXPECT_TRUE(n.commit(0, 0));  // the bad calls did not settle it
}

TEST(ReservationTest, MovedFromIsEmptyAndMoveAssignKeepsTheEstimate) {
  auto f = memory_limiter({{"m", {5, 0, 0}}});
  Reservation a = f.limiter->try_acquire("m", 7);
  const std::string id = a.id();
  Reservation b(std::move(a));
  EXPECT_FALSE(a.granted());  // NOLINT(bugprone-use-after-move): testing the moved-from state
  EXPECT_TRUE(a.id().empty());
  EXPECT_EQ(a.commit(1, 1).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(b.id(), id);
  Reservation c = f.limiter->try_acquire("m", 3);
  c = std::move(b);  // c's first reservation keeps its estimate, as its destructor would
  EXPECT_EQ(f.limiter->stats("m")->tpm, 10);
  EXPECT_EQ(f.limiter->stats("m")->rpm, 2);
  ASSERT_TRUE(c.cancel());
  EXPECT_EQ(f.limiter->stats("m")->tpm, 3);
  { Reservation dropped = f.limiter->try_acquire("m", 4); }
  EXPECT_EQ(f.limiter->stats("m")->tpm, 7);  // destroying keeps the estimate as usage
}

TEST(ReservationTest, SettleByIdFromAnywhere) {
  auto f = memory_limiter({{"m", {5, 1000, 0}}, {"n", {5, 1000, 0}}});
  std::string id_commit, id_cancel;
  {
    Reservation a = f.limiter->try_acquire("m", 100);
    Reservation b = f.limiter->try_acquire("n", 200);
    id_commit = a.id();
    id_cancel = b.id();
  }  // destroyed unsettled: still settleable by id
  EXPECT_NE(id_commit, id_cancel);
  std::thread other([&] {
    EXPECT_TRUE(f.limiter->commit(id_commit, 10, 5));
    EXPECT_TRUE(f.limiter->cancel(id_cancel));
  });
  other.join();
  EXPECT_EQ(f.limiter->stats("m")->tpm, 15);
  EXPECT_EQ(f.limiter->stats("n")->rpm, 0);
  EXPECT_EQ(f.limiter->commit(id_commit, 1, 1).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(f.limiter->cancel(id_cancel).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(f.limiter->commit(id_commit, -1, 1).error().code, ErrorCode::invalid_argument);
}

TEST(ReservationTest, UnknownAndMalformedIdsAreNotFound) {
  auto f = memory_limiter({{"m", {5, 0, 0}}});
  Reservation r = f.limiter->try_acquire("m", 1);
  const std::string id = r.id();
  auto g = memory_limiter({{"m", {5, 0, 0}}});
  for (const std::string& bad :
       {std::string(""), std::string("garbage"), std::string("1-2-3"), id + "0", id + "-1",
        std::string("zz") + id.substr(2), id.substr(0, id.rfind('-')) + "-",
        id.substr(0, id.find('-')) + "-99-0-0", id.substr(0, id.find('-')) + "-0-99-0",
        std::string(500, '7')}) {
    const Status s = f.limiter->commit(bad, 1, 1);
    ASSERT_FALSE(s) << bad;
    EXPECT_EQ(s.error().code, ErrorCode::not_found) << bad;
    EXPECT_EQ(f.limiter->cancel(bad).error().code, ErrorCode::not_found) << bad;
  }
  // An id from another limiter is not this one's.
  EXPECT_EQ(g.limiter->commit(id, 1, 1).error().code, ErrorCode::not_found);
  // A recorded entry was never a reservation.
  ASSERT_TRUE(f.limiter->record_usage("m", 1, 1));
  const std::string forged = id.substr(0, id.find('-')) + "-0-1-" + id.substr(id.rfind('-') + 1);
  EXPECT_EQ(f.limiter->commit(forged, 1, 1).error().code, ErrorCode::not_found);
}

TEST(ReservationTest, IdOfAnExpiredEntrySettlesAsANoOp) {
  auto f = memory_limiter({{"m", {5, 0, 0}}});
  const std::string id = f.limiter->try_acquire("m", 1).id();
  f.clock->advance(2min);
  EXPECT_TRUE(f.limiter->commit(id, 5, 5));
  EXPECT_TRUE(f.limiter->cancel(id));
  EXPECT_EQ(f.limiter->stats("m")->rpd, 1);  // an id cannot tell it was never settled
  ASSERT_TRUE(f.limiter->reset("m"));
}

TEST(ReservationTest, OutlivingTheLimiterSettlesAsClosed) {
  Reservation r;
  std::string id;
  {
    auto f = memory_limiter({{"m", {5, 0, 0}}});
    r = f.limiter->try_acquire("m", 1);
    id = r.id();
  }
  ASSERT_TRUE(r.granted());
  EXPECT_EQ(r.id(), id);
  const Status s = r.commit(1, 1);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::closed);
  EXPECT_EQ(r.cancel().error().code, ErrorCode::invalid_argument);  // settled as far as it can be
}

TEST(ReservationTest, ResetMakesOutstandingReservationsNoOps) {
  auto f = memory_limiter({{"m", {5, 100, 5}}});
  Reservation r = f.limiter->try_acquire("m", 50);
  ASSERT_TRUE(f.limiter->reset("m"));
  ASSERT_TRUE(r.cancel());
  const ModelStats s = *f.limiter->stats("m");
  EXPECT_EQ(s.rpm, 0);
  EXPECT_EQ(s.rpd, 0);
}

TEST(ReservationTest, ExactlyOneThreadWinsTheLastSlot) {
  for (int round = 0; round < 50; ++round) {
    auto f = memory_limiter({{"m", {10, 0, 0}}});
    for (int i = 0; i < 9; ++i) ASSERT_TRUE(f.limiter->try_acquire("m", 0));
    std::atomic<int> wins{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&] {
        while (!go.load()) std::this_thread::yield();
        if (f.limiter->try_acquire("m", 0)) wins.fetch_add(1);
      });
    }
    go.store(true);
    for (auto& t : threads) t.join();
    ASSERT_EQ(wins.load(), 1) << "round " << round;
    ASSERT_EQ(f.limiter->stats("m")->rpm, 10);
  }
}

}  // namespace
}  // namespace ratelimit
