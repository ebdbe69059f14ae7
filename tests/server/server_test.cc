// `ratelimit serve` in-process (running_server.h): every endpoint on a memory store and a
// ManualClock, waiters held by a clock that never moves and shutdown, concurrent clients on
// both stores, and provider limits over HTTP. Bad input, the token, Host/Origin and binding
// are in server_access_test.cc.
#include "server.h"

#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "commands.h"
#include "json_format.h"
#include "running_server.h"
#include "test_util.h"

namespace ratelimit::cli {
namespace {

using nlohmann::json;
namespace fmt = ratelimit::json;  // the serializer the CLI uses
using namespace ratelimit::server;
using namespace ratelimit::testing;
using namespace std::chrono_literals;

// A clock that stands still: sleeps last until stopped (a release, a shutdown). Holds waiters
// in place without real time passing.
class FrozenClock final : public Clock {
 public:
  explicit FrozenClock(TimePoint t) : now_(t) {}
  TimePoint now() const override { return now_; }
  bool sleep_until(TimePoint until, std::stop_token stop) override {
    if (until <= now_) return !stop.stop_requested();
    std::mutex mu;
    std::condition_variable_any cv;
    std::unique_lock lock(mu);
    sleepers_.fetch_add(1);
    cv.wait(lock, stop, [] { return false; });
    sleepers_.fetch_sub(1);
    return false;
  }
  int sleepers() const { return sleepers_.load(); }

 private:
  const TimePoint now_;
  std::atomic<int> sleepers_{0};
};

const std::set<std::string> kStatsKeys = {
    "rpm",       "max_rpm",       "tpm",        "max_tpm",        "rpd",    "max_rpd", "day_start",
    "input_tpm", "max_input_tpm", "output_tpm", "max_output_tpm", "day_end"};
const std::set<std::string> kDecisionKeys = {"allowed",        "code",  "reason",
                                             "retry_after_ms", "stats", "resolved_model"};

// --- a memory-store server on a ManualClock ------------------------------------------------

TEST_F(ServerTest, DecideIsAlways200WithTheDecision) {
  start({{"m", {2, 1000, 0}}});
  auto c = client();
  Reply r = post(c, "/v1/decide", R"({"model": "m", "tokens": 100})");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(keys(r.body), kDecisionKeys);
  EXPECT_EQ(keys(r.body["stats"]), kStatsKeys);
  EXPECT_EQ(r.body["allowed"], true);
  EXPECT_EQ(r.body["code"], "ok");
  EXPECT_EQ(r.text, fmt::decision(limiter_->decide("m", 100)));

  r = post(c, "/v1/decide", R"({"model": "m", "tokens": 5000})");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body["allowed"], false);
  EXPECT_EQ(r.body["code"], "tpm_exceeded");
  EXPECT_TRUE(r.body["retry_after_ms"].is_null());

  r = post(c, "/v1/decide", R"({"model": "m", "tokens": -1})");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body["code"], "invalid_tokens");

  r = post(c, "/v1/decide", R"({"model": "unknown"})");  // tokens default to 0
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body["code"], "unknown_model");
  // Deciding records nothing and creates no state.
  EXPECT_EQ(limiter_->stats("m")->rpm, 0);
  EXPECT_EQ(limiter_->models()->size(), 1u);
}

TEST_F(ServerTest, AcquireGrantedDeniedAndNeverWithHeaders) {
  start({{"m", {2, 1000, 10}}});
  auto c = client();
  Reply r = post(c, "/v1/acquire", acquire_body("m", 100));
  EXPECT_EQ(r.status, 200) << r.text;
  std::set<std::string> granted_keys = kDecisionKeys;
  granted_keys.insert("reservation_id");
  EXPECT_EQ(keys(r.body), granted_keys);
  EXPECT_EQ(r.body["allowed"], true);
  EXPECT_TRUE(r.body["reservation_id"].is_string());
  EXPECT_EQ(r.header("RateLimit-Policy"),
            R"("rpm";q=2;w=60, "tpm";q=1000;w=60, "rpd";q=10;w=86400)");
  EXPECT_EQ(r.header("RateLimit"), R"("rpm";r=1, "tpm";r=900, "rpd";r=9)");

  clock_->advance(10s);
  r = post(c, "/v1/acquire", acquire_body("m", 100));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("RateLimit"), R"("rpm";r=0, "tpm";r=800, "rpd";r=8)");

  // The window is full until the first entry leaves: 50 s from now.
  r = post(c, "/v1/acquire", acquire_body("m", 100));
  EXPECT_EQ(r.status, 429) << r.text;
  EXPECT_EQ(keys(r.body), kDecisionKeys);
  EXPECT_EQ(r.body["code"], "rpm_exceeded");
  EXPECT_EQ(r.body["retry_after_ms"], 50000);
  EXPECT_EQ(r.header("Retry-After"), "50");
  EXPECT_EQ(r.header("RateLimit"), R"("rpm";r=0;t=50, "tpm";r=800, "rpd";r=8)");

  // 59.999 s after the first: still full; at 60 s it has left.
  clock_->advance(49999ms);
  EXPECT_EQ(post(c, "/v1/acquire", acquire_body("m", 100)).status, 429);
  clock_->advance(1ms);
  EXPECT_EQ(post(c, "/v1/acquire", acquire_body("m", 100)).status, 200);

  // An estimate above max_tpm can never pass: 422 with the decision.
  r = post(c, "/v1/acquire", acquire_body("m", 1001));
  EXPECT_EQ(r.status, 422) << r.text;
  EXPECT_TRUE(r.body["retry_after_ms"].is_null());
  EXPECT_TRUE(r.header("Retry-After").empty());

  // Invalid tokens: 400 with an error, nothing recorded.
  const ModelStats before = *limiter_->stats("m");
  expect_error(post(c, "/v1/acquire", acquire_body("m", -5)), 400, "invalid_tokens");
  EXPECT_EQ(*limiter_->stats("m"), before);
}

TEST_F(ServerTest, AcquireWaitsOnTheInjectedClock) {
  start({{"m", {1, 0, 0}}});
  auto c = client();
  ASSERT_EQ(post(c, "/v1/acquire", acquire_body("m", 0)).status, 200);
  const TimePoint t0 = clock_->now();
  // The ManualClock's sleep moves time itself: the waiter is admitted exactly 60 s later.
  Reply r = post(c, "/v1/acquire", acquire_body("m", 0, 120000));
  EXPECT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(clock_->now() - t0, 60s);
  // A wait shorter than the time to capacity ends in 429 at the deadline.
  r = post(c, "/v1/acquire", acquire_body("m", 0, 59999));
  EXPECT_EQ(r.status, 429) << r.text;
  EXPECT_EQ(clock_->now() - t0, 60s + 59999ms);
  EXPECT_EQ(r.header("Retry-After"), "1");
  // wait_ms beyond --max-wait (5 min) is refused.
  expect_error(post(c, "/v1/acquire", acquire_body("m", 0, 300001)), 400, "invalid_request");
}

TEST_F(ServerTest, CommitAndCancel) {
  start({{"m", {10, 1000, 0}}});
  auto c = client();
  Reply a = post(c, "/v1/acquire", acquire_body("m", 300));
  Reply b = post(c, "/v1/acquire", acquire_body("m", 200));
  const std::string ida = a.body["reservation_id"], idb = b.body["reservation_id"];
  EXPECT_EQ(running_->server().counters().leases, 2u);

  Reply r = post(c, "/v1/reservations/" + ida + "/commit",
                 R"({"prompt_tokens": 100, "output_tokens": 20})");
  EXPECT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.text, fmt::settled(ida, "committed"));
  EXPECT_EQ(limiter_->stats("m")->tpm, 320);
  expect_error(
      post(c, "/v1/reservations/" + ida + "/commit", R"({"prompt_tokens": 1, "output_tokens": 1})"),
      409, "already_settled");

  r = post(c, "/v1/reservations/" + idb + "/cancel", "");
  EXPECT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.text, fmt::settled(idb, "cancelled"));
  EXPECT_EQ(limiter_->stats("m")->tpm, 120);
  EXPECT_EQ(limiter_->stats("m")->rpm, 1);
  expect_error(post(c, "/v1/reservations/" + idb + "/cancel", "{}"), 409, "already_settled");
  EXPECT_EQ(running_->server().counters().leases, 0u);

  expect_error(post(c, "/v1/reservations/nope/commit", R"({"prompt_tokens":1,"output_tokens":1})"),
               404, "not_found");
  expect_error(post(c, "/v1/reservations/nope/cancel", ""), 404, "not_found");

  // Bad bodies change nothing.
  Reply d = post(c, "/v1/acquire", acquire_body("m", 50));
  const std::string idd = d.body["reservation_id"];
  const ModelStats before = *limiter_->stats("m");
  for (const char* body :
       {R"({"prompt_tokens": 1})", R"({"prompt_tokens": -1, "output_tokens": 1})",
        R"({"prompt_tokens": 1, "output_tokens": 1, "extra": 2})", "[1]",
        R"({"prompt_tokens": "1", "output_tokens": 1})"}) {
    expect_error(post(c, "/v1/reservations/" + idd + "/commit", body), 400, "invalid_request");
  }
  expect_error(post(c, "/v1/reservations/" + idd + "/cancel", R"({"why": 1})"), 400,
               "invalid_request");
  EXPECT_EQ(*limiter_->stats("m"), before);
  EXPECT_EQ(running_->server().counters().leases, 1u);
  EXPECT_EQ(
      post(c, "/v1/reservations/" + idd + "/commit", R"({"prompt_tokens": 0, "output_tokens": 0})")
          .status,
      200);
}

TEST_F(ServerTest, LeasesExpireAndKeepTheirEstimate) {
  ServerOptions o;
  o.lease = 2min;
  start({{"m", {10, 1000, 100}}}, o);
  auto c = client();
  Reply a = post(c, "/v1/acquire", acquire_body("m", 300));
  const std::string id = a.body["reservation_id"];
  clock_->advance(2min - 1ns);
  EXPECT_EQ(running_->server().expire_leases(), 0u);
  EXPECT_EQ(running_->server().counters().leases, 1u);
  clock_->advance(1ns);
  EXPECT_EQ(running_->server().expire_leases(), 1u);
  ServerCounters counters = running_->server().counters();
  EXPECT_EQ(counters.leases, 0u);
  EXPECT_EQ(counters.leases_expired, 1u);
  // The estimate was kept (the day still counts the request; nothing was refunded).
  EXPECT_EQ(limiter_->stats("m")->rpd, 1);
  EXPECT_EQ(limiter_->metrics()->at("m").cancelled, 0u);
  // A late commit goes to the store, whose entry has left the window: nothing changes.
  EXPECT_EQ(
      post(c, "/v1/reservations/" + id + "/commit", R"({"prompt_tokens": 5, "output_tokens": 5})")
          .status,
      200);
  EXPECT_EQ(limiter_->stats("m")->rpd, 1);
  auto m = parse_metrics(get(c, "/metrics").text);
  EXPECT_EQ(m["ratelimit_server_leases_expired_total"], 1);
  EXPECT_EQ(m["ratelimit_server_leases"], 0);

  // A second lease ends the same way; the one granted after it is still held.
  post(c, "/v1/acquire", acquire_body("m", 1));
  clock_->advance(3min);
  post(c, "/v1/acquire", acquire_body("m", 1));
  running_->server().expire_leases();
  counters = running_->server().counters();
  EXPECT_EQ(counters.leases_expired, 2u);
  EXPECT_EQ(counters.leases, 1u);
}

// docs/server.md: with a lease shorter than the minute window, a commit after the lease
// ended still finds its entry in the window and changes the usage as a timely commit would.
TEST_F(ServerTest, ACommitAfterAShortLeaseStillSettlesInTheWindow) {
  ServerOptions o;
  o.lease = 10s;
  start({{"m", {10, 1000, 100}}}, o);
  auto c = client();
  Reply a = post(c, "/v1/acquire", acquire_body("m", 300));
  const std::string id = a.body["reservation_id"];
  clock_->advance(11s);
  EXPECT_EQ(running_->server().expire_leases(), 1u);
  EXPECT_EQ(limiter_->stats("m")->tpm, 300);  // the estimate was kept
  EXPECT_EQ(
      post(c, "/v1/reservations/" + id + "/commit", R"({"prompt_tokens": 5, "output_tokens": 5})")
          .status,
      200);
  EXPECT_EQ(limiter_->stats("m")->tpm, 10);  // the actual usage replaced it
}

TEST_F(ServerTest, LeaseCapRefusesBeforeGranting) {
  ServerOptions o;
  o.max_leases = 2;
  start({{"m", {0, 0, 0}}}, o);
  auto c = client();
  Reply a = post(c, "/v1/acquire", acquire_body("m", 1));
  ASSERT_EQ(post(c, "/v1/acquire", acquire_body("m", 1)).status, 200);
  expect_error(post(c, "/v1/acquire", acquire_body("m", 1)), 503, "too_many_reservations");
  EXPECT_EQ(limiter_->stats("m")->rpm, 2);  // the refused request took nothing
  post(c, "/v1/reservations/" + a.body["reservation_id"].get<std::string>() + "/cancel", "");
  EXPECT_EQ(post(c, "/v1/acquire", acquire_body("m", 1)).status, 200);
}

TEST_F(ServerTest, RecordStatsAndQuotas) {
  start({{"m", {10, 1000, 0}}});
  auto c = client();
  Reply r = post(c, "/v1/record", R"({"model": "m", "prompt_tokens": 30, "output_tokens": 12})");
  EXPECT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.text, fmt::model_stats("m", *limiter_->stats("m")));
  EXPECT_EQ(r.body["stats"]["tpm"], 42);
  expect_error(post(c, "/v1/record", R"({"model": "m", "prompt_tokens": -1})"), 400,
               "invalid_request");
  expect_error(post(c, "/v1/record", R"({"prompt_tokens": 1})"), 400, "invalid_request");

  // GET /v1/stats is exactly `ratelimit status --json`.
  r = get(c, "/v1/stats");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.text, fmt::status(*status_rows(*limiter_, std::nullopt)));
  EXPECT_EQ(r.body["models"]["m"]["rpm"], 1);

  // Names with '/' and spaces, percent-encoded in the path.
  const std::string enc = "/v1/quotas/team%2Fa%20b";
  expect_error(get(c, enc), 404, "not_found");
  r = put(c, enc, R"({"max_rpm": 5, "max_tpm": 500})");
  EXPECT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.text, fmt::model_quota("team/a b", ModelQuota{5, 500, 0}));
  r = put(c, enc, R"({"max_rpd": 7})");  // omitted fields keep their value
  EXPECT_EQ(
      r.body["quota"],
      json::parse(
          R"({"max_rpm":5,"max_tpm":500,"max_rpd":7,"max_input_tpm":0,"max_output_tpm":0,"day_start":"first_request"})"));
  EXPECT_EQ(limiter_->quota("team/a b"), (ModelQuota{5, 500, 7}));
  r = get(c, enc);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body["model"], "team/a b");
  for (const char* bad : {"{}", R"({"max_rpm": -1})", R"({"max_rpm": 1.5})",
                          R"({"max_rpm": 9007199254740992})", R"({"rpm": 1})", "nope"}) {
    expect_error(put(c, enc, bad), 400, "invalid_request");
  }
  EXPECT_EQ(limiter_->quota("team/a b"), (ModelQuota{5, 500, 7}));
  post(c, "/v1/record", R"({"model": "team/a b", "prompt_tokens": 4})");
  r = get(c, "/v1/stats/team%2Fa%20b");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.text, fmt::model_stats("team/a b", *limiter_->stats("team/a b")));
  EXPECT_EQ(r.body["stats"]["tpm"], 4);

  EXPECT_EQ(del(c, enc).status, 204);
  EXPECT_FALSE(limiter_->quota("team/a b")->has_value());
  expect_error(del(c, enc), 404, "not_found");
}

TEST_F(ServerTest, Reset) {
  start({{"a", {10, 0, 0}}, {"b", {10, 0, 0}}});
  auto c = client();
  post(c, "/v1/record", R"({"model": "a"})");
  post(c, "/v1/record", R"({"model": "b"})");
  Reply r = post(c, "/v1/reset", R"({"model": "a"})");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.text, fmt::reset({"a"}));
  EXPECT_EQ(limiter_->stats("a")->rpm, 0);
  EXPECT_EQ(limiter_->stats("b")->rpm, 1);
  for (const char* bad :
       {"", "{}", R"({"model": "a", "all": true})", R"({"all": 1})", R"({"all": false})"}) {
    expect_error(post(c, "/v1/reset", bad), 400, "invalid_request");
  }
  EXPECT_EQ(limiter_->stats("b")->rpm, 1);
  r = post(c, "/v1/reset", R"({"all": true})");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.text, fmt::reset({"a", "b"}));
  EXPECT_EQ(limiter_->stats("b")->rpm, 0);
  // Quotas stay.
  EXPECT_TRUE(limiter_->quota("a")->has_value());
}

TEST_F(ServerTest, RoutingHealthAndPage) {
  ServerOptions o;
  o.backend = "memory";
  start({}, o);
  auto c = client();
  Reply r = get(c, "/healthz");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, json::parse(R"({"status": "ok", "backend": "memory"})"));
  expect_error(get(c, "/v1/nothing"), 404, "not_found");
  expect_error(get(c, "/v1/reservations/x/settle"), 404, "not_found");
  r = get(c, "/v1/acquire");
  expect_error(r, 405, "method_not_allowed");
  EXPECT_EQ(r.header("Allow"), "POST");
  r = post(c, "/v1/stats", "{}");
  expect_error(r, 405, "method_not_allowed");
  EXPECT_EQ(r.header("Allow"), "GET");
  r = post(c, "/v1/quotas/m", "{}");
  EXPECT_EQ(r.header("Allow"), "GET, PUT, DELETE");
  auto page = c.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_EQ(page->get_header_value("Content-Type"), "text/html; charset=utf-8");
  EXPECT_NE(page->body.find("/v1/stats"), std::string::npos);
  EXPECT_EQ(page->body.find("innerHTML"), std::string::npos);  // names only via textContent
}

TEST_F(ServerTest, MetricsMatchWhatHappened) {
  start({{"m", {3, 1000, 0}}, {"q\"uote\\d", {0, 0, 0}}});
  auto c = client();
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    Reply r = post(c, "/v1/acquire", acquire_body("m", 100));
    if (r.status == 200) ids.push_back(r.body["reservation_id"]);
  }
  ASSERT_EQ(ids.size(), 3u);
  post(c, "/v1/reservations/" + ids[0] + "/commit", R"({"prompt_tokens": 40, "output_tokens": 2})");
  post(c, "/v1/reservations/" + ids[1] + "/cancel", "");
  post(c, "/v1/record", R"({"model": "m", "prompt_tokens": 7, "output_tokens": 1})");
  post(c, "/v1/acquire", acquire_body("m", 5000));  // never fits (422)
  post(c, "/v1/acquire", acquire_body("q\"uote\\d", 1));
  Reply r = get(c, "/metrics");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.header("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  auto m = parse_metrics(r.text);
  EXPECT_EQ(m[R"(ratelimit_requests_total{model="m",outcome="admitted"})"], 3);
  // The window was full when the 5,000-token request came: the request limit is reported first.
  EXPECT_EQ(m[R"(ratelimit_requests_total{model="m",outcome="rpm_exceeded"})"], 3);
  EXPECT_EQ(m[R"(ratelimit_requests_total{model="m",outcome="tpm_exceeded"})"], 0);
  EXPECT_EQ(m[R"(ratelimit_requests_total{model="m",outcome="recorded"})"], 1);
  EXPECT_EQ(m[R"(ratelimit_reservations_total{model="m",result="committed"})"], 1);
  EXPECT_EQ(m[R"(ratelimit_reservations_total{model="m",result="cancelled"})"], 1);
  EXPECT_EQ(m[R"(ratelimit_tokens_total{model="m",kind="estimated"})"], 300);
  EXPECT_EQ(m[R"(ratelimit_tokens_total{model="m",kind="committed"})"], 42);
  EXPECT_EQ(m[R"(ratelimit_tokens_total{model="m",kind="recorded"})"], 8);
  EXPECT_EQ(m[R"(ratelimit_window_requests{model="m"})"], 3);  // 2 reservations + 1 record
  EXPECT_EQ(m[R"(ratelimit_window_tokens{model="m"})"], 42 + 100 + 8);
  EXPECT_EQ(m[R"(ratelimit_limit_requests_per_minute{model="m"})"], 3);
  EXPECT_EQ(m[R"(ratelimit_limit_tokens_per_minute{model="m"})"], 1000);
  // Label values are escaped.
  EXPECT_EQ(m[R"(ratelimit_requests_total{model="q\"uote\\d",outcome="admitted"})"], 1);
  EXPECT_EQ(m[R"(ratelimit_http_requests_total{route="/v1/acquire",code="200"})"], 4);
  EXPECT_EQ(m[R"(ratelimit_http_requests_total{route="/v1/acquire",code="429"})"], 2);
  EXPECT_EQ(m[R"(ratelimit_http_requests_total{route="/v1/acquire",code="422"})"], 1);
  EXPECT_EQ(m[R"(ratelimit_http_request_duration_seconds_count{route="/v1/acquire"})"], 7);
  EXPECT_EQ(m["ratelimit_server_leases"], 2);  // ids[2] and the quoted model's
  EXPECT_NE(r.text.find("# TYPE ratelimit_requests_total counter"), std::string::npos);
  EXPECT_NE(r.text.find("# TYPE ratelimit_window_requests gauge"), std::string::npos);
}

// --- waiters and shutdown (a clock that never moves holds them) --------------------------------

class WaitingTest : public ::testing::Test {
 protected:
  void start(ServerOptions options) {
    limiter_ = open_limiter("memory", {{"m", {1, 0, 0}}}, clock_, dir_);
    running_ = std::make_unique<Running>(*limiter_, std::move(options));
  }
  void wait_for_sleepers(int n) {
    for (int i = 0; i < 2000 && clock_->sleepers() < n; ++i) std::this_thread::sleep_for(5ms);
    ASSERT_EQ(clock_->sleepers(), n);
  }
  TempDir dir_;
  std::shared_ptr<FrozenClock> clock_ = std::make_shared<FrozenClock>(start_time());
  std::unique_ptr<RateLimiter> limiter_;
  std::unique_ptr<Running> running_;
};

TEST_F(WaitingTest, WaitersAreCappedAndWokenByARelease) {
  ServerOptions o;
  o.max_waiters = 1;
  start(o);
  auto c = running_->client();
  Reply first = post(c, "/v1/acquire", acquire_body("m", 0));
  ASSERT_EQ(first.status, 200);
  Reply waited;
  std::thread waiter([&] {
    auto c2 = running_->client();
    waited = post(c2, "/v1/acquire", acquire_body("m", 0, 60000));
  });
  wait_for_sleepers(1);
  EXPECT_EQ(running_->server().counters().waiters, 1u);
  Reply refused = post(c, "/v1/acquire", acquire_body("m", 0, 1000));
  expect_error(refused, 503, "too_many_waiters");
  EXPECT_EQ(refused.header("Retry-After"), "1");
  // Requests that do not wait are still served while the waiter blocks.
  EXPECT_EQ(post(c, "/v1/acquire", acquire_body("m", 0)).status, 429);
  EXPECT_EQ(get(c, "/v1/stats").status, 200);
  // Cancelling the first reservation frees the window: the waiter is admitted.
  EXPECT_EQ(
      post(c, "/v1/reservations/" + first.body["reservation_id"].get<std::string>() + "/cancel", "")
          .status,
      200);
  waiter.join();
  EXPECT_EQ(waited.status, 200) << waited.text;
  EXPECT_EQ(running_->server().counters().waiters, 0u);
}

TEST_F(WaitingTest, ShutdownAnswersWaitersAndFinishes) {
  start({});
  auto c = running_->client();
  ASSERT_EQ(post(c, "/v1/acquire", acquire_body("m", 0)).status, 200);
  Reply waited;
  std::thread waiter([&] {
    auto c2 = running_->client();
    waited = post(c2, "/v1/acquire", acquire_body("m", 0, 60000));
  });
  wait_for_sleepers(1);
  running_->stop();  // returns only once in-flight requests are answered
  waiter.join();
  expect_error(waited, 503, "shutting_down");
  EXPECT_EQ(limiter_->stats("m")->rpm, 1);
  EXPECT_EQ(running_->server().counters().leases, 1u);
}

// --- concurrency and the SQLite store ---------------------------------------------------------

class ServerStores : public ::testing::TestWithParam<std::string> {};

TEST_P(ServerStores, EightClientsAdmitExactlyTheLimit) {
  TempDir dir;
  auto clock = std::make_shared<ManualClock>(start_time());
  auto limiter = open_limiter(GetParam(), {{"m", {1000, 0, 0}}}, clock, dir);
  ServerOptions o;
  o.threads = 16;
  Running running(*limiter, o);
  // One request first, from this thread: the client side of cpp-httplib (an uninstrumented
  // library) builds its parser's statics on first use, which TSan cannot see being published.
  {
    auto c = running.client();
    ASSERT_EQ(get(c, "/healthz").status, 200);
  }
  std::atomic<int> granted{0}, denied{0}, other{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 8; ++t) {
    clients.emplace_back([&] {
      auto c = running.client();
      for (int i = 0; i < 500; ++i) {
        auto r = c.Post("/v1/acquire", R"({"model": "m", "tokens": 1})", "application/json");
        if (r && r->status == 200) {
          ++granted;
        } else if (r && r->status == 429) {
          ++denied;
        } else {
          ++other;
          ADD_FAILURE() << (r ? std::to_string(r->status) + " " + r->body
                              : httplib::to_string(r.error()));
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(granted.load(), 1000);
  EXPECT_EQ(denied.load(), 3000);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(limiter->stats("m")->rpm, 1000);
  EXPECT_EQ(running.server().counters().leases, 1000u);
  auto metrics = limiter->metrics();
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->at("m").count(RequestOutcome::admitted), 1000u);
  EXPECT_EQ(metrics->at("m").count(RequestOutcome::rpm_exceeded), 3000u);
}

TEST_P(ServerStores, IdsFromAnotherLimiterOnTheStoreSettleThroughTheServer) {
  TempDir dir;
  auto clock = std::make_shared<ManualClock>(start_time());
  auto limiter = open_limiter(GetParam(), {{"m", {10, 1000, 0}}}, clock, dir);
  Running running(*limiter, {});
  auto c = running.client();
  // Granted outside the server (for SQLite: as the CLI would, through a second connection).
  std::unique_ptr<RateLimiter> other;
  RateLimiter* granter = limiter.get();
  if (GetParam() == "sqlite") {
    other = open_limiter("sqlite", {}, clock, dir);
    granter = other.get();
  }
  Reservation r = granter->try_acquire("m", 500);
  ASSERT_TRUE(r.granted());
  const std::string id = r.id();
  EXPECT_EQ(
      post(c, "/v1/reservations/" + id + "/commit", R"({"prompt_tokens": 10, "output_tokens": 5})")
          .status,
      200);
  EXPECT_EQ(limiter->stats("m")->tpm, 15);
  expect_error(post(c, "/v1/reservations/" + id + "/cancel", ""), 409, "already_settled");
  // And the server's ids settle outside it.
  Reply a = post(c, "/v1/acquire", acquire_body("m", 200));
  ASSERT_TRUE(granter->cancel(a.body["reservation_id"].get<std::string>()));
  EXPECT_EQ(limiter->stats("m")->tpm, 15);
  EXPECT_EQ(get(c, "/v1/stats").text, fmt::status(*status_rows(*granter, std::nullopt)));
}

// Only a shared store can fail under the server (a closed database stands in for a broken one).
TEST(ServerSqlite, StoreFailureIs503) {
  TempDir dir;
  auto limiter =
      open_limiter("sqlite", {{"m", {10, 0, 0}}}, std::make_shared<ManualClock>(start_time()), dir);
  Running running(*limiter, {});
  auto c = running.client();
  ASSERT_TRUE(limiter->close());
  Reply r = post(c, "/v1/acquire", acquire_body("m", 1));
  expect_error(r, 503, "store_unavailable");
  EXPECT_EQ(r.header("Retry-After"), "1");
  expect_error(post(c, "/v1/acquire", acquire_body("m", 1, 1000)), 503, "store_unavailable");
  expect_error(post(c, "/v1/record", R"({"model": "m"})"), 503, "store_unavailable");
  expect_error(get(c, "/v1/stats"), 503, "store_unavailable");
  expect_error(post(c, "/v1/reset", R"({"all": true})"), 503, "store_unavailable");
  expect_error(put(c, "/v1/quotas/m", R"({"max_rpm": 1})"), 503, "store_unavailable");
  EXPECT_EQ(post(c, "/v1/decide", R"({"model": "m"})").body["code"], "store_unavailable");
}

INSTANTIATE_TEST_SUITE_P(Stores, ServerStores, ::testing::Values("memory", "sqlite"),
                         [](const auto& info) { return info.param; });

// Issue 11 over HTTP: input/output estimates, resolved names, observe, new quota fields.
TEST_F(ServerTest, ProviderLimitsOverHttp) {
  ModelQuota q{10, 0, 0};
  q.max_input_tpm = 100;
  q.max_output_tpm = 50;
  start({{"claude-sonnet-4", q}});
  auto c = client();
  Reply r = post(c, "/v1/acquire",
                 R"({"model": "claude-sonnet-4-20250514", "tokens": 60, "output_tokens": 40})");
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body["resolved_model"], "claude-sonnet-4");
  r = post(c, "/v1/decide", R"({"model": "claude-sonnet-4", "output_tokens": 11})");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body["code"], "output_tpm_exceeded");
  EXPECT_EQ(r.body["stats"]["input_tpm"], 60);
  EXPECT_EQ(r.body["stats"]["output_tpm"], 40);
  r = post(c, "/v1/acquire", R"({"model": "claude-sonnet-4", "output_tokens": 51})");
  EXPECT_EQ(r.status, 422) << r.text;
  expect_error(post(c, "/v1/acquire", R"({"model": "m", "output_tokens": -1})"), 400,
               "invalid_tokens");

  // observe: headers as an object or as a list of pairs (repeats allowed).
  r = post(c, "/v1/observe",
           R"({"model": "claude-sonnet-4-5", "status": 429, "headers": {"retry-after": "30"}})");
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body["resolved_model"], "claude-sonnet-4-5");  // no such family: its own name
  r = post(c, "/v1/observe",
           R"({"model": "claude-sonnet-4", "status": 429,
               "headers": [["Retry-After", "20"], ["retry-after", "junk"]]})");
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body["resolved_model"], "claude-sonnet-4");
  EXPECT_FALSE(r.body["learned"]["cooldown_until"].is_null());
  r = post(c, "/v1/decide", R"({"model": "claude-sonnet-4"})");
  EXPECT_EQ(r.body["code"], "provider_cooldown");
  EXPECT_EQ(r.body["retry_after_ms"], 20000);
  clock_->advance(20s);
  r = post(c, "/v1/decide", R"({"model": "claude-sonnet-4"})");
  EXPECT_EQ(r.body["allowed"], true) << r.text;
  expect_error(post(c, "/v1/observe", R"({"model": "m", "status": 42})"), 400, "invalid_request");
  expect_error(post(c, "/v1/observe", R"({"model": "m", "headers": "retry-after: 1"})"), 400,
               "invalid_request");
  expect_error(post(c, "/v1/observe", R"({"model": "m", "headers": [["a"]]})"), 400,
               "invalid_request");
  expect_error(post(c, "/v1/observe", R"({"model": "m", "format": "aol"})"), 400,
               "invalid_request");
  expect_error(post(c, "/v1/observe", R"({"model": "m", "body": 5})"), 400, "invalid_request");
  r = post(
      c, "/v1/observe",
      R"({"model": "gemini-2.0-flash", "status": 429, "body": "{\"error\": {\"code\": 429, \"status\": \"RESOURCE_EXHAUSTED\", \"details\": [{\"@type\": \"type.googleapis.com/google.rpc.RetryInfo\", \"retryDelay\": \"7s\"}]}}"})");
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body["format"], "gemini");

  // Quotas take the new fields.
  r = put(c, "/v1/quotas/m", R"({"max_input_tpm": 7, "day_start": "pacific_midnight"})");
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body["quota"]["max_input_tpm"], 7);
  EXPECT_EQ(r.body["quota"]["day_start"], "pacific_midnight");
  expect_error(put(c, "/v1/quotas/m", R"({"day_start": "noon"})"), 400, "invalid_request");

  // The metrics carry the new families.
  r = get(c, "/metrics");
  EXPECT_NE(r.text.find("ratelimit_window_output_tokens{model=\"claude-sonnet-4\"} 40"),
            std::string::npos);
  EXPECT_NE(r.text.find("ratelimit_provider_responses_total{model=\"claude-sonnet-4\","
                        "cooldown=\"true\"} 1"),
            std::string::npos);
  EXPECT_NE(r.text.find("ratelimit_provider_values_ignored_total"), std::string::npos);
}

}  // namespace
}  // namespace ratelimit::cli
