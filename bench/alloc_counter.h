// Counts heap allocations for the benchmarks' allocs_per_op counter.
//
// alloc_counter.cc replaces every form of the global operator new (plain, array, nothrow,
// aligned) in the program that links it; each call adds one to a counter of the calling thread.
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
