// The server's handlers without a socket: a Request in, a Response out through an Exchange;
// and the streaming Prometheus writer on its own.
#include "handlers.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "json_format.h"
#include "prometheus_text.h"
#include "proxy_counters_fixture.h"
#include "proxy_stats.h"
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

// --- the proxy's figures in GET /v1/stats (issue 14) ------------------------------------------

// Two upstreams with calls and an idle one; model names with markup, a quote, no name (refused
// before the model was known) and bytes that are not UTF-8.
ProxyCounters fake_proxy_counters() {
  return testing::proxy_counters_with({{"openai\tgpt-4o\tforwarded", 3},
                                       {"openai\tgpt-4o\tlimited", 1},
                                       {"openai\tteam/<b>x\"y\tforwarded", 2},
                                       {"openai\t\tinvalid", 1},
                                       {"openai\tbad\xff\tforwarded", 6},
                                       {"anthropic\tclaude\tupstream_429", 4}});
}

TEST_F(HandlersTest, StatsHaveNoProxyWithoutASource) {
  Response r = call(request("GET", "/v1/stats"));
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = json::parse(r.body);
  EXPECT_TRUE(j.contains("models")) << r.body;
  EXPECT_FALSE(j.contains("proxy")) << r.body;
  EXPECT_EQ(r.body, ratelimit::json::status({{"m", limiter_->decide("m", 0)}}));
}

TEST_F(HandlersTest, StatsShowTheProxyFiguresFromTheSource) {
  const std::string without = call(request("GET", "/v1/stats")).body;
  int calls = 0;
  handlers_->set_proxy_counters([&calls] {
    ++calls;
    return fake_proxy_counters();
  });
  Response r = call(request("GET", "/v1/stats"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(calls, 1);
  const json j = json::parse(r.body);
  // The models are as before, the proxy beside them.
  EXPECT_EQ(j["models"], json::parse(without)["models"]);
  ASSERT_TRUE(j.contains("proxy")) << r.body;
  const json& p = j["proxy"];
  EXPECT_EQ(p["tokens_committed"], 1234);
  EXPECT_EQ(p["waited"], 5);
  EXPECT_EQ(p["upstream_429"], 4);
  EXPECT_EQ(p["passed_unknown"], 2);
  EXPECT_EQ(p["in_flight"], 1);
  ASSERT_EQ(p["upstreams"].size(), 3u) << r.body;

  const json& openai = p["upstreams"]["openai"];
  EXPECT_EQ(openai["requests"], json({{"forwarded", 11}, {"limited", 1}, {"invalid", 1}}));
  EXPECT_EQ(openai["models"], json({{"", {{"invalid", 1}}},
                                    {"bad\xEF\xBF\xBD", {{"forwarded", 6}}},
                                    {"gpt-4o", {{"forwarded", 3}, {"limited", 1}}},
                                    {"team/<b>x\"y", {{"forwarded", 2}}}}))
      << r.body;
  const json& l = openai["latency"];
  EXPECT_EQ(l["count"], 2);
  EXPECT_DOUBLE_EQ(l["sum_seconds"].get<double>(), 0.03);
  EXPECT_DOUBLE_EQ(l["p50_seconds"].get<double>(), 0.015);  // halfway into (0.005, 0.025]
  EXPECT_NEAR(l["p99_seconds"].get<double>(), 0.0248, 1e-12);
  EXPECT_EQ(l["bounds"], json({0.005, 0.025, 0.1, 0.5, 1, 5, 30, 120}));
  EXPECT_EQ(l["buckets"], json({0, 2, 0, 0, 0, 0, 0, 0, 0}));

  const json& anthropic = p["upstreams"]["anthropic"];
  EXPECT_EQ(anthropic["requests"], json({{"upstream_429", 4}}));
  EXPECT_EQ(anthropic["models"], json({{"claude", {{"upstream_429", 4}}}}));
  EXPECT_EQ(anthropic["latency"]["count"], 1);
  EXPECT_DOUBLE_EQ(anthropic["latency"]["sum_seconds"].get<double>(), 200.0);
  EXPECT_DOUBLE_EQ(anthropic["latency"]["p50_seconds"].get<double>(), 120.0);  // the last bound
  EXPECT_DOUBLE_EQ(anthropic["latency"]["p99_seconds"].get<double>(), 120.0);

  // An upstream without calls is listed, its quantiles null.
  const json& gemini = p["upstreams"]["gemini"];
  EXPECT_EQ(gemini["requests"], json::object());
  EXPECT_EQ(gemini["models"], json::object());
  EXPECT_EQ(gemini["latency"]["count"], 0);
  EXPECT_TRUE(gemini["latency"]["p50_seconds"].is_null());
  EXPECT_TRUE(gemini["latency"]["p99_seconds"].is_null());

  // Removing the source removes the key.
  handlers_->set_proxy_counters({});
  EXPECT_FALSE(json::parse(call(request("GET", "/v1/stats")).body).contains("proxy"));
  EXPECT_EQ(calls, 1);
}

TEST(ProxyStats, QuantilesInterpolateInsideABucket) {
  const std::size_t n = std::size(kProxyLatencyBounds) + 1;
  std::vector<std::uint64_t> b(n);
  EXPECT_FALSE(latency_quantile(b, 0.5));
  b[0] = 1;                                                    // (0, 0.005]
  b[3] = 3;                                                    // (0.1, 0.5]
  EXPECT_DOUBLE_EQ(*latency_quantile(b, 0.25), 0.005);         // rank 1: the top of bucket 0
  EXPECT_DOUBLE_EQ(*latency_quantile(b, 0.5), 0.1 + 0.4 / 3);  // rank 2: a third into (0.1, 0.5]
  EXPECT_DOUBLE_EQ(*latency_quantile(b, 1), 0.5);
  std::string body = "{}";
  add_proxy_stats(body, ProxyCounters{});
  EXPECT_EQ(json::parse(body), json::parse(R"({"proxy": {"tokens_committed": 0, "waited": 0,
      "upstream_429": 0, "passed_unknown": 0, "in_flight": 0, "upstreams": {}}})"));
}

// The page draws the proxy's figures only when /v1/stats carries them, and names only as text.
TEST_F(HandlersTest, ThePageHasAProxySectionAndNoHtmlFromData) {
  Response page = call(request("GET", "/"));
  ASSERT_EQ(page.status, 200);
  EXPECT_NE(page.body.find("<section id=\"proxy\" hidden>"), std::string::npos);
  EXPECT_NE(page.body.find("renderProxy(body.proxy)"), std::string::npos);
  EXPECT_NE(page.body.find("proxySection.hidden = !proxy"), std::string::npos);
  for (const char* sink : {"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"}) {
    EXPECT_EQ(page.body.find(sink), std::string::npos) << sink;
  }
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
