// The Redis store through the public API, against a redis-server this program starts on a
// loopback port: try_acquire alone and try_acquire + commit (two round trips), at 1 and 8
// threads, with a PING through the same client (the store's connection pool) for scale, and
// floors: scripts that do less than the store must, through the same EVALSHA path.
// Each benchmark reports p50/p99 latency (µs) and operations per second besides the mean.
#include <algorithm>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
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

detail::RedisPool& pool() {
  static detail::RedisPool p([] {
    detail::RedisOptions o;
    o.url = *detail::parse_redis_url(server().url(), "bench");
    o.pool_size = 8;
    return o;
  }());
  return p;
}

void BM_Ping(benchmark::State& state) {
  detail::RedisPool& p = pool();
  timed(state, [&] { benchmark::DoNotOptimize(p.command({"PING"}, "bench")); });
}

// Floors for the check script: scripts that grant one request per call through the same
// client and EVALSHA path, doing less than the store must. `minimal` is the least a grant
// needs (TIME, GET the state, HGET the quota, ZADD the entry, SET the state: no window, no
// day, no settling by id, no learned limits); `exact` adds the two reads an exact shared
// window cannot skip (what has left the window, and the configuration epoch so that a quota
// changed by another client is seen); `reply` adds a 27-field reply as an array (the check
// script's before it was packed), `packed` the same fields packed into one string as the check
// script now replies to a grant.
constexpr const char* kMinimal = R"lua(
local t = redis.call('TIME')
local now_text = t[1] .. string.rep('0', 6 - #t[2]) .. t[2]
local raw = redis.call('GET', KEYS[1])
local qv = redis.call('HGET', KEYS[6], ARGV[1])
local seq = 1
if raw then seq = struct.unpack('<d', raw) + 1 end
redis.call('ZADD', KEYS[2], now_text, seq .. ' ' .. ARGV[6] .. ' ' .. ARGV[7])
redis.call('SET', KEYS[1], struct.pack('<d', seq))
)lua";
constexpr const char* kExactReads = R"lua(
local meta = redis.call('HMGET', KEYS[5], 'epoch', 'id')
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', tonumber(now_text) - 60000000)
)lua";
constexpr const char* kShortReply = "return {1, seq}\n";
constexpr const char* kFullReply = R"lua(
return {1, seq, 0, 1, 1, 1, 0, 1, 1000000000, 1000000000000, 0, 0, 0, 0, seq, seq * 100,
  seq * 100, 1, 1796025600000000, 1796112000000000, seq, now_text .. '000', -1, -1, -1, -1,
  '- -1 - -1 - -1 - -1 -'}
)lua";

constexpr const char* kPackedReply = R"lua(
local now_ns = now_text .. '000'
local learned = '- -1 - -1 - -1 - -1 -'
return struct.pack('<BBdddddddddddddddic0ic0', 1, 43, seq, 0, 1, 1, 1000000000, 1000000000000, 0,
  0, 0, seq, seq * 100, seq * 100, 1796025600000000, 1796112000000000, seq, #now_ns, now_ns,
  #learned, learned)
)lua";

void BM_ScriptFloor(benchmark::State& state) {
  // 0 minimal, 1 +exact, 2 +reply (array), 3 +reply (packed)
  const int level = static_cast<int>(state.range(0));
  std::string body = kMinimal;
  if (level >= 1) body.insert(body.find("local seq = 1"), kExactReads);
  body += level == 3 ? kPackedReply : level == 2 ? kFullReply : kShortReply;
  static std::vector<std::unique_ptr<detail::RedisScript>> scripts;  // outlive the pool's cache
  static std::mutex mu;
  detail::RedisScript* script;
  {
    std::lock_guard lock(mu);
    scripts.push_back(
        std::make_unique<detail::RedisScript>(detail::RedisScript{"floor", std::move(body)}));
    script = scripts.back().get();
  }
  const std::string m = "floor" + std::to_string(level);
  const std::vector<std::string> keys = {"bench:{" + m + "}:t", "bench:{" + m + "}:z", "-", "-",
                                         "bench:{cfg}:meta",    "bench:{cfg}:quotas",  "-"};
  const std::vector<std::string> args = {"limited", "", "", "", "2", "10", "0"};
  detail::RedisPool& p = pool();
  timed(state, [&] { benchmark::DoNotOptimize(p.eval(*script, keys, args, "bench")); });
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
BENCHMARK(ratelimit::BM_ScriptFloor)->Arg(0)->Arg(1)->Arg(2)->Arg(3)->UseRealTime()->MinTime(2.0);
BENCHMARK(ratelimit::BM_TryAcquire)->Threads(1)->Threads(8)->UseRealTime()->MinTime(2.0);
BENCHMARK(ratelimit::BM_TryAcquireCommit)->Threads(1)->Threads(8)->UseRealTime()->MinTime(2.0);

BENCHMARK_MAIN();
