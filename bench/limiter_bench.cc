// RateLimiter through its public API: decide (allowed and denied), record_usage,
// try_acquire + commit, stats, all_stats, persist, and decide from two threads.
//
// Each benchmark's name says the path it measures (Allowed / Denied) and the window size.
// Time is a ManualClock unless the name says SystemClock; where time must move, the loop
// advances the clock by 60 ms per operation, so a 1,000-entry window stays at 1,000 entries
// (one leaves as one arrives). Every benchmark reports allocs_per_op for its timed loop.
//
//   limiter_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
//
// Results, targets and the machine they ran on: docs/benchmarks.md.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "bench_support.h"
#include "ratelimit/ratelimit.h"

namespace ratelimit::bench {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view kModel = "gpt-4o";
constexpr std::int64_t kPrompt = 300;  // every recorded call: 300 + 200 tokens
constexpr std::int64_t kOutput = 200;
constexpr std::int64_t kTokens = kPrompt + kOutput;
constexpr Duration kSteadyStep = 60ms;  // 1,000 entries per 60 s window

// 2026-02-19T10:00:00Z, as in the tests.
const TimePoint kStart = TimePoint(std::chrono::seconds(1771495200));

// Limits no benchmark reaches: decide takes the full allowed path (every limit checked).
constexpr ModelQuota kRoomy{1'000'000'000, 1'000'000'000'000'000, 1'000'000'000'000};

[[noreturn]] void die(const char* what, const Error& error) {
  std::fprintf(stderr, "limiter_bench: %s: %s\n", what, error.to_string().c_str());
  std::abort();
}

std::unique_ptr<RateLimiter> open_limiter(std::shared_ptr<Clock> clock, QuotaMap quotas,
                                          Backend backend = Backend::memory,
                                          std::string file_path = {}) {
  Config config;
  config.backend = backend;
  config.file_path = std::move(file_path);
  config.quotas = std::move(quotas);
  config.clock = std::move(clock);
  auto opened = RateLimiter::open(std::move(config));
  if (!opened) die("open", opened.error());
  return std::move(*opened);
}

// Fills `model` (after clearing it) with calls that are all inside the window while they are
// recorded: `expired` calls 1 us apart from kStart, then `live` calls `step` apart from
// kStart + 10 s. Leaves `clock` one `step` after the newest call; if `expired` > 0, at
// kStart + 61 s instead, where the first `expired` calls are over 60 s old and the next call on
// `model` prunes them. REQUIRES: live * step <= 50 s when expired > 0.
void seed(RateLimiter& limiter, ManualClock& clock, std::string_view model, std::int64_t expired,
          std::int64_t live, Duration step) {
  if (auto s = limiter.reset(model); !s) die("reset", s.error());
  clock.set(kStart);
  for (std::int64_t i = 0; i < expired; ++i) {
    (void)limiter.record_usage(model, kPrompt, kOutput);
    clock.advance(1us);
  }
  clock.set(kStart + 10s);
  for (std::int64_t i = 0; i < live; ++i) {
    (void)limiter.record_usage(model, kPrompt, kOutput);
    clock.advance(step);
  }
  if (expired > 0) clock.set(kStart + 61s);
}

// live entries spread over 50 s, so none leaves while the clock stands still.
Duration spread(std::int64_t live) { return Duration(50s) / live; }

bool expect_window(benchmark::State& state, RateLimiter& limiter, std::string_view model,
                   std::int64_t entries) {
  auto stats = limiter.stats(model);
  if (!stats || stats->rpm != entries) {
    state.SkipWithError("the window does not hold the expected number of entries");
    return false;
  }
  return true;
}

// --- decide ---

// The allowed path on a window of range(0) entries.
void BM_Decide_Allowed(benchmark::State& state) {
  const std::int64_t entries = state.range(0);
  auto clock = std::make_shared<ManualClock>(kStart);
  auto limiter = open_limiter(clock, {{std::string(kModel), kRoomy}});
  seed(*limiter, *clock, kModel, 0, entries, spread(entries));
  if (!limiter->decide(kModel, kTokens).allowed) return state.SkipWithError("not allowed");
  AllocCount allocs;
  for (auto _ : state) {
    Decision d = limiter->decide(kModel, kTokens);
    benchmark::DoNotOptimize(d);
  }
  allocs.report(state);
  expect_window(state, *limiter, kModel, entries);
}
BENCHMARK(BM_Decide_Allowed)->ArgName("entries")->Arg(1000)->Arg(100000);

// A dated name the SDKs send ("<model>-2024-08-06"), resolved to its family's pool once and
// then through the resolution cache: the cost over an exact name.
void BM_Decide_Allowed_DatedName(benchmark::State& state) {
  const std::int64_t entries = state.range(0);
  auto clock = std::make_shared<ManualClock>(kStart);
  auto limiter = open_limiter(clock, {{std::string(kModel), kRoomy}});
  seed(*limiter, *clock, kModel, 0, entries, spread(entries));
  const std::string dated = std::string(kModel) + "-2024-08-06";
  const Decision first = limiter->decide(dated, kTokens);
  if (!first.allowed || first.resolved_model != kModel) {
    return state.SkipWithError("the dated name did not resolve to its family");
  }
  AllocCount allocs;
  for (auto _ : state) {
    Decision d = limiter->decide(dated, kTokens);
    benchmark::DoNotOptimize(d);
  }
  allocs.report(state);
  expect_window(state, *limiter, kModel, entries);
}
BENCHMARK(BM_Decide_Allowed_DatedName)->ArgName("entries")->Arg(1000);

// The same on the real clock (Config::clock null): adds the cost of reading system time.
void BM_Decide_Allowed_SystemClock(benchmark::State& state) {
  const std::int64_t entries = state.range(0);
  auto limiter = open_limiter(nullptr, {{std::string(kModel), kRoomy}});
  for (std::int64_t i = 0; i < entries; ++i) (void)limiter->record_usage(kModel, kPrompt, kOutput);
  if (!limiter->decide(kModel, kTokens).allowed) return state.SkipWithError("not allowed");
  AllocCount allocs;
  for (auto _ : state) {
    Decision d = limiter->decide(kModel, kTokens);
    benchmark::DoNotOptimize(d);
  }
  allocs.report(state);
  // The entries are at most a few seconds old: none may have left.
  expect_window(state, *limiter, kModel, entries);
}
BENCHMARK(BM_Decide_Allowed_SystemClock)->ArgName("entries")->Arg(1000);

// Denied by both rpm and tpm, with the exact retry-after: the request at the middle of the
// window must leave for rpm, the tokens up to three quarters of it for tpm. 37 expired entries
// are pruned first, so the window's head is not aligned to the 64-entry blocks.
void BM_Decide_Denied_ExactRetry(benchmark::State& state) {
  const std::int64_t entries = state.range(0);
  const ModelQuota quota{entries / 2, kTokens * entries / 4, kRoomy.max_rpd};
  auto clock = std::make_shared<ManualClock>(kStart);
  auto limiter = open_limiter(clock, {{std::string(kModel), quota}});
  const Duration step = spread(entries);
  seed(*limiter, *clock, kModel, 37, entries, step);
  const Decision first = limiter->decide(kModel, kTokens);
  // tpm: the entry at index 3/4·n (recorded at kStart + 10 s + 3/4·n·step) must leave; it does
  // so 60 s after it was recorded, and now is kStart + 61 s.
  const Duration expected_retry = Duration(9s) + entries * 3 / 4 * step;
  if (first.allowed || first.code != DecisionCode::rpm_exceeded ||
      first.retry_after != expected_retry) {
    return state.SkipWithError("unexpected decision");
  }
  AllocCount allocs;
  for (auto _ : state) {
    Decision d = limiter->decide(kModel, kTokens);
    benchmark::DoNotOptimize(d);
  }
  allocs.report(state);
  expect_window(state, *limiter, kModel, entries);
}
BENCHMARK(BM_Decide_Denied_ExactRetry)->ArgName("entries")->Arg(1000)->Arg(100000);

// The first decide after a pause: half of the window has expired and is pruned by this
// call. Each iteration re-seeds kBatch models (timing paused) and times one decide on each;
// the time shown is per decide (manual timing around the batch of decides). The iterations
// are fixed because the paused seeding costs far more than the timed part.
void BM_Decide_Allowed_PruneExpired(benchmark::State& state) {
  constexpr int kBatch = 16;
  const std::int64_t expired = state.range(0);
  const std::int64_t live = state.range(1);
  auto clock = std::make_shared<ManualClock>(kStart);
  std::vector<std::string> models;
  QuotaMap quotas;
  for (int i = 0; i < kBatch; ++i) {
    models.push_back("model-" + std::to_string(i));
    quotas.emplace(models.back(), kRoomy);
  }
  auto limiter = open_limiter(clock, quotas);
  AllocCount allocs;
  for (auto _ : state) {
    state.PauseTiming();
    allocs.pause();
    for (const auto& model : models) seed(*limiter, *clock, model, expired, live, spread(live));
    allocs.resume();
    state.ResumeTiming();
    const auto begin = std::chrono::steady_clock::now();
    for (const auto& model : models) {
      Decision d = limiter->decide(model, kTokens);
      benchmark::DoNotOptimize(d);
    }
    const auto end = std::chrono::steady_clock::now();
    state.SetIterationTime(std::chrono::duration<double>(end - begin).count() / kBatch);
  }
  allocs.report(state, kBatch);
  expect_window(state, *limiter, models.back(), live);
}
BENCHMARK(BM_Decide_Allowed_PruneExpired)
    ->ArgNames({"expired", "live"})
    ->Args({500, 500})
    ->UseManualTime()
    ->Iterations(1000);

// --- recording ---

// record_usage in steady state: the clock moves 60 ms per call, so each call prunes the
// oldest entry and appends one; the window stays at 1,000 entries.
void BM_RecordUsage_Steady(benchmark::State& state) {
  const std::int64_t entries = state.range(0);
  auto clock = std::make_shared<ManualClock>(kStart);
  auto limiter = open_limiter(clock, {{std::string(kModel), kRoomy}});
  const Duration step = Duration(60s) / entries;
  seed(*limiter, *clock, kModel, 0, entries, step);
  AllocCount allocs;
  for (auto _ : state) {
    auto s = limiter->record_usage(kModel, kPrompt, kOutput);
    benchmark::DoNotOptimize(s);
    clock->advance(step);
  }
  allocs.report(state);
  // The clock is one step past the last call: the oldest entry has just left.
  expect_window(state, *limiter, kModel, entries - 1);
}
BENCHMARK(BM_RecordUsage_Steady)->ArgName("entries")->Arg(1000);

// try_acquire (allowed) then commit of the actual usage, in steady state as above.
void BM_TryAcquireCommit_Allowed_Steady(benchmark::State& state) {
  const std::int64_t entries = state.range(0);
  auto clock = std::make_shared<ManualClock>(kStart);
  auto limiter = open_limiter(clock, {{std::string(kModel), kRoomy}});
  const Duration step = Duration(60s) / entries;
  seed(*limiter, *clock, kModel, 0, entries, step);
  AllocCount allocs;
  for (auto _ : state) {
    Reservation r = limiter->try_acquire(kModel, kTokens);
    auto s = r.commit(kPrompt, kOutput - 50);
    benchmark::DoNotOptimize(s);
    clock->advance(step);
  }
  allocs.report(state);
  expect_window(state, *limiter, kModel, entries - 1);  // as above
}
BENCHMARK(BM_TryAcquireCommit_Allowed_Steady)->ArgName("entries")->Arg(1000);

// As above with input and output limits (Anthropic's ITPM/OTPM) and a split estimate.
void BM_TryAcquireCommit_InputOutput_Steady(benchmark::State& state) {
  const std::int64_t entries = state.range(0);
  auto clock = std::make_shared<ManualClock>(kStart);
  ModelQuota q = kRoomy;
  q.max_input_tpm = q.max_tpm;
  q.max_output_tpm = q.max_tpm;
  auto limiter = open_limiter(clock, {{std::string(kModel), q}});
  const Duration step = Duration(60s) / entries;
  seed(*limiter, *clock, kModel, 0, entries, step);
  AllocCount allocs;
  for (auto _ : state) {
    Reservation r = limiter->try_acquire(kModel, TokenEstimate{kPrompt, kOutput});
    auto s = r.commit(kPrompt, kOutput - 50);
    benchmark::DoNotOptimize(s);
    clock->advance(step);
  }
  allocs.report(state);
  expect_window(state, *limiter, kModel, entries - 1);
}
BENCHMARK(BM_TryAcquireCommit_InputOutput_Steady)->ArgName("entries")->Arg(1000);

// The steady loop's own overhead: advancing the ManualClock (an atomic add).
void BM_Baseline_ManualClockAdvance(benchmark::State& state) {
  ManualClock clock(kStart);
  AllocCount allocs;
  for (auto _ : state) clock.advance(kSteadyStep);
  allocs.report(state);
  benchmark::DoNotOptimize(clock.now());
}
BENCHMARK(BM_Baseline_ManualClockAdvance);

// --- threads ---

// A limiter shared by the threads of one benchmark run, with range(0) entries on each model.
// Thread 0 sets it up before the loop and tears it down after (the benchmark library puts a
// barrier at both ends of the loop).
struct SharedLimiter {
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>(kStart);
  std::unique_ptr<RateLimiter> limiter;
};
SharedLimiter* g_shared = nullptr;

constexpr std::string_view kThreadModels[] = {"model-a", "model-b"};

void set_up_shared(benchmark::State& state) {
  if (state.thread_index() != 0) return;
  g_shared = new SharedLimiter;
  QuotaMap quotas{{std::string(kModel), kRoomy}};
  for (auto model : kThreadModels) quotas.emplace(std::string(model), kRoomy);
  g_shared->limiter = open_limiter(g_shared->clock, quotas);
  const std::int64_t entries = state.range(0);
  for (auto model : {kModel, kThreadModels[0], kThreadModels[1]}) {
    seed(*g_shared->limiter, *g_shared->clock, model, 0, entries, spread(entries));
  }
}

void tear_down_shared(benchmark::State& state) {
  if (state.thread_index() != 0) return;
  delete g_shared;
  g_shared = nullptr;
}

// decide from every thread on the same model: they contend for its mutex.
void BM_Decide_Allowed_SameModel(benchmark::State& state) {
  set_up_shared(state);
  AllocCount allocs;
  for (auto _ : state) {
    Decision d = g_shared->limiter->decide(kModel, kTokens);
    benchmark::DoNotOptimize(d);
  }
  allocs.report(state);
  state.SetItemsProcessed(state.iterations());
  tear_down_shared(state);
}
BENCHMARK(BM_Decide_Allowed_SameModel)
    ->ArgName("entries")
    ->Arg(1000)
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime();

// Each thread decides on its own model: nothing shared but the limiter's lock-free model
// table and the clock (read only). items_per_second is the throughput of all threads together.
void BM_Decide_Allowed_ModelPerThread(benchmark::State& state) {
  set_up_shared(state);
  const std::string_view model = kThreadModels[state.thread_index() % 2];
  AllocCount allocs;
  for (auto _ : state) {
    Decision d = g_shared->limiter->decide(model, kTokens);
    benchmark::DoNotOptimize(d);
  }
  allocs.report(state);
  state.SetItemsProcessed(state.iterations());
  tear_down_shared(state);
}
BENCHMARK(BM_Decide_Allowed_ModelPerThread)
    ->ArgName("entries")
    ->Arg(1000)
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime();

// --- reading and persisting ---

// stats of one model with 1,000 entries.
void BM_Stats(benchmark::State& state) {
  const std::int64_t entries = state.range(0);
  auto clock = std::make_shared<ManualClock>(kStart);
  auto limiter = open_limiter(clock, {{std::string(kModel), kRoomy}});
  seed(*limiter, *clock, kModel, 0, entries, spread(entries));
  AllocCount allocs;
  for (auto _ : state) {
    auto s = limiter->stats(kModel);
    benchmark::DoNotOptimize(s);
  }
  allocs.report(state);
}
BENCHMARK(BM_Stats)->ArgName("entries")->Arg(1000);

// all_stats over range(0) models with range(1) entries each.
void BM_AllStats(benchmark::State& state) {
  const std::int64_t model_count = state.range(0);
  const std::int64_t entries = state.range(1);
  auto clock = std::make_shared<ManualClock>(kStart);
  QuotaMap quotas;
  for (std::int64_t i = 0; i < model_count; ++i)
    quotas.emplace("model-" + std::to_string(i), kRoomy);
  auto limiter = open_limiter(clock, quotas);
  for (const auto& [model, quota] : quotas) {
    seed(*limiter, *clock, model, 0, entries, spread(entries));
  }
  AllocCount allocs;
  for (auto _ : state) {
    auto all = limiter->all_stats();
    benchmark::DoNotOptimize(all);
  }
  allocs.report(state);
  auto all = limiter->all_stats();
  if (!all || static_cast<std::int64_t>(all->size()) != model_count) {
    state.SkipWithError("all_stats did not list every model");
  }
}
BENCHMARK(BM_AllStats)->ArgNames({"models", "entries"})->Args({5, 200});

// persist to a YAML file under /tmp: written to a temporary file, fsync'd, renamed over the
// target, directory fsync'd. Wall time is mostly the two fsyncs, CPU time yaml-cpp's emitter.
void BM_Persist_Yaml(benchmark::State& state) {
  const std::int64_t entries = state.range(0);
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("ratelimit-bench-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto clock = std::make_shared<ManualClock>(kStart);
  auto limiter = open_limiter(clock, {{std::string(kModel), kRoomy}}, Backend::yaml,
                              (dir / "ratelimits.yaml").string());
  seed(*limiter, *clock, kModel, 0, entries, spread(entries));
  AllocCount allocs;
  for (auto _ : state) {
    auto s = limiter->persist();
    if (!s) {
      state.SkipWithError(s.error().to_string().c_str());
      break;
    }
  }
  allocs.report(state);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}
BENCHMARK(BM_Persist_Yaml)->ArgName("entries")->Arg(100)->Unit(benchmark::kMicrosecond);

// --- what the hot path is made of ---

void BM_Baseline_MutexLockUnlock(benchmark::State& state) {
  std::mutex mu;
  AllocCount allocs;
  for (auto _ : state) {
    mu.lock();
    benchmark::ClobberMemory();
    mu.unlock();
  }
  allocs.report(state);
}
BENCHMARK(BM_Baseline_MutexLockUnlock);

// One locked read-modify-write (what ManualClock::advance and a shared_ptr count change are).
void BM_Baseline_AtomicFetchAdd(benchmark::State& state) {
  std::atomic<std::int64_t> counter{0};
  AllocCount allocs;
  for (auto _ : state) counter.fetch_add(1, std::memory_order_acq_rel);
  allocs.report(state);
  benchmark::DoNotOptimize(counter.load());
}
BENCHMARK(BM_Baseline_AtomicFetchAdd);

// A granted Reservation holds its model by shared_ptr: shared_from_this() then the release.
void BM_Baseline_SharedFromThis(benchmark::State& state) {
  struct Node : std::enable_shared_from_this<Node> {
    int value = 0;
  };
  auto node = std::make_shared<Node>();
  AllocCount allocs;
  for (auto _ : state) {
    std::shared_ptr<Node> p = node->shared_from_this();
    benchmark::DoNotOptimize(p);
  }
  allocs.report(state);
}
BENCHMARK(BM_Baseline_SharedFromThis);

// The limiter reads time through the Clock interface: one virtual call.
void BM_Baseline_ClockNow(benchmark::State& state, std::shared_ptr<Clock> clock) {
  AllocCount allocs;
  for (auto _ : state) benchmark::DoNotOptimize(clock->now());
  allocs.report(state);
}
BENCHMARK_CAPTURE(BM_Baseline_ClockNow, ManualClock, std::make_shared<ManualClock>(kStart));
BENCHMARK_CAPTURE(BM_Baseline_ClockNow, SystemClock, system_clock());

// The model table hashes the name on every call.
void BM_Baseline_HashModelName(benchmark::State& state) {
  std::string_view model = kModel;
  AllocCount allocs;
  for (auto _ : state) {
    benchmark::DoNotOptimize(model);
    benchmark::DoNotOptimize(std::hash<std::string_view>{}(model));
  }
  allocs.report(state);
}
BENCHMARK(BM_Baseline_HashModelName);

}  // namespace
}  // namespace ratelimit::bench

BENCHMARK_MAIN();
