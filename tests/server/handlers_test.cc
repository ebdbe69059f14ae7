// The server's handlers without a socket: a Request in, a Response out through an Exchange;
// and the streaming Prometheus writer on its own.
#include "handlers.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "json_format.h"
#include "prometheus_text.h"
#include "test_util.h"

namespace ratelimit::server {
namespace {

using nlohmann::json;
using ratelimit::testing::start_time;

struct Answer {
  std::optional<Response> response;
  std::shared_ptr<Exchange> exchange() {
    return std::make_shared<Exchange>([this](Response r) { response = std::move(r); });
  }
};

Request request(std::string method, std::string path, std::string body = "") {
  Request r;
  r.method = std::move(method);
  r.target = path;
  r.path = std::move(path);
  r.headers = {{"Host", "127.0.0.1:8787"}};
  r.body = std::move(body);
  return r;
}

class HandlersTest : public ::testing::Test {
 protected:
  HandlersTest() {
    Config config;
    config.backend = Backend::memory;
    config.providers = {Provider::local};
    config.quotas = {{"m", {1, 0, 0}}};
    config.clock = clock_;
    limiter_ = std::move(*RateLimiter::open(std::move(config)));
    handlers_ = std::make_unique<Handlers>(*limiter_, ServerOptions{});
  }
  Response call(const Request& req) {
    Answer a;
    handlers_->handle(req, a.exchange());
    EXPECT_TRUE(a.response.has_value());
    return a.response ? std::move(*a.response) : Response{};
  }

  std::shared_ptr<ManualClock> clock_ = std::make_shared<ManualClock>(start_time());
  std::unique_ptr<RateLimiter> limiter_;
  std::unique_ptr<Handlers> handlers_;
};

TEST_F(HandlersTest, AnswersWithoutASocket) {
  Response granted = call(request("POST", "/v1/acquire", R"({"model": "m", "tokens": 5})"));
  EXPECT_EQ(granted.status, 200) << granted.body;
  EXPECT_EQ(granted.header("Cache-Control"), "no-store");
  EXPECT_TRUE(json::parse(granted.body).contains("reservation_id"));
  Response denied = call(request("POST", "/v1/acquire", R"({"model": "m"})"));
  EXPECT_EQ(denied.status, 429);
  EXPECT_FALSE(denied.header("Retry-After").empty());
  EXPECT_EQ(call(request("GET", "/v1/acquire")).status, 405);
  EXPECT_EQ(call(request("POST", "/v1/decide", R"({"tokens": 1e9999})")).status, 400);
  EXPECT_EQ(handlers_->counters().leases, 1u);
}

TEST_F(HandlersTest, TheHeadAloneDecidesRouteHostAndMethod) {
  EXPECT_FALSE(handlers_->check_head(request("POST", "/v1/decide")));
  auto unknown = handlers_->check_head(request("GET", "/nope"));
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);
  Request foreign = request("POST", "/v1/decide");
  foreign.headers = {{"Host", "evil.example"}};
  ASSERT_TRUE(handlers_->check_head(foreign));
  EXPECT_EQ(handlers_->check_head(foreign)->status, 403);
  Request old = request("GET", "/v1/stats");
  old.version = 10;
  old.headers.clear();  // HTTP/1.0 without Host
  EXPECT_FALSE(handlers_->check_head(old));
}

TEST_F(HandlersTest, AClientThatLeftIsNeverGranted) {
  ASSERT_EQ(call(request("POST", "/v1/acquire", R"({"model": "m"})")).status, 200);
  // (abuse_test has clients that leave during the wait.)
  Answer a;
  auto ex = a.exchange();
  ex->client_gone();
  handlers_->handle(request("POST", "/v1/acquire", R"({"model": "m", "wait_ms": 120000})"), ex);
  handlers_->wait_idle();
  EXPECT_FALSE(a.response.has_value()) << "an answer was delivered to a client that had left";
  EXPECT_EQ(limiter_->stats("m")->rpm, 1);
  EXPECT_EQ(limiter_->metrics()->at("m").count(RequestOutcome::admitted), 1u);
  EXPECT_EQ(handlers_->counters().leases, 1u);
}

TEST(PrometheusText, EscapesLabelValuesAndStreamsInPieces) {
  EXPECT_EQ(escape_label_value("a\"b\\c\nd/é"), "a\\\"b\\\\c\\nd/é");
  ModelMetricsMap models;
  for (int i = 0; i < 1000; ++i) models["model-" + std::to_string(i)].requests[0] = i;
  models["say \"hi\" \\ /"].committed = 7;
  ServerSnapshot snap;
  snap.http.push_back({"/v1/acquire", 200, 3});
  auto stream = prometheus_stream(models, snap, 4096);
  std::string whole, piece;
  std::size_t pieces = 0, largest = 0;
  while (stream->next(piece)) {
    ++pieces;
    largest = std::max(largest, piece.size());
    whole += piece;
    piece.clear();
  }
  EXPECT_GT(pieces, 10u);
  EXPECT_LT(largest, 8192u);
  EXPECT_EQ(whole, prometheus_text(models, snap));
  EXPECT_NE(whole.find("ratelimit_reservations_total{model=\"say \\\"hi\\\" \\\\ /\",result="
                       "\"committed\"} 7\n"),
            std::string::npos);
  EXPECT_NE(whole.find("ratelimit_requests_total{model=\"model-999\",outcome=\"admitted\"} 999\n"),
            std::string::npos);
  EXPECT_NE(whole.find("ratelimit_http_requests_total{route=\"/v1/acquire\",code=\"200\"} 3\n"),
            std::string::npos);
  // Each family's HELP and TYPE once, before its series.
  EXPECT_EQ(whole.find("# TYPE ratelimit_requests_total counter"),
            whole.rfind("# TYPE ratelimit_requests_total counter"));
  EXPECT_LT(whole.find("# TYPE ratelimit_requests_total counter"),
            whole.find("ratelimit_requests_total{"));
}

// The decision JSON is written without a DOM (every decide and acquire answer); it must be the
// very text nlohmann/json gives for the same decision.
TEST(DecisionJson, TheWriterMatchesTheDom) {
  std::vector<Decision> decisions;
  Decision d;
  decisions.push_back(d);  // all zero, no resolved name
  d.allowed = true;
  d.code = DecisionCode::ok;
  d.resolved_model = "gpt-4o";
  d.stats.rpm = 3;
  d.stats.max_rpm = 500;
  d.stats.tpm = 1'234'567;
  d.stats.max_tpm = 9'007'199'254'740'991;
  d.stats.rpd = 7;
  d.stats.max_rpd = 10'000;
  d.stats.day_start = start_time();
  d.stats.day_end = start_time() + std::chrono::hours(24) + std::chrono::nanoseconds(500);
  d.stats.input_tpm = 1000;
  d.stats.max_input_tpm = 2000;
  d.stats.output_tpm = -1;  // never sent, but written as given
  d.stats.max_output_tpm = INT64_MAX;
  decisions.push_back(d);
  d.allowed = false;
  d.code = DecisionCode::tpm_exceeded;
  d.retry_after = std::chrono::nanoseconds(1'000'001);  // rounds up to 2 ms
  d.resolved_model = "say \"hi\" \\ /é 模型";
  decisions.push_back(d);
  d.retry_after = Duration::max();  // never: null
  decisions.push_back(d);
  d.code = DecisionCode::provider_limit;
  d.retry_after = std::chrono::seconds(59);
  d.stats.learned.cooldown_until = start_time() + std::chrono::seconds(30);
  d.stats.learned.tokens = {0, start_time() + std::chrono::seconds(59)};
  decisions.push_back(d);
  d.retry_after = std::chrono::nanoseconds(-5);  // clamped to 0
  decisions.push_back(d);
  for (const Decision& x : decisions) {
    const std::optional<std::string> id = "7:42:1";
    EXPECT_EQ(ratelimit::json::decision(x, id), ratelimit::json::decision_via_dom(x, id));
    EXPECT_EQ(ratelimit::json::decision(x, std::nullopt),
              ratelimit::json::decision_via_dom(x, std::nullopt));
    const std::string plain = ratelimit::json::decision(x);
    std::string with_null = ratelimit::json::decision_via_dom(x, std::nullopt);
    with_null.erase(with_null.rfind(",\"reservation_id\":null"));
    EXPECT_EQ(plain, with_null + "}");
    EXPECT_TRUE(nlohmann::json::accept(plain)) << plain;
  }
  // Times: RFC 3339 UTC, fractional seconds trimmed of trailing zeros.
  Decision t;
  t.stats.day_start = start_time() + std::chrono::milliseconds(500);
  t.stats.day_end = start_time() + std::chrono::hours(24) + std::chrono::nanoseconds(1);
  const json j = json::parse(ratelimit::json::decision(t));
  EXPECT_EQ(j["stats"]["day_start"], "2026-02-19T10:00:00.5Z");
  EXPECT_EQ(j["stats"]["day_end"], "2026-02-20T10:00:00.000000001Z");
  t.stats.day_start = TimePoint(std::chrono::seconds(0));       // the epoch is "not started": null
  t.stats.day_end = TimePoint(std::chrono::hours(24 * 83950));  // near the end of int64 ns
  const json k = json::parse(ratelimit::json::decision(t));
  EXPECT_TRUE(k["stats"]["day_start"].is_null());
  EXPECT_EQ(k["stats"]["day_end"], "2199-11-06T00:00:00Z");
}

}  // namespace
}  // namespace ratelimit::server
