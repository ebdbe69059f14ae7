// Token estimates, and count_tokens against a loopback server that speaks the shapes of
// Gemini's models/{model}:countTokens endpoint: counts, error objects, slow and oversized
// replies, refused connections, and the checks made before any request.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "ratelimit/tokens.h"

namespace ratelimit {
namespace {

using namespace std::chrono_literals;

struct Request {
  std::string method, target, head, body;
  std::string header(const std::string& lower_name) const {
    std::string h = head;
    for (char& c : h) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const auto pos = h.find("\r\n" + lower_name + ":");
    if (pos == std::string::npos) return {};
    const auto start = pos + 3 + lower_name.size();
    const auto end = head.find("\r\n", start);
    std::string v = head.substr(start, end - start);
    while (!v.empty() && v.front() == ' ') v.erase(0, 1);
    return v;
  }
};

std::string reply(int status, const std::string& body) {
  return "HTTP/1.1 " + std::to_string(status) +
         " X\r\nContent-Type: application/json; charset=UTF-8\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

// One connection at a time on 127.0.0.1: reads a request, answers with handler(request).
class LoopbackServer {
 public:
  using Handler = std::function<std::string(const Request&)>;

  explicit LoopbackServer(Handler handler) : handler_(std::move(handler)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(fd_, 8), 0);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { loop(); });
  }
  ~LoopbackServer() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1beta"; }
  std::vector<Request> requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }

 private:
  void loop() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) continue;
      serve(c);
      ::close(c);
    }
  }
  void serve(int c) {
    std::string in;
    char buf[4096];
    std::size_t head_end = std::string::npos;
    while (head_end == std::string::npos) {
      const ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) return;
      in.append(buf, static_cast<std::size_t>(n));
      head_end = in.find("\r\n\r\n");
    }
    Request r;
    r.head = in.substr(0, head_end + 2);
    const auto sp1 = r.head.find(' ');
    const auto sp2 = r.head.find(' ', sp1 + 1);
    r.method = r.head.substr(0, sp1);
    r.target = r.head.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::string length = r.header("content-length");
    const std::size_t want = length.empty() ? 0 : std::stoul(length);
    r.body = in.substr(head_end + 4);
    while (r.body.size() < want) {
      const ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) return;
      r.body.append(buf, static_cast<std::size_t>(n));
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      requests_.push_back(r);
    }
    const std::string out = handler_(r);
    std::size_t sent = 0;
    while (sent < out.size()) {
      const ssize_t n = ::send(c, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return;
      sent += static_cast<std::size_t>(n);
    }
  }

  Handler handler_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<Request> requests_;
  std::thread thread_;
};

CountTokensOptions with(const LoopbackServer& server, std::string key = "test-key") {
  CountTokensOptions o;
  o.base_url = server.base_url();
  o.api_key = std::move(key);
  o.connect_timeout = 2s;
  o.timeout = 5s;
  return o;
}

// --- estimates -------------------------------------------------------------------------------

TEST(Estimate, BytesOverFourRoundedUp) {
  EXPECT_EQ(estimate_text_tokens(""), 0);
  EXPECT_EQ(estimate_text_tokens("a"), 1);
  EXPECT_EQ(estimate_text_tokens("abcd"), 1);
  EXPECT_EQ(estimate_text_tokens("abcde"), 2);
  EXPECT_EQ(estimate_text_tokens("h\xC3\xA9llo!"), 2);  // 7 bytes of UTF-8
  EXPECT_EQ(estimate_text_tokens(std::string(4000, 'x')), 1000);
}

TEST(Estimate, RequestAddsMaxTokensOrTheDefault) {
  EXPECT_EQ(estimate_request("abcdefgh", 100), (TokenEstimate{2, 100}));
  EXPECT_EQ(estimate_request("abcdefgh"), (TokenEstimate{2, kDefaultOutputEstimate}));
  EXPECT_EQ(estimate_request("", 0), (TokenEstimate{0, 0}));
  EXPECT_EQ(estimate_request("abc", -5), (TokenEstimate{1, 0}));
  EXPECT_EQ(estimate_request("abcdefgh", 100).total(), 102);
}

// --- count_tokens ----------------------------------------------------------------------------

TEST(CountTokens, CountsAndSendsTheRealShape) {
  LoopbackServer server([](const Request&) {
    return reply(
        200,
        R"({"totalTokens": 31, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 31}]})");
  });
  auto o = with(server);
  o.base_url += "/";  // a trailing slash is fine
  auto n = count_tokens("models/gemini-2.0-flash", "Why is the sky blue? \"quoted\"\n", o);
  ASSERT_TRUE(n) << n.error().to_string();
  EXPECT_EQ(*n, 31);
  const auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].method, "POST");
  EXPECT_EQ(reqs[0].target, "/v1beta/models/gemini-2.0-flash:countTokens");
  EXPECT_EQ(reqs[0].header("x-goog-api-key"), "test-key");
  EXPECT_EQ(reqs[0].header("content-type"), "application/json");
  EXPECT_EQ(reqs[0].target.find("key="), std::string::npos);  // never in the URL
  const auto body = nlohmann::json::parse(reqs[0].body);
  EXPECT_EQ(body["contents"][0]["role"], "user");
  EXPECT_EQ(body["contents"][0]["parts"][0]["text"], "Why is the sky blue? \"quoted\"\n");
}

TEST(CountTokens, ZeroIsOmittedByProto3Json) {
  LoopbackServer server(
      [](const Request&) { return reply(200, R"({"promptTokensDetails": []})"); });
  EXPECT_EQ(count_tokens("gemini-2.5-pro", " ", with(server)), 0);
}

TEST(CountTokens, EmptyTextIsZeroWithoutARequest) {
  LoopbackServer server([](const Request&) { return reply(200, R"({"totalTokens": 5})"); });
  EXPECT_EQ(count_tokens("gemini-2.5-pro", "", with(server)), 0);
  EXPECT_TRUE(server.requests().empty());
}

TEST(CountTokens, KeyFromTheEnvironment) {
  LoopbackServer server([](const Request&) { return reply(200, R"({"totalTokens": 2})"); });
  ::unsetenv("GEMINI_API_KEY");
  ::setenv("GOOGLE_API_KEY", "google-key", 1);
  ASSERT_TRUE(count_tokens("gemini-2.0-flash", "hi", with(server, "")));
  ::setenv("GEMINI_API_KEY", "gemini-key", 1);
  ASSERT_TRUE(count_tokens("gemini-2.0-flash", "hi", with(server, "")));
  ASSERT_TRUE(count_tokens("gemini-2.0-flash", "hi", with(server, "explicit")));
  const auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_EQ(reqs[0].header("x-goog-api-key"), "google-key");
  EXPECT_EQ(reqs[1].header("x-goog-api-key"), "gemini-key");
  EXPECT_EQ(reqs[2].header("x-goog-api-key"), "explicit");
  ::unsetenv("GEMINI_API_KEY");
  ::unsetenv("GOOGLE_API_KEY");
  auto none = count_tokens("gemini-2.0-flash", "hi", with(server, ""));
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(none.error().message.find("GEMINI_API_KEY"), std::string::npos);
  EXPECT_EQ(server.requests().size(), 3u);
}

struct HttpCase {
  int status;
  std::string body;
  ErrorCode code;
  std::string expect;
};

TEST(CountTokens, HttpErrorsAreSummarisedAndMapped) {
  const std::vector<HttpCase> cases = {
      {400,
       R"({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT", "details": []}})",
       ErrorCode::invalid_argument, "HTTP 400 INVALID_ARGUMENT: API key not valid."},
      {403,
       R"({"error": {"code": 403, "message": "Method doesn't allow unregistered callers.", "status": "PERMISSION_DENIED"}})",
       ErrorCode::invalid_argument, "(check the API key)"},
      {404,
       R"({"error": {"code": 404, "message": "models/nope is not found for API version v1beta", "status": "NOT_FOUND"}})",
       ErrorCode::not_found, "HTTP 404 NOT_FOUND: models/nope is not found"},
      {429,
       R"({"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED"}})",
       ErrorCode::unavailable, "quota exceeded"},
      {500, "oops\x01\xff", ErrorCode::unavailable, "HTTP 500 oops  "},
      {503, "", ErrorCode::unavailable, "HTTP 503 (empty body)"},
      {302, R"({"error": {"code": 302}})", ErrorCode::unavailable, "HTTP 302 {\"error\""},
  };
  for (const auto& c : cases) {
    LoopbackServer server([&](const Request&) { return reply(c.status, c.body); });
    auto n = count_tokens("nope", "hello", with(server));
    ASSERT_FALSE(n) << c.status;
    EXPECT_EQ(n.error().code, c.code) << c.status;
    EXPECT_EQ(n.error().message.rfind("ratelimit.count_tokens: ", 0), 0u) << n.error().message;
    EXPECT_NE(n.error().message.find(c.expect), std::string::npos) << n.error().message;
  }
}

TEST(CountTokens, TheKeyNeverAppearsInAnError) {
  LoopbackServer server([](const Request& r) {
    return reply(400, R"({"error": {"message": "bad key )" + r.header("x-goog-api-key") +
                          R"(", "status": "INVALID_ARGUMENT"}})");
  });
  auto n = count_tokens("gemini-2.0-flash", "hello", with(server, "sekrit-123"));
  ASSERT_FALSE(n);
  EXPECT_EQ(n.error().message.find("sekrit-123"), std::string::npos) << n.error().message;
  EXPECT_NE(n.error().message.find("bad key <api key>"), std::string::npos) << n.error().message;
}

TEST(CountTokens, LongErrorsAreCut) {
  const std::string message(1000, 'm');
  LoopbackServer server([&](const Request&) {
    return reply(500, R"({"error": {"message": ")" + message + R"(", "status": "INTERNAL"}})");
  });
  auto n = count_tokens("gemini-2.0-flash", "hello", with(server));
  ASSERT_FALSE(n);
  EXPECT_LT(n.error().message.size(), 300u) << n.error().message;
  EXPECT_NE(n.error().message.find("mmm..."), std::string::npos) << n.error().message;
}

TEST(CountTokens, RepliesWithoutACount) {
  for (const char* body : {"not json", R"({"totalTokens": -5})", R"({"totalTokens": "12"})",
                           R"({"other": 1})", "[1]"}) {
    LoopbackServer server([&](const Request&) { return reply(200, body); });
    auto n = count_tokens("gemini-2.0-flash", "hello", with(server));
    ASSERT_FALSE(n) << body;
    EXPECT_EQ(n.error().code, ErrorCode::unavailable) << body;
    EXPECT_NE(n.error().message.find("no totalTokens"), std::string::npos) << n.error().message;
  }
}

TEST(CountTokens, SlowRepliesTimeOut) {
  LoopbackServer server([](const Request&) {
    std::this_thread::sleep_for(1500ms);
    return reply(200, R"({"totalTokens": 1})");
  });
  auto o = with(server);
  o.timeout = 200ms;
  const auto start = std::chrono::steady_clock::now();
  auto n = count_tokens("gemini-2.0-flash", "hello", o);
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(n);
  EXPECT_EQ(n.error().code, ErrorCode::deadline_exceeded) << n.error().message;
  EXPECT_NE(n.error().message.find("raise the timeout"), std::string::npos);
  EXPECT_LT(took, 1400ms);
}

TEST(CountTokens, OversizedRepliesAreRefused) {
  const std::string big = R"({"totalTokens": 1, "pad": ")" + std::string(2 << 20, 'x') + "\"}";
  LoopbackServer server([&](const Request&) { return reply(200, big); });
  auto n = count_tokens("gemini-2.0-flash", "hello", with(server));
  ASSERT_FALSE(n);
  EXPECT_EQ(n.error().code, ErrorCode::unavailable);
  EXPECT_NE(n.error().message.find("larger than 1048576 bytes"), std::string::npos)
      << n.error().message;
  auto o = with(server);
  o.max_response_bytes = 10;
  LoopbackServer small([](const Request&) { return reply(200, R"({"totalTokens": 12345})"); });
  o.base_url = small.base_url();
  EXPECT_FALSE(count_tokens("gemini-2.0-flash", "hello", o));
}

TEST(CountTokens, RefusedConnectionsAreUnavailable) {
  std::string base;
  {
    LoopbackServer gone([](const Request&) { return std::string(); });
    base = gone.base_url();
  }  // the port is closed again
  CountTokensOptions o;
  o.base_url = base;
  o.api_key = "k";
  auto n = count_tokens("gemini-2.0-flash", "hello", o);
  ASSERT_FALSE(n);
  EXPECT_EQ(n.error().code, ErrorCode::unavailable) << n.error().message;
  EXPECT_NE(n.error().message.find("cannot reach http://127.0.0.1:"), std::string::npos)
      << n.error().message;
}

TEST(CountTokens, BadInputIsRefusedBeforeAnyRequest) {
  LoopbackServer server([](const Request&) { return reply(200, R"({"totalTokens": 1})"); });
  for (const char* model : {"", "models/", "a b", "x/y", "gemini?key=1", "g\xC3\xA9"}) {
    auto n = count_tokens(model, "hello", with(server));
    ASSERT_FALSE(n) << model;
    EXPECT_EQ(n.error().code, ErrorCode::invalid_argument);
  }
  EXPECT_FALSE(count_tokens(std::string(201, 'a'), "hello", with(server)));
  for (const char* url : {"", "ftp://x", "https://", "http://a b", "localhost:80"}) {
    auto o = with(server);
    o.base_url = url;
    auto n = count_tokens("gemini-2.0-flash", "hello", o);
    ASSERT_FALSE(n) << url;
    EXPECT_EQ(n.error().code, ErrorCode::invalid_argument);
    EXPECT_NE(n.error().message.find("base URL"), std::string::npos);
  }
  auto o = with(server);
  o.timeout = 0ms;
  EXPECT_EQ(count_tokens("gemini-2.0-flash", "hello", o).error().code, ErrorCode::invalid_argument);
  o = with(server);
  o.max_response_bytes = 0;
  EXPECT_FALSE(count_tokens("gemini-2.0-flash", "hello", o));
  auto bad_key = count_tokens("gemini-2.0-flash", "hello", with(server, "abc\r\nX-Evil: 1"));
  ASSERT_FALSE(bad_key);
  EXPECT_EQ(bad_key.error().message.find("Evil"), std::string::npos);
  EXPECT_FALSE(count_tokens("gemini-2.0-flash", "hello", with(server, std::string(513, 'k'))));
  EXPECT_TRUE(server.requests().empty());
}

TEST(CountTokens, ConcurrentCalls) {
  LoopbackServer server([](const Request&) { return reply(200, R"({"totalTokens": 7})"); });
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      for (int k = 0; k < 3; ++k) {
        if (count_tokens("gemini-2.0-flash", "hello", with(server)) == 7) ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok, 12);
}

}  // namespace
}  // namespace ratelimit
