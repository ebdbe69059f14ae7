// A property test: random schedules of try_acquire/acquire/commit/cancel/record/reset/quota
// changes across several models and clock steps, checked at every step against a naive model
// that keeps the full history and recomputes everything from scratch.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <vector>

#include "store_kinds.h"
#include "test_util.h"

namespace ratelimit {
namespace {

using namespace std::chrono_literals;
constexpr std::int64_t kWindow = 60'000'000'000;
constexpr std::int64_t kDay = 86'400'000'000'000;

}  // namespace

// Readable failure messages.
void PrintTo(const ModelStats& s, std::ostream* os) {
  *os << "{rpm " << s.rpm << "/" << s.max_rpm << ", tpm " << s.tpm << "/" << s.max_tpm << ", rpd "
      << s.rpd << "/" << s.max_rpd << ", day_start " << s.day_start.time_since_epoch().count()
      << ", day_end " << s.day_end.time_since_epoch().count() << ", in " << s.input_tpm << ", out "
      << s.output_tpm << "}";
}

namespace {

struct NaiveEntry {
  std::int64_t time;
  std::int64_t tokens;
  bool request;  // false once cancelled
  bool reserved;
  std::int64_t output = 0;  // of tokens
};

struct NaiveModel {
  bool has_quota = false;
  ModelQuota quota;
  std::vector<NaiveEntry> history;  // every entry ever, in time order
  std::size_t reset_mark = 0;       // entries before it were wiped by reset
  std::size_t pruned = 0;           // entries before it have left the window for good
  bool day_started = false;
  std::int64_t day_start = 0;
  std::int64_t day_count = 0;
  std::uint64_t generation = 0;

  // Mirrors the library's lazy pruning: clamp the future, roll the day.
  void touch(std::int64_t now) {
    for (std::size_t i = history.size(); i > reset_mark && history[i - 1].time > now; --i) {
      history[i - 1].time = now;
    }
    pruned = std::max(pruned, reset_mark);
    while (pruned < history.size() && history[pruned].time <= now - kWindow) ++pruned;
    if (day_started && day_start > now) day_start = now;
    if (day_started && now - day_start >= kDay) {
      day_started = false;
      day_count = 0;
      ++generation;
    }
  }
  std::vector<const NaiveEntry*> in_window(std::int64_t now) const {
    std::vector<const NaiveEntry*> out;
    for (std::size_t i = std::max(reset_mark, pruned); i < history.size(); ++i) {
      if (history[i].time > now - kWindow) out.push_back(&history[i]);
    }
    return out;
  }
  ModelStats stats(std::int64_t now) const {
    ModelStats s;
    for (const NaiveEntry* e : in_window(now)) {
      s.rpm += e->request ? 1 : 0;
      s.tpm += e->tokens;
      s.output_tpm += e->output;
    }
    if (has_quota) {
      s.max_rpm = quota.max_rpm;
      s.max_tpm = quota.max_tpm;
      s.max_rpd = quota.max_rpd;
    }
    s.rpd = day_count;
    s.input_tpm = s.tpm - s.output_tpm;  // a single token count is input
    if (day_started) {
      s.day_start = TimePoint(Duration(day_start));
      s.day_end = TimePoint(Duration(day_start + kDay));
    }
    return s;
  }
  Decision decide(std::int64_t est, std::int64_t now) const {
    Decision d;
    d.stats = stats(now);
    if (est < 0) {
      d.code = DecisionCode::invalid_tokens;
      return d;
    }
    if (!has_quota) {
      d.allowed = true;
      d.code = DecisionCode::unknown_model;
      return d;
    }
    if (quota == ModelQuota{}) {
      d.allowed = true;
      d.code = DecisionCode::unlimited;
      return d;
    }
    const auto window = in_window(now);
    bool denied = false;
    auto deny = [&](DecisionCode code, Duration retry) {
      if (!denied) d.code = code;
      denied = true;
      d.retry_after = std::max(d.retry_after, retry);
    };
    if (quota.max_rpd > 0 && day_count >= quota.max_rpd) {
      deny(DecisionCode::rpd_exceeded, Duration(std::max<std::int64_t>(0, day_start + kDay - now)));
    }
    if (quota.max_rpm > 0 && d.stats.rpm >= quota.max_rpm) {
      std::int64_t skip = d.stats.rpm - quota.max_rpm;
      for (const NaiveEntry* e : window) {
        if (e->request && skip-- == 0) {
          deny(DecisionCode::rpm_exceeded, Duration(e->time + kWindow - now));
          break;
        }
      }
    }
    if (quota.max_tpm > 0 && d.stats.tpm + est > quota.max_tpm) {
      if (est > quota.max_tpm) {
        deny(DecisionCode::tpm_exceeded, Duration::max());
      } else {
        const std::int64_t need = d.stats.tpm + est - quota.max_tpm;
        std::int64_t acc = 0;
        for (const NaiveEntry* e : window) {
          acc += e->tokens;
          if (acc >= need) {
            deny(DecisionCode::tpm_exceeded, Duration(e->time + kWindow - now));
            break;
          }
        }
      }
    }
    d.allowed = !denied;
    return d;
  }
  std::size_t append(std::int64_t now, std::int64_t tokens, bool reserved) {
    std::int64_t t = now;
    if (history.size() > reset_mark) t = std::max(t, history.back().time);
    history.push_back({t, tokens, true, reserved});
    if (!day_started) {
      day_started = true;
      day_start = t;
    }
    ++day_count;
    return history.size() - 1;
  }
};

struct Outstanding {
  Reservation reservation;
  std::string model;
  std::size_t entry;
  std::uint64_t generation;
  std::size_t reset_mark;
};

void expect_same_decision(const Decision& got, const Decision& want, int step) {
  ASSERT_EQ(got.allowed, want.allowed) << "step " << step;
  ASSERT_EQ(got.code, want.code) << "step " << step;
  ASSERT_EQ(got.retry_after, want.retry_after) << "step " << step;
  ASSERT_EQ(got.stats, want.stats) << "step " << step;
}

ModelQuota random_quota(std::mt19937_64& rng) {
  auto pick = [&](std::int64_t hi) -> std::int64_t {
    return rng() % 4 == 0 ? 0 : 1 + static_cast<std::int64_t>(rng() % hi);
  };
  return ModelQuota{pick(8), pick(300), pick(25)};
}

// How often each interesting path was taken, so the test proves it exercised them.
struct Coverage {
  std::map<DecisionCode, int> decisions;
  int waited = 0, deadline = 0, never = 0, settled_gone = 0, settled_live = 0;
};

void run_schedule(testing::StoreKind kind, std::uint64_t seed, int steps, Coverage& seen) {
  std::mt19937_64 rng(seed);
  testing::StoreFixture f(kind);
  const std::vector<std::string> models = {"a", "b/with slash", ""};
  std::map<std::string, NaiveModel> naive;
  for (const auto& m : models) {
    if (rng() % 5 != 0) {
      naive[m].has_quota = true;
      naive[m].quota = random_quota(rng);
      ASSERT_TRUE(f.limiter->set_quota(m, naive[m].quota));
    }
  }
  std::vector<Outstanding> outstanding;
  auto now = [&] { return f.clock->now().time_since_epoch().count(); };

  for (int step = 0; step < steps; ++step) {
    const std::string& model = models[rng() % models.size()];
    NaiveModel& n = naive[model];
    const int op = static_cast<int>(rng() % 100);
    if (op < 25) {  // try_acquire
      const std::int64_t est = rng() % 20 == 0 ? -1 : static_cast<std::int64_t>(rng() % 120);
      n.touch(now());
      const Decision want = n.decide(est, now());
      Reservation r = f.limiter->try_acquire(model, est);
      expect_same_decision(r.decision(), want, step);
      ++seen.decisions[r.decision().code];
      ASSERT_EQ(r.granted(), want.allowed);
      if (r.granted()) {
        // The invariant: at a grant, usage in (t - 60 s, t] plus the estimate fits.
        if (n.has_quota && n.quota.max_rpm > 0) {
          ASSERT_LT(want.stats.rpm, n.quota.max_rpm);
        }
        if (n.has_quota && n.quota.max_tpm > 0) {
          ASSERT_LE(want.stats.tpm + est, n.quota.max_tpm);
        }
        const std::size_t entry = n.append(now(), est, true);
        outstanding.push_back({std::move(r), model, entry, n.generation, n.reset_mark});
      }
    } else if (op < 35) {  // decide
      const std::int64_t est = static_cast<std::int64_t>(rng() % 150);
      n.touch(now());
      expect_same_decision(f.limiter->decide(model, est), n.decide(est, now()), step);
    } else if (op < 45 && !outstanding.empty()) {  // commit (by object or by id)
      const std::size_t pick = rng() % outstanding.size();
      Outstanding o = std::move(outstanding[pick]);
      outstanding.erase(outstanding.begin() + static_cast<std::ptrdiff_t>(pick));
      NaiveModel& m = naive[o.model];
      const std::int64_t prompt = static_cast<std::int64_t>(rng() % 80);
      const std::int64_t output = static_cast<std::int64_t>(rng() % 80);
      if (rng() % 2) {
        ASSERT_TRUE(o.reservation.commit(prompt, output));
      } else {
        ASSERT_TRUE(f.limiter->commit(o.reservation.id(), prompt, output));
      }
      NaiveEntry& e = m.history[o.entry];
      const bool wiped = o.entry < m.reset_mark;
      if (!wiped && o.entry >= m.pruned && e.time > now() - kWindow) {
        e.tokens = prompt + output;
        e.output = output;
      }
    } else if (op < 55 && !outstanding.empty()) {  // cancel (by object or by id)
      const std::size_t pick = rng() % outstanding.size();
      Outstanding o = std::move(outstanding[pick]);
      outstanding.erase(outstanding.begin() + static_cast<std::ptrdiff_t>(pick));
      NaiveModel& m = naive[o.model];
      const bool by_object = rng() % 2 == 0;
      if (by_object) {
        ASSERT_TRUE(o.reservation.cancel());
      } else {
        ASSERT_TRUE(f.limiter->cancel(o.reservation.id()));
      }
      NaiveEntry& e = m.history[o.entry];
      const bool wiped = o.entry < m.reset_mark;
      const bool in_window = !wiped && o.entry >= m.pruned && e.time > now() - kWindow;
      // Entries that already left the window: only the reservation object knows it was never
      // settled, so only it refunds the day.
      ++(in_window ? seen.settled_live : seen.settled_gone);
      if (in_window) {
        e.request = false;
        e.tokens = 0;
        e.output = 0;
      }
      if ((in_window || by_object) && o.generation == m.generation && m.day_count > 0) {
        --m.day_count;
      }
    } else if (op < 70) {  // record
      const std::int64_t prompt = static_cast<std::int64_t>(rng() % 100) - 10;
      const std::int64_t output = static_cast<std::int64_t>(rng() % 100);
      ASSERT_TRUE(f.limiter->record_usage(model, prompt, output));
      n.touch(now());
      n.history[n.append(now(), std::max<std::int64_t>(prompt, 0) + output, false)].output = output;
    } else if (op < 90) {  // the clock moves
      const int kind = static_cast<int>(rng() % 20);
      Duration d = std::chrono::milliseconds(rng() % 5000);
      if (kind == 0) d = std::chrono::seconds(rng() % 7200);
      if (kind == 1) d = 24h;
      if (kind == 2) d = 60s;
      if (kind == 3) d = -std::chrono::milliseconds(rng() % 3000);  // the wall clock steps back
      f.clock->advance(d);
    } else if (op < 93) {  // quota change
      n.touch(now());
      if (rng() % 4 == 0) {
        const Status s = f.limiter->remove_quota(model);
        ASSERT_EQ(s.has_value(), n.has_quota);
        n.has_quota = false;
        n.quota = {};
      } else {
        n.has_quota = true;
        n.quota = random_quota(rng);
        ASSERT_TRUE(f.limiter->set_quota(model, n.quota));
      }
    } else if (op < 95) {                                // reset
      const bool all = rng() % 3 == 0 || model.empty();  // reset("") resets every model
      ASSERT_TRUE(f.limiter->reset(all ? "" : model));
      for (auto& [name, m] : naive) {
        if (!all && name != model) continue;
        m.reset_mark = m.history.size();
        m.day_started = false;
        m.day_count = 0;
        ++m.generation;
      }
    } else {  // acquire with a timeout: on a ManualClock it completes at once
      const std::int64_t est = static_cast<std::int64_t>(rng() % 100);
      WaitOptions options;
      options.timeout = std::chrono::seconds(rng() % 90);
      n.touch(now());
      const std::int64_t start = now();
      const Decision at_start = n.decide(est, start);
      auto r = f.limiter->acquire(model, est, options);
      const std::int64_t end = now();
      n.touch(end);
      if (r) {
        // Granted at `end`: the naive model must allow it there, and not earlier than needed.
        ASSERT_TRUE(n.decide(est, end).allowed) << "step " << step;
        if (at_start.allowed) {
          ASSERT_EQ(end, start);
        } else {
          ++seen.waited;
          ASSERT_EQ(end - start, at_start.retry_after.count()) << "step " << step;
        }
        const std::size_t entry = n.append(end, est, true);
        outstanding.push_back({std::move(*r), model, entry, n.generation, n.reset_mark});
      } else if (r.error().code == ErrorCode::never_satisfiable) {
        ASSERT_TRUE(n.has_quota && n.quota.max_tpm > 0 && est > n.quota.max_tpm);
        ++seen.never;
        ASSERT_EQ(end, start);
      } else {
        ASSERT_EQ(r.error().code, ErrorCode::deadline_exceeded);
        ++seen.deadline;
        ASSERT_FALSE(n.decide(est, end).allowed);
        ASSERT_EQ(end - start, options.timeout->count());
      }
    }
    // After every step, stats equal the naive recomputation for every model.
    for (const auto& m : models) {
      NaiveModel& nm = naive[m];
      nm.touch(now());
      ASSERT_EQ(*f.limiter->stats(m), nm.stats(now())) << "step " << step << " model " << m;
    }
  }
  // What the store keeps survives a persist and a reopen (memory keeps nothing).
  if (!f.persists()) return;
  ASSERT_TRUE(f.limiter->persist());
  f.limiter.reset();
  auto reopened = f.open(QuotaMap{});
  ASSERT_TRUE(reopened->load());
  for (const auto& m : models) {
    NaiveModel& nm = naive[m];
    nm.touch(now());
    ASSERT_EQ(*reopened->stats(m), nm.stats(now())) << "after reopening, model " << m;
  }
}

class PropertyTest : public ::testing::TestWithParam<testing::StoreKind> {};

TEST_P(PropertyTest, RandomSchedulesMatchTheNaiveModel) {
  Coverage seen;
  // SQLite runs a transaction per step: fewer steps keep the suite (and its sanitizer runs)
  // short, and still take every path many times.
  const int steps = GetParam() == testing::StoreKind::sqlite ? 1500 : 4000;
  for (std::uint64_t seed : {1u, 2u, 3u, 17u, 2026u}) {
    SCOPED_TRACE(seed);
    run_schedule(GetParam(), seed, steps, seen);
    if (HasFatalFailure()) return;
  }
  for (DecisionCode code : {DecisionCode::ok, DecisionCode::unknown_model, DecisionCode::unlimited,
                            DecisionCode::invalid_tokens, DecisionCode::rpd_exceeded,
                            DecisionCode::rpm_exceeded, DecisionCode::tpm_exceeded}) {
    EXPECT_GT(seen.decisions[code], 5) << to_string(code);
  }
  EXPECT_GT(seen.waited, 5);
  EXPECT_GT(seen.deadline, 5);
  EXPECT_GT(seen.never, 0);
  EXPECT_GT(seen.settled_live, 5);
  EXPECT_GT(seen.settled_gone, 5);
}

INSTANTIATE_TEST_SUITE_P(Stores, PropertyTest, ::testing::ValuesIn(testing::all_store_kinds()),
                         [](const auto& info) { return testing::store_name(info.param); });

}  // namespace
}  // namespace ratelimit
