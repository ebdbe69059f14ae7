// Shared by the tests of `ratelimit serve` as a real process (server_process_test.cc,
// live_page_test.cc): the fixture that starts the built binary on an ephemeral loopback port in
// a temporary HOME, talks HTTP to it and stops it with a signal. No test waits for a rate
// window: real time is only waited on for processes to start and stop, always by polling with a
// timeout. Under a sanitizer build the children are sanitized too; a report in a child's stderr
// fails the test (see process_util.h).
#pragma once

#include <httplib.h>
#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "process_util.h"
#include "ratelimit/ratelimit.h"
#include "raw_client.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ratelimit::testing::Finished;
using ratelimit::testing::Millis;
using ratelimit::testing::percent_encode;
using ratelimit::testing::Process;
using ratelimit::testing::TempDir;
using SteadyClock = std::chrono::steady_clock;

// Generous: a ThreadSanitizer build starts and stops several times slower than Debug.
constexpr Millis kStartTimeout{30'000};
constexpr Millis kStopTimeout{20'000};

const char* const kListening = "ratelimit serve: listening on http://";
const char* const kStopped = "ratelimit serve: stopped; state saved";

// The port in the server's first line ("... listening on http://HOST:PORT (store: ...)").
inline int port_of(const std::string& out) {
  const auto at = out.find(kListening);
  if (at == std::string::npos) return 0;
  const auto end = out.find(" (store:", at);
  if (end == std::string::npos) return 0;
  const auto colon = out.rfind(':', end);
  if (colon == std::string::npos || colon < at) return 0;
  return std::atoi(out.substr(colon + 1, end - colon - 1).c_str());
}

// A 32-character token of letters and digits (safe in a URL fragment as it is).
inline std::string random_token() {
  static const char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::random_device rd;
  std::mt19937 gen(rd());
  std::uniform_int_distribution<std::size_t> pick(0, sizeof kAlphabet - 2);
  std::string t;
  for (int i = 0; i < 32; ++i) t += kAlphabet[pick(gen)];
  return t;
}

inline void write_file(const fs::path& p, const std::string& text, mode_t mode) {
  {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << text;
  }
  ::chmod(p.c_str(), mode);
}

struct Reply {
  int status = -1;  // -1: no answer (the error is in `raw`)
  std::string raw;
  json body;  // discarded when `raw` is not JSON
  httplib::Headers headers;
  std::string header(const char* name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
  std::string code() const {
    if (body.is_object() && body.contains("error")) return body["error"].value("code", "");
    return "";
  }
};

// The models of a `status --json` or GET /v1/stats answer without the one field that depends
// on the moment it was computed.
inline json comparable_models(const json& status) {
  json models = status.at("models");
  for (auto& [name, m] : models.items()) {
    if (m.contains("decision")) m["decision"].erase("retry_after_ms");
  }
  return models;
}

class ServerProcess : public ::testing::Test {
 protected:
  void TearDown() override {
    // A server still running here belongs to a failed test: end it (SIGKILL) before the
    // directory goes.
    server_.reset();
  }

  Process::Options options(bool check_sanitizers = true) const {
    Process::Options o;
    o.dir = dir_.path();
    o.home = dir_.path();
    o.check_sanitizers = check_sanitizers;
    return o;
  }

  // `ratelimit args...` run to completion.
  Finished rl(std::vector<std::string> args) {
    args.insert(args.begin(), RATELIMIT_CLI_BINARY);
    return ratelimit::testing::run(std::move(args), options());
  }

  // Starts `ratelimit args...` (which must contain `serve`) and waits for its listening line.
  void start_server(std::vector<std::string> args) {
    args.insert(args.begin(), RATELIMIT_CLI_BINARY);
    server_ = std::make_unique<Process>(std::move(args), options());
    ASSERT_TRUE(server_->started());
    ASSERT_TRUE(server_->wait_output(kListening, kStartTimeout))
        << "no listening line; exit " << server_->code() << "\nstdout: " << server_->out()
        << "\nstderr: " << server_->err();
    port_ = port_of(server_->out());
    ASSERT_GT(port_, 0) << server_->out();
  }

  // Sends `sig` to the server and waits for it to exit; its exit code (-1: still running).
  int stop_server(int sig) {
    server_->signal(sig);
    auto code = server_->wait_for(kStopTimeout);
    return code ? *code : -1;
  }

  Reply http(const std::string& method, const std::string& path,
             const std::optional<json>& body = std::nullopt,
             const std::optional<std::string>& token = std::nullopt,
             std::chrono::seconds read_timeout = std::chrono::seconds(30)) const {
    httplib::Client cli("127.0.0.1", port_);
    cli.set_connection_timeout(5, 0);
    cli.set_read_timeout(read_timeout.count(), 0);
    cli.set_write_timeout(5, 0);
    httplib::Headers headers;
    if (token) headers.emplace("Authorization", "Bearer " + *token);
    const std::string text = body ? body->dump() : "";
    auto send = [&]() -> httplib::Result {
      if (method == "POST") return cli.Post(path.c_str(), headers, text, "application/json");
      if (method == "PUT") return cli.Put(path.c_str(), headers, text, "application/json");
      if (method == "DELETE") return cli.Delete(path.c_str(), headers);
      return cli.Get(path.c_str(), headers);
    };
    httplib::Result res = send();
    Reply r;
    if (!res) {
      r.raw = method + " " + path + ": " + httplib::to_string(res.error());
      return r;
    }
    r.status = res->status;
    r.raw = res->body;
    r.headers = res->headers;
    r.body = json::parse(res->body, nullptr, false);
    return r;
  }

  // The `ratelimit_server_waiters` gauge of GET /metrics (-1 when absent).
  int waiters(const std::optional<std::string>& token = std::nullopt) const {
    const Reply m = http("GET", "/metrics", std::nullopt, token);
    const std::string key = "\nratelimit_server_waiters ";
    const auto at = m.raw.find(key);
    if (m.status != 200 || at == std::string::npos) return -1;
    return std::atoi(m.raw.c_str() + at + key.size());
  }

  TempDir dir_;
  std::unique_ptr<Process> server_;
  int port_ = 0;
};

}  // namespace
