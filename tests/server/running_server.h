// `ratelimit serve` in-process for the tests (server_test.cc, server_access_test.cc): a Server
// over a limiter on a ManualClock, on an ephemeral loopback port (Running), driven by
// httplib::Client, with helpers for its JSON replies, errors and metrics.
#pragma once

#include <gtest/gtest.h>
#include <httplib.h>

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "ratelimit/limiter.h"
#include "server.h"
#include "test_util.h"

namespace ratelimit::testing {

using nlohmann::json;

inline std::unique_ptr<RateLimiter> open_limiter(const std::string& backend, QuotaMap quotas,
                                                 std::shared_ptr<Clock> clock, const TempDir& dir) {
  Config config;
  config.providers = {Provider::local};
  config.quotas = std::move(quotas);
  config.clock = std::move(clock);
  Result<std::unique_ptr<RateLimiter>> opened;
  if (backend == "sqlite") {
    opened = RateLimiter::open_sqlite(dir.file("state.db"), std::move(config));
  } else {
    config.backend = Backend::memory;
    opened = RateLimiter::open(std::move(config));
  }
  EXPECT_TRUE(opened.has_value()) << (opened ? "" : opened.error().message);
  return std::move(*opened);
}

// A running server and a client for it.
class Running {
 public:
  Running(RateLimiter& limiter, server::ServerOptions options) {
    options.listen = {"127.0.0.1", 0};
    server_ = std::make_unique<server::Server>(limiter, std::move(options));
    auto port = server_->bind();
    EXPECT_TRUE(port.has_value()) << (port ? "" : port.error().message);
    port_ = *port;
    thread_ = std::thread([this] { server_->run(); });
  }
  ~Running() { stop(); }
  void stop() {
    if (!thread_.joinable()) return;
    server_->stop();
    thread_.join();
  }
  server::Server& server() { return *server_; }
  int port() const { return port_; }
  httplib::Client client(const std::string& token = "") const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(30, 0);
    if (!token.empty()) c.set_bearer_token_auth(token);
    return c;
  }

 private:
  std::unique_ptr<server::Server> server_;
  int port_ = 0;
  std::thread thread_;
};

struct Reply {
  int status = 0;
  json body;
  std::string text;
  httplib::Headers headers;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

inline Reply wrap(const httplib::Result& r) {
  Reply out;
  EXPECT_TRUE(r) << "no response: " << httplib::to_string(r.error());
  if (!r) return out;
  out.status = r->status;
  out.text = r->body;
  out.headers = r->headers;
  out.body = json::parse(r->body, nullptr, false);
  return out;
}

inline Reply post(httplib::Client& c, const std::string& path, const std::string& body) {
  return wrap(c.Post(path.c_str(), body, "application/json"));
}
inline Reply get(httplib::Client& c, const std::string& path) { return wrap(c.Get(path.c_str())); }
inline Reply put(httplib::Client& c, const std::string& path, const std::string& body) {
  return wrap(c.Put(path.c_str(), body, "application/json"));
}
inline Reply del(httplib::Client& c, const std::string& path) {
  return wrap(c.Delete(path.c_str()));
}

inline std::string acquire_body(const std::string& model, std::int64_t tokens,
                                std::int64_t wait_ms = 0) {
  json j = {{"model", model}, {"tokens", tokens}};
  if (wait_ms > 0) j["wait_ms"] = wait_ms;
  return j.dump();
}

inline std::set<std::string> keys(const json& j) {
  std::set<std::string> out;
  for (const auto& [k, v] : j.items()) out.insert(k);
  return out;
}

inline void expect_error(const Reply& r, int status, const std::string& code) {
  EXPECT_EQ(r.status, status) << r.text;
  ASSERT_TRUE(r.body.is_object()) << r.text;
  EXPECT_EQ(keys(r.body), std::set<std::string>{"error"}) << r.text;
  EXPECT_EQ(keys(r.body["error"]), (std::set<std::string>{"code", "message"})) << r.text;
  EXPECT_EQ(r.body["error"]["code"], code) << r.text;
  EXPECT_FALSE(r.body["error"]["message"].get<std::string>().empty());
}

// Prometheus text → {"name{labels}": value}.
inline std::map<std::string, double> parse_metrics(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto space = line.rfind(' ');
    out[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return out;
}

// --- a memory-store server on a ManualClock ------------------------------------------------

class ServerTest : public ::testing::Test {
 protected:
  void start(QuotaMap quotas, server::ServerOptions options = {}) {
    limiter_ = open_limiter("memory", std::move(quotas), clock_, dir_);
    running_ = std::make_unique<Running>(*limiter_, std::move(options));
  }
  httplib::Client client() { return running_->client(); }

  TempDir dir_;
  std::shared_ptr<ManualClock> clock_ = std::make_shared<ManualClock>(start_time());
  std::unique_ptr<RateLimiter> limiter_;
  std::unique_ptr<Running> running_;
};

}  // namespace ratelimit::testing
