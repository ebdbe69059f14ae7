// The limiting proxy (`serve --upstream`, docs/proxy.md): its API rules on strings, and a
// Server in-process forwarding to the fake provider (fake_provider.h) on loopback: each API
// streamed and not, exact admission under concurrency, 429s, unreachable and dropped
// upstreams, a client that leaves mid-stream, bad input.
#include "proxy.h"

#include <httplib.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "fake_provider.h"
#include "gtest/gtest.h"
#include "proxy_api.h"
#include "ratelimit/tokens.h"
#include "raw_client.h"
#include "server.h"
#include "slow_upstream.h"

namespace ratelimit::server {
namespace {

using nlohmann::json;
using testing::FakeProvider;
using namespace std::chrono_literals;

// --- the API rules, without sockets ---

TEST(ProxyUpstream, ParsesNamesUrlsAndDialects) {
  auto u = parse_upstream("openai");
  ASSERT_TRUE(u) << u.error().message;
  EXPECT_EQ(u->url, "https://api.openai.com");
  EXPECT_TRUE(u->tls);
  EXPECT_EQ(u->port, "443");
  u = parse_upstream("local=http://127.0.0.1:9000/v1beta/,api=gemini");
  ASSERT_TRUE(u) << u.error().message;
  EXPECT_EQ(u->name, "local");
  EXPECT_EQ(u->api, UpstreamApi::gemini);
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, "9000");
  EXPECT_EQ(u->base_path, "/v1beta");
  u = parse_upstream("anthropic=http://[::1]:8080");
  ASSERT_TRUE(u) << u.error().message;
  EXPECT_EQ(u->api, UpstreamApi::anthropic);
  EXPECT_EQ(u->host, "::1");
}

TEST(ProxyUpstream, RefusesBadSpecsWithTheFix) {
  for (const char* bad :
       {"v1=http://x", "metrics=http://x", "healthz", "mine=http://x", "openai=ftp://x",
        "openai=http://", "openai=http://x:99999", "openai=http://x?key=1",
        "openai=http://x,api=cohere", "a b=http://x", "custom"}) {
    auto u = parse_upstream(bad);
    ASSERT_FALSE(u) << bad;
    EXPECT_EQ(u.error().code, ErrorCode::invalid_argument);
    EXPECT_NE(u.error().message.find("--upstream"), std::string::npos) << u.error().message;
  }
  EXPECT_NE(parse_upstream("v1=http://x").error().message.find("own routes"), std::string::npos);
}

TEST(ProxyApi, ClassifiesAndEstimatesPerProvider) {
  using proxy::Call;
  auto c = proxy::classify(UpstreamApi::openai, "POST", "/v1/chat/completions",
                           R"({"model":"gpt-4o","messages":[{"role":"user","content":"abcdefgh"}],
                               "max_tokens":50,"stream":true})");
  ASSERT_EQ(c.kind, Call::Kind::inference) << c.error;
  EXPECT_EQ(c.model, "gpt-4o");
  EXPECT_EQ(c.estimate.input, 3);  // "user" + "abcdefgh": 12 bytes
  EXPECT_EQ(c.estimate.output, 50);
  EXPECT_TRUE(c.stream);
  EXPECT_TRUE(c.add_include_usage);
  c = proxy::classify(UpstreamApi::openai, "GET", "/v1/models", "");
  EXPECT_EQ(c.kind, Call::Kind::other);
  c = proxy::classify(UpstreamApi::anthropic, "POST", "/v1/messages", R"({"messages":[]})");
  EXPECT_EQ(c.kind, Call::Kind::unparseable);
  EXPECT_NE(c.error.find("\"model\""), std::string::npos);
  c = proxy::classify(UpstreamApi::anthropic, "POST", "/v1/messages", "{not json");
  EXPECT_EQ(c.kind, Call::Kind::unparseable);
  c = proxy::classify(UpstreamApi::gemini, "POST",
                      "/v1beta/models/gemini-2.0-flash:generateContent",
                      R"({"contents":[{"parts":[{"text":"abcd"}]}]})");
  ASSERT_EQ(c.kind, Call::Kind::inference) << c.error;
  EXPECT_EQ(c.model, "gemini-2.0-flash");
  EXPECT_EQ(c.estimate.output, kDefaultOutputEstimate);
}

// classify() and usage_of() read common bodies without nlohmann/json and fall back to it for
// the rest: on every body, valid or not, they must say what the full parser says.
TEST(ProxyApi, TheFastReaderAgreesWithTheFullParser) {
  const std::string requests[] = {
      R"({"model":"gpt-4o","messages":[{"role":"user","content":"abcdefgh"}],"max_tokens":50})",
      R"( {"model" : "m", "messages" : [ {"role":"user", "content":"a\nb\"c\\d\/e\u00e9\u20ac"} ],
          "stream" : true , "max_completion_tokens": 7} )",
      R"({"model":"m","messages":[{"content":"\ud83d\ude00 é € 😀"}],"stream":false})",
      R"({"model":"m","prompt":"x","max_tokens":1.5,"max_output_tokens":9})",
      R"({"model":"m","prompt":"x","max_tokens":-3})",
      R"({"model":"m","prompt":"x","max_tokens":-0,"stream":"true"})",
      R"({"model":"m","prompt":"x","max_tokens":1e3})",
      R"({"model":"m","prompt":"x","max_tokens":12345678901234567890})",
      R"({"model":"m","prompt":"x","max_tokens":123456789012345678})",
      R"({"model":"m","prompt":"x","max_tokens":"5"})",
      R"({"model":"m","input":[1,2.5,-3e-2,true,false,null,{"a":{"b":["c"]}}],"tools":[]})",
      R"({"model":"m","system":"s","instructions":"i","messages":[],"input":"n","prompt":"p"})",
      R"({"model":"m","model":"n","messages":[]})",
      R"({"model":"m","messages":[{"content":"a"}],"messages":[{"content":"bbbb"}]})",
      R"({"model":"m","max_tokens":5,"max_tokens":6})",
      R"({"mod\u0065l":"m","messages":[]})",
      R"({"model":"m\u0031","messages":[]})",
      R"({"model":"","messages":[]})",
      R"({"model":5,"messages":[]})",
      R"({"messages":[]})",
      R"({"model":"m","stream":true,"stream_options":{"include_usage":true}})",
      R"({"model":"m","stream":true,"stream_options":null})",
      R"({"model":"m","stream":true,"stream_options":{}})",
      R"({"model":"m","messages":[{"content":"\ud800"}]})",
      R"({"model":"m","messages":[{"content":"\udc00"}]})",
      R"({"model":"m","messages":[{"content":"\ud83dx"}]})",
      R"({"model":"m","messages":[{"content":"\x"}]})",
      R"({"model":"m","messages":[01]})",
      R"({"model":"m","messages":[1.]})",
      R"({"model":"m","messages":[-]})",
      R"({"model":"m","messages":[tru]})",
      R"({"model":"m","messages":[1,]})",
      R"({"model":"m",})",
      R"({"model":"m"} x)",
      R"({"model":"m"}})",
      "{\"model\":\"m\",\"messages\":[\"\xc3\x28\"]}",          // invalid UTF-8
      "{\"model\":\"m\",\"messages\":[\"\xe0\x80\xaf\"]}",      // overlong
      "{\"model\":\"m\",\"messages\":[\"\xed\xa0\x80\"]}",      // an encoded surrogate
      "{\"model\":\"m\",\"messages\":[\"\xf4\x90\x80\x80\"]}",  // above U+10FFFF
      "{\"model\":\"m\",\"messages\":[\"a\tb\"]}",              // a raw control character
      "\xef\xbb\xbf{\"model\":\"m\"}",                          // a byte order mark
      std::string(300, '[') + std::string(300, ']'),
      R"({"model":"m","input":)" + std::string(300, '[') + std::string(300, ']') + "}",
      "",
      "[]",
      "null",
      R"({"contents":[{"parts":[{"text":"abcd"}]}],"generationConfig":{"maxOutputTokens":77}})",
      R"({"contents":[],"systemInstruction":{"parts":[{"text":"xy"}]},"generationConfig":5})",
      R"({"contents":[],"generationConfig":{"maxOutputTokens":7,"maxOutputTokens":8}})",
      R"({"contents":[],"generationConfig":{"maxOutputTokens":7.0}})",
  };
  const std::pair<UpstreamApi, std::string> paths[] = {
      {UpstreamApi::openai, "/v1/chat/completions"},
      {UpstreamApi::openai, "/v1/embeddings"},
      {UpstreamApi::anthropic, "/v1/messages"},
      {UpstreamApi::gemini, "/v1beta/models/gemini-2.0-flash:streamGenerateContent"},
  };
  for (const auto& [api, path] : paths) {
    for (const std::string& body : requests) {
      const proxy::Call fast = proxy::classify(api, "POST", path, body);
      const proxy::Call full = proxy::classify_with_full_parser(api, "POST", path, body);
      SCOPED_TRACE(path + " " + body);
      EXPECT_EQ(fast.kind, full.kind);
      EXPECT_EQ(fast.model, full.model);
      EXPECT_EQ(fast.estimate.input, full.estimate.input);
      EXPECT_EQ(fast.estimate.output, full.estimate.output);
      EXPECT_EQ(fast.stream, full.stream);
      EXPECT_EQ(fast.add_include_usage, full.add_include_usage);
      EXPECT_EQ(fast.error, full.error);
    }
  }
  const std::string responses[] = {
      R"({"id":"x","usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}})",
      R"({"usage":{"input_tokens":5,"output_tokens":6,"cache_creation_input_tokens":2}})",
      R"({"usage":{"input_tokens":5,"output_tokens":6.5}})",
      R"({"usage":{"prompt_tokens":1,"prompt_tokens":2}})",
      R"({"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2}})",
      R"({"usage":{"prompt_tokens":12345678901234567890}})",
      R"({"usage":{"prompt_t\u006fkens":3}})",
      R"({"usage":null})",
      R"({"usage":[1]})",
      R"({"usage":{}})",
      R"({"choices":[{"message":{"content":"\"usage\":{\"prompt_tokens\":9}"}}]})",
      R"({"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":4,"thoughtsTokenCount":5}})",
      R"({"usageMetadata":{"promptTokenCount":-3}} )",
      R"({"usage":{"prompt_tokens":1}} trailing)",
      "{\"usage\":{\"prompt_tokens\":1},\"x\":\"\xff\"}",
      "",
      "[]",
  };
  for (UpstreamApi api : {UpstreamApi::openai, UpstreamApi::anthropic, UpstreamApi::gemini}) {
    for (const std::string& body : responses) {
      SCOPED_TRACE(std::string(to_string(api)) + " " + body);
      const auto fast = proxy::usage_of(api, body);
      const auto full = proxy::usage_of_with_full_parser(api, body);
      ASSERT_EQ(fast.has_value(), full.has_value());
      if (fast) {
        EXPECT_EQ(fast->input, full->input);
        EXPECT_EQ(fast->output, full->output);
      }
    }
  }
}

TEST(ProxyApi, SplicesIncludeUsageIntoTheTextAsSent) {
  EXPECT_EQ(proxy::splice_include_usage(R"( {"model":"m", "stream":true})"),
            R"( {"stream_options":{"include_usage":true},"model":"m", "stream":true})");
  EXPECT_EQ(proxy::splice_include_usage("{ }"), R"({"stream_options":{"include_usage":true} })");
}

TEST(ProxyApi, EventReaderKeepsUsageAndStripsTheChunkItAskedFor) {
  proxy::EventReader r(UpstreamApi::openai, true);
  std::string out;
  const std::string a = "data: {\"choices\":[{\"delta\":{}}]}\n\n";
  const std::string u =
      "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n";
  const std::string all = a + u + "data: [DONE]\n\n";
  for (char ch : all) r.feed(std::string_view(&ch, 1), out);  // byte by byte
  r.finish(out);
  EXPECT_EQ(out, a + "data: [DONE]\n\n");
  ASSERT_TRUE(r.usage());
  EXPECT_EQ(r.usage()->input, 3);
  EXPECT_EQ(r.usage()->output, 4);
}

TEST(ProxyApi, ArrayReaderTakesTheLastUsageOfAJsonArrayStream) {
  const std::string first = R"({"candidates":[{"content":{"parts":[{"text":"} ] { [ \\\" \\"}]}}],)"
                            R"("usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":1}})";
  const std::string last =
      R"({"candidates":[],"usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":9,)"
      R"("thoughtsTokenCount":2}})";
  const std::string all = "[" + first + ",\r\n" + last + "]";
  proxy::EventReader r(UpstreamApi::gemini, false, true);
  std::string out;
  EXPECT_FALSE(r.usage());
  for (char ch : all) r.feed(std::string_view(&ch, 1), out);  // byte by byte
  r.finish(out);
  EXPECT_EQ(out, all);  // passed on untouched
  ASSERT_TRUE(r.usage());
  EXPECT_EQ(r.usage()->input, 7);
  EXPECT_EQ(r.usage()->output, 11);

  // Cut short inside the second element: the first element's usage is what was seen.
  proxy::EventReader cut(UpstreamApi::gemini, false, true);
  out.clear();
  cut.feed(all.substr(0, all.size() - 20), out);
  cut.finish(out);
  ASSERT_TRUE(cut.usage());
  EXPECT_EQ(cut.usage()->output, 1);

  // An element past the size bound is passed on, unread; the next one is read again.
  proxy::EventReader big(UpstreamApi::gemini, false, true);
  out.clear();
  const std::string huge = R"({"x":")" + std::string(5 * 1024 * 1024, 'a') +
                           R"(","usageMetadata":{"promptTokenCount":99}})";
  big.feed("[" + huge + ",", out);
  EXPECT_FALSE(big.usage());
  big.feed(last + "]", out);
  ASSERT_TRUE(big.usage());
  EXPECT_EQ(big.usage()->input, 7);
  EXPECT_EQ(out.size(), huge.size() + last.size() + 3);
}

// --- end to end ---

std::unique_ptr<RateLimiter> limiter_with(QuotaMap quotas) {
  Config config;
  config.backend = Backend::memory;
  config.providers = {Provider::local};
  config.quotas = std::move(quotas);
  auto opened = RateLimiter::open(std::move(config));
  EXPECT_TRUE(opened) << opened.error().message;
  return std::move(*opened);
}

class Proxied {
 public:
  Proxied(RateLimiter& limiter, const FakeProvider& fake, ServerOptions o = {},
          std::vector<std::string> extra = {}) {
    o.listen = {"127.0.0.1", 0};
    for (const char* api : {"openai", "anthropic", "gemini"}) {
      auto u = parse_upstream(std::string(api) + "=" + fake.url());
      EXPECT_TRUE(u);
      o.upstreams.push_back(*u);
    }
    for (const auto& e : extra) {
      auto u = parse_upstream(e);
      EXPECT_TRUE(u) << e;
      o.upstreams.push_back(*u);
    }
    server_ = std::make_unique<Server>(limiter, std::move(o));
    auto port = server_->bind();
    EXPECT_TRUE(port) << port.error().message;
    port_ = *port;
    thread_ = std::thread([this] { server_->run(); });
  }
  ~Proxied() {
    server_->stop();
    thread_.join();
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(30, 0);
    return c;
  }
  int port() const { return port_; }

 private:
  std::unique_ptr<Server> server_;
  int port_ = 0;
  std::thread thread_;
};

const QuotaMap kQuotas = {{"gpt-4o", {.max_rpm = 1000, .max_tpm = 10'000'000}},
                          {"claude-sonnet-4", {.max_rpm = 1000, .max_tpm = 10'000'000}},
                          {"gemini-2.0-flash", {.max_rpm = 1000, .max_tpm = 10'000'000}}};

std::int64_t tokens_of(RateLimiter& l, const char* model) {
  auto s = l.stats(model);
  EXPECT_TRUE(s);
  return s ? s->tpm : -1;
}

struct Case {
  const char* path;
  std::string body;
  const char* model;
  int in, out;
};

std::vector<Case> cases(bool stream) {
  const std::string s = stream ? "true" : "false";
  return {
      {"/openai/v1/chat/completions",
       R"({"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":)" + s + "}",
       "gpt-4o", FakeProvider::kOpenAiIn, FakeProvider::kOpenAiOut},
      {"/anthropic/v1/messages",
       R"({"model":"claude-sonnet-4","max_tokens":100,"messages":[{"role":"user","content":"hi"}],"stream":)" +
           s + "}",
       "claude-sonnet-4", FakeProvider::kAnthropicIn, FakeProvider::kAnthropicOut},
      {stream ? "/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
              : "/gemini/v1beta/models/gemini-2.0-flash:generateContent",
       R"({"contents":[{"parts":[{"text":"hi"}]}]})", "gemini-2.0-flash", FakeProvider::kGeminiIn,
       FakeProvider::kGeminiOut},
  };
}

void expect_end_to_end(bool stream) {
  FakeProvider fake;
  auto limiter = limiter_with(kQuotas);
  Proxied proxy(*limiter, fake);
  for (const Case& c : cases(stream)) {
    SCOPED_TRACE(c.path);
    auto cli = proxy.client();
    std::string got;
    httplib::Headers h = {{"Authorization", "Bearer sk-secret"}};
    auto res = cli.Post(c.path, h, c.body, "application/json");
    ASSERT_TRUE(res) << httplib::to_string(res.error());
    EXPECT_EQ(res->status, 200) << res->body;
    if (stream) {
      EXPECT_NE(res->body.find("data: "), std::string::npos);
      EXPECT_EQ(res->get_header_value("Transfer-Encoding"), "chunked");
      EXPECT_EQ(res->body.find("\"choices\":[]"), std::string::npos)  // usage chunk stripped
          << res->body;
    } else {
      EXPECT_NE(res->body.find("usage"), std::string::npos);
    }
    EXPECT_EQ(tokens_of(*limiter, c.model), c.in + c.out) << res->body;
    auto st = limiter->stats(c.model);
    EXPECT_EQ(st->rpm, 1);
  }
  // The key reached the provider untouched, with Host rewritten and no compression asked.
  for (const auto& seen : fake.seen()) {
    EXPECT_EQ(seen.headers.find("Authorization")->second, "Bearer sk-secret");
    EXPECT_EQ(seen.headers.find("Accept-Encoding")->second, "identity");
    EXPECT_EQ(seen.headers.find("Host")->second, "127.0.0.1:" + std::to_string(fake.port()));
  }
  if (stream) {  // the proxy asked OpenAI for the usage chunk
    EXPECT_NE(fake.seen()[0].body.find(R"("stream_options":{"include_usage":true})"),
              std::string::npos);
  }
}

TEST(Proxy, EachApiNotStreamedCommitsTheReportedUsage) { expect_end_to_end(false); }

// Gemini's streamGenerateContent without ?alt=sse: one JSON array, passed on as it comes, and
// its last usageMetadata committed (not the estimate).
TEST(Proxy, GeminiStreamedAsAJsonArrayCommitsItsLastUsage) {
  FakeProvider fake;
  auto limiter = limiter_with(kQuotas);
  Proxied proxy(*limiter, fake);
  auto cli = proxy.client();
  auto res = cli.Post("/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent",
                      R"({"contents":[{"parts":[{"text":"hi"}]}]})", "application/json");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(res->get_header_value("Transfer-Encoding"), "chunked");
  EXPECT_EQ(res->body.front(), '[');
  EXPECT_EQ(res->body.back(), ']');
  EXPECT_TRUE(nlohmann::json::parse(res->body, nullptr, false).is_array()) << res->body;
  EXPECT_EQ(tokens_of(*limiter, "gemini-2.0-flash"),
            FakeProvider::kGeminiIn + FakeProvider::kGeminiOut);
}
TEST(Proxy, EachApiStreamedCommitsTheReportedUsage) { expect_end_to_end(true); }

TEST(Proxy, NonInferenceRequestsPassUnlimited) {
  FakeProvider fake;
  auto limiter = limiter_with(kQuotas);
  Proxied proxy(*limiter, fake);
  auto res = proxy.client().Get("/openai/v1/models");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_NE(res->body.find("gpt-4o"), std::string::npos);
  EXPECT_EQ(limiter->stats("gpt-4o")->rpm, 0);
}

// 16 clients send 100 calls in all with --max-wait 0 under `quota`: exactly 60 reach the
// provider, 40 get the proxy's 429 in OpenAI's shape with Retry-After.
void expect_exactly_sixty(ModelQuota quota, const std::string& body) {
  FakeProvider fake;
  auto limiter = limiter_with({{"gpt-4o", quota}});
  ServerOptions o;
  o.max_wait = Duration(0);
  Proxied proxy(*limiter, fake, o);
  std::atomic<int> ok{0}, limited{0}, other{0};
  std::atomic<int> next{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 16; ++t) {
    clients.emplace_back([&] {
      auto cli = proxy.client();
      while (next.fetch_add(1) < 100) {
        auto res = cli.Post("/openai/v1/chat/completions", body, "application/json");
        if (res && res->status == 200) {
          ok.fetch_add(1);
        } else if (res && res->status == 429 && !res->get_header_value("Retry-After").empty() &&
                   json::parse(res->body)["error"]["code"] == "rate_limit_exceeded") {
          limited.fetch_add(1);
        } else {
          other.fetch_add(1);
        }
      }
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_EQ(ok.load(), 60);
  EXPECT_EQ(limited.load(), 40);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(fake.hits(), 60);
}

TEST(Proxy, ExactlyTheRpmReachesTheProviderUnderConcurrency) {
  expect_exactly_sixty({.max_rpm = 60, .max_tpm = 0},
                       R"({"model":"gpt-4o","messages":[{"role":"user","content":"x"}]})");
}

TEST(Proxy, ExactlyTheTpmReachesTheProviderUnderConcurrency) {
  // Estimate 11 + 7 tokens ("user" and 40 bytes of content; max_tokens 7), the fake's usage
  // too: a budget of 60 such calls admits exactly 60.
  const std::string content(40, 'a');
  expect_exactly_sixty(
      {.max_rpm = 0, .max_tpm = 60 * 18},
      R"({"model":"gpt-4o","max_tokens":7,"messages":[{"role":"user","content":")" + content +
          R"("}]})");
}

TEST(Proxy, MetricsShowTheProxiedCalls) {
  FakeProvider fake;
  auto limiter = limiter_with(kQuotas);
  Proxied proxy(*limiter, fake);
  auto res = proxy.client().Post("/openai/v1/chat/completions",
                                 R"({"model":"gpt-4o","messages":[]})", "application/json");
  ASSERT_TRUE(res);
  auto m = proxy.client().Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->status, 200);
  for (const char* line :
       {"ratelimit_proxy_requests_total{upstream=\"openai\",model=\"gpt-4o\",outcome=\"forwarded\"}"
        " 1",
        "ratelimit_proxy_tokens_committed_total 18",
        "ratelimit_proxy_upstream_latency_seconds_count{upstream=\"openai\"} 1",
        "ratelimit_proxy_upstream_latency_seconds_count{upstream=\"gemini\"} 0"}) {
    EXPECT_NE(m->body.find(line), std::string::npos) << line;
  }
  EXPECT_NE(m->body.find("ratelimit_server_"), std::string::npos);  // the sidecar's own too
  // And GET /v1/stats (the live page's source) carries the same figures.
  auto st = proxy.client().Get("/v1/stats");
  ASSERT_TRUE(st);
  ASSERT_EQ(st->status, 200) << st->body;
  const json j = json::parse(st->body, nullptr, false);
  ASSERT_TRUE(j.contains("proxy")) << st->body;
  EXPECT_EQ(j["proxy"]["tokens_committed"], 18) << st->body;
  EXPECT_EQ(j["proxy"]["upstreams"]["openai"]["requests"]["forwarded"], 1) << st->body;
  EXPECT_EQ(j["proxy"]["upstreams"]["openai"]["models"]["gpt-4o"]["forwarded"], 1) << st->body;
  EXPECT_EQ(j["proxy"]["upstreams"]["openai"]["latency"]["count"], 1) << st->body;
}

TEST(Proxy, UpstreamTooManyRequestsIsObservedSoOthersWaitInstead) {
  FakeProvider fake;
  fake.answer_429 = 1;
  fake.retry_after_s = 30;
  auto limiter = limiter_with(kQuotas);
  ServerOptions o;
  o.max_wait = Duration(0);
  Proxied proxy(*limiter, fake, o);
  const std::string body = R"({"model":"gpt-4o","messages":[]})";
  auto first = proxy.client().Post("/openai/v1/chat/completions", body, "application/json");
  ASSERT_TRUE(first);
  EXPECT_EQ(first->status, 429);  // the provider's own, passed through
  EXPECT_EQ(first->get_header_value("retry-after"), "30");
  auto second = proxy.client().Post("/openai/v1/chat/completions", body, "application/json");
  ASSERT_TRUE(second);
  EXPECT_EQ(second->status, 429);  // ours: the cooldown learned from the first
  EXPECT_NE(second->body.find("ratelimit proxy"), std::string::npos) << second->body;
  EXPECT_EQ(fake.hits(), 1);
  // The first kept its request and got its estimated tokens back.
  EXPECT_EQ(limiter->stats("gpt-4o")->rpm, 1);
  EXPECT_EQ(limiter->stats("gpt-4o")->tpm, 0);
}

TEST(Proxy, RetriesAnUpstream429AfterItsHintWhenAsked) {
  FakeProvider fake;
  fake.answer_429 = 1;
  fake.retry_after_s = 1;
  auto limiter = limiter_with(kQuotas);
  ServerOptions o;
  o.retry_429 = 1;
  Proxied proxy(*limiter, fake, o);
  const auto t0 = std::chrono::steady_clock::now();
  auto res = proxy.client().Post("/anthropic/v1/messages",
                                 R"({"model":"claude-sonnet-4","max_tokens":10,"messages":[]})",
                                 "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 900ms);
  EXPECT_EQ(fake.hits(), 2);
  EXPECT_EQ(tokens_of(*limiter, "claude-sonnet-4"),
            FakeProvider::kAnthropicIn + FakeProvider::kAnthropicOut);
}

TEST(Proxy, AnUnreachableUpstreamCancelsTheReservation) {
  FakeProvider fake;
  auto limiter = limiter_with(kQuotas);
  int closed_port;
  {
    FakeProvider gone;
    closed_port = gone.port();
  }
  Proxied proxy(*limiter, fake, {},
                {"down=http://127.0.0.1:" + std::to_string(closed_port) + ",api=openai"});
  auto res = proxy.client().Post("/down/v1/chat/completions", R"({"model":"gpt-4o","messages":[]})",
                                 "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 502);
  EXPECT_NE(res->body.find("cannot connect"), std::string::npos) << res->body;
  EXPECT_EQ(limiter->stats("gpt-4o")->rpm, 0);  // cancelled: never reached it
}

TEST(Proxy, ADroppedAnswerKeepsTheRequestAndRefundsTheTokens) {
  FakeProvider fake;
  fake.drop = 1;
  auto limiter = limiter_with(kQuotas);
  Proxied proxy(*limiter, fake);
  auto res = proxy.client().Post("/openai/v1/chat/completions",
                                 R"({"model":"gpt-4o","messages":[]})", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 502);
  EXPECT_EQ(limiter->stats("gpt-4o")->rpm, 1);
  EXPECT_EQ(limiter->stats("gpt-4o")->tpm, 0);
}

// What arrives on `fd` until `text` is seen (or the deadline passes).
std::string read_until(int fd, const std::string& text, std::chrono::milliseconds timeout) {
  std::string got;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (got.find(text) == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<std::size_t>(n));
  }
  return got;
}

// A streamed chat completion as a raw request (n: 1,234 output tokens estimated).
constexpr const char* kStreamedChat =
    "POST /openai/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
    "application/json\r\nContent-Length: 55\r\n\r\n"
    R"({"model":"gpt-4o","messages":[],"stream":true,"n":1234})";

TEST(Proxy, AClientThatLeavesMidStreamLeaksNoReservation) {
  FakeProvider fake;
  fake.event_gap_ms = 300;
  auto limiter = limiter_with(kQuotas);
  Proxied proxy(*limiter, fake);
  {
    testing::RawConn raw(proxy.port());
    ASSERT_TRUE(raw.ok()) << raw.error();
    raw.send(kStreamedChat);
    const std::string got = read_until(raw.fd(), "data: ", 10s);
    ASSERT_NE(got.find("200"), std::string::npos) << got;
    EXPECT_EQ(limiter->stats("gpt-4o")->tpm, kDefaultOutputEstimate);  // the estimate, held
  }  // the client hangs up after the first event
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (limiter->stats("gpt-4o")->tpm != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(limiter->stats("gpt-4o")->tpm, 0);  // refunded, not left at the estimate
  EXPECT_EQ(limiter->stats("gpt-4o")->rpm, 1);
}

// The head of a streamed answer reaches the client at once, even while the upstream takes its
// time over the first event (a model's time to its first token); when the first event comes
// with the head, they are written together (proxy_bench's fake does that).
TEST(Proxy, AStreamsHeadIsNotHeldBackUntilItsFirstEvent) {
  FakeProvider fake;
  fake.hold_first = true;
  auto limiter = limiter_with(kQuotas);
  Proxied proxy(*limiter, fake);
  testing::RawConn raw(proxy.port());
  ASSERT_TRUE(raw.ok()) << raw.error();
  raw.send(kStreamedChat);
  const std::string head = read_until(raw.fd(), "\r\n\r\n", 10s);
  fake.release_first();
  EXPECT_EQ(head.rfind("HTTP/1.1 200", 0), 0u) << head;
  EXPECT_NE(head.find("text/event-stream"), std::string::npos) << head;
  EXPECT_EQ(head.find("data: "), std::string::npos) << head;  // the event was still held
  const std::string rest = read_until(raw.fd(), "\r\n0\r\n\r\n", 10s);
  EXPECT_NE(rest.find("[DONE]"), std::string::npos) << rest;
  EXPECT_EQ(limiter->stats("gpt-4o")->rpm, 1);
}

TEST(Proxy, BadInputGetsTheProvidersErrorShape) {
  FakeProvider fake;
  auto limiter = limiter_with(kQuotas);
  ServerOptions o;
  o.proxy_max_body = 1024;
  Proxied proxy(*limiter, fake, o);
  auto cli = proxy.client();
  auto res = cli.Post("/openai/v1/chat/completions", "{not json", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_EQ(json::parse(res->body)["error"]["type"], "invalid_request_error");
  res = cli.Post("/anthropic/v1/messages", R"({"messages":[]})", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_EQ(json::parse(res->body)["type"], "error");
  EXPECT_NE(res->body.find("model"), std::string::npos);
  res = proxy.client().Post("/gemini/v1beta/models/gemini-2.0-flash:generateContent",
                            std::string(2048, ' '), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 413);
  EXPECT_EQ(json::parse(res->body)["error"]["status"], "INVALID_ARGUMENT");
  res = proxy.client().Get("/nope/v1/models");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
  EXPECT_EQ(fake.hits(), 0);
  EXPECT_EQ(limiter->stats("gpt-4o")->rpm, 0);
}

TEST(Proxy, PassUnknownForwardsUnparseableCallsUnlimited) {
  FakeProvider fake;
  auto limiter = limiter_with(kQuotas);
  ServerOptions o;
  o.pass_unknown = true;
  Proxied proxy(*limiter, fake, o);
  auto res = proxy.client().Post("/openai/v1/embeddings", R"({"input":"x"})", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(fake.hits(), 1);
}

TEST(Proxy, WithATokenTheProxyReadsXRatelimitToken) {
  FakeProvider fake;
  auto limiter = limiter_with(kQuotas);
  ServerOptions o;
  o.token = "0123456789abcdef0123";
  Proxied proxy(*limiter, fake, o);
  const std::string body = R"({"model":"gpt-4o","messages":[]})";
  auto cli = proxy.client();
  auto res = cli.Post("/openai/v1/chat/completions", {{"Authorization", "Bearer sk-x"}}, body,
                      "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 401);
  res = cli.Post("/openai/v1/chat/completions",
                 {{"Authorization", "Bearer sk-x"}, {"X-Ratelimit-Token", o.token}}, body,
                 "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
  ASSERT_EQ(fake.seen().size(), 1u);
  EXPECT_EQ(fake.seen()[0].headers.count("X-Ratelimit-Token"), 0u);
}

}  // namespace
}  // namespace ratelimit::server

namespace ratelimit::server {
namespace {

// A self-signed certificate for 127.0.0.1 made by the openssl command (in `dir`).
bool make_certificate(const std::string& dir) {
  const std::string cmd =
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
      "-addext subjectAltName=IP:127.0.0.1 -keyout " +
      dir + "/key.pem -out " + dir + "/cert.pem >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

TEST(ProxyTls, HttpsUpstreamWithItsCaAndAWrongCertificateRefused) {
  char tmpl[] = "/tmp/proxy_tls_XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  ASSERT_TRUE(make_certificate(dir));
  FakeProvider fake(8, dir + "/cert.pem", dir + "/key.pem");
  auto limiter = limiter_with(kQuotas);
  const std::string body = R"({"model":"gpt-4o","messages":[]})";
  {
    ServerOptions o;
    o.upstream_ca = dir + "/cert.pem";
    Proxied proxy(*limiter, fake, o);
    auto res = proxy.client().Post("/openai/v1/chat/completions", body, "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << res->body;
    EXPECT_EQ(tokens_of(*limiter, "gpt-4o"), FakeProvider::kOpenAiIn + FakeProvider::kOpenAiOut);
  }
  {
    Proxied proxy(*limiter, fake);  // the system CAs only: the certificate is not trusted
    auto res = proxy.client().Post("/openai/v1/chat/completions", body, "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 502);
    EXPECT_NE(res->body.find("certificate"), std::string::npos) << res->body;
    EXPECT_NE(res->body.find("--upstream-ca"), std::string::npos) << res->body;
    EXPECT_EQ(limiter->stats("gpt-4o")->rpm, 1);  // cancelled: only the first counts
  }
  EXPECT_EQ(fake.hits(), 1);
  std::filesystem::remove_all(dir);
}

TEST(ProxyTls, AnUnreadableCaFileStopsTheServerAtStart) {
  FakeProvider fake;
  auto limiter = limiter_with(kQuotas);
  ServerOptions o;
  o.listen = {"127.0.0.1", 0};
  o.upstreams.push_back(*parse_upstream("openai"));
  o.upstream_ca = "/nonexistent/ca.pem";
  Server server(*limiter, o);
  auto port = server.bind();
  ASSERT_FALSE(port);
  EXPECT_NE(port.error().message.find("--upstream-ca"), std::string::npos);
}

}  // namespace
}  // namespace ratelimit::server

namespace ratelimit::server {
namespace {

long rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return 0;
}

// 1,000 calls held 2 s each by the upstream at once: all complete on the server's two io
// threads, /healthz answers meanwhile, and memory per call in flight stays bounded.
TEST(ProxyLoad, AThousandSlowCallsAtOnceWithHealthzAnswering) {
  constexpr int kCalls = 1000;
  testing::SlowUpstream slow(2000ms);
  FakeProvider unused(1);
  auto limiter = limiter_with({{"gpt-4o", {.max_rpm = 100'000, .max_tpm = 100'000'000}}});
  Proxied proxy(*limiter, unused, {},
                {"slow=http://127.0.0.1:" + std::to_string(slow.port()) + ",api=openai"});
  const std::string body = R"({"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]})";
  const std::string request =
      "POST /slow/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
      "Content-Type: application/json\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body;
  const long rss_before = rss_kib();
  std::vector<testing::RawConn> conns;
  conns.reserve(kCalls);
  for (int i = 0; i < kCalls; ++i) {
    conns.emplace_back(proxy.port());
    ASSERT_TRUE(conns.back().ok()) << conns.back().error();
    ASSERT_TRUE(conns.back().send(request));
  }
  // While they are held: /healthz answers, each within a second.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (slow.most_held() < kCalls && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(slow.most_held(), kCalls);
  const long rss_held = rss_kib();
  for (int i = 0; i < 3; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    auto h = proxy.client().Get("/healthz");
    ASSERT_TRUE(h);
    EXPECT_EQ(h->status, 200);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  }
  int ok = 0;
  for (auto& c : conns) {
    auto r = c.read_reply(20s);
    if (r && r->status == 200) ++ok;
  }
  EXPECT_EQ(ok, kCalls);
  EXPECT_EQ(limiter->stats("gpt-4o")->tpm, kCalls * 18);
  // Memory per call in flight (client and upstream connection, session, buffers), this
  // process holding both ends of the client connections as well.
  const double per_call_kib = static_cast<double>(rss_held - rss_before) / kCalls;
  std::printf("proxy: %d calls in flight, RSS +%ld KiB (%.1f KiB per call)\n", kCalls,
              rss_held - rss_before, per_call_kib);
  EXPECT_LT(per_call_kib, 256.0);
}

// Not a gate (latency belongs to bench/): the proxy's added latency over calling the fake
// directly, one keep-alive client, memory store, printed for docs/benchmarks.md.
TEST(ProxyLoad, ReportsTheAddedLatency) {
  FakeProvider fake(4);
  auto limiter = limiter_with(kQuotas);
  Proxied proxy(*limiter, fake);
  const std::string body = R"({"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]})";
  auto measure = [&](int port, const std::string& path) {
    httplib::Client c("127.0.0.1", port);
    c.set_keep_alive(true);
    c.set_tcp_nodelay(true);
    std::vector<double> us;
    for (int i = 0; i < 250; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      auto r = c.Post(path, body, "application/json");
      const auto t1 = std::chrono::steady_clock::now();
      EXPECT_TRUE(r && r->status == 200);
      if (i >= 50) us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    }
    std::sort(us.begin(), us.end());
    return std::pair{us[us.size() / 2], us[us.size() * 99 / 100]};
  };
  const auto direct = measure(fake.port(), "/v1/chat/completions");
  const auto proxied = measure(proxy.port(), "/openai/v1/chat/completions");
  std::printf(
      "proxy: direct p50 %.0f us p99 %.0f us; through the proxy p50 %.0f us p99 %.0f us; "
      "added p50 %.0f us p99 %.0f us\n",
      direct.first, direct.second, proxied.first, proxied.second, proxied.first - direct.first,
      proxied.second - direct.second);
}

}  // namespace
}  // namespace ratelimit::server
