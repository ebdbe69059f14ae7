// `ratelimit serve` in-process (running_server.h): what it refuses and to whom. Malformed
// input, invalid model names and the cap on distinct models; the bearer token, Host/Origin and
// binding; and the listen address and token file helpers.
#include <sys/stat.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "args.h"
#include "running_server.h"
#include "server.h"
#include "test_util.h"

namespace ratelimit::cli {
namespace {

using nlohmann::json;
using namespace ratelimit::server;
using namespace ratelimit::testing;
using namespace std::chrono_literals;

TEST_F(ServerTest, MalformedInputIs400AndChangesNothing) {
  ServerOptions o;
  o.max_body_bytes = 1024;
  start({{"m", {10, 1000, 0}}}, o);
  auto c = client();
  post(c, "/v1/acquire", acquire_body("m", 10));
  const ModelStats before = *limiter_->stats("m");
  const std::vector<std::string> bad_bodies = {
      "{",                                                  // not JSON
      "[]",                                                 // not an object
      "\"m\"",                                              // not an object
      R"({"model": 5})",                                    // model not a string
      R"({"model": ""})",                                   // empty name
      R"({"model": "a\u0001b"})",                           // control character
      R"({"model": "a\u0085b"})",                           // C1 control
      json{{"model", std::string(257, 'x')}}.dump(),        // too long
      R"({"model": "m", "tokens": "10"})",                  // string number
      R"({"model": "m", "tokens": 1e3})",                   // float
      R"({"model": "m", "tokens": 10.0})",                  // float
      R"({"model": "m", "tokens": true})",                  // bool
      R"({"model": "m", "tokens": null})",                  // null
      R"({"model": "m", "tokens": 9007199254740992})",      // above 2^53 - 1
      R"({"model": "m", "tokens": 18446744073709551615})",  // uint64 max
      R"({"model": "m", "tokens": -9007199254740992})",     // below -(2^53 - 1)
      R"({"model": "m", "tokens": 1, "wait_ms": -1})",
      R"({"model": "m", "tokens": 1, "tokenz": 1})",  // unknown field
  };
  for (const auto& body : bad_bodies) {
    for (const char* path : {"/v1/acquire", "/v1/decide"}) {
      Reply r = post(c, path, body);
      EXPECT_EQ(r.status, 400) << path << " " << body << " → " << r.text;
      EXPECT_EQ(r.body["error"]["code"], "invalid_request") << body;
    }
  }
  // A name of exactly 256 bytes is fine.
  EXPECT_EQ(post(c, "/v1/decide", json{{"model", std::string(256, 'x')}}.dump()).status, 200);
  // Bodies over the limit: 413 with a JSON error.
  Reply big = post(c, "/v1/acquire", json{{"model", std::string(2000, 'x')}}.dump());
  expect_error(big, 413, "payload_too_large");
  // Names in paths: invalid UTF-8, control characters, too long.
  expect_error(get(c, "/v1/stats/a%FFb"), 400, "invalid_request");
  expect_error(get(c, "/v1/stats/a%01b"), 400, "invalid_request");
  expect_error(get(c, "/v1/quotas/" + std::string(300, 'q')), 400, "invalid_request");
  EXPECT_EQ(*limiter_->stats("m"), before);
  EXPECT_EQ(limiter_->models()->size(), 1u);
  EXPECT_EQ(running_->server().counters().leases, 1u);
}

// The CLI's rule and message (args.h model_problem) for every route that takes a model, counted
// in /metrics without a model label; nothing is created and no answer carries invalid UTF-8.
TEST_F(ServerTest, InvalidModelNamesAreRefusedLikeTheCliAndCounted) {
  start({{"m", {10, 1000, 0}}});
  auto c = client();
  std::uint64_t refused = 0;
  auto expect_refused = [&](const Reply& r, const std::string& op, const std::string& name) {
    expect_error(r, 400, "invalid_request");
    EXPECT_EQ(r.body["error"]["message"], op + ": " + *model_problem(name)) << r.text;
    if (printable(name) != name) {  // never the raw bytes
      EXPECT_EQ(r.text.find(name), std::string::npos);
    }
    EXPECT_EQ(printable(r.text), r.text) << "not printable UTF-8: " << printable(r.text);
    ++refused;
  };
  // Invalid UTF-8 reaches the server only in a path (JSON strings are UTF-8).
  for (const auto& [encoded, name] : std::vector<std::pair<std::string, std::string>>{
           {"gpt%FF", "gpt\xff"},
           {"a%01z", "a\x01z"},
           {"a%C2%85z", "a\xc2\x85z"},
           {std::string(257, 'x'), std::string(257, 'x')}}) {
    const std::string shown = printable(name);
    expect_refused(get(c, "/v1/stats/" + encoded), "GET /v1/stats/" + shown, name);
    expect_refused(get(c, "/v1/quotas/" + encoded), "GET /v1/quotas/" + shown, name);
    expect_refused(put(c, "/v1/quotas/" + encoded, R"({"max_rpm": 1})"), "PUT /v1/quotas/" + shown,
                   name);
    expect_refused(del(c, "/v1/quotas/" + encoded), "DELETE /v1/quotas/" + shown, name);
  }
  for (const std::string& name :
       std::vector<std::string>{"a\x01z", "a\xc2\x85z", std::string(257, 'x'), ""}) {
    expect_refused(post(c, "/v1/decide", json{{"model", name}}.dump()), "POST /v1/decide", name);
    expect_refused(post(c, "/v1/acquire", acquire_body(name, 1)), "POST /v1/acquire", name);
    expect_refused(post(c, "/v1/record", json{{"model", name}}.dump()), "POST /v1/record", name);
    expect_refused(post(c, "/v1/reset", json{{"model", name}}.dump()), "POST /v1/reset", name);
  }
  // A body whose string is not UTF-8 is not JSON: refused, but not as a model name.
  expect_error(post(c, "/v1/decide", "{\"model\": \"gpt\xff\"}"), 400, "invalid_request");
  EXPECT_EQ(*limiter_->models(), std::vector<std::string>{"m"});
  EXPECT_EQ(running_->server().counters().models, 1u);

  // The limiter's own refusals count in the same series.
  EXPECT_EQ(limiter_->decide("gpt\xff", 1).code, DecisionCode::invalid_model);
  ++refused;
  Reply r = get(c, "/metrics");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.text.find_first_of(std::string("\x80\xff", 2)), std::string::npos);
  EXPECT_EQ(r.text.find("gpt"), std::string::npos);
  auto m = parse_metrics(r.text);
  EXPECT_EQ(m["ratelimit_invalid_model_requests_total"], static_cast<double>(refused));
  EXPECT_EQ(m.count("ratelimit_invalid_model_names_skipped_total"), 1u);
  EXPECT_EQ(m["ratelimit_invalid_model_names_skipped_total"], 0);
  for (const auto& [series, value] : m) {
    if (series.find("model=") != std::string::npos) {
      EXPECT_NE(series.find(R"(model="m")"), std::string::npos) << series;
    }
  }
}

TEST_F(ServerTest, DistinctModelsAreCapped) {
  ServerOptions o;
  o.max_models = 3;
  start({{"m", {10, 0, 0}}}, o);  // "m" counts as tracked from the start
  auto c = client();
  EXPECT_EQ(post(c, "/v1/acquire", acquire_body("x1", 1)).status, 200);
  EXPECT_EQ(post(c, "/v1/record", R"({"model": "x2"})").status, 200);
  expect_error(post(c, "/v1/acquire", acquire_body("x3", 1)), 400, "too_many_models");
  expect_error(post(c, "/v1/record", R"({"model": "x3"})"), 400, "too_many_models");
  expect_error(put(c, "/v1/quotas/x3", R"({"max_rpm": 1})"), 400, "too_many_models");
  // Known names still work, and reads of unknown names create nothing.
  EXPECT_EQ(post(c, "/v1/acquire", acquire_body("x1", 1)).status, 200);
  EXPECT_EQ(get(c, "/v1/stats/x4").status, 200);
  EXPECT_EQ(post(c, "/v1/decide", R"({"model": "x5"})").status, 200);
  EXPECT_EQ(*limiter_->models(), (std::vector<std::string>{"m", "x1", "x2"}));
  EXPECT_EQ(running_->server().counters().models, 3u);
  auto m = parse_metrics(get(c, "/metrics").text);
  EXPECT_EQ(m.count(R"(ratelimit_window_requests{model="x3"})"), 0u);
  EXPECT_EQ(m["ratelimit_server_models"], 3);
  EXPECT_EQ(m["ratelimit_server_models_max"], 3);
}

// --- auth and binding -------------------------------------------------------------------------

TEST_F(ServerTest, BearerTokenGuardsEverythingButHealthAndPage) {
  ServerOptions o;
  o.token = "s3cret-token-0123456789";
  start({{"m", {10, 0, 0}}}, o);
  auto anon = client();
  Reply r = post(anon, "/v1/acquire", acquire_body("m", 1));
  expect_error(r, 401, "unauthorized");
  EXPECT_EQ(r.header("WWW-Authenticate"), "Bearer realm=\"ratelimit\"");
  expect_error(get(anon, "/metrics"), 401, "unauthorized");
  expect_error(get(anon, "/v1/stats"), 401, "unauthorized");
  expect_error(get(anon, "/v1/nothing"), 401, "unauthorized");  // no probing for endpoints
  EXPECT_EQ(get(anon, "/healthz").status, 200);
  EXPECT_EQ(anon.Get("/")->status, 200);
  auto wrong = running_->client("s3cret-token-0123456788");
  expect_error(post(wrong, "/v1/acquire", acquire_body("m", 1)), 401, "unauthorized");
  auto prefix = running_->client("s3cret-token-012345678");
  expect_error(get(prefix, "/v1/stats"), 401, "unauthorized");
  httplib::Client basic("127.0.0.1", running_->port());
  basic.set_basic_auth("user", "s3cret-token-0123456789");
  expect_error(get(basic, "/v1/stats"), 401, "unauthorized");
  EXPECT_EQ(limiter_->stats("m")->rpm, 0);
  auto right = running_->client("s3cret-token-0123456789");
  EXPECT_EQ(post(right, "/v1/acquire", acquire_body("m", 1)).status, 200);
  EXPECT_EQ(get(right, "/metrics").status, 200);
}

TEST_F(ServerTest, WithoutATokenOnlyLoopbackHostsAndOriginsAreServed) {
  start({{"m", {10, 0, 0}}});
  auto c = client();
  auto with = [&](httplib::Headers headers, const std::string& path = "/v1/reset") {
    return wrap(c.Post(path.c_str(), headers, R"({"all": true})", "text/plain"));
  };
  post(c, "/v1/record", R"({"model": "m"})");
  // A web page that rebinds its name to 127.0.0.1, or posts to it from another origin.
  expect_error(with({{"Host", "evil.example:8787"}}), 403, "forbidden");
  expect_error(with({{"Origin", "http://evil.example"}}), 403, "forbidden");
  expect_error(with({{"Origin", "null"}}), 403, "forbidden");
  expect_error(with({{"Origin", "https://127.0.0.1"}}), 403, "forbidden");
  expect_error(with({{"Host", "127.0.0.1.evil.example"}}), 403, "forbidden");
  expect_error(with({{"Host", "evil.example"}}, "/"), 403, "forbidden");
  EXPECT_EQ(limiter_->stats("m")->rpm, 1);  // nothing was reset
  // /healthz answers anyone (it says nothing and changes nothing).
  EXPECT_EQ(wrap(c.Get("/healthz", {{"Host", "evil.example"}})).status, 200);
  // Loopback names and origins (the live page's own fetches) are fine.
  EXPECT_EQ(with({{"Host", "localhost:8787"}, {"Origin", "http://localhost:8787"}}).status, 200);
  EXPECT_EQ(with({{"Host", "[::1]:8787"}}).status, 200);
  EXPECT_EQ(with({{"Origin", "http://127.0.0.1:" + std::to_string(running_->port())}}).status, 200);
}

TEST_F(ServerTest, WithATokenAnyHostMayCall) {
  ServerOptions o;
  o.token = "s3cret-token-0123456789";
  start({{"m", {10, 0, 0}}}, o);
  auto c = running_->client("s3cret-token-0123456789");
  auto r = wrap(c.Post("/v1/record", {{"Host", "ratelimit.internal:8787"}, {"Origin", "http://x"}},
                       R"({"model": "m"})", "application/json"));
  EXPECT_EQ(r.status, 200) << r.text;
}

TEST(ServerBind, RefusesAPublicAddressWithoutAToken) {
  TempDir dir;
  auto limiter = open_limiter("memory", {}, std::make_shared<ManualClock>(start_time()), dir);
  ServerOptions o;
  o.listen = {"0.0.0.0", 0};
  Server server(*limiter, o);
  auto port = server.bind();
  ASSERT_FALSE(port.has_value());
  EXPECT_EQ(port.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(port.error().message.find("--token-file"), std::string::npos);
}

TEST(ServerBind, PortInUseIsAStoreError) {
  TempDir dir;
  auto limiter = open_limiter("memory", {}, std::make_shared<ManualClock>(start_time()), dir);
  Running first(*limiter, {});
  ServerOptions o;
  o.listen = {"127.0.0.1", first.port()};
  Server second(*limiter, o);
  auto port = second.bind();
  ASSERT_FALSE(port.has_value());
  EXPECT_EQ(port.error().code, ErrorCode::unavailable);
  EXPECT_NE(port.error().message.find("--listen"), std::string::npos);
}

TEST(ServerHelpers, ParseListen) {
  auto a = parse_listen("127.0.0.1:8787");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 8787);
  a = parse_listen("[::1]:0");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->host, "::1");
  EXPECT_EQ(a->port, 0);
  a = parse_listen("localhost:65535");
  ASSERT_TRUE(a);
  for (const char* bad : {"", "127.0.0.1", ":80", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1",
                          "127.0.0.1:8x", "::1:80", "[::1]80", "[::1"}) {
    auto r = parse_listen(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
    }
  }
}

TEST(ServerHelpers, Loopback) {
  for (const char* yes : {"127.0.0.1", "127.1.2.3", "::1", "localhost", "::ffff:127.0.0.1"}) {
    EXPECT_TRUE(is_loopback(yes)) << yes;
  }
  for (const char* no :
       {"0.0.0.0", "10.0.0.1", "::", "128.0.0.1", "example.com", "::ffff:10.0.0.1", ""}) {
    EXPECT_FALSE(is_loopback(no)) << no;
  }
}

TEST(ServerHelpers, ConstantTimeEqual) {
  EXPECT_TRUE(constant_time_equal("abc", "abc"));
  EXPECT_TRUE(constant_time_equal("", ""));
  EXPECT_FALSE(constant_time_equal("abc", "abd"));
  EXPECT_FALSE(constant_time_equal("abc", "ab"));
  EXPECT_FALSE(constant_time_equal("ab", "abc"));
  EXPECT_FALSE(constant_time_equal("", "a"));
  EXPECT_FALSE(constant_time_equal(std::string("a\0b", 3), std::string("a\0c", 3)));
}

TEST(ServerHelpers, TokenFile) {
  TempDir dir;
  auto write = [&](const std::string& name, const std::string& text, mode_t mode) {
    const std::string path = dir.file(name);
    std::ofstream(path) << text;
    ::chmod(path.c_str(), mode);
    return path;
  };
  std::string warning;
  auto t = read_token_file(write("ok", "  abcdefghijklmnop0123\n", 0600), warning);
  ASSERT_TRUE(t);
  EXPECT_EQ(*t, "abcdefghijklmnop0123");
  EXPECT_TRUE(warning.empty());
  t = read_token_file(write("open", "abcdefghijklmnop0123", 0644), warning);
  ASSERT_TRUE(t);
  EXPECT_NE(warning.find("chmod 600"), std::string::npos);
  for (const auto& [name, text] :
       std::vector<std::pair<std::string, std::string>>{{"empty", "\n  \n"},
                                                        {"short", "abc"},
                                                        {"space", "abcdefgh ijklmnopq"},
                                                        {"ctrl", "abcdefgh\x01ijklmnopq"}}) {
    auto r = read_token_file(write(name, text, 0600), warning);
    EXPECT_FALSE(r) << name;
    if (!r) {
      EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
    }
  }
  EXPECT_FALSE(read_token_file(dir.file("missing"), warning));
}

}  // namespace
}  // namespace ratelimit::cli
