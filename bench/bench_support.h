// What every benchmark program links (bench_support.cc):
//
// - Allocation counting for the allocs_per_op counter: bench_support.cc replaces every form of
//   the global operator new (plain, array, nothrow, aligned); each call adds one to a counter of
//   the calling thread.
// - A multi-threaded process from the start. glibc and libstdc++ skip atomic instructions while
//   a process has never started a thread (pthread_mutex_lock without a locked cmpxchg,
//   shared_ptr counts without locked adds), so a single-threaded benchmark would otherwise time
//   a cheaper mutex than any multi-threaded program gets, and the result would depend on
//   whether a Threads() benchmark had already run. Before main, one thread is started and
//   joined, which turns those shortcuts off for good. RATELIMIT_BENCH_SINGLE_THREADED=1 in the
//   environment skips it (to measure what the shortcuts are worth).
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>

namespace ratelimit::bench {

// Allocations made by the calling thread since it started.
std::uint64_t thread_allocations();

// Counts the calling thread's allocations from construction to report(), leaving out the
// stretches between pause() and resume() (call them next to state.PauseTiming()/ResumeTiming()).
// Allocations made by other threads are not seen. Not thread-safe: one per benchmark thread.
class AllocCount {
 public:
  AllocCount() : start_(thread_allocations()) {}
  void pause() { paused_at_ = thread_allocations(); }
  void resume() { excluded_ += thread_allocations() - paused_at_; }
  // Sets state.counters["allocs_per_op"] to the counted allocations divided by the iterations
  // of every thread and by `ops_per_iteration`.
  void report(benchmark::State& state, int ops_per_iteration = 1) const {
    const std::uint64_t counted = thread_allocations() - start_ - excluded_;
    state.counters["allocs_per_op"] = benchmark::Counter(
        static_cast<double>(counted) / ops_per_iteration, benchmark::Counter::kAvgIterations);
  }

 private:
  std::uint64_t start_;
  std::uint64_t paused_at_ = 0;
  std::uint64_t excluded_ = 0;
};

}  // namespace ratelimit::bench
