// The Redis store beyond the conformance suite: URLs, connection errors that never show the
// password, processes racing on one model, settling from another process, clocks that
// disagree, and faults (SCRIPT FLUSH, a restart, a stopped server). Each test that breaks its
// server starts its own; the others share one.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <cstdint>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "redis_server.h"
#include "store/redis/redis_url.h"
#include "store/redis/shared.h"
#include "test_util.h"

namespace ratelimit {
namespace {

using namespace std::chrono_literals;
using testing::RedisServer;
using testing::shared_redis;

Config redis_config(const std::string& url, QuotaMap quotas, std::string prefix = "") {
  Config c;
  c.backend = Backend::redis;
  c.redis_url = url;
  c.providers = {Provider::local};
  c.quotas = std::move(quotas);
  c.key_prefix = prefix.empty() ? testing::unique_prefix() : std::move(prefix);
  c.redis_connect_timeout = 300ms;
  c.redis_command_timeout = 300ms;
  c.on_warning = [](std::string_view) {};
  return c;
}

std::unique_ptr<RateLimiter> open_or_fail(Config c) {
  auto l = RateLimiter::open(std::move(c));
  if (!l) {
    ADD_FAILURE() << l.error().message;
    return nullptr;
  }
  return std::move(*l);
}

TEST(RedisUrl, ParsesEveryForm) {
  auto u = detail::parse_redis_url("redis://alice:s%40cret@db.example:6380/3", "t");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "db.example");
  EXPECT_EQ(u->port, 6380);
  EXPECT_EQ(u->user, "alice");
  EXPECT_EQ(u->password, "s@cret");
  EXPECT_EQ(u->db, 3);
  EXPECT_EQ(u->display().find("cret"), std::string::npos);
  u = detail::parse_redis_url("redis://:pw@[::1]", "t");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->port, 6379);
  EXPECT_EQ(u->password, "pw");
  u = detail::parse_redis_url("unix:///run/redis.sock?db=2", "t");
  ASSERT_TRUE(u);
  EXPECT_TRUE(u->unix_socket);
  EXPECT_EQ(u->host, "/run/redis.sock");
  EXPECT_EQ(u->db, 2);
  for (const char* bad : {"http://x", "redis://", "redis://h:0", "redis://h:99999", "redis://h/x",
                          "unix://relative.sock", "redis://:topsecret@h:bad"}) {
    auto r = detail::parse_redis_url(bad, "ratelimit.open");
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
    EXPECT_TRUE(r.error().message.starts_with("ratelimit.open: ")) << r.error().message;
    EXPECT_EQ(r.error().message.find("topsecret"), std::string::npos);
  }
}

// The check script's packed reply (scripts.h) as `struct.pack('<BBd...ic0ic0')` writes it.
std::string packed_check(unsigned flags, const std::vector<double>& numbers, const std::string& now,
                         const std::string& learned) {
  std::string p = {char{1}, static_cast<char>(flags)};
  auto put = [&](std::uint64_t v, int bytes) {  // little-endian
    for (int i = 0; i < bytes; ++i) p += static_cast<char>(v >> (8 * i) & 0xff);
  };
  for (double d : numbers) put(std::bit_cast<std::uint64_t>(d), 8);
  for (const std::string* t : {&now, &learned}) {
    put(t->size(), 4);
    p += *t;
  }
  return p;
}

TEST(RedisCheckReply, IsReadExactlyAndRefusedWhenMalformed) {
  using detail::redis_store::parse_check;
  const std::vector<double> grant = {7,   3,   12, 5, 100, 1000, 0, 0, 0,  // seq gen epoch no q1-5
                                     4,   40,  30,                         // req tok inp
                                     1e6, 2e6, 4};                         // day start, end, count
  const std::string none = "- -1 - -1 - -1 - -1 -";
  auto r = parse_check(packed_check(1 | 2 | 8 | 32, grant, "1000000123", none));
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->allowed && r->limits.known && r->has_quota && !r->limits.deny_unknown);
  EXPECT_EQ(r->seq, 7u);
  EXPECT_EQ(r->gen, 3u);
  EXPECT_EQ(r->epoch, 12u);
  EXPECT_EQ(r->no, 5);
  EXPECT_EQ(r->limits.quota.max_rpm, 100);
  EXPECT_EQ(r->limits.quota.max_tpm, 1000);
  EXPECT_EQ(r->limits.quota.day_start, DayStart::first_request);
  EXPECT_EQ(r->usage.requests, 4);
  EXPECT_TRUE(r->usage.tokens == 40 && r->usage.input == 30 && r->usage.output == 10);
  EXPECT_TRUE(r->usage.day_started);
  EXPECT_EQ(r->usage.day_start_ns, 1'000'000'000);
  EXPECT_EQ(r->usage.day_end_ns, 2'000'000'000);
  EXPECT_EQ(r->usage.day_count, 4);
  EXPECT_EQ(r->now_ns, 1000000123);
  for (std::int64_t t : r->probe) EXPECT_EQ(t, -1);
  EXPECT_FALSE(r->limits.learned.any());

  // A denial carries the four probe times (µs), and learned limits as text.
  std::vector<double> denied = grant;
  denied.insert(denied.end(), {-1, 5e6, -1, -1});
  r = parse_check(packed_check(2 | 16, denied, "9", "900 -1 - 3 800 -1 - -1 -"));
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->allowed);
  EXPECT_FALSE(r->usage.day_started);
  EXPECT_EQ(r->limits.quota.day_start, DayStart::pacific_midnight);
  EXPECT_EQ(r->probe[0], -1);
  EXPECT_EQ(r->probe[1], 5'000'000'000);
  EXPECT_EQ(r->limits.learned.cooldown_until_ns, 900);
  EXPECT_EQ(r->limits.learned.tokens.left, 3);
  EXPECT_EQ(r->limits.learned.tokens.until_ns, 800);
  EXPECT_EQ(r->limits.learned.requests.left, -1);

  // Anything else is refused (the store reports "unexpected reply from the check script").
  const std::string good = packed_check(1, grant, "1", none);
  EXPECT_TRUE(parse_check(good));
  std::string v2 = good;
  v2[0] = 2;
  EXPECT_FALSE(parse_check(v2));                                      // another format
  EXPECT_FALSE(parse_check(good.substr(0, good.size() - 1)));         // short
  EXPECT_FALSE(parse_check(good + "x"));                              // long
  EXPECT_FALSE(parse_check(packed_check(1, denied, "1", none)));      // probes where none belong
  EXPECT_FALSE(parse_check(packed_check(0, grant, "1", none)));       // none where they belong
  EXPECT_FALSE(parse_check(packed_check(64 | 1, grant, "1", none)));  // unknown flag
  std::vector<double> nan = grant;
  nan[9] = std::numeric_limits<double>::quiet_NaN();
  EXPECT_FALSE(parse_check(packed_check(1, nan, "1", none)));
  EXPECT_FALSE(parse_check(packed_check(1, grant, "x", none)));         // now_ns not a number
  EXPECT_FALSE(parse_check(packed_check(1, grant, "1", "- -1 - -1")));  // 4 learned fields
  EXPECT_FALSE(parse_check(""));
}

TEST(RedisStore, OpensOverTcpAndTheUnixSocket) {
  auto tcp = open_or_fail(redis_config(shared_redis().url(), {{"m", {2, 0, 0}}}, "sock-a"));
  ASSERT_TRUE(tcp);
  ASSERT_TRUE(tcp->try_acquire("m", 0));
  auto unix_l = RateLimiter::open_redis(shared_redis().unix_url(),
                                        redis_config("", {{"m", {2, 0, 0}}}, "sock-a"));
  ASSERT_TRUE(unix_l) << unix_l.error().message;
  ASSERT_TRUE((*unix_l)->try_acquire("m", 0));
  EXPECT_FALSE(tcp->try_acquire("m", 0));  // one window for both
  EXPECT_EQ((*unix_l)->stats("m")->rpm, 2);
}

TEST(RedisStore, BadConfigurationsAreClearErrorsWithoutThePassword) {
  RedisServer secured;
  secured.stop();
  secured.start({"--requirepass", "right-one"});
  const std::string base = "127.0.0.1:" + std::to_string(secured.port());
  auto wrong = RateLimiter::open(redis_config("redis://:wrong-one@" + base, {}));
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code, ErrorCode::unavailable);
  EXPECT_NE(wrong.error().message.find("authentication failed"), std::string::npos)
      << wrong.error().message;
  EXPECT_EQ(wrong.error().message.find("wrong-one"), std::string::npos);
  auto none = RateLimiter::open(redis_config("redis://" + base, {}));
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().message.find("password"), std::string::npos) << none.error().message;
  auto right = RateLimiter::open(redis_config("redis://:right-one@" + base, {{"m", {1, 0, 0}}}));
  ASSERT_TRUE(right) << right.error().message;
  EXPECT_TRUE((*right)->try_acquire("m", 0));
  auto db = RateLimiter::open(redis_config("redis://:right-one@" + base + "/999", {}));
  ASSERT_FALSE(db);
  EXPECT_NE(db.error().message.find("cannot select db 999"), std::string::npos)
      << db.error().message;
  EXPECT_EQ(db.error().message.find("right-one"), std::string::npos);
  auto refused = RateLimiter::open(redis_config("redis://127.0.0.1:1", {}));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::unavailable);
  EXPECT_TRUE(refused.error().message.starts_with("ratelimit.open: redis redis://127.0.0.1:1/0"))
      << refused.error().message;
  Config bad_prefix = redis_config(shared_redis().url(), {});
  bad_prefix.key_prefix = "a{b";
  EXPECT_EQ(RateLimiter::open(bad_prefix).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(RateLimiter::open_redis("", redis_config("", {})).error().code,
            ErrorCode::invalid_argument);
}

TEST(RedisStore, CountsAboveTwoToTheFiftyThirdAreRefused) {
  auto l = open_or_fail(redis_config(shared_redis().url(), {{"m", {0, 0, 0}}}));
  ASSERT_TRUE(l);
  const std::int64_t big = std::int64_t{1} << 53;
  EXPECT_EQ(l->record_usage("m", big, 0).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(l->decide("m", big).code, DecisionCode::invalid_tokens);
  EXPECT_EQ(l->set_quota("n", {0, big, 0}).error().code, ErrorCode::invalid_argument);
  EXPECT_TRUE(l->record_usage("m", big - 1, 0));
}

TEST(RedisStore, NamesThatLookLikeHashTagsKeepTheirOwnKeys) {
  auto l =
      open_or_fail(redis_config(shared_redis().url(), {{"a}b", {1, 0, 0}}, {"{a}", {1, 0, 0}}}));
  ASSERT_TRUE(l);
  ASSERT_TRUE(l->try_acquire("a}b", 0));
  ASSERT_TRUE(l->try_acquire("{a}", 0));
  EXPECT_EQ(l->stats("a}b")->rpm, 1);
  EXPECT_EQ(l->stats("{a}")->rpm, 1);
  EXPECT_EQ(l->all_stats()->size(), 2u);
}

// The server's clock decides: a client whose clock is an hour off gets the same decisions.
TEST(RedisStore, ClientsWhoseClocksDisagreeShareOneWindow) {
  const std::string prefix = testing::unique_prefix();
  Config a = redis_config(shared_redis().url(), {{"m", {2, 0, 0}}}, prefix);
  Config b = a;
  b.clock = std::make_shared<ManualClock>(
      TimePoint(std::chrono::system_clock::now().time_since_epoch()) + 1h);
  auto la = open_or_fail(a);
  auto lb = open_or_fail(b);
  ASSERT_TRUE(la && lb);
  ASSERT_TRUE(la->try_acquire("m", 0));
  ASSERT_TRUE(lb->try_acquire("m", 0));
  const Decision da = la->decide("m", 0);
  const Decision db = lb->decide("m", 0);
  EXPECT_EQ(da.code, DecisionCode::rpm_exceeded);
  EXPECT_EQ(db.code, DecisionCode::rpm_exceeded);
  EXPECT_GT(db.retry_after, 55s);
  EXPECT_LE(db.retry_after, 60s);
}

// Four processes with two limiters each race on one model: exactly the quota is admitted.
int race_in_child(const std::string& url, const std::string& prefix, const ModelQuota& q,
                  std::int64_t tokens) {
  std::atomic<int> granted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&] {
      Config c = redis_config(url, {{"m", q}}, prefix);
      auto l = RateLimiter::open(c);
      if (!l) return;
      for (int i = 0; i < 40; ++i) {
        if ((*l)->try_acquire("m", tokens)) ++granted;
      }
    });
  }
  for (auto& t : threads) t.join();
  return granted.load();
}

int race(const ModelQuota& q, std::int64_t tokens) {
  const std::string url = shared_redis().url();
  const std::string prefix = testing::unique_prefix();
  {
    auto seed = open_or_fail(redis_config(url, {{"m", q}}, prefix));  // quotas before the race
  }
  std::vector<pid_t> children;
  for (int p = 0; p < 4; ++p) {
    const pid_t pid = fork();
    if (pid == 0) _exit(race_in_child(url, prefix, q, tokens));
    children.push_back(pid);
  }
  int total = 0;
  for (pid_t pid : children) {
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status));
    total += WEXITSTATUS(status);
  }
  return total;
}

TEST(RedisStore, ProcessesRacingAdmitExactlyTheQuota) {
  EXPECT_EQ(race({50, 0, 0}, 0), 50);      // requests per minute
  EXPECT_EQ(race({0, 1000, 0}, 10), 100);  // the token budget
  EXPECT_EQ(race({0, 0, 30}, 0), 30);      // requests per day
}

TEST(RedisStore, AReservationSettlesFromAnotherProcessById) {
  const std::string url = shared_redis().url();
  const std::string prefix = testing::unique_prefix();
  auto l = open_or_fail(redis_config(url, {{"m", {10, 1000, 0}}}, prefix));
  ASSERT_TRUE(l);
  Reservation r = l->try_acquire("m", 500);
  ASSERT_TRUE(r);
  const std::string id = r.id();
  const pid_t pid = fork();
  if (pid == 0) {
    auto other = RateLimiter::open(redis_config(url, {}, prefix));
    _exit(other && (*other)->commit(id, 30, 12) ? 0 : 1);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(l->stats("m")->tpm, 42);
  EXPECT_EQ(r.commit(1, 1).error().code, ErrorCode::invalid_argument);  // settled elsewhere
}

// A model's state in a format this version does not write (here the MessagePack array of the
// first Redis store) is refused with a clear error, never misread; reset() starts it afresh.
TEST(RedisStore, AStateOfAnotherFormatIsAClearErrorUntilReset) {
  const std::string prefix = testing::unique_prefix();
  auto l = open_or_fail(redis_config(shared_redis().url(), {{"m", {5, 0, 0}}}, prefix));
  ASSERT_TRUE(l);
  const std::string key =
      prefix + ":{m-" + detail::redis_store::hex(detail::redis_store::digest("m")) + "}:t";
  ASSERT_EQ(shared_redis().cli("EVAL \"redis.call('SET', KEYS[1], cmsgpack.pack({1, 2})) "
                               "return 1\" 1 '" +
                               key + "'"),
            0);
  Reservation r = l->try_acquire("m", 0);
  EXPECT_FALSE(r);
  EXPECT_EQ(r.decision().code, DecisionCode::store_unavailable);
  auto stats = l->stats("m");
  ASSERT_FALSE(stats);
  EXPECT_EQ(stats.error().code, ErrorCode::corrupt_state);
  EXPECT_NE(stats.error().message.find("written by another version of ratelimit"),
            std::string::npos)
      << stats.error().message;
  ASSERT_TRUE(l->reset("m"));
  EXPECT_TRUE(l->try_acquire("m", 0));
  EXPECT_EQ(l->stats("m")->rpm, 1);
}

TEST(RedisStore, AScriptFlushIsRecoveredByReloading) {
  auto l = open_or_fail(redis_config(shared_redis().url(), {{"m", {5, 0, 0}}}));
  ASSERT_TRUE(l);
  ASSERT_TRUE(l->try_acquire("m", 0));
  ASSERT_EQ(shared_redis().cli("SCRIPT FLUSH"), 0);
  Reservation r = l->try_acquire("m", 0);
  ASSERT_TRUE(r) << to_string(r.decision().code);
  ASSERT_EQ(shared_redis().cli("SCRIPT FLUSH"), 0);
  ASSERT_TRUE(r.cancel());
  EXPECT_EQ(l->stats("m")->rpm, 1);
}

TEST(RedisStore, ARestartedServerIsReconnectedWithoutReopening) {
  RedisServer server;
  auto l = open_or_fail(redis_config(server.url(), {{"m", {5, 0, 0}}}));
  ASSERT_TRUE(l);
  ASSERT_TRUE(l->try_acquire("m", 0));
  server.stop();
  const Decision down = l->decide("m", 0);
  EXPECT_EQ(down.code, DecisionCode::store_unavailable);
  EXPECT_EQ(l->stats("m").error().code, ErrorCode::unavailable);
  server.start();
  // The server came back empty (no persistence): the quota is set again, and the limiter
  // works after at most the reconnect backoff (1 s).
  bool back = false;
  for (int i = 0; i < 60 && !back; ++i) {
    back = l->set_quota("m", {5, 0, 0}).has_value();
    if (!back) std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(back);
  EXPECT_TRUE(l->try_acquire("m", 0));
  EXPECT_EQ(l->stats("m")->rpm, 1);
}

TEST(RedisStore, AStoppedServerAnswersWithinTheTimeoutAndServiceResumes) {
  RedisServer server;
  auto l = open_or_fail(redis_config(server.url(), {{"m", {100, 0, 0}}}));
  ASSERT_TRUE(l);
  ASSERT_TRUE(l->try_acquire("m", 0));
  server.pause();
  for (int i = 0; i < 3; ++i) {
    const auto start = std::chrono::steady_clock::now();
    const Reservation r = l->try_acquire("m", 0);
    const auto took = std::chrono::steady_clock::now() - start;
    EXPECT_EQ(r.decision().code, DecisionCode::store_unavailable);
    EXPECT_LT(took, 1500ms) << i;  // the 300 ms command (or connect) timeout, and slack
  }
  server.resume();
  bool back = false;
  for (int i = 0; i < 60 && !back; ++i) {
    back = l->try_acquire("m", 0).granted();
    if (!back) std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(back);
}

// fail_open: while Redis is stopped a check is admitted unchecked (within the timeout, counted
// in metrics, nothing recorded); when Redis answers again, checks count against the window.
TEST(RedisStore, FailOpenAdmitsUncheckedWhileRedisIsStopped) {
  RedisServer server;
  Config c = redis_config(server.url(), {{"m", {1, 0, 0}}});
  c.redis_failure_policy = RedisFailurePolicy::fail_open;
  auto l = open_or_fail(c);
  ASSERT_TRUE(l);
  ASSERT_TRUE(l->try_acquire("m", 0));  // the minute's one request
  server.pause();
  for (int i = 0; i < 2; ++i) {
    const auto start = std::chrono::steady_clock::now();
    Reservation r = l->try_acquire("m", 5);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 1500ms) << i;
    EXPECT_TRUE(r.granted()) << i;
    EXPECT_EQ(r.decision().code, DecisionCode::admitted_unchecked);
    EXPECT_EQ(to_string(r.decision().code), "admitted_unchecked");
    EXPECT_TRUE(r.commit(3, 0)) << i;  // nothing was recorded: nothing to settle
  }
  const auto start = std::chrono::steady_clock::now();
  const Decision d = l->decide("m", 0);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1500ms);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.code, DecisionCode::admitted_unchecked);
  EXPECT_EQ(l->record_usage("m", 1, 0).error().code, ErrorCode::unavailable);  // not a check
  EXPECT_EQ(l->stats("m").error().code, ErrorCode::unavailable);
  // A name the limiter has not resolved yet (its family and aliases live in Redis) is admitted
  // unchecked too, by try_acquire and by decide.
  Reservation dated = l->try_acquire("m-2024-08-06", 5);
  EXPECT_TRUE(dated.granted());
  EXPECT_EQ(dated.decision().code, DecisionCode::admitted_unchecked);
  EXPECT_TRUE(dated.cancel());
  EXPECT_EQ(l->decide("m-latest", 0).code, DecisionCode::admitted_unchecked);
  server.resume();
  Decision back;
  std::uint64_t unchecked = 2;  // and those while the pool waits out its reconnect backoff
  for (int i = 0; i < 60; ++i) {
    back = l->try_acquire("m", 0).decision();
    if (back.code != DecisionCode::admitted_unchecked) break;
    ++unchecked;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(back.code, DecisionCode::rpm_exceeded);  // the recorded grant still counts
  EXPECT_EQ(l->stats("m")->rpm, 1);                  // the unchecked ones were not recorded
  auto m = l->metrics();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->at("m").count(RequestOutcome::admitted_unchecked), unchecked);
  EXPECT_EQ(m->at("m").count(RequestOutcome::admitted), 1u);
  EXPECT_EQ(m->at("m-2024-08-06").count(RequestOutcome::admitted_unchecked), 1u);
  // Once Redis answers, the dated name is resolved to its family again and shares its quota.
  const Decision family = l->try_acquire("m-2024-08-06", 0).decision();
  EXPECT_EQ(family.code, DecisionCode::rpm_exceeded);
  EXPECT_EQ(family.resolved_model, "m");
}

// fail_closed (the default) answers store_unavailable to decide as well, within the timeout.
TEST(RedisStore, FailClosedDecideAnswersStoreUnavailableWithinTheTimeout) {
  RedisServer server;
  auto l = open_or_fail(redis_config(server.url(), {{"m", {5, 0, 0}}}));
  ASSERT_TRUE(l);
  ASSERT_TRUE(l->try_acquire("m", 0));
  server.pause();
  const auto start = std::chrono::steady_clock::now();
  const Decision d = l->decide("m", 0);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1500ms);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.code, DecisionCode::store_unavailable);
  EXPECT_EQ(l->try_acquire("m-2024-08-06", 0).decision().code, DecisionCode::store_unavailable);
  server.resume();
}

}  // namespace
}  // namespace ratelimit
