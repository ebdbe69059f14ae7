// A real Prometheus scrapes the server: Debian's prometheus (2.42) runs on a free loopback
// port with an in-process server as its only target, scrapes it, and its query API must give
// back the counters of what the test did, for model names with quotes, backslashes, `/` and
// non-ASCII. Proof that the exposition is valid for Prometheus itself, not only for our reader.
// Skipped (with a message) when /usr/bin/prometheus is not installed.
#include <netinet/in.h>
#include <sys/socket.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "process_util.h"
#include "raw_client.h"
#include "server.h"
#include "test_util.h"

namespace ratelimit::server {
namespace {

using nlohmann::json;
using ratelimit::testing::get_request;
using ratelimit::testing::post_request;
using ratelimit::testing::Process;
using ratelimit::testing::RawConn;
using ratelimit::testing::start_time;
using ratelimit::testing::TempDir;
using namespace std::chrono_literals;

constexpr const char* kPrometheus = "/usr/bin/prometheus";

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// A PromQL string literal for `s` (double-quoted, with \ and " escaped).
std::string promql_string(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '\\' || c == '"') out += '\\';
    out += c;
  }
  return out + "\"";
}

// GET /api/v1/query on Prometheus: the "result" array, or null on failure.
json query(int port, const std::string& promql) {
  RawConn c(port);
  if (!c.ok()) return nullptr;
  c.send("GET /api/v1/query?query=" + ratelimit::testing::percent_encode(promql) +
         " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  auto r = c.read_reply(5s);
  if (!r || r->status != 200) return nullptr;
  json j = json::parse(r->body, nullptr, false);
  if (!j.is_object() || j.value("status", "") != "success") return nullptr;
  return j["data"]["result"];
}

TEST(Prometheus, ScrapesTheServerAndReadsBackItsCounters) {
  if (!std::filesystem::exists(kPrometheus)) {
    GTEST_SKIP() << kPrometheus << " is not installed (apt-get install prometheus)";
  }
  TempDir dir;
  Config config;
  config.backend = Backend::memory;
  config.providers = {Provider::local};
  config.clock = std::make_shared<ManualClock>(start_time());
  const std::vector<std::pair<std::string, int>> models = {
      {"plain-gpt-4o", 1}, {"say \"hi\"", 2},     {"back\\slash\\", 3},
      {"team/gpt-4o", 4},  {"模型-ünïcode-🚀", 5},
  };
  for (const auto& [name, n] : models) config.quotas[name] = ModelQuota{100, 0, 0};
  auto limiter = RateLimiter::open(std::move(config));
  ASSERT_TRUE(limiter);
  ServerOptions options;
  options.listen = {"127.0.0.1", 0};
  Server server(**limiter, options);
  auto port = server.bind();
  ASSERT_TRUE(port);
  std::thread serving([&] { server.run(); });

  // What Prometheus must see: n admitted acquires for each model.
  for (const auto& [name, n] : models) {
    for (int i = 0; i < n; ++i) {
      RawConn c(*port);
      c.send(post_request("/v1/acquire", json{{"model", name}, {"tokens", 10}}.dump()));
      auto r = c.read_reply();
      ASSERT_TRUE(r);
      ASSERT_EQ(r->status, 200) << r->body;
    }
  }

  const int prom_port = free_port();
  const std::filesystem::path cfg = dir.path() / "prometheus.yml";
  std::ofstream(cfg) << "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                        "scrape_configs:\n  - job_name: ratelimit\n    static_configs:\n"
                        "      - targets: ['127.0.0.1:"
                     << *port << "']\n";
  Process prometheus(
      {kPrometheus, "--config.file=" + cfg.string(),
       "--storage.tsdb.path=" + (dir.path() / "tsdb").string(),
       "--web.listen-address=127.0.0.1:" + std::to_string(prom_port), "--log.level=warn"},
      {dir.path(), dir.path(), {}, false});
  ASSERT_TRUE(prometheus.started());

  // Wait for a scrape whose samples include the counters (up to 60 s: start-up and a first
  // scrape take a few seconds).
  json admitted;
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < deadline) {
    admitted = query(prom_port, "ratelimit_requests_total{job=\"ratelimit\",outcome=\"admitted\"}");
    if (admitted.is_array() && admitted.size() == models.size()) break;
    ASSERT_FALSE(prometheus.exited()) << "prometheus exited: " << prometheus.err();
    std::this_thread::sleep_for(250ms);
  }
  ASSERT_TRUE(admitted.is_array() && admitted.size() == models.size())
      << "no scrape with the counters within 60 s: " << admitted.dump()
      << "\nprometheus stderr: " << prometheus.err();

  json up = query(prom_port, "up{job=\"ratelimit\"}");
  ASSERT_TRUE(up.is_array() && up.size() == 1) << up.dump();
  EXPECT_EQ(up[0]["value"][1], "1") << "the target is not up: " << up.dump();

  std::map<std::string, std::string> seen;
  for (const auto& sample : admitted) {
    seen[sample["metric"]["model"].get<std::string>()] = sample["value"][1].get<std::string>();
  }
  for (const auto& [name, n] : models) {
    EXPECT_EQ(seen[name], std::to_string(n)) << "model " << name;
    // And a selector on the exact name finds it.
    json one = query(
        prom_port, "ratelimit_tokens_total{kind=\"estimated\",model=" + promql_string(name) + "}");
    ASSERT_TRUE(one.is_array() && one.size() == 1) << name << ": " << one.dump();
    EXPECT_EQ(one[0]["value"][1], std::to_string(10 * n)) << name;
  }
  json http = query(prom_port, "ratelimit_http_requests_total{route=\"/v1/acquire\",code=\"200\"}");
  ASSERT_TRUE(http.is_array() && http.size() == 1) << http.dump();
  EXPECT_EQ(http[0]["value"][1], "15");
  json histogram =
      query(prom_port, "ratelimit_http_request_duration_seconds_count{route=\"/v1/acquire\"}");
  ASSERT_TRUE(histogram.is_array() && histogram.size() == 1) << histogram.dump();
  EXPECT_EQ(histogram[0]["value"][1], "15");

  prometheus.signal(SIGTERM);
  EXPECT_TRUE(prometheus.wait_for(20s).has_value()) << "prometheus did not stop on SIGTERM";
  server.stop();
  serving.join();
}

}  // namespace
}  // namespace ratelimit::server
