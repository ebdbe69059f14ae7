// The endpoints of `ratelimit serve`, independent of sockets: a Request in, a Response out
// through an Exchange (at once, or later for a waiting acquire). Routes, the bearer token and
// Host/Origin checks, leases, the model-name cap, the metrics and the live page live here; the
// HTTP layer (http_connection.cc, http_write.cc) only reads, bounds and writes.
//
// To add an endpoint: a Route, its pattern in kRoutes (handlers.cc), its methods, and a case in
// Handlers::serve. JSON shapes come from tools/ratelimit/json_format.h (one serializer for the
// CLI and the server).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "http.h"
#include "proxy.h"
#include "ratelimit/limiter.h"
#include "server.h"

namespace ratelimit::server {

// Thread-safe.
class Handlers {
 public:
  // `limiter` must outlive the handlers.
  Handlers(RateLimiter& limiter, ServerOptions options);
  ~Handlers();
  Handlers(const Handlers&) = delete;
  Handlers& operator=(const Handlers&) = delete;

  // Looks at a request's head before its body is read: unknown route, method, Host/Origin
  // and token. Returns the refusal (counted), or nullopt to read the body and call handle().
  std::optional<Response> check_head(const Request& head);
  // Answers `request` through `exchange`: at once, or, for an acquire that waits, later from
  // the limiter's waiter thread. A client that leaves (Exchange::client_gone) during a wait has
  // it cancelled; such a request is never granted.
  void handle(const Request& request, const std::shared_ptr<Exchange>& exchange);
  // The JSON error for a request the HTTP layer refused while reading it (400, 408, 413, 414,
  // 431, 503 too_many_connections), counted under the route "unmatched".
  Response refuse(int status, std::string_view code, std::string message);

  // Shutting down: waiting acquires answer 503 shutting_down, /healthz answers 503.
  void begin_shutdown();
  bool shutting_down() const;
  // Blocks until no acquire_async callback is pending or running (after begin_shutdown they
  // all complete promptly). Call before destroying what the answers are delivered to.
  void wait_idle();

  // Forgets the reservations whose lease has ended; returns how many.
  std::size_t expire_leases();
  // Expires leases and, on the YAML store, writes the state every persist_every. Call about
  // once a second.
  void maintain();

  // The limiting proxy's counters (Proxy::counters), shown in GET /v1/stats as "proxy" (and
  // on the live page): set by the server right after it constructs its Proxy. Without a
  // source (no --upstream), /v1/stats has no "proxy" key. Thread-safe (meant for before the
  // server runs; a later call takes effect from the next request); `source` is called on io
  // threads, once per GET /v1/stats, and must stay valid until the handlers are destroyed or
  // it is replaced. An empty function removes the source.
  void set_proxy_counters(std::function<ProxyCounters()> source);

  ServerCounters counters() const;
  // Open connections, kept by the HTTP layer (shown in /metrics).
  std::atomic<std::size_t>& connections();
  const ServerOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ratelimit::server
