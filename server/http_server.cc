// The HTTP layer of `ratelimit serve` (Boost.Asio): each io thread runs its own io_context
// (http_core.h says why); this file binds, accepts (or refuses past --max-connections) and shuts
// down. Each connection is a state machine on its own strand (http_connection.h: reading in
// http_connection.cc, writing in http_write.cc); what they share is Core (http_core.h).

#include <sys/resource.h>
#include <sys/socket.h>

#include <condition_variable>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "http_core.h"

namespace ratelimit::server {
namespace http_layer {

void Core::accept() {
  next_strand.emplace(net::make_strand(*iocs[next_ioc]));
  next_ioc = (next_ioc + 1) % iocs.size();
  next_socket.emplace(*next_strand);
  acceptor.async_accept(*next_socket, [this](error_code ec) { on_accept(ec); });
}

void Core::on_accept(error_code ec) {
  if (stopping || !acceptor.is_open()) return;
  if (ec) {
    // Out of descriptors (EMFILE) or a connection reset before it was accepted: pause briefly
    // instead of spinning, then accept again.
    accept_timer.expires_after(std::chrono::milliseconds(50));
    accept_timer.async_wait([this](error_code e) {
      if (!e && !stopping) accept();
    });
    return;
  }
  if (handlers.connections().fetch_add(1) >= options.max_connections) {
    handlers.connections().fetch_sub(1);
    Response r = handlers.refuse(
        503, "too_many_connections",
        "the server has " + std::to_string(options.max_connections) +
            " open connections (its --max-connections); retry shortly, or reuse a connection");
    r.set_header("Retry-After", "1");
    start_connection(*this, std::move(*next_strand), std::move(*next_socket), std::move(r));
  } else {
    start_connection(*this, std::move(*next_strand), std::move(*next_socket));
  }
  accept();
}

void Core::begin_stop() {
  error_code ignored;
  acceptor.close(ignored);
  accept_timer.cancel();
  auto open = connections();
  for (auto& c : open) stop_connection(*c);
  open.clear();
  bool empty;
  {
    std::lock_guard lock(mu);
    empty = live.empty();
  }
  if (empty) return end_grace();
  grace_timer.expires_after(options.shutdown_grace);
  grace_timer.async_wait([this](error_code) { end_grace(); });
}

void Core::end_grace() {
  for (auto& c : connections()) cut_connection(*c);
  guards.clear();
}

}  // namespace http_layer

namespace {

void raise_fd_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
}

using http_layer::Core;
using http_layer::error_code;
using http_layer::tcp;
namespace net = boost::asio;

}  // namespace

struct Server::Impl {
  Impl(RateLimiter& limiter, ServerOptions o)
      : handlers(limiter, std::move(o)),
        core(handlers, limiter, handlers.options().threads == 0 ? 1 : handlers.options().threads) {}

  Handlers handlers;
  Core core;
  bool bound = false;
  std::atomic<bool> running{false}, stopping{false};

  std::mutex maintenance_mu;
  std::condition_variable maintenance_cv;
  bool maintenance_stop = false;
  std::thread maintenance;

  void maintain() {
    std::unique_lock lock(maintenance_mu);
    while (!maintenance_stop) {
      maintenance_cv.wait_for(lock, std::chrono::seconds(1));
      if (maintenance_stop) break;
      lock.unlock();
      handlers.maintain();
      lock.lock();
    }
  }
};

Server::Server(RateLimiter& limiter, ServerOptions options)
    : impl_(std::make_unique<Impl>(limiter, std::move(options))) {}

Server::~Server() {
  stop();
  {
    std::lock_guard lock(impl_->maintenance_mu);
    impl_->maintenance_stop = true;
  }
  impl_->maintenance_cv.notify_all();
  if (impl_->maintenance.joinable()) impl_->maintenance.join();
  impl_->handlers.begin_shutdown();
  impl_->handlers.wait_idle();
}

Result<int> Server::bind() {
  const ServerOptions& o = impl_->handlers.options();
  const std::string where = o.listen.host + ":" + std::to_string(o.listen.port);
  if (!is_loopback(o.listen.host) && o.token.empty()) {
    return make_error(ErrorCode::invalid_argument,
                      "refusing to listen on " + where +
                          " without a token: anyone who can reach it could spend your quotas; "
                          "pass --token-file PATH (a file holding a secret), or listen on "
                          "127.0.0.1");
  }
  if (impl_->core.proxy) {
    if (auto s = impl_->core.proxy->status(); !s) return tl::unexpected(s.error());
  }
  raise_fd_limit();
  auto fail = [&](const std::string& why) {
    return make_error(ErrorCode::unavailable,
                      "cannot listen on " + where + ": " + why +
                          "; is another server using the port? pick another with --listen "
                          "HOST:PORT");
  };
  error_code ec;
  net::ip::address address;
  if (iequals(o.listen.host, "localhost")) {
    address = net::ip::make_address("127.0.0.1", ec);
  } else {
    address = net::ip::make_address(o.listen.host, ec);
  }
  if (ec) return fail("not an IP address (" + ec.message() + ")");
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(o.listen.port));
  tcp::acceptor& a = impl_->core.acceptor;
  a.open(endpoint.protocol(), ec);
  if (ec) return fail(ec.message());
  // SO_REUSEADDR only: SO_REUSEPORT would let a second server bind the same port and silently
  // take half the traffic (with its own store).
  a.set_option(net::socket_base::reuse_address(true), ec);
  a.bind(endpoint, ec);
  if (ec) {
    a.close(ec);
    return fail(ec.message());
  }
  a.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return fail(ec.message());
  impl_->bound = true;
  return static_cast<int>(a.local_endpoint().port());
}

void Server::run() {
  if (!impl_->bound) return;
  // `running` before `stopping` is read (and the reverse in stop()): a stop() that races with
  // this start is never lost.
  impl_->running = true;
  if (impl_->stopping) return;
  Core& core = impl_->core;
  for (auto& ioc : core.iocs) core.guards.push_back(net::make_work_guard(*ioc));
  impl_->maintenance = std::thread([this] { impl_->maintain(); });
  net::post(core.acceptor.get_executor(), [&core] { core.accept(); });
  std::vector<std::thread> io;
  for (std::size_t i = 1; i < core.iocs.size(); ++i) {
    io.emplace_back([ioc = core.iocs[i].get()] { ioc->run(); });
  }
  core.iocs.front()->run();
  for (auto& t : io) t.join();
  // Waiting acquires were cancelled by the stop; their callbacks may still be on their way.
  // Then run what they posted, so that every connection is gone before run() returns.
  impl_->handlers.wait_idle();
  if (core.proxy) core.proxy->wait_idle();
  // Until none has work left: what one io_context's handlers post may land on another's.
  for (std::size_t ran = 1; ran != 0;) {
    ran = 0;
    for (auto& ioc : core.iocs) {
      ioc->restart();
      ran += ioc->poll();
    }
  }
}

void Server::stop() {
  impl_->stopping = true;
  impl_->handlers.begin_shutdown();
  if (impl_->core.proxy) impl_->core.proxy->begin_shutdown();
  if (!impl_->running) return;
  Core& core = impl_->core;
  if (core.stopping.exchange(true)) return;
  net::post(core.acceptor.get_executor(), [&core] { core.begin_stop(); });
}

std::size_t Server::expire_leases() { return impl_->handlers.expire_leases(); }

ServerCounters Server::counters() const { return impl_->handlers.counters(); }

Handlers& Server::handlers() { return impl_->handlers; }

}  // namespace ratelimit::server
