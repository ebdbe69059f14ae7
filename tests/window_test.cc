// The sliding window alone: pruning, exact retry-after, the day counter, settling, snapshots.
#include "core/window.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace ratelimit::detail {
namespace {

constexpr std::int64_t kSec = 1'000'000'000;
constexpr std::int64_t kT0 = 1'771'495'200 * kSec;  // 2026-02-19T10:00:00Z

TEST(WindowTest, EntryExactly60SecondsOldHasLeft) {
  Window w;
  w.append(kT0, 10, EntryKind::recorded);
  w.advance(kT0 + 59 * kSec);
  EXPECT_EQ(w.requests(), 1);
  EXPECT_EQ(w.tokens(), 10);
  w.advance(kT0 + 60 * kSec - 1);
  EXPECT_EQ(w.requests(), 1);
  w.advance(kT0 + 60 * kSec);
  EXPECT_EQ(w.requests(), 0);
  EXPECT_EQ(w.tokens(), 0);
  EXPECT_EQ(w.day_count(), 1);  // the day keeps counting
}

TEST(WindowTest, KeepsTwoOfFourAfterPruning) {
  Window w;
  for (int i = 0; i < 4; ++i) w.append(kT0 + i * 20 * kSec, 5, EntryKind::recorded);
  w.advance(kT0 + 90 * kSec);  // entries at 0 s and 20 s are 90 s and 70 s old
  EXPECT_EQ(w.requests(), 2);
  EXPECT_EQ(w.tokens(), 10);
}

TEST(WindowTest, RpmRetryIsWhenTheBlockingRequestLeaves) {
  Window w;
  const ModelQuota q{3, 0, 0};
  w.append(kT0, 0, EntryKind::recorded);
  w.append(kT0 + 10 * kSec, 0, EntryKind::recorded);
  w.append(kT0 + 20 * kSec, 0, EntryKind::recorded);
  w.advance(kT0 + 30 * kSec);
  Decision d = w.evaluate(q, 0, kT0 + 30 * kSec);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.code, DecisionCode::rpm_exceeded);
  EXPECT_EQ(d.retry_after, std::chrono::seconds(30));  // the entry at 0 s leaves at 60 s
  // A quota lowered below the count: the entry at position count - max_rpm must leave.
  d = w.evaluate(ModelQuota{1, 0, 0}, 0, kT0 + 30 * kSec);
  EXPECT_EQ(d.retry_after, std::chrono::seconds(50));
}

TEST(WindowTest, RpmRetrySkipsCancelledEntries) {
  Window w;
  const std::uint64_t first = w.append(kT0, 0, EntryKind::reserved);
  w.append(kT0 + 10 * kSec, 0, EntryKind::reserved);
  w.append(kT0 + 20 * kSec, 0, EntryKind::reserved);
  EXPECT_EQ(w.cancel(first, w.generation(), false), SettleOutcome::ok);
  w.append(kT0 + 25 * kSec, 0, EntryKind::reserved);
  w.advance(kT0 + 30 * kSec);
  const Decision d = w.evaluate(ModelQuota{3, 0, 0}, 0, kT0 + 30 * kSec);
  EXPECT_EQ(d.code, DecisionCode::rpm_exceeded);
  EXPECT_EQ(d.retry_after, std::chrono::seconds(40));  // the live entry at 10 s
}

TEST(WindowTest, TpmBoundaryAndRetry) {
  Window w;
  const ModelQuota q{0, 100, 0};
  w.append(kT0, 40, EntryKind::recorded);
  w.append(kT0 + 10 * kSec, 50, EntryKind::recorded);
  w.advance(kT0 + 20 * kSec);
  EXPECT_TRUE(w.evaluate(q, 10, kT0 + 20 * kSec).allowed);  // 90 + 10 reaches the limit
  Decision d = w.evaluate(q, 11, kT0 + 20 * kSec);
  EXPECT_EQ(d.code, DecisionCode::tpm_exceeded);
  EXPECT_EQ(d.retry_after, std::chrono::seconds(40));  // 40 tokens leave at 60 s
  d = w.evaluate(q, 60, kT0 + 20 * kSec);              // needs both entries gone
  EXPECT_EQ(d.retry_after, std::chrono::seconds(50));
  d = w.evaluate(q, 101, kT0 + 20 * kSec);
  EXPECT_EQ(d.retry_after, Duration::max());
}

TEST(WindowTest, ZeroTokenEstimateAtExactlyFull) {
  Window w;
  w.append(kT0, 100, EntryKind::recorded);
  w.advance(kT0);
  EXPECT_TRUE(w.evaluate(ModelQuota{0, 100, 0}, 0, kT0).allowed);
  EXPECT_FALSE(w.evaluate(ModelQuota{0, 100, 0}, 1, kT0).allowed);
}

TEST(WindowTest, RetryIsTheLatestOverEveryExhaustedLimit) {
  Window w;
  w.append(kT0, 100, EntryKind::recorded);
  w.append(kT0 + 30 * kSec, 0, EntryKind::recorded);
  w.advance(kT0 + 40 * kSec);
  // RPM frees at 60 s (first entry), TPM needs the same first entry: 20 s. RPD: a day.
  Decision d = w.evaluate(ModelQuota{2, 100, 0}, 1, kT0 + 40 * kSec);
  EXPECT_EQ(d.code, DecisionCode::rpm_exceeded);
  EXPECT_EQ(d.retry_after, std::chrono::seconds(20));
  d = w.evaluate(ModelQuota{1, 0, 2}, 0, kT0 + 40 * kSec);
  EXPECT_EQ(d.code, DecisionCode::rpd_exceeded);
  EXPECT_EQ(d.retry_after, std::chrono::hours(24) - std::chrono::seconds(40));
}

TEST(WindowTest, DayCounterResetsAfter24Hours) {
  Window w;
  const ModelQuota q{0, 0, 1};
  w.append(kT0, 0, EntryKind::recorded);
  w.advance(kT0 + 23 * 3600 * kSec);
  Decision d = w.evaluate(q, 0, kT0 + 23 * 3600 * kSec);
  EXPECT_EQ(d.code, DecisionCode::rpd_exceeded);
  EXPECT_EQ(d.retry_after, std::chrono::hours(1));
  w.advance(kT0 + 24 * 3600 * kSec - 1);
  EXPECT_EQ(w.day_count(), 1);
  const std::uint64_t generation = w.generation();
  w.advance(kT0 + 24 * 3600 * kSec);
  EXPECT_EQ(w.day_count(), 0);
  EXPECT_FALSE(w.day_started());
  EXPECT_NE(w.generation(), generation);
  EXPECT_TRUE(w.evaluate(q, 0, kT0 + 25 * 3600 * kSec).allowed);
  w.append(kT0 + 25 * 3600 * kSec, 0, EntryKind::recorded);
  EXPECT_EQ(w.day_start_ns(), kT0 + 25 * 3600 * kSec);
}

TEST(WindowTest, ClockSteppingBackKeepsTimeOrder) {
  Window w;
  w.append(kT0 + 30 * kSec, 5, EntryKind::recorded);
  w.append(kT0 + 40 * kSec, 5, EntryKind::recorded);
  w.advance(kT0 + 35 * kSec);  // the clock went back 5 s: the newest entry is clamped to now
  w.append(kT0 + 35 * kSec, 5, EntryKind::recorded);
  w.advance(kT0 + 35 * kSec + 60 * kSec);  // everything at or before 35 s has left
  EXPECT_EQ(w.requests(), 0);
  // Appending at an earlier time than the newest entry stores it at the newest time.
  Window v;
  v.append(kT0 + 10 * kSec, 1, EntryKind::recorded);
  v.append(kT0, 1, EntryKind::recorded);
  v.advance(kT0 + 69 * kSec);
  EXPECT_EQ(v.requests(), 2);  // the second entry counts from 10 s too
  v.advance(kT0 + 70 * kSec);
  EXPECT_EQ(v.requests(), 0);
}

TEST(WindowTest, FutureDayStartIsClamped) {
  Window w;
  w.append(kT0 + 3600 * kSec, 0, EntryKind::recorded);
  w.advance(kT0);
  EXPECT_EQ(w.day_start_ns(), kT0);
}

TEST(WindowTest, TokenSumsSaturate) {
  Window w;
  w.append(kT0, kInt64Max, EntryKind::recorded);
  w.append(kT0, kInt64Max, EntryKind::recorded);
  EXPECT_EQ(w.tokens(), kInt64Max);
  EXPECT_EQ(usage_tokens(kInt64Max, 5), kInt64Max);
  EXPECT_EQ(usage_tokens(-100, 25), 25);
  // Removing one leaves the exact remainder: the running total is wider than int64.
  w.advance(kT0 + 60 * kSec);
  EXPECT_EQ(w.tokens(), 0);
}

TEST(WindowTest, CommitReplacesTheEstimate) {
  Window w;
  const std::uint64_t seq = w.append(kT0, 100, EntryKind::reserved);
  bool lowered = false;
  EXPECT_EQ(w.commit(seq, 30, &lowered), SettleOutcome::ok);
  EXPECT_TRUE(lowered);
  EXPECT_EQ(w.tokens(), 30);
  EXPECT_EQ(w.commit(seq, 30, &lowered), SettleOutcome::already_settled);
  EXPECT_EQ(w.cancel(seq, w.generation(), true), SettleOutcome::already_settled);
  const std::uint64_t raised = w.append(kT0, 10, EntryKind::reserved);
  EXPECT_EQ(w.commit(raised, 500, &lowered), SettleOutcome::ok);
  EXPECT_FALSE(lowered);
  EXPECT_EQ(w.tokens(), 530);
  EXPECT_EQ(w.commit(99, 1, &lowered), SettleOutcome::not_issued);
  const std::uint64_t recorded = w.append(kT0, 1, EntryKind::recorded);
  EXPECT_EQ(w.commit(recorded, 1, &lowered), SettleOutcome::not_issued);
  w.advance(kT0 + 60 * kSec);
  EXPECT_EQ(w.commit(seq, 1, &lowered), SettleOutcome::gone);
  EXPECT_EQ(w.tokens(), 0);
}

TEST(WindowTest, CancelRefundsRequestTokensAndDay) {
  Window w;
  const std::uint64_t seq = w.append(kT0, 100, EntryKind::reserved);
  EXPECT_EQ(w.cancel(seq, w.generation(), true), SettleOutcome::ok);
  EXPECT_EQ(w.requests(), 0);
  EXPECT_EQ(w.tokens(), 0);
  EXPECT_EQ(w.day_count(), 0);
  // After the entry left the minute window only the day count can be refunded.
  const std::uint64_t gen = w.generation();
  const std::uint64_t late = w.append(kT0 + kSec, 5, EntryKind::reserved);
  w.advance(kT0 + 70 * kSec);
  EXPECT_EQ(w.cancel(late, gen, false), SettleOutcome::gone);
  EXPECT_EQ(w.day_count(), 1);
  EXPECT_EQ(w.cancel(late, gen, true), SettleOutcome::gone);
  EXPECT_EQ(w.day_count(), 0);
  // A day that rolled over is not refunded.
  const std::uint64_t old = w.append(kT0 + 80 * kSec, 0, EntryKind::reserved);
  const std::uint64_t old_gen = w.generation();
  w.append(kT0 + 80 * kSec, 0, EntryKind::recorded);
  w.advance(kT0 + 25 * 3600 * kSec);
  w.append(kT0 + 25 * 3600 * kSec, 0, EntryKind::recorded);
  EXPECT_EQ(w.cancel(old, old_gen, true), SettleOutcome::gone);
  EXPECT_EQ(w.day_count(), 1);
}

TEST(WindowTest, ClearMakesEarlierReservationsGone) {
  Window w;
  const std::uint64_t seq = w.append(kT0, 5, EntryKind::reserved);
  w.clear();
  bool lowered = false;
  EXPECT_EQ(w.commit(seq, 1, &lowered), SettleOutcome::gone);
  EXPECT_TRUE(w.idle());
  EXPECT_EQ(w.tokens(), 0);
}

TEST(WindowTest, AllocatesNothingOnceGrown) {
  Window w;
  for (int i = 0; i < 5000; ++i) w.append(kT0 + i * kSec / 100, 1, EntryKind::recorded);
  const std::size_t capacity = w.capacity();
  // Steady state: as many entries leave as arrive.
  for (int i = 5000; i < 200000; ++i) {
    const std::int64_t now = kT0 + i * kSec / 100;
    w.advance(now);
    w.append(now, 1, EntryKind::recorded);
  }
  EXPECT_EQ(w.capacity(), capacity);
  EXPECT_EQ(w.requests(), 6000);
}

// The block sums must agree with a plain scan, across ring wrap-around, growth, commits and
// cancels in mid-window, for both request counts and tokens.
TEST(WindowTest, RetryMatchesANaiveScanAtEveryStep) {
  std::mt19937_64 rng(42);
  Window w;
  struct Naive {
    std::int64_t time;
    std::int64_t tokens;
    bool live;
    std::uint64_t seq;
  };
  std::vector<Naive> naive;
  std::int64_t now = kT0;
  std::vector<std::uint64_t> reserved;
  for (int step = 0; step < 40000; ++step) {
    now += static_cast<std::int64_t>(rng() % (kSec / 100));
    if (step > 20000 && step < 21000) now += kSec / 5;  // thin out, then refill
    w.advance(now);
    std::erase_if(naive, [&](const Naive& e) { return e.time <= now - 60 * kSec; });
    const int op = static_cast<int>(rng() % 10);
    if (op < 6) {
      const auto tokens = static_cast<std::int64_t>(rng() % 1000);
      const std::uint64_t seq = w.append(now, tokens, EntryKind::reserved);
      naive.push_back({now, tokens, true, seq});
      reserved.push_back(seq);
    } else if (!reserved.empty()) {
      const std::size_t pick = rng() % reserved.size();
      const std::uint64_t seq = reserved[pick];
      reserved.erase(reserved.begin() + static_cast<std::ptrdiff_t>(pick));
      auto it =
          std::find_if(naive.begin(), naive.end(), [&](const Naive& e) { return e.seq == seq; });
      bool lowered = false;
      if (op < 8) {
        const auto tokens = static_cast<std::int64_t>(rng() % 1000);
        const SettleOutcome out = w.commit(seq, tokens, &lowered);
        if (it != naive.end()) {
          EXPECT_EQ(out, SettleOutcome::ok);
          it->tokens = tokens;
        } else {
          EXPECT_EQ(out, SettleOutcome::gone);
        }
      } else {
        const SettleOutcome out = w.cancel(seq, w.generation(), false);
        if (it != naive.end()) {
          EXPECT_EQ(out, SettleOutcome::ok);
          it->live = false;
          it->tokens = 0;
        } else {
          EXPECT_EQ(out, SettleOutcome::gone);
        }
      }
    }
    if (step % 11 != 0) continue;
    std::int64_t live = 0, tokens = 0;
    for (const auto& e : naive) {
      live += e.live ? 1 : 0;
      tokens += e.tokens;
    }
    ASSERT_EQ(w.requests(), live);
    ASSERT_EQ(w.tokens(), tokens);
    // Ask for a limit below what the window holds and compare the retry with a naive scan.
    const std::int64_t max_rpm = live > 1 ? 1 + static_cast<std::int64_t>(rng() % live) : 1;
    const std::int64_t max_tpm = tokens > 1 ? 1 + static_cast<std::int64_t>(rng() % tokens) : 1;
    const Decision d = w.evaluate(ModelQuota{max_rpm, 0, 0}, 0, now);
    if (live >= max_rpm) {
      std::int64_t k = live - max_rpm, when = 0;
      for (const auto& e : naive) {
        if (!e.live) continue;
        if (k-- == 0) {
          when = e.time;
          break;
        }
      }
      ASSERT_EQ(d.retry_after.count(), when + 60 * kSec - now) << "step " << step;
    }
    const std::int64_t est = max_tpm > 0 ? static_cast<std::int64_t>(rng() % max_tpm) : 0;
    const Decision t = w.evaluate(ModelQuota{0, max_tpm, 0}, est, now);
    if (tokens + est > max_tpm) {
      const std::int64_t need = tokens + est - max_tpm;
      std::int64_t acc = 0, when = 0;
      for (const auto& e : naive) {
        acc += e.tokens;
        if (acc >= need) {
          when = e.time;
          break;
        }
      }
      ASSERT_EQ(t.retry_after.count(), when + 60 * kSec - now) << "step " << step;
    } else {
      ASSERT_TRUE(t.allowed);
    }
  }
  EXPECT_GE(w.capacity(), 8192u);  // the super-block level was exercised
}

TEST(WindowTest, ExportImportRoundTrip) {
  Window w;
  w.append(kT0, 10, EntryKind::recorded);
  const std::uint64_t c = w.append(kT0 + kSec, 20, EntryKind::reserved);
  w.append(kT0 + 2 * kSec, 0, EntryKind::recorded);
  w.cancel(c, w.generation(), true);
  const ModelState s = w.export_state();
  EXPECT_EQ(s.requests, (std::vector<std::int64_t>{kT0, kT0 + 2 * kSec}));
  EXPECT_EQ(s.tokens, (std::vector<TokenEntry>{{kT0, 10}}));
  EXPECT_EQ(s.day_start_ns, kT0);
  EXPECT_EQ(s.day_count, 2);
  Window v;
  v.import_state(s, kT0 + 3 * kSec);
  EXPECT_EQ(v.requests(), 2);
  EXPECT_EQ(v.tokens(), 10);
  EXPECT_EQ(v.day_count(), 2);
  EXPECT_EQ(v.export_state(), s);
}

TEST(WindowTest, ImportMergesRequestsAndTokensAndClampsTheFuture) {
  ModelState s;
  s.requests = {kT0, kT0 + kSec, kT0 + 500 * kSec};
  s.tokens = {{kT0, 7}, {kT0 + kSec / 2, 3}, {kT0 + 500 * kSec, 1}};
  s.day_start_ns = kT0 + 1000 * kSec;  // in the future
  s.day_count = 3;
  Window w;
  w.import_state(s, kT0 + 10 * kSec);
  EXPECT_EQ(w.requests(), 3);
  EXPECT_EQ(w.tokens(), 11);  // the token-only entry counts tokens, not a request
  EXPECT_EQ(w.day_start_ns(), kT0 + 10 * kSec);
  EXPECT_EQ(w.day_count(), 3);
  // The future entries were clamped to now: they leave 60 s after it.
  w.advance(kT0 + 70 * kSec);
  EXPECT_EQ(w.requests(), 0);
  // A zero day start (Go's zero time) means no day in progress.
  ModelState z;
  z.day_count = 4;
  w.import_state(z, kT0);
  EXPECT_EQ(w.day_count(), 0);
}

}  // namespace
}  // namespace ratelimit::detail
