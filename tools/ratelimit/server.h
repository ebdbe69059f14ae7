// `ratelimit serve`: the limiter over HTTP/JSON for callers in any language, with Prometheus
// metrics and a live page. cpp-httplib, nlohmann/json and prometheus-cpp stay in the .cc files.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "ratelimit/limiter.h"
#include "store.h"

namespace ratelimit::cli {

// A listen address: "127.0.0.1:8787", "[::1]:8787", "0.0.0.0:0" (port 0: any free port).
struct ListenAddress {
  std::string host;
  int port = 8787;
};
// Usage error for anything but host:port with a port in 0..65535.
Outcome<ListenAddress> parse_listen(std::string_view text);
// True for 127.0.0.0/8, ::1, ::ffff:127.x.y.z and "localhost".
bool is_loopback(std::string_view host);
// The bearer token in `path` (surrounding whitespace trimmed). Usage error when the file cannot
// be read, is empty, or holds a token shorter than 16 characters or with characters outside
// printable ASCII. `warning` is set when others can read the file.
Outcome<std::string> read_token_file(const std::string& path, std::string& warning);

// The equal-time comparison used for bearer tokens: the time depends on the lengths only.
bool constant_time_equal(std::string_view a, std::string_view b);

struct ServerOptions {
  ListenAddress listen{"127.0.0.1", 8787};
  // When not empty, every endpoint but /healthz and / needs it as a bearer token. (A string,
  // not an optional: gcc 12 -O2 reports optional<string> assignments as maybe-uninitialized.)
  std::string token;
  std::string backend = "sqlite";  // shown by /healthz
  // A reservation not settled within the lease keeps its estimate and is forgotten.
  Duration lease = std::chrono::minutes(10);
  std::size_t max_models = 10'000;     // distinct model names the server tracks
  std::size_t max_leases = 1'000'000;  // reservations held at once
  std::size_t max_body_bytes = 64 * 1024;
  std::size_t threads = 128;                    // worker threads (one per open connection)
  std::size_t max_waiters = 32;                 // acquires blocked in wait_ms at once
  Duration max_wait = std::chrono::minutes(5);  // the largest wait_ms accepted
  // YAML store: how often the state is written while serving (and always at shutdown).
  std::optional<Duration> persist_every;
};

// The counters the server keeps about itself (for /metrics and tests).
struct ServerCounters {
  std::size_t leases = 0;            // reservations held now
  std::size_t waiters = 0;           // acquires waiting now
  std::size_t models = 0;            // model names tracked
  std::uint64_t leases_expired = 0;  // forgotten at the end of their lease
};

// The HTTP server over one RateLimiter (which must outlive it). Thread-safe.
class Server {
 public:
  Server(RateLimiter& limiter, ServerOptions options);
  ~Server();  // stops and joins
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the listen address; returns the port (the chosen one for port 0). Store errors when
  // the address cannot be bound; usage error for a non-loopback address without a token.
  Outcome<int> bind();
  // Serves until stop(); then waits for in-flight requests to finish. Call after bind().
  void run();
  // Stops accepting connections, wakes waiting acquires (they answer 503) and lets run()
  // return once in-flight requests are done. Safe from any thread; idempotent.
  void stop();

  // Forgets the reservations whose lease has ended (the server also does this on its own
  // about once a second, and on every acquire). Returns how many were forgotten.
  std::size_t expire_leases();
  ServerCounters counters() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ratelimit::cli
