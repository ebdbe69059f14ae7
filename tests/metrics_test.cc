// RateLimiter::metrics(): what each call counts, exactly once, on the memory and SQLite stores;
// the gauges; which models are listed; counting under contention.
#include <gtest/gtest.h>

#include <atomic>
#include <ostream>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "sqlite_test_util.h"
#include "test_util.h"

namespace ratelimit {
namespace {

using namespace std::chrono_literals;
using Metrics = std::map<std::string, ModelMetrics, std::less<>>;

enum class Store { memory, sqlite };

std::string store_name(const ::testing::TestParamInfo<Store>& info) {
  return info.param == Store::memory ? "Memory" : "Sqlite";
}
void PrintTo(Store store, std::ostream* os) {
  *os << (store == Store::memory ? "memory" : "sqlite");
}

// The counters of `model` with the gauges left out, for comparing with an expectation.
ModelMetrics counters_of(const Metrics& metrics, const std::string& model) {
  auto it = metrics.find(model);
  EXPECT_NE(it, metrics.end()) << model << " is not in metrics()";
  if (it == metrics.end()) return {};
  ModelMetrics m = it->second;
  m.stats = {};
  return m;
}

// An expectation: requests by outcome, then the other counters.
ModelMetrics expected(std::initializer_list<std::pair<RequestOutcome, std::uint64_t>> requests,
                      std::uint64_t committed = 0, std::uint64_t cancelled = 0,
                      std::uint64_t tokens_estimated = 0, std::uint64_t tokens_committed = 0,
                      std::uint64_t tokens_recorded = 0) {
  ModelMetrics m;
  for (const auto& [outcome, n] : requests) m.requests[static_cast<std::size_t>(outcome)] = n;
  m.committed = committed;
  m.cancelled = cancelled;
  m.tokens_estimated = tokens_estimated;
  m.tokens_committed = tokens_committed;
  m.tokens_recorded = tokens_recorded;
  return m;
}

class MetricsTest : public ::testing::TestWithParam<Store> {
 protected:
  void open(QuotaMap quotas) {
    if (GetParam() == Store::memory) {
      memory_ = testing::memory_limiter(std::move(quotas));
      clock_ = memory_.clock.get();
      limiter_ = memory_.limiter.get();
    } else {
      sqlite_ = testing::sqlite_limiter(std::move(quotas));
      clock_ = sqlite_->clock.get();
      limiter_ = sqlite_->limiter.get();
    }
    ASSERT_NE(limiter_, nullptr);
  }

  Metrics metrics() {
    auto m = limiter_->metrics();
    EXPECT_TRUE(m.has_value()) << (m ? "" : m.error().message);
    return m ? *m : Metrics{};
  }

  RateLimiter& limiter() { return *limiter_; }
  ManualClock& clock() { return *clock_; }

 private:
  testing::Fixture memory_;
  std::unique_ptr<testing::SqliteFixture> sqlite_;
  RateLimiter* limiter_ = nullptr;
  ManualClock* clock_ = nullptr;
};

INSTANTIATE_TEST_SUITE_P(Stores, MetricsTest, ::testing::Values(Store::memory, Store::sqlite),
                         store_name);

TEST(RequestOutcomeTest, NamesAndIndexes) {
  const std::pair<RequestOutcome, std::string_view> names[] = {
      {RequestOutcome::admitted, "admitted"},
      {RequestOutcome::recorded, "recorded"},
      {RequestOutcome::invalid_tokens, "invalid_tokens"},
      {RequestOutcome::rpd_exceeded, "rpd_exceeded"},
      {RequestOutcome::rpm_exceeded, "rpm_exceeded"},
      {RequestOutcome::tpm_exceeded, "tpm_exceeded"},
      {RequestOutcome::store_unavailable, "store_unavailable"},
      {RequestOutcome::deadline_exceeded, "deadline_exceeded"},
      {RequestOutcome::cancelled, "cancelled"},
      {RequestOutcome::input_tpm_exceeded, "input_tpm_exceeded"},
      {RequestOutcome::output_tpm_exceeded, "output_tpm_exceeded"},
      {RequestOutcome::provider_cooldown, "provider_cooldown"},
      {RequestOutcome::provider_limit, "provider_limit"},
      {RequestOutcome::model_not_allowed, "model_not_allowed"},
      {RequestOutcome::admitted_unchecked, "admitted_unchecked"},
  };
  static_assert(std::size(names) == kRequestOutcomeCount);
  ModelMetrics m;
  for (std::size_t i = 0; i < kRequestOutcomeCount; ++i) {
    EXPECT_EQ(static_cast<std::size_t>(names[i].first), i);
    EXPECT_EQ(to_string(names[i].first), names[i].second);
    m.requests[i] = i + 10;
  }
  EXPECT_EQ(m.count(RequestOutcome::tpm_exceeded), 15u);
}

TEST_P(MetricsTest, TryAcquireCountsTheGrantOrTheDenialCode) {
  open({{"m", {2, 100, 3}}, {"free", {}}});
  EXPECT_TRUE(limiter().try_acquire("m", 10));  // admitted
  EXPECT_EQ(limiter().try_acquire("m", 95).decision().code, DecisionCode::tpm_exceeded);
  EXPECT_EQ(limiter().try_acquire("m", -1).decision().code, DecisionCode::invalid_tokens);
  EXPECT_TRUE(limiter().try_acquire("m", 20));  // admitted
  EXPECT_EQ(limiter().try_acquire("m", 1).decision().code, DecisionCode::rpm_exceeded);
  clock().advance(61s);
  EXPECT_TRUE(limiter().try_acquire("m", 1));  // admitted: the third request today
  EXPECT_EQ(limiter().try_acquire("m", 1).decision().code, DecisionCode::rpd_exceeded);
  EXPECT_EQ(limiter().try_acquire("free", 7).decision().code, DecisionCode::unlimited);
  EXPECT_EQ(limiter().try_acquire("nobody", 8).decision().code, DecisionCode::unknown_model);
  EXPECT_EQ(limiter().try_acquire("ghost", -5).decision().code, DecisionCode::invalid_tokens);

  const Metrics m = metrics();
  using O = RequestOutcome;
  EXPECT_EQ(counters_of(m, "m"), expected({{O::admitted, 3},
                                           {O::tpm_exceeded, 1},
                                           {O::invalid_tokens, 1},
                                           {O::rpm_exceeded, 1},
                                           {O::rpd_exceeded, 1}},
                                          0, 0, /*tokens_estimated=*/31));
  EXPECT_EQ(counters_of(m, "free"), expected({{O::admitted, 1}}, 0, 0, 7));
  EXPECT_EQ(counters_of(m, "nobody"), expected({{O::admitted, 1}}, 0, 0, 8));
  // A model with nothing but a counted invalid call is listed, with empty gauges.
  EXPECT_EQ(counters_of(m, "ghost"), expected({{O::invalid_tokens, 1}}));
  EXPECT_EQ(m.at("ghost").stats, ModelStats{});
  EXPECT_EQ(m.size(), 4u);
}

TEST_P(MetricsTest, AcquireCountsOnceHoweverItEnds) {
  open({{"m", {1, 100, 0}}});
  using O = RequestOutcome;
  EXPECT_EQ(limiter().acquire("m", -1).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(limiter().acquire("m", 101).error().code, ErrorCode::never_satisfiable);
  auto first = limiter().acquire("m", 40);
  ASSERT_TRUE(first.has_value());
  // The window is full (max_rpm 1): the next acquire is denied every time it looks, and counts
  // only how its wait ends.
  WaitOptions timed;
  timed.timeout = 5s;  // the ManualClock jumps to the deadline while it sleeps
  EXPECT_EQ(limiter().acquire("m", 1, timed).error().code, ErrorCode::deadline_exceeded);
  std::stop_source stop;
  stop.request_stop();
  WaitOptions stopped;
  stopped.stop = stop.get_token();
  EXPECT_EQ(limiter().acquire("m", 1, stopped).error().code, ErrorCode::cancelled);
  // A wait that ends in a grant is one admitted request (the ManualClock sleeps to the wake).
  auto waited = limiter().acquire("m", 60);
  ASSERT_TRUE(waited.has_value());
  EXPECT_EQ(counters_of(metrics(), "m"), expected({{O::invalid_tokens, 1},
                                                   {O::tpm_exceeded, 1},
                                                   {O::admitted, 2},
                                                   {O::deadline_exceeded, 1},
                                                   {O::cancelled, 1}},
                                                  0, 0, /*tokens_estimated=*/100));
}

TEST_P(MetricsTest, DecideAndWaitForCapacityCountNothing) {
  open({{"m", {1, 100, 0}}});
  EXPECT_TRUE(limiter().decide("m", 5).allowed);
  EXPECT_FALSE(limiter().can_send("m", 500));
  EXPECT_TRUE(limiter().wait_for_capacity("m", 5));
  EXPECT_EQ(limiter().wait_for_capacity("m", 500).error().code, ErrorCode::never_satisfiable);
  EXPECT_TRUE(limiter().decide("unknown", 5).allowed);
  const Metrics m = metrics();
  EXPECT_EQ(counters_of(m, "m"), ModelMetrics{});  // listed for its quota, nothing counted
  EXPECT_EQ(m.size(), 1u);
}

TEST_P(MetricsTest, RecordUsageCountsTheRecordAndItsTokens) {
  open({{"m", {10, 1000, 0}}});
  ASSERT_TRUE(limiter().record_usage("m", 100, 50));
  ASSERT_TRUE(limiter().record_usage("m", -5, 7));  // negative counts are taken as 0
  ASSERT_TRUE(limiter().record_usage("other", 3, 4));
  using O = RequestOutcome;
  const Metrics m = metrics();
  EXPECT_EQ(counters_of(m, "m"), expected({{O::recorded, 2}}, 0, 0, 0, 0, /*recorded=*/157));
  EXPECT_EQ(counters_of(m, "other"), expected({{O::recorded, 1}}, 0, 0, 0, 0, 7));
}

TEST_P(MetricsTest, CommitAndCancelCountOnlySettles) {
  open({{"m", {100, 100000, 0}}});
  using O = RequestOutcome;
  Reservation by_object = limiter().try_acquire("m", 50);
  ASSERT_TRUE(by_object.commit(30, 5));
  Reservation cancelled = limiter().try_acquire("m", 10);
  ASSERT_TRUE(cancelled.cancel());
  Reservation by_id = limiter().try_acquire("m", 20);
  const std::string id = by_id.id();
  ASSERT_TRUE(limiter().commit(id, 7, 3));
  Reservation cancelled_by_id = limiter().try_acquire("m", 40);
  const std::string cancel_id = cancelled_by_id.id();
  ASSERT_TRUE(limiter().cancel(cancel_id));

  // Failed settles count nothing.
  EXPECT_EQ(by_object.commit(1, 1).error().code, ErrorCode::invalid_argument);  // settled
  EXPECT_EQ(limiter().commit(id, 1, 1).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(limiter().cancel(cancel_id).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(limiter().commit("no-such-id", 1, 1).error().code, ErrorCode::not_found);
  EXPECT_EQ(limiter().cancel("no-such-id").error().code, ErrorCode::not_found);
  Reservation pending = limiter().try_acquire("m", 5);
  EXPECT_EQ(limiter().commit(pending.id(), -1, 0).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(pending.commit(0, -1).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(counters_of(metrics(), "m"), expected({{O::admitted, 5}}, /*committed=*/2,
                                                  /*cancelled=*/2, /*estimated=*/125,
                                                  /*tokens_committed=*/45));

  // A settle after the entry left the window changes nothing, and is still a settle.
  Reservation late = limiter().try_acquire("m", 9);
  Reservation late_by_id = limiter().try_acquire("m", 9);
  const std::string late_id = late_by_id.id();
  clock().advance(61s);
  ASSERT_TRUE(late.commit(4, 0));
  ASSERT_TRUE(limiter().cancel(late_id));
  ASSERT_TRUE(pending.cancel());
  EXPECT_EQ(counters_of(metrics(), "m"),
            expected({{O::admitted, 7}}, 3, 4, /*estimated=*/143, /*tokens_committed=*/49));
}

TEST_P(MetricsTest, ResetClearsUsageNotCounters) {
  open({{"m", {10, 1000, 0}}});
  using O = RequestOutcome;
  ASSERT_TRUE(limiter().try_acquire("m", 5).commit(2, 2));
  ASSERT_TRUE(limiter().record_usage("x", 1, 1));
  const ModelMetrics m_before = counters_of(metrics(), "m");
  const ModelMetrics x_before = counters_of(metrics(), "x");
  ASSERT_TRUE(limiter().reset("m"));
  ASSERT_TRUE(limiter().reset(""));
  const Metrics after = metrics();
  EXPECT_EQ(counters_of(after, "m"), m_before);
  EXPECT_EQ(counters_of(after, "m"), expected({{O::admitted, 1}}, 1, 0, 5, 4));
  EXPECT_EQ(counters_of(after, "x"), x_before);  // idle and without a quota: its counters list it
  EXPECT_EQ(after.at("m").stats.rpm, 0);
  EXPECT_EQ(after.at("x").stats.rpm, 0);
}

TEST_P(MetricsTest, GaugesAreTheStatsOfNow) {
  open({{"m", {10, 1000, 5}}, {"quiet", {1, 2, 3}}});
  ASSERT_TRUE(limiter().try_acquire("m", 100).commit(60, 20));
  ASSERT_TRUE(limiter().record_usage("m", 10, 0));
  // Cancelled: idle again, with a day that has started (all_stats leaves it out).
  ASSERT_TRUE(limiter().try_acquire("refunded", 3).cancel());
  clock().advance(30s);
  const Metrics m = metrics();
  auto all = limiter().all_stats();
  ASSERT_TRUE(all.has_value());
  for (const auto& [model, s] : *all) {
    ASSERT_TRUE(m.count(model)) << model;
    EXPECT_EQ(m.at(model).stats, s) << model;
  }
  for (const auto& [model, each] : m) EXPECT_EQ(each.stats, *limiter().stats(model)) << model;
  EXPECT_EQ(m.size(), 3u);
  const ModelStats& gauges = m.at("m").stats;
  EXPECT_EQ(gauges.rpm, 2);
  EXPECT_EQ(gauges.tpm, 90);
  EXPECT_EQ(gauges.rpd, 2);
  EXPECT_EQ(gauges.max_rpm, 10);
  EXPECT_EQ(gauges.max_tpm, 1000);
  EXPECT_EQ(gauges.max_rpd, 5);
  EXPECT_EQ(m.at("quiet").stats, (ModelStats{0, 1, 0, 2, 0, 3, TimePoint{}}));
  EXPECT_EQ(counters_of(m, "quiet"), ModelMetrics{});
  EXPECT_EQ(counters_of(m, "refunded").cancelled, 1u);
  // The window moves on: the gauges follow, the counters stay.
  clock().advance(31s);
  EXPECT_EQ(metrics().at("m").stats.rpm, 0);
  EXPECT_EQ(metrics().at("m").count(RequestOutcome::admitted), 1u);
}

TEST_P(MetricsTest, AModelWithNothingIsAbsent) {
  open({{"m", {10, 1000, 0}}});
  (void)limiter().decide("nobody", 5);
  (void)limiter().stats("nobody");
  (void)limiter().quota("nobody");
  const Metrics m = metrics();
  EXPECT_EQ(m.count("nobody"), 0u);
  EXPECT_EQ(m.size(), 1u);
}

TEST_P(MetricsTest, ConcurrentTryAcquiresAreCountedExactly) {
  constexpr int kThreads = 8;
  constexpr int kCalls = 1000;
  constexpr std::int64_t kLimit = 100;
  open({{"m", {kLimit, 0, 0}}});
  std::atomic<int> granted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCalls; ++i) {
        Reservation r = limiter().try_acquire("m", 1);
        if (!r) continue;
        granted.fetch_add(1);
        // Half the grants are committed by object, half by id: both count.
        const bool ok =
            t % 2 == 0 ? r.commit(1, 1).has_value() : limiter().commit(r.id(), 1, 1).has_value();
        EXPECT_TRUE(ok);
      }
    });
  }
  for (auto& th : threads) th.join();
  const ModelMetrics m = metrics().at("m");
  const std::uint64_t admitted = m.count(RequestOutcome::admitted);
  EXPECT_EQ(admitted + m.count(RequestOutcome::rpm_exceeded), std::uint64_t{kThreads * kCalls});
  EXPECT_EQ(admitted, static_cast<std::uint64_t>(kLimit));
  EXPECT_EQ(granted.load(), kLimit);
  EXPECT_EQ(m.committed, static_cast<std::uint64_t>(kLimit));
  EXPECT_EQ(m.tokens_estimated, static_cast<std::uint64_t>(kLimit));
  EXPECT_EQ(m.tokens_committed, static_cast<std::uint64_t>(2 * kLimit));
  EXPECT_EQ(m.stats.rpm, kLimit);
}

// --- the SQLite store's failures ---

// Makes every SQLite statement of the fixture's store fail while it lives.
struct StoreFault {
  explicit StoreFault(testing::SqliteFaults& f) : faults(f) { faults.arm(0); }
  ~StoreFault() { faults.off(); }
  testing::SqliteFaults& faults;
};

TEST(SqliteMetricsTest, StoreFailuresCountAsStoreUnavailable) {
  auto f = testing::sqlite_limiter({{"m", {10, 1000, 0}}});
  RateLimiter& limiter = *f->limiter;
  Reservation r = limiter.try_acquire("m", 5);
  ASSERT_TRUE(r);
  {
    StoreFault fault(f->faults);
    EXPECT_EQ(limiter.try_acquire("m", 5).decision().code, DecisionCode::store_unavailable);
    EXPECT_FALSE(limiter.acquire("m", 5).has_value());
    EXPECT_FALSE(limiter.record_usage("m", 1, 1).has_value());
    EXPECT_FALSE(r.commit(1, 1).has_value());  // a failed settle counts nothing
    EXPECT_FALSE(limiter.metrics().has_value());
  }
  auto m = limiter.metrics();
  ASSERT_TRUE(m.has_value()) << m.error().message;
  using O = RequestOutcome;
  EXPECT_EQ(counters_of(*m, "m"), expected({{O::admitted, 1}, {O::store_unavailable, 3}}, 0, 0, 5));

  // Closed: every call that needs the database is a store failure; metrics() says closed.
  ASSERT_TRUE(limiter.close());
  EXPECT_EQ(limiter.try_acquire("m", 5).decision().code, DecisionCode::store_unavailable);
  EXPECT_EQ(limiter.try_acquire("m", -1).decision().code, DecisionCode::store_unavailable);
  EXPECT_FALSE(limiter.acquire("m", 5).has_value());
  EXPECT_FALSE(limiter.record_usage("m", 1, 1).has_value());
  auto closed = limiter.metrics();
  ASSERT_FALSE(closed.has_value());
  EXPECT_EQ(closed.error().code, ErrorCode::closed);
  EXPECT_NE(closed.error().message.find("ratelimit.metrics"), std::string::npos)
      << closed.error().message;
}

// Two limiters on one database: the gauges are the store's (both processes' usage), the
// counters each limiter's own.
TEST(SqliteMetricsTest, CountersArePerLimiterGaugesPerStore) {
  auto f = testing::sqlite_limiter({{"m", {10, 1000, 0}}});
  auto other = testing::open_db(f->path, {}, f->clock);
  ASSERT_NE(other, nullptr);
  ASSERT_TRUE(f->limiter->try_acquire("m", 5));
  ASSERT_TRUE(other->try_acquire("m", 7));
  ASSERT_TRUE(other->try_acquire("m", 7));
  auto mine = f->limiter->metrics();
  auto theirs = other->metrics();
  ASSERT_TRUE(mine.has_value());
  ASSERT_TRUE(theirs.has_value());
  EXPECT_EQ(mine->at("m").count(RequestOutcome::admitted), 1u);
  EXPECT_EQ(theirs->at("m").count(RequestOutcome::admitted), 2u);
  EXPECT_EQ(mine->at("m").stats.rpm, 3);
  EXPECT_EQ(theirs->at("m").stats, mine->at("m").stats);
}

}  // namespace
}  // namespace ratelimit
