// Internal to the HTTP layer: what every connection shares (Core: the io_contexts, the acceptor
// and the set of open connections) and the Asio types they are built on. The listener
// (http_server.cc) knows a connection only through the three functions at the end, so that
// Beast's HTTP parser stays in the connection's files (http_connection.h).
#pragma once

// First: Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>
// (g++ 12, -std=c++20). clang-format would sort it among the others.
// clang-format off
#include <utility>
// clang-format on

#include <atomic>
#include <boost/asio.hpp>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

#include "handlers.h"
#include "http.h"
#include "proxy.h"
#include "server.h"

namespace ratelimit::server::http_layer {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;  // beast::error_code is the same type
using Strand = net::strand<net::io_context::executor_type>;
using SteadyClock = std::chrono::steady_clock;
// The connection's socket and timer are bound to its strand by type (no polymorphic executor
// on the hot path).
using Socket = net::basic_stream_socket<tcp, Strand>;

class Connection;

// The io_contexts, one per io thread (each run by its thread alone): a connection lives on
// one of them, picked in turn at accept, and so do the upstream connections of the proxied
// calls it makes. One shared io_context run by every thread handed each completion to
// whichever thread woke first: a proxied call then crossed between the cores several times
// (client read, upstream write and read, client write), which cost more than the call itself
// on loopback (docs/benchmarks.md, proxy_bench).
inline std::vector<std::unique_ptr<net::io_context>> make_io_contexts(std::size_t threads) {
  std::vector<std::unique_ptr<net::io_context>> out;
  for (std::size_t i = 0; i < threads; ++i) out.push_back(std::make_unique<net::io_context>(1));
  return out;
}

// What every connection shares: the io_contexts, the handlers and the set of open connections.
struct Core {
  Core(Handlers& h, RateLimiter& limiter, std::size_t threads)
      : handlers(h),
        options(h.options()),
        iocs(make_io_contexts(threads)),
        acceptor(net::make_strand(*iocs.front())),
        accept_timer(acceptor.get_executor()),
        grace_timer(acceptor.get_executor()) {
    if (!options.upstreams.empty()) {
      proxy = std::make_unique<Proxy>(limiter, options);
      handlers.set_proxy_counters([p = proxy.get()] { return p->counters(); });  // /v1/stats
    }
  }
  ~Core() {
    if (proxy) handlers.set_proxy_counters({});  // before the proxy goes
  }
  Core(const Core&) = delete;
  Core& operator=(const Core&) = delete;

  Handlers& handlers;
  const ServerOptions& options;
  // Before the io_contexts: connections destroyed with them still unregister here.
  std::mutex mu;
  std::unordered_map<Connection*, std::weak_ptr<Connection>> live;
  std::vector<std::unique_ptr<net::io_context>> iocs;
  std::size_t next_ioc = 0;      // the io_context of the next connection (acceptor's strand)
  std::unique_ptr<Proxy> proxy;  // with --upstream: routes /NAME/... (proxy.h)
  tcp::acceptor acceptor;        // and the two timers: on the acceptor's strand
  net::steady_timer accept_timer;
  net::steady_timer grace_timer;
  std::vector<net::executor_work_guard<net::io_context::executor_type>> guards;
  std::atomic<bool> stopping{false};

  void accept();
  void on_accept(error_code ec);
  // The next connection's strand and socket (accepted into).
  std::optional<Strand> next_strand;
  std::optional<Socket> next_socket;
  void begin_stop();  // on the acceptor's strand
  void end_grace();   // on the acceptor's strand
  std::vector<std::shared_ptr<Connection>> connections() {
    std::vector<std::shared_ptr<Connection>> out;
    std::lock_guard lock(mu);
    for (auto& [p, w] : live) {
      if (auto c = w.lock()) out.push_back(std::move(c));
    }
    return out;
  }
};

// Serves `socket`, whose executor is `strand` (http_connection.cc). `refusal`: answer it and
// close (too many connections); such a connection is not counted.
void start_connection(Core& core, Strand strand, Socket socket,
                      std::optional<Response> refusal = std::nullopt);
// The server stops: a connection between requests closes now; one in a request closes after
// its answer.
void stop_connection(Connection& c);
// The shutdown grace has passed: cut the connection, whatever it is doing.
void cut_connection(Connection& c);

}  // namespace ratelimit::server::http_layer
