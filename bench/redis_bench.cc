// The Redis store through the public API, against a redis-server this program starts on a
// loopback port: try_acquire alone and try_acquire + commit (two round trips), at 1 and 8
// threads, with a PING through the same client (the store's connection pool) for scale.
// Each benchmark reports p50/p99 latency (µs) and operations per second besides the mean.
#include <algorithm>
#include <chrono>
#include <memory>
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

// Times every iteration; p50/p99 (µs) are each thread's, averaged over the threads.
template <class Op>
void timed(benchmark::State& state, Op&& op) {
  std::vector<double> us;
  us.reserve(1 << 20);
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    op();
    us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
                     .count());
  }
  if (us.empty()) return;
  std::sort(us.begin(), us.end());
  state.counters["p50_us"] = benchmark::Counter(us[us.size() / 2], benchmark::Counter::kAvgThreads);
  state.counters["p99_us"] = benchmark::Counter(us[std::min(us.size() - 1, us.size() * 99 / 100)],
                                                benchmark::Counter::kAvgThreads);
  state.counters["ops_per_s"] =
      benchmark::Counter(static_cast<double>(us.size()), benchmark::Counter::kIsRate);
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

}  // namespace
}  // namespace ratelimit

BENCHMARK(ratelimit::BM_Ping)->Threads(1)->Threads(8)->UseRealTime()->MinTime(2.0);
BENCHMARK(ratelimit::BM_TryAcquire)->Threads(1)->Threads(8)->UseRealTime()->MinTime(2.0);
BENCHMARK(ratelimit::BM_TryAcquireCommit)->Threads(1)->Threads(8)->UseRealTime()->MinTime(2.0);

BENCHMARK_MAIN();
