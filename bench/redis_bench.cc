// The Redis store through the public API, against a redis-server this program starts on a
// loopback port: try_acquire alone and try_acquire + commit (two round trips), at 1 and 8
// threads, with a PING through the same client (the store's connection pool) for scale.
// Each benchmark reports p50/p99 latency (µs) besides Google Benchmark's mean.
#include <algorithm>
#include <chrono>
#include <memory>
#include <mutex>
#include <vector>

#include "bench_support.h"
#include "ratelimit/ratelimit.h"
#include "redis_server.h"
#include "store/redis/connection.h"

namespace ratelimit {
namespace {

testing::RedisServer& server() {
  static testing::RedisServer s;
  return s;
}

// Latencies of every thread of one run, for percentiles.
struct Latencies {
  std::mutex mu;
  std::vector<double> us;
  void add(std::vector<double>& mine) {
    std::lock_guard lock(mu);
    us.insert(us.end(), mine.begin(), mine.end());
  }
  void report(benchmark::State& state) {
    std::lock_guard lock(mu);
    if (us.empty()) return;
    std::sort(us.begin(), us.end());
    state.counters["p50_us"] = us[us.size() / 2];
    state.counters["p99_us"] = us[std::min(us.size() - 1, us.size() * 99 / 100)];
    us.clear();
  }
};

Latencies& latencies() {
  static Latencies l;
  return l;
}

RateLimiter& limiter() {
  static std::unique_ptr<RateLimiter> l = [] {
    Config c;
    c.backend = Backend::redis;
    c.redis_url = server().url();
    c.redis_pool_size = 8;
    c.providers = {Provider::local};
    c.quotas = {{"bench", {0, 0, 0}}, {"limited", {1'000'000'000, 1'000'000'000'000, 0}}};
    c.key_prefix = "bench";
    return std::move(*RateLimiter::open(c));
  }();
  return *l;
}

template <class Op>
void timed(benchmark::State& state, Op&& op) {
  std::vector<double> mine;
  mine.reserve(100000);
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    op();
    mine.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
            .count());
  }
  latencies().add(mine);
}

void BM_Ping(benchmark::State& state) {
  static detail::RedisPool pool([] {
    detail::RedisOptions o;
    o.url = *detail::parse_redis_url(server().url(), "bench");
    o.pool_size = 8;
    return o;
  }());
  timed(state, [&] { benchmark::DoNotOptimize(pool.command({"PING"}, "bench")); });
}

void BM_TryAcquire(benchmark::State& state) {
  RateLimiter& l = limiter();
  timed(state, [&] {
    Reservation r = l.try_acquire("limited", 10);
    benchmark::DoNotOptimize(r.granted());
  });
}

void BM_TryAcquireCommit(benchmark::State& state) {
  RateLimiter& l = limiter();
  timed(state, [&] {
    Reservation r = l.try_acquire("limited", 10);
    if (r) (void)r.commit(7, 3);
  });
}

// Percentiles over every thread: reported by a teardown run after each benchmark.
void report_latencies(benchmark::State& state) { latencies().report(state); }

}  // namespace
}  // namespace ratelimit

// Each benchmark is followed by its percentile report (a zero-iteration benchmark reads what
// the previous one collected).
#define RL_REDIS_BENCH(fn)                                                           \
  BENCHMARK(ratelimit::fn)->Threads(1)->UseRealTime()->MinTime(2.0);                 \
  BENCHMARK(ratelimit::report_latencies)->Name(#fn "/1/percentiles")->Iterations(1); \
  BENCHMARK(ratelimit::fn)->Threads(8)->UseRealTime()->MinTime(2.0);                 \
  BENCHMARK(ratelimit::report_latencies)->Name(#fn "/8/percentiles")->Iterations(1)

RL_REDIS_BENCH(BM_Ping);
RL_REDIS_BENCH(BM_TryAcquire);
RL_REDIS_BENCH(BM_TryAcquireCommit);

BENCHMARK_MAIN();
