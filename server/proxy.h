// The limiting reverse proxy of `ratelimit serve --upstream` (docs/proxy.md): requests under
// /NAME/ are limited (acquire before, commit the actual usage after, observe the response
// headers) and forwarded to the upstream on the client connection's own io_context
// (Boost.Beast client, keep-alive pool per upstream and io_context, TLS through OpenSSL). The
// HTTP layer (http_connection.cc) hands a request whose path starts with an upstream's prefix
// to Proxy::handle together with a Downstream, through which the answer goes back whole or
// streamed chunk by chunk.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "http.h"
#include "ratelimit/limiter.h"
#include "server.h"

namespace boost::asio {
class io_context;
}

namespace ratelimit::server {

// The client's side of one proxied exchange, implemented by the HTTP layer. Any thread.
class Downstream {
 public:
  virtual ~Downstream() = default;
  // A whole answer (errors, non-streamed responses).
  virtual void respond(Response r) = 0;
  // A streamed answer: its head (its body, when not empty, is the first piece, written with
  // the head), then pieces, then end(); each `ready`
  // runs once that part is written (true) or the client is gone (false). One at a time.
  virtual void start(Response head, std::function<void(bool)> ready) = 0;
  virtual void send(std::string piece, std::function<void(bool)> ready) = 0;
  virtual void end() = 0;
  // The upstream failed in the middle of a streamed answer: cut the client's connection (an
  // incomplete chunked body tells it so).
  virtual void abort() = 0;
  // Runs `f` once when the client goes away (at once if it has).
  virtual void on_gone(std::function<void()> f) = 0;
};

// Counters of the proxy (for /metrics and tests).
struct ProxyCounters {
  // (upstream, model, outcome) → requests; outcome: forwarded, limited (a 429 of our own),
  // upstream_429, upstream_error (5xx, dropped, unreachable), unlimited (not an inference call
  // or --pass-unknown), invalid (400 of our own), client_gone.
  std::map<std::string, std::uint64_t> requests;  // key "upstream\tmodel\toutcome"
  std::uint64_t tokens_committed = 0;
  std::uint64_t waited = 0;          // 429s avoided: calls that waited for capacity, then went
  std::uint64_t upstream_429 = 0;    // 429s received from upstreams
  std::uint64_t passed_unknown = 0;  // unparseable calls forwarded by --pass-unknown
  std::uint64_t in_flight = 0;       // proxied requests now
  // upstream → latency (time to the response head) histogram: counts per kLatencyBounds bucket
  // (the last is +Inf), then the sum in seconds.
  std::map<std::string, std::pair<std::vector<std::uint64_t>, double>> latency;
};
inline constexpr double kProxyLatencyBounds[] = {0.005, 0.025, 0.1, 0.5, 1, 5, 30, 120};

// Thread-safe.
class Proxy {
 public:
  // `limiter` and `options` must outlive the proxy; options.upstreams is not empty.
  Proxy(RateLimiter& limiter, const ServerOptions& options);
  ~Proxy();
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  // ok, or invalid_argument when the TLS set-up failed (an --upstream-ca that is not a
  // readable PEM file). Checked by Server::bind().
  Status status() const;
  // The upstream whose prefix /NAME/ starts `path`; nullptr when none.
  const Upstream* route(std::string_view path) const;
  // The refusal of a proxied request from its head (token, Host/Origin), or nullopt.
  std::optional<Response> check_head(const Upstream& up, const Request& head) const;
  // 413 in the provider's shape (a body over --proxy-max-body).
  Response too_large(const Upstream& up) const;
  // Limits and forwards `request` (head_checked, body read); answers through `down`. The
  // upstream exchange runs on `ioc` (the client connection's: no hand-off between threads),
  // which must outlive the proxy's connections on it (those idle in the pool included).
  void handle(const Upstream& up, Request request, std::shared_ptr<Downstream> down,
              boost::asio::io_context& ioc);
  // Shutting down: waiting calls answer 503; idle upstream connections are closed.
  void begin_shutdown();
  // Blocks until no acquire that waited is still delivering its answer (after
  // begin_shutdown they all end promptly). Call before the io_context stops for good.
  void wait_idle();
  ProxyCounters counters() const;
  // counters() in the Prometheus text format (appended to GET /metrics).
  std::string prometheus() const;

  struct Impl;  // internal (proxy.cc)

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace ratelimit::server
