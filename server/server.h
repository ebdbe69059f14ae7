// The HTTP server of `ratelimit serve`: the limiter over HTTP/JSON for callers in any language,
// with Prometheus metrics and a live page. Event-driven: a few io threads (Boost.Asio) serve
// every connection; a waiting acquire holds no thread (RateLimiter::acquire_async). Boost,
// nlohmann/json and the Prometheus writer stay in the .cc files of server/.
//
// Layers: http.h (plain request/response values), handlers.h (routes, auth, leases: testable
// without a socket), the HTTP layer (http_server.cc, http_connection.*, http_write.cc: with the
// proxy's proxy.cc, the only files that touch Beast/Asio).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ratelimit/limiter.h"
#include "ratelimit/status.h"

namespace ratelimit::server {

// A listen address: "127.0.0.1:8787", "[::1]:8787", "0.0.0.0:0" (port 0: any free port).
struct ListenAddress {
  std::string host;
  int port = 8787;
};
// invalid_argument for anything but host:port with a port in 0..65535.
Result<ListenAddress> parse_listen(std::string_view text);
// True for 127.0.0.0/8, ::1, ::ffff:127.x.y.z and "localhost" (any letter case).
bool is_loopback(std::string_view host);
// The bearer token in `path` (surrounding whitespace trimmed). invalid_argument when the file
// is not a regular file, cannot be read, is empty, is larger than 4 KiB, or holds a token
// shorter than 16 characters or with characters outside printable ASCII. `warning` is set when
// others can read the file.
Result<std::string> read_token_file(const std::string& path, std::string& warning);

// The equal-time comparison used for bearer tokens: the time depends on the lengths only.
bool constant_time_equal(std::string_view a, std::string_view b);

// An upstream of the limiting proxy (`serve --upstream NAME=URL[,api=...]`, docs/proxy.md):
// requests to /NAME/... are forwarded to URL/... and limited per the API's rules.
enum class UpstreamApi { openai, anthropic, gemini };
std::string_view to_string(UpstreamApi api);

struct Upstream {
  std::string name;  // the route prefix: /NAME/
  std::string url;   // as given, without a trailing '/'
  UpstreamApi api = UpstreamApi::openai;
  bool tls = false;       // https
  std::string host;       // from the URL (brackets removed for IPv6)
  std::string port;       // "443"/"80" when the URL gives none
  std::string base_path;  // the URL's path without a trailing '/' ("" or "/v1beta")
};
// Parses one --upstream value: NAME=URL[,api=openai|anthropic|gemini], or a bare provider name
// (openai, anthropic, gemini) for its public base URL. invalid_argument, naming the flag and
// the fix, for a name that is not [A-Za-z0-9_.-]+ or collides with the server's own routes
// (v1, metrics, healthz), a URL that is not http(s)://HOST[:PORT][/PATH] without a query, and
// an unknown api.
Result<Upstream> parse_upstream(std::string_view text);

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
  // io threads: each serves many connections (none blocks while a client waits).
  std::size_t threads = 2;
  std::size_t max_connections = 10'000;         // open connections; beyond: 503 and close
  std::size_t max_waiters = 1024;               // acquires waiting (wait_ms) at once
  Duration max_wait = std::chrono::minutes(5);  // the largest wait_ms accepted
  // On stop(): how long requests in flight may take before their connections are cut.
  Duration shutdown_grace = std::chrono::seconds(5);
  Duration header_timeout = std::chrono::seconds(10);  // from a request's first byte
  Duration idle_timeout = std::chrono::seconds(5);     // between requests on a connection
  // YAML store: how often the state is written while serving (and always at shutdown).
  std::optional<Duration> persist_every;

  // The limiting proxy (docs/proxy.md). A proxied inference call waits up to max_wait.
  std::vector<Upstream> upstreams;
  std::size_t proxy_max_body = 32 * 1024 * 1024;  // request bodies of proxied calls
  int retry_429 = 0;          // an upstream 429 is retried after its hint this many times
  bool pass_unknown = false;  // forward an inference call the proxy cannot parse, unlimited
  std::string upstream_ca;    // PEM file of extra CAs for https upstreams ("" : none)
};

// The counters the server keeps about itself (for /metrics and tests).
struct ServerCounters {
  std::size_t leases = 0;            // reservations held now
  std::size_t waiters = 0;           // acquires waiting now
  std::size_t models = 0;            // model names tracked
  std::size_t connections = 0;       // open connections
  std::uint64_t leases_expired = 0;  // forgotten at the end of their lease
};

class Handlers;

// The HTTP server over one RateLimiter (which must outlive it). Thread-safe.
class Server {
 public:
  Server(RateLimiter& limiter, ServerOptions options);
  ~Server();  // stops and joins
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the listen address (backlog SOMAXCONN) and raises RLIMIT_NOFILE to its hard limit;
  // returns the port (the chosen one for port 0). invalid_argument for a non-loopback address
  // without a token; unavailable when the address cannot be bound.
  Result<int> bind();
  // Serves on `threads` io threads (this one included) until stop(); then lets requests in
  // flight finish for up to shutdown_grace and cuts what is left. Call after bind().
  void run();
  // Stops accepting connections, answers waiting acquires (503 shutting_down), closes idle
  // connections and lets run() return once the rest are done (or the grace has passed). Safe
  // from any thread; idempotent.
  void stop();

  // Forgets the reservations whose lease has ended (the server also does this on its own
  // about once a second, and on every acquire). Returns how many were forgotten.
  std::size_t expire_leases();
  ServerCounters counters() const;
  Handlers& handlers();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ratelimit::server
