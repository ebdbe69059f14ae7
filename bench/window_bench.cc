// The internal sliding window alone (src/window.h): no lock, no clock, no model lookup.
// Compared with limiter_bench, it shows how much of a limiter call is the window's own work.
//
//   window_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
//
// Results: docs/benchmarks.md.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <vector>

#include "bench_support.h"
#include "core/window.h"

namespace ratelimit::detail {
namespace {

using bench::AllocCount;

constexpr std::int64_t kSec = 1'000'000'000;
constexpr std::int64_t kT0 = 1'771'495'200 * kSec;  // 2026-02-19T10:00:00Z
constexpr std::int64_t kTokens = 500;
constexpr ModelQuota kRoomy{1'000'000'000, 1'000'000'000'000'000, 1'000'000'000'000};

// Appends `expired` entries at kT0 (over 60 s old at the returned time), then `live` entries
// `step_ns` apart from kT0 + 61 s; returns the time one step after the newest entry.
std::int64_t seed(Window& w, std::int64_t expired, std::int64_t live, std::int64_t step_ns) {
  w.clear();
  for (std::int64_t i = 0; i < expired; ++i) w.append(kT0 + i, kTokens, EntryKind::recorded);
  std::int64_t t = kT0 + 61 * kSec;
  for (std::int64_t i = 0; i < live; ++i, t += step_ns) w.append(t, kTokens, EntryKind::recorded);
  return t;
}

std::int64_t spread(std::int64_t live) { return 50 * kSec / live; }

// advance + evaluate on the allowed path, time standing still (nothing to prune).
void BM_Window_Evaluate_Allowed(benchmark::State& state) {
  const std::int64_t entries = state.range(0);
  Window w;
  const std::int64_t now = seed(w, 0, entries, spread(entries));
  AllocCount allocs;
  for (auto _ : state) {
    w.advance(now);
    Decision d = w.evaluate(kRoomy, kTokens, now);
    benchmark::DoNotOptimize(d);
  }
  allocs.report(state);
  if (w.requests() != entries) state.SkipWithError("entries left the window");
}
BENCHMARK(BM_Window_Evaluate_Allowed)->ArgName("entries")->Arg(1000)->Arg(100000);

// advance + evaluate denied by rpm and tpm with the exact retry-after (see limiter_bench).
void BM_Window_Evaluate_Denied_ExactRetry(benchmark::State& state) {
  const std::int64_t entries = state.range(0);
  const ModelQuota quota{entries / 2, kTokens * entries / 4, kRoomy.max_rpd};
  Window w;
  const std::int64_t now = seed(w, 37, entries, spread(entries));
  w.advance(now);
  const Decision first = w.evaluate(quota, kTokens, now);
  if (first.allowed || first.retry_after != Duration(60 * kSec - entries / 4 * spread(entries))) {
    return state.SkipWithError("unexpected decision");
  }
  AllocCount allocs;
  for (auto _ : state) {
    w.advance(now);
    Decision d = w.evaluate(quota, kTokens, now);
    benchmark::DoNotOptimize(d);
  }
  allocs.report(state);
}
BENCHMARK(BM_Window_Evaluate_Denied_ExactRetry)->ArgName("entries")->Arg(1000)->Arg(100000);

// advance + append with time moving 60 ms per call: one entry leaves as one arrives.
void BM_Window_Append_Steady(benchmark::State& state) {
  const std::int64_t entries = state.range(0);
  const std::int64_t step = 60 * kSec / entries;
  Window w;
  std::int64_t now = seed(w, 0, entries, step);
  AllocCount allocs;
  for (auto _ : state) {
    w.advance(now);
    benchmark::DoNotOptimize(w.append(now, kTokens, EntryKind::recorded));
    now += step;
  }
  allocs.report(state);
  w.advance(now - step);  // the time of the last append
  if (w.requests() != entries) state.SkipWithError("the window did not stay the same size");
}
BENCHMARK(BM_Window_Append_Steady)->ArgName("entries")->Arg(1000);

// advance that prunes `expired` entries, then evaluate. kBatch windows are re-seeded per
// iteration (timing paused); the time shown is per window (manual timing around the batch).
// The iterations are fixed because the paused seeding costs far more than the timed part.
void BM_Window_Evaluate_Allowed_PruneExpired(benchmark::State& state) {
  constexpr int kBatch = 16;
  const std::int64_t expired = state.range(0);
  const std::int64_t live = state.range(1);
  std::vector<Window> windows(kBatch);
  std::int64_t now = 0;
  AllocCount allocs;
  for (auto _ : state) {
    state.PauseTiming();
    allocs.pause();
    for (Window& w : windows) now = seed(w, expired, live, spread(live));
    allocs.resume();
    state.ResumeTiming();
    const auto begin = std::chrono::steady_clock::now();
    for (Window& w : windows) {
      w.advance(now);
      Decision d = w.evaluate(kRoomy, kTokens, now);
      benchmark::DoNotOptimize(d);
    }
    const auto end = std::chrono::steady_clock::now();
    state.SetIterationTime(std::chrono::duration<double>(end - begin).count() / kBatch);
  }
  allocs.report(state, kBatch);
  if (windows.back().requests() != live) state.SkipWithError("wrong number of live entries");
}
BENCHMARK(BM_Window_Evaluate_Allowed_PruneExpired)
    ->ArgNames({"expired", "live"})
    ->Args({500, 500})
    ->UseManualTime()
    ->Iterations(1000);

}  // namespace
}  // namespace ratelimit::detail

BENCHMARK_MAIN();
