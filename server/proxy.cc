// The proxy's upstream side: a Boost.Beast client on the client connection's io_context (no
// thread per request), a keep-alive pool per upstream and io_context, TLS through Asio's OpenSSL
// wrapper, and the limiter calls around each forwarded inference call. One Session per proxied
// request:
//
//   classify -> acquire (try, or wait up to --max-wait without a thread) -> connect (or take a
//   pooled connection) -> write the request -> read the head (observe it) -> body: whole
//   (JSON: usage) or streamed piece by piece to the client (SSE: usage from the events)
//   -> commit -> connection back to the pool.
//
// Settling (docs/proxy.md): never reached the upstream (connect, DNS, TLS) → cancel; reached
// it and usage came back → commit the usage; a 2xx without usage → the estimate stays;
// reached it but no usage (429, 5xx, dropped, client gone) → commit 0 tokens: the request
// counts, the estimated tokens are refunded.

// First: Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
// clang-format off
#include <utility>
// clang-format on

#include "proxy.h"

#include <openssl/ssl.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <limits>
#include <mutex>
#include <stop_token>
#include <thread>

#include "args.h"
#include "proxy_api.h"
#include "ratelimit/model_name.h"

namespace ratelimit::server {
namespace {

namespace net = boost::asio;
namespace ssl = net::ssl;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using SteadyClock = std::chrono::steady_clock;

constexpr auto kConnectTimeout = std::chrono::seconds(10);
constexpr auto kWriteTimeout = std::chrono::seconds(60);
constexpr auto kReadTimeout = std::chrono::minutes(10);  // LLM calls take minutes
constexpr std::size_t kMaxWholeResponse = 64 * 1024 * 1024;
constexpr std::size_t kMaxIdlePerUpstream = 64;
constexpr std::size_t kPiece = 16 * 1024;
constexpr std::size_t kReadBuffer = 4 * 1024;  // an answer's head and first events, usually
constexpr auto kMaxRetryWait = std::chrono::seconds(60);

bool hop_by_hop(std::string_view name) {
  static constexpr std::string_view kNames[] = {"connection",
                                                "keep-alive",
                                                "proxy-connection",
                                                "proxy-authenticate",
                                                "te",
                                                "trailer",
                                                "transfer-encoding",
                                                "upgrade",
                                                "host",
                                                "content-length",
                                                "accept-encoding",
                                                "x-ratelimit-token",
                                                "expect",
                                                "proxy-authorization"};
  for (std::string_view n : kNames) {
    if (iequals(name, n)) return true;
  }
  return false;
}

std::string seconds_text(Duration d) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  return std::to_string(std::max<std::int64_t>(1, (ms + 999) / 1000));
}

// One upstream connection (plain or TLS), on its own strand; pooled between requests.
struct UpConn {
  UpConn(net::io_context& ioc, ssl::context* tls) : strand(net::make_strand(ioc)) {
    // Beast reads as much as the buffer has room for, and at least 512 bytes: an empty buffer
    // would read every answer 512 bytes at a time (a streamed answer's head then arrived
    // without its first event, costing a write and a round trip before the first token).
    buffer.reserve(kReadBuffer);
    if (tls) {
      secure.emplace(strand, *tls);
    } else {
      plain.emplace(strand);
    }
  }
  beast::tcp_stream& lowest() { return secure ? beast::get_lowest_layer(*secure) : *plain; }
  template <class F>
  void with_stream(F&& f) {
    if (secure) {
      f(*secure);
    } else {
      f(*plain);
    }
  }
  net::strand<net::io_context::executor_type> strand;
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> secure;
  beast::flat_buffer buffer;
};

}  // namespace

struct Proxy::Impl : std::enable_shared_from_this<Proxy::Impl> {
  Impl(RateLimiter& l, const ServerOptions& o)
      : limiter(l), options(o), tls(ssl::context::tls_client) {
    beast::error_code ec;
    tls.set_default_verify_paths(ec);
    tls.set_verify_mode(ssl::verify_peer);
    if (!options.upstream_ca.empty()) {
      tls.load_verify_file(options.upstream_ca, ec);
      if (ec) {
        tls_status = make_error(ErrorCode::invalid_argument,
                                "--upstream-ca " + cli::printable(options.upstream_ca) +
                                    ": cannot load it as PEM certificates (" + ec.message() +
                                    "); give a readable PEM file of the CA that signed the "
                                    "upstream's certificate");
      }
    }
    for (const Upstream& u : options.upstreams) {
      counters.latency[u.name] = {std::vector<std::uint64_t>(std::size(kProxyLatencyBounds) + 1),
                                  0.0};
    }
  }

  RateLimiter& limiter;
  const ServerOptions& options;
  ssl::context tls;
  Status tls_status;
  std::stop_source shutdown;

  std::mutex mu;  // guards idle and counters
  // Idle keep-alive connections per upstream and io_context (a call uses those of its client
  // connection's io_context, so that it stays on one thread).
  using PoolKey = std::pair<const Upstream*, const net::io_context*>;
  std::map<PoolKey, std::deque<std::shared_ptr<UpConn>>> idle;
  ProxyCounters counters;

  // acquire_async callbacks not finished yet (wait_idle).
  std::mutex idle_mu;
  std::condition_variable idle_cv;
  std::size_t callbacks = 0;
  void callback_begins() {
    std::lock_guard lock(idle_mu);
    ++callbacks;
  }
  void callback_ends() {
    std::lock_guard lock(idle_mu);
    if (--callbacks == 0) idle_cv.notify_all();
  }

  std::shared_ptr<UpConn> pooled(const Upstream& up, const net::io_context& ioc) {
    std::lock_guard lock(mu);
    auto it = idle.find(PoolKey{&up, &ioc});
    if (it == idle.end() || it->second.empty()) return nullptr;
    auto c = std::move(it->second.back());
    it->second.pop_back();
    return c;
  }
  void give_back(const Upstream& up, const net::io_context& ioc, std::shared_ptr<UpConn> c) {
    if (shutdown.stop_requested()) return;
    std::lock_guard lock(mu);
    auto& q = idle[PoolKey{&up, &ioc}];
    if (q.size() < kMaxIdlePerUpstream) q.push_back(std::move(c));
  }
  void count(const Upstream& up, const std::string& model, const char* outcome) {
    std::string key = up.name + "\t" + model + "\t" + outcome;
    std::lock_guard lock(mu);
    // Model names come from clients: past the bound (--max-models series), new ones are
    // counted under the model "(other)" so that /metrics stays bounded.
    if (counters.requests.size() >= options.max_models && !counters.requests.count(key)) {
      key = up.name + "\t(other)\t" + outcome;
    }
    ++counters.requests[key];
  }
  void latency(const Upstream& up, SteadyClock::duration took) {
    const double s = std::chrono::duration<double>(took).count();
    std::size_t b = 0;
    while (b < std::size(kProxyLatencyBounds) && s > kProxyLatencyBounds[b]) ++b;
    std::lock_guard lock(mu);
    auto& h = counters.latency[up.name];
    ++h.first[b];
    h.second += s;
  }
};

namespace {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(std::shared_ptr<Proxy::Impl> p, const Upstream& up, Request req,
          std::shared_ptr<Downstream> down, net::io_context& ioc)
      : p_(std::move(p)), up_(up), ioc_(ioc), req_(std::move(req)), down_(std::move(down)) {}

  ~Session() {
    std::lock_guard lock(p_->mu);
    --p_->counters.in_flight;
  }

  void start() {
    {
      std::lock_guard lock(p_->mu);
      ++p_->counters.in_flight;
    }
    std::string_view rest = std::string_view(req_.target).substr(up_.name.size() + 1);
    const std::string path = req_.path.substr(up_.name.size() + 1);
    target_ = up_.base_path + (rest.empty() || rest.front() != '/' ? "/" : "") + std::string(rest);
    call_ = proxy::classify(up_.api, req_.method, path.empty() ? "/" : path, req_.body);
    if (call_.kind == proxy::Call::Kind::unparseable) {
      if (!p_->options.pass_unknown) {
        p_->count(up_, "", "invalid");
        return fail(400, "invalid", call_.error + " (or start the proxy with --pass-unknown)");
      }
      {
        std::lock_guard lock(p_->mu);
        ++p_->counters.passed_unknown;
      }
      call_.kind = proxy::Call::Kind::other;
    }
    // Weak: the Exchange that keeps this callback is kept by down_.
    down_->on_gone([weak = weak_from_this()] {
      if (auto s = weak.lock()) s->client_gone();
    });
    auto self = shared_from_this();
    if (call_.kind == proxy::Call::Kind::other) return forward();
    if (auto why = model_problem_of(call_.model)) {
      p_->count(up_, "", "invalid");
      return fail(400, "invalid", *why);
    }
    model_label_ = call_.model;
    if (call_.add_include_usage) req_.body = proxy::splice_include_usage(req_.body);
    if (p_->options.max_wait <= Duration(0)) {
      return acquired(p_->limiter.try_acquire(call_.model, call_.estimate), false);
    }
    WaitOptions wait;
    wait.timeout = p_->options.max_wait;
    wait.stop = p_->shutdown.get_token();
    // A grant at once runs the callback on this thread, inside acquire_async (nothing waited:
    // no decide() beforehand to tell, which would cost the store a second read); a wait runs it
    // on the limiter's waiter thread. Either way the rest continues on an upstream
    // connection's strand.
    const std::thread::id caller = std::this_thread::get_id();
    in_acquire_ = true;
    p_->callback_begins();
    PendingAcquire pending = p_->limiter.acquire_async(
        call_.model, call_.estimate,
        [self, caller](Result<Reservation> got) {
          self->waited_ = !(self->in_acquire_ && std::this_thread::get_id() == caller);
          self->waited(std::move(got));
          self->p_->callback_ends();
        },
        wait);
    in_acquire_ = false;
    {
      std::lock_guard lock(live_mu_);
      pending_ = pending;
    }
    if (gone_) pending.cancel();  // the client left before pending_ was set
  }

 private:
  static std::optional<std::string> model_problem_of(const std::string& model) {
    return cli::model_problem(model);
  }

  void set_live(std::shared_ptr<UpConn> c) {
    std::lock_guard lock(live_mu_);
    live_ = std::move(c);
  }

  void client_gone() {
    gone_ = true;
    std::shared_ptr<UpConn> c;
    PendingAcquire pending;
    {
      std::lock_guard lock(live_mu_);
      c = live_;
      pending = pending_;
    }
    pending.cancel();
    if (c) {
      net::post(c->strand, [c] {
        beast::error_code ignored;
        c->lowest().socket().close(ignored);
      });
    }
  }

  void waited(Result<Reservation> got) {
    if (got && !p_->shutdown.stop_requested()) return acquired(std::move(*got), waited_);
    if (got) (void)got->cancel();
    const ErrorCode code = got ? ErrorCode::cancelled : got.error().code;
    if (code == ErrorCode::deadline_exceeded || code == ErrorCode::never_satisfiable) {
      return denied(p_->limiter.decide(call_.model, call_.estimate));
    }
    if (code == ErrorCode::cancelled || code == ErrorCode::closed) {
      if (gone_) return p_->count(up_, model_label_, "client_gone");
      return fail(503, "unavailable", "the ratelimit proxy is shutting down; retry shortly");
    }
    fail(400, "invalid", got.error().message);
  }

  void acquired(Reservation r, bool waited) {
    if (!r.granted()) return denied(r.decision());
    if (gone_) {
      (void)r.cancel();
      return p_->count(up_, model_label_, "client_gone");
    }
    if (waited) {
      std::lock_guard lock(p_->mu);
      ++p_->counters.waited;
    }
    reservation_ = std::move(r);
    reserved_ = true;
    forward();
  }

  void denied(const Decision& d) {
    p_->count(up_, model_label_, "limited");
    const std::string model = printable_model_name(call_.model);
    Response r;
    if (d.code == DecisionCode::store_unavailable) {
      r = error(
          503, "unavailable",
          "the ratelimit proxy's state store is unavailable for " + model + "; retry shortly");
      r.set_header("Retry-After", "1");
      return down_->respond(std::move(r));
    }
    std::string msg =
        "ratelimit proxy: " + model + " is at its quota (" + std::string(reason(d.code)) + ")";
    r = error(429, "rate_limit", "");
    if (d.retry_after != Duration::max()) {
      const std::string s = seconds_text(d.retry_after);
      msg += "; retry after " + s + " s";
      r.set_header("Retry-After", s);
      r.set_header(
          "retry-after-ms",
          std::to_string(std::max<std::int64_t>(
              1, std::chrono::duration_cast<std::chrono::milliseconds>(d.retry_after).count())));
    } else {
      msg += "; this request can never fit the quota: send fewer tokens or raise the quota";
    }
    r.body = proxy::error_body(up_.api, 429, "rate_limit", msg);
    down_->respond(std::move(r));
  }

  Response error(int status, std::string_view kind, const std::string& message) const {
    Response r;
    r.status = status;
    r.content_type = "application/json";
    r.body = proxy::error_body(up_.api, status, kind, message);
    return r;
  }
  void fail(int status, std::string_view kind, const std::string& message) {
    down_->respond(error(status, kind, message));
  }

  // --- the upstream exchange ---

  void build_wire() {
    std::size_t size =
        req_.method.size() + target_.size() + up_.host.size() + 128 + req_.body.size();
    for (const Header& h : req_.headers) size += h.name.size() + h.value.size() + 4;
    wire_.clear();
    wire_.reserve(size);  // appended piece by piece, without temporaries
    wire_.append(req_.method).append(" ").append(target_).append(" HTTP/1.1\r\nHost: ");
    if (up_.host.find(':') != std::string::npos) {
      wire_.append("[").append(up_.host).append("]");
    } else {
      wire_.append(up_.host);
    }
    if (up_.port != (up_.tls ? "443" : "80")) wire_.append(":").append(up_.port);
    wire_ += "\r\n";
    for (const Header& h : req_.headers) {
      if (hop_by_hop(h.name)) continue;
      wire_.append(h.name).append(": ").append(h.value).append("\r\n");
    }
    wire_ += "Accept-Encoding: identity\r\n";
    if (!req_.body.empty() || req_.method == "POST" || req_.method == "PUT" ||
        req_.method == "PATCH") {
      wire_ += "Content-Length: " + std::to_string(req_.body.size()) + "\r\n";
    }
    wire_ += "\r\n";
    wire_ += req_.body;
  }

  void forward() {
    if (wire_.empty()) build_wire();
    if (gone_) return settle_unreached();
    conn_ = p_->pooled(up_, ioc_);
    reused_ = conn_ != nullptr;
    if (!conn_) conn_ = std::make_shared<UpConn>(ioc_, up_.tls ? &p_->tls : nullptr);
    set_live(conn_);
    auto self = shared_from_this();
    net::dispatch(conn_->strand, [self] {
      if (self->reused_) return self->send();
      self->connect();
    });
  }

  void connect() {
    resolver_.emplace(conn_->strand);
    resolver_->async_resolve(
        up_.host, up_.port,
        [self = shared_from_this()](beast::error_code ec, tcp::resolver::results_type found) {
          if (ec)
            return self->unreachable("cannot resolve " + self->up_.host + ": " + ec.message());
          self->conn_->lowest().expires_after(kConnectTimeout);
          self->conn_->lowest().async_connect(
              found, [self](beast::error_code e, const tcp::endpoint&) {
                if (e) return self->unreachable("cannot connect: " + e.message());
                beast::error_code ignored;
                self->conn_->lowest().socket().set_option(tcp::no_delay(true), ignored);
                if (!self->conn_->secure) return self->send();
                self->handshake();
              });
        });
  }

  void handshake() {
    auto& s = *conn_->secure;
    beast::error_code not_ip;
    net::ip::make_address(up_.host, not_ip);
    if (not_ip && !SSL_set_tlsext_host_name(s.native_handle(), up_.host.c_str())) {
      return unreachable("cannot set the TLS server name");  // SNI: names only, never IPs
    }
    s.set_verify_callback(ssl::host_name_verification(up_.host));
    s.async_handshake(ssl::stream_base::client, [self = shared_from_this()](beast::error_code ec) {
      if (ec) {
        return self->unreachable("TLS handshake failed (" + ec.message() +
                                 "); the upstream's certificate is not trusted or does not name " +
                                 self->up_.host +
                                 ": pass --upstream-ca FILE for a private CA, or fix the URL");
      }
      self->send();
    });
  }

  // Never reached the upstream: the reservation is cancelled, the client gets 502.
  void unreachable(const std::string& why) {
    conn_.reset();
    set_live(nullptr);
    settle_unreached();
    if (gone_) return;
    fail(502, "unavailable",
         "ratelimit proxy: upstream " + up_.name + " (" + up_.url + "): " + why);
  }
  void settle_unreached() {
    if (reserved_) (void)reservation_.cancel();
    reserved_ = false;
    p_->count(up_, model_label_, gone_ ? "client_gone" : "upstream_error");
  }

  void send() {
    sent_at_ = SteadyClock::now();
    conn_->lowest().expires_after(kWriteTimeout);
    conn_->with_stream([&](auto& stream) {
      net::async_write(stream, net::buffer(wire_),
                       [self = shared_from_this()](beast::error_code ec, std::size_t) {
                         if (ec) return self->stale_or_dropped("cannot send: " + ec.message());
                         self->read_head();
                       });
    });
  }

  // A pooled connection that fails before any answer was most likely closed by the upstream
  // while idle: try once more on a new connection.
  void stale_or_dropped(const std::string& why) {
    if (reused_ && !gone_) {
      reused_ = false;
      conn_ = std::make_shared<UpConn>(ioc_, up_.tls ? &p_->tls : nullptr);
      set_live(conn_);
      auto self = shared_from_this();
      return net::dispatch(conn_->strand, [self] { self->connect(); });
    }
    dropped(why);
  }

  void read_head() {
    parser_.emplace();
    // Not boost::none: Beast 1.74 compares a Content-Length against an empty limit as larger.
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    parser_->skip(req_.method == "HEAD");
    conn_->lowest().expires_after(kReadTimeout);
    conn_->with_stream([&](auto& stream) {
      http::async_read_header(stream, conn_->buffer, *parser_,
                              [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                                if (ec && n == 0 && self->conn_->buffer.size() == 0) {
                                  return self->stale_or_dropped("no answer: " + ec.message());
                                }
                                if (ec) return self->dropped("bad answer: " + ec.message());
                                self->on_head();
                              });
    });
  }

  void on_head() {
    p_->latency(up_, SteadyClock::now() - sent_at_);
    const auto& m = parser_->get();
    status_ = static_cast<int>(m.result_int());
    head_ = Response{};
    head_.status = status_;
    observed_.headers.clear();
    bool sse = false, json = false;
    for (const auto& f : m) {
      const std::string name(f.name_string()), value(f.value());
      observed_.headers.emplace_back(name, value);
      if (iequals(name, "content-type")) {
        sse = value.find("text/event-stream") != std::string::npos;
        json = value.find("json") != std::string::npos;
      }
      if (!hop_by_hop(name)) head_.headers.push_back({name, value});
    }
    if (status_ == 429) {
      std::lock_guard lock(p_->mu);
      ++p_->counters.upstream_429;
    }
    body_.clear();
    // Gemini's streamGenerateContent without ?alt=sse streams one JSON array, element by
    // element: passed on as it comes too.
    const bool array = !sse && json && call_.stream && up_.api == UpstreamApi::gemini;
    if ((sse || array) && status_ / 100 == 2 && !parser_->is_done()) {
      reader_.emplace(up_.api, call_.add_include_usage, array);
      // The first events came with the head: they go to the client in one write with it
      // (one write and one wake-up fewer before the first token). Otherwise the head goes
      // at once, whatever the upstream's time to its first event.
      if (conn_->buffer.size() > 0) {
        head_pending_ = true;
        return read_piece();
      }
      return start_stream("");
    }
    read_piece();
  }

  void start_stream(std::string first) {
    head_pending_ = false;
    head_.body = std::move(first);
    auto self = shared_from_this();
    down_->start(std::move(head_), [self](bool ok) {
      net::dispatch(self->conn_->strand, [self, ok] {
        if (!ok) return self->dropped("the client went away");
        self->read_piece();
      });
    });
  }

  void read_piece() {
    if (parser_->is_done()) return body_done();
    piece_.resize(kPiece);
    parser_->get().body().data = piece_.data();
    parser_->get().body().size = piece_.size();
    conn_->lowest().expires_after(kReadTimeout);
    conn_->with_stream([&](auto& stream) {
      http::async_read_some(stream, conn_->buffer, *parser_,
                            [self = shared_from_this()](beast::error_code ec, std::size_t) {
                              if (ec == http::error::need_buffer) ec = {};
                              if (ec) return self->dropped("the answer broke off: " + ec.message());
                              self->on_piece();
                            });
    });
  }

  void on_piece() {
    const std::size_t n = piece_.size() - parser_->get().body().size;
    std::string_view got(piece_.data(), n);
    if (!reader_) {
      if (body_.size() + n > kMaxWholeResponse) return dropped("the answer is larger than 64 MiB");
      body_.append(got);
      return read_piece();
    }
    std::string out;
    reader_->feed(got, out);
    if (parser_->is_done()) reader_->finish(out);
    if (head_pending_ && (!out.empty() || conn_->buffer.size() == 0 || parser_->is_done())) {
      return start_stream(std::move(out));
    }
    if (out.empty()) return read_piece();
    auto self = shared_from_this();
    down_->send(std::move(out), [self](bool ok) {
      net::dispatch(self->conn_->strand, [self, ok] {
        if (!ok) return self->dropped("the client went away");
        self->read_piece();
      });
    });
  }

  void body_done() {
    const bool keep = parser_->get().keep_alive();
    observed_.status = status_;
    if (status_ == 429) observed_.body = body_;
    if (call_.kind == proxy::Call::Kind::inference) {
      (void)p_->limiter.observe(call_.model, observed_);
    }
    set_live(nullptr);
    if (keep && !gone_) p_->give_back(up_, ioc_, conn_);
    conn_.reset();
    if (status_ == 429 && retries_ < p_->options.retry_429 && !gone_ && !reader_) {
      return retry_after_hint();
    }
    std::optional<proxy::Usage> usage;
    if (reader_) {
      usage = reader_->usage();
    } else if (status_ / 100 == 2) {
      usage = proxy::usage_of(up_.api, body_);
    }
    settle(usage);
    if (reader_) return down_->end();
    head_.body = std::move(body_);
    down_->respond(std::move(head_));
  }

  void retry_after_hint() {
    ++retries_;
    Duration wait = std::chrono::seconds(1);
    for (const auto& [name, value] : observed_.headers) {
      if (iequals(name, "retry-after-ms")) {
        wait = std::chrono::milliseconds(std::atoll(value.c_str()));
        break;
      }
      if (iequals(name, "retry-after")) wait = std::chrono::seconds(std::atoll(value.c_str()));
    }
    wait = std::clamp<Duration>(wait, Duration(0), kMaxRetryWait);
    timer_.emplace(ioc_);
    timer_->expires_after(wait);
    timer_->async_wait([self = shared_from_this()](beast::error_code) { self->forward(); });
  }

  // Reached the upstream, then the answer broke off (or the client left).
  void dropped(const std::string& why) {
    set_live(nullptr);
    if (conn_) {
      beast::error_code ignored;
      conn_->lowest().socket().close(ignored);
      conn_.reset();
    }
    if (status_ == 0) status_ = 502;
    broken_ = true;
    settle(reader_ ? reader_->usage() : std::nullopt);
    if (gone_) return;
    if (reader_ && !head_pending_) return down_->abort();
    fail(502, "unavailable",
         "ratelimit proxy: upstream " + up_.name + " (" + up_.url + "): " + why);
  }

  void settle(std::optional<proxy::Usage> usage) {
    const char* outcome = gone_                ? "client_gone"
                          : broken_            ? "upstream_error"
                          : status_ == 429     ? "upstream_429"
                          : status_ / 100 == 2 ? "forwarded"
                          : status_ / 100 == 4 ? "forwarded"
                                               : "upstream_error";
    if (call_.kind != proxy::Call::Kind::inference) outcome = "unlimited";
    p_->count(up_, model_label_, outcome);
    if (!reserved_) return;
    reserved_ = false;
    if (!usage && status_ / 100 == 2 && !gone_ && !broken_) {
      usage = proxy::Usage{call_.estimate.input, call_.estimate.output};  // the estimate stays
    }
    const proxy::Usage u = usage.value_or(proxy::Usage{});
    if (reservation_.commit(u.input, u.output)) {
      std::lock_guard lock(p_->mu);
      p_->counters.tokens_committed += static_cast<std::uint64_t>(u.input + u.output);
    }
  }

  std::shared_ptr<Proxy::Impl> p_;
  const Upstream& up_;
  net::io_context& ioc_;  // the client connection's: the upstream exchange runs on it
  Request req_;
  std::shared_ptr<Downstream> down_;
  proxy::Call call_;
  std::string model_label_;
  std::string target_, wire_;
  Reservation reservation_;
  bool reserved_ = false;
  bool waited_ = false;                  // the grant came after a wait (a 429 avoided)
  std::atomic<bool> in_acquire_{false};  // start() is inside acquire_async
  std::atomic<bool> gone_{false};
  std::shared_ptr<UpConn> conn_;
  std::mutex live_mu_;
  std::shared_ptr<UpConn> live_;  // conn_, for client_gone from another thread
  PendingAcquire pending_;        // guarded by live_mu_ too
  bool reused_ = false;
  std::optional<tcp::resolver> resolver_;
  std::optional<net::steady_timer> timer_;
  std::optional<http::response_parser<http::buffer_body>> parser_;
  SteadyClock::time_point sent_at_;
  int status_ = 0;
  bool broken_ = false;  // the answer broke off (or the client left): no usage means a refund
  int retries_ = 0;
  Response head_;
  ProviderResponse observed_;
  std::string body_;
  std::string piece_;
  std::optional<proxy::EventReader> reader_;
  bool head_pending_ = false;  // a streamed answer's head waits for its first piece (on_head)
};

}  // namespace

Proxy::Proxy(RateLimiter& limiter, const ServerOptions& options)
    : impl_(std::make_shared<Impl>(limiter, options)) {}

Proxy::~Proxy() = default;

Status Proxy::status() const { return impl_->tls_status; }

const Upstream* Proxy::route(std::string_view path) const {
  if (path.size() < 2 || path.front() != '/') return nullptr;
  const std::string_view first = path.substr(1, path.find('/', 1) - 1);
  for (const Upstream& u : impl_->options.upstreams) {
    if (u.name == first) return &u;
  }
  return nullptr;
}

std::optional<Response> Proxy::check_head(const Upstream& up, const Request& head) const {
  auto problem = proxy::access_problem(head, impl_->options.token);
  if (!problem) return std::nullopt;
  Response r;
  r.status = problem->first;
  r.content_type = "application/json";
  r.body = proxy::error_body(up.api, problem->first, "invalid", problem->second);
  return r;
}

Response Proxy::too_large(const Upstream& up) const {
  Response r;
  r.status = 413;
  r.content_type = "application/json";
  r.body = proxy::error_body(up.api, 413, "invalid",
                             "ratelimit proxy: the request body is larger than " +
                                 std::to_string(impl_->options.proxy_max_body) +
                                 " bytes (the server's --proxy-max-body)");
  r.close = true;
  return r;
}

void Proxy::handle(const Upstream& up, Request request, std::shared_ptr<Downstream> down,
                   net::io_context& ioc) {
  std::make_shared<Session>(impl_, up, std::move(request), std::move(down), ioc)->start();
}

void Proxy::begin_shutdown() {
  impl_->shutdown.request_stop();
  std::lock_guard lock(impl_->mu);
  for (auto& [key, q] : impl_->idle) {
    for (auto& c : q) {
      net::post(c->strand, [c] {
        beast::error_code ignored;
        c->lowest().socket().close(ignored);
      });
    }
    q.clear();
  }
}

ProxyCounters Proxy::counters() const {
  std::lock_guard lock(impl_->mu);
  return impl_->counters;
}

void Proxy::wait_idle() {
  std::unique_lock lock(impl_->idle_mu);
  impl_->idle_cv.wait(lock, [&] { return impl_->callbacks == 0; });
}

std::string Proxy::prometheus() const { return proxy::prometheus_text(counters()); }

}  // namespace ratelimit::server
