// The HTTP layer: the only file that touches Boost.Beast and Boost.Asio. A few io threads run
// one io_context; each connection is a state machine on its own strand:
//
//   idle (waiting for a request's first byte, idle_timeout)
//   -> head (reading the request line and headers, header_timeout from the first byte;
//            bounded by Beast's header_limit and our line/field limits)
//   -> body (Content-Length or chunked, bounded by body_limit = --max-body)
//   -> handling (Handlers::handle; a waiting acquire watches the socket meanwhile: a client
//                that closes has its wait cancelled)
//   -> writing -> idle again (keep-alive, pipelined requests answered in order) or closing.
//
// Bounds are checked while reading, before the token and before any body is buffered.

// First: Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>
// (g++ 12, -std=c++20). clang-format would sort it among the others.
// clang-format off
#include <utility>
// clang-format on

#include <sys/resource.h>
#include <sys/socket.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "args.h"
#include "handlers.h"
#include "proxy.h"
#include "server.h"

namespace ratelimit::server {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using Strand = net::strand<net::io_context::executor_type>;
using SteadyClock = std::chrono::steady_clock;
// The connection's socket and timer are bound to its strand by type (no polymorphic executor
// on the hot path).
using Socket = net::basic_stream_socket<tcp, Strand>;
using Timer = net::basic_waitable_timer<SteadyClock, net::wait_traits<SteadyClock>, Strand>;

constexpr std::size_t kRequestLineLimit = 8 * 1024;    // beyond: 414
constexpr std::size_t kHeaderFieldsLimit = 16 * 1024;  // beyond: 431
constexpr std::size_t kMaxFields = 100;                // beyond: 431
constexpr std::size_t kHeadLimit = kRequestLineLimit + kHeaderFieldsLimit + 4;
constexpr std::size_t kBufferLimit = 64 * 1024;  // bytes read ahead of the parser
constexpr std::size_t kWatchRead = 4096;
constexpr std::size_t kDrainLimit = 1024 * 1024;  // read and dropped before a close

// Appends a number in decimal (no temporary string).
void append_number(std::string& out, std::uint64_t v) {
  char buf[24];
  out.append(buf, std::to_chars(buf, buf + sizeof buf, v).ptr);
}
constexpr auto kWriteTimeout = std::chrono::seconds(10);
constexpr auto kDrainTimeout = std::chrono::seconds(2);

// The path of a request-target, percent-decoded (a malformed escape stays as it is).
std::string decode_path(std::string_view target) {
  target = target.substr(0, target.find('?'));
  std::string out;
  out.reserve(target.size());
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < target.size(); ++i) {
    if (target[i] == '%' && i + 2 < target.size()) {
      const int hi = hex(target[i + 1]), lo = hex(target[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
        continue;
      }
    }
    out += target[i];
  }
  return out;
}

class Connection;

// A body stream followed by one more piece (the proxy's /metrics series).
class AppendedStream : public BodyStream {
 public:
  AppendedStream(std::shared_ptr<BodyStream> first, std::string tail)
      : first_(std::move(first)), tail_(std::move(tail)) {}
  bool next(std::string& out) override {
    if (first_ && first_->next(out)) return true;
    first_.reset();
    if (tail_.empty()) return false;
    out += tail_;  // a piece of its own, then the end (as write_piece expects)
    tail_.clear();
    return true;
  }

 private:
  std::shared_ptr<BodyStream> first_;
  std::string tail_;
};

// What every connection shares: the io_context, the handlers and the set of open connections.
struct Core {
  Core(Handlers& h, RateLimiter& limiter, std::size_t threads)
      : handlers(h),
        options(h.options()),
        ioc(static_cast<int>(threads)),
        acceptor(net::make_strand(ioc)),
        accept_timer(acceptor.get_executor()),
        grace_timer(acceptor.get_executor()) {
    if (!options.upstreams.empty()) proxy = std::make_unique<Proxy>(limiter, options, ioc);
  }

  Handlers& handlers;
  const ServerOptions& options;
  // Before the io_context: connections destroyed with it still unregister here.
  std::mutex mu;
  std::unordered_map<Connection*, std::weak_ptr<Connection>> live;
  net::io_context ioc;
  std::unique_ptr<Proxy> proxy;  // with --upstream: routes /NAME/... (proxy.h)
  tcp::acceptor acceptor;        // and the two timers: on the acceptor's strand
  net::steady_timer accept_timer;
  net::steady_timer grace_timer;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> guard;
  std::atomic<bool> stopping{false};

  void accept();
  void on_accept(beast::error_code ec);
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

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  // `refusal`: answer it and close (too many connections); such a connection is not counted.
  Connection(Core& core, Strand strand, Socket socket,
             std::optional<Response> refusal = std::nullopt)
      : core_(core),
        strand_(std::move(strand)),
        socket_(std::move(socket)),
        timer_(strand_),
        buffer_(kBufferLimit),
        refusal_(std::move(refusal)),
        counted_(!refusal_) {}

  ~Connection() {
    if (!counted_) return;
    core_.handlers.connections().fetch_sub(1);
    bool last = false;
    {
      std::lock_guard lock(core_.mu);
      core_.live.erase(this);
      last = core_.live.empty();
    }
    if (last && core_.stopping) {
      Core* core = &core_;
      net::post(core_.acceptor.get_executor(), [core] { core->grace_timer.cancel(); });
    }
  }

  // The socket's executor is `strand` (Core::accept makes it so).
  void start() {
    if (counted_) {
      std::lock_guard lock(core_.mu);
      core_.live.emplace(this, weak_from_this());
    }
    net::dispatch(strand_, [self = shared_from_this()] {
      if (self->refusal_) {
        self->keep_alive_ = false;
        Response r = std::move(*self->refusal_);
        self->refusal_.reset();
        self->write(std::move(r));
        return;
      }
      beast::error_code ignored;
      self->socket_.set_option(tcp::no_delay(true), ignored);
      self->read_next();
    });
  }

  // The server stops: a connection between requests closes now; one in a request closes after
  // its answer.
  void on_stop() {
    net::dispatch(strand_, [self = shared_from_this()] {
      self->close_after_ = true;
      if (self->state_ == State::idle || self->state_ == State::head) self->close();
    });
  }

  // The shutdown grace has passed: cut the connection, whatever it is doing.
  void cut() {
    net::dispatch(strand_, [self = shared_from_this()] { self->close(); });
  }

  Strand& strand() { return strand_; }

  // --- a streamed proxy answer (ProxyDownstream, on the strand) ---

  void stream_start(Response head, std::function<void(bool)> ready) {
    if (state_ != State::handling || peer_gone_) return ready(false);
    if (watching_) {  // stop watching first: on_watch begins the stream
      pending_start_.emplace(std::move(head), std::move(ready));
      beast::error_code ignored;
      socket_.cancel(ignored);
      return;
    }
    begin_stream(std::move(head), std::move(ready));
  }

  void stream_send(std::string piece, std::function<void(bool)> ready) {
    if (state_ != State::writing || !streaming_) return ready(false);
    if (chunked_) {
      char size[24];
      std::snprintf(size, sizeof size, "%zx\r\n", piece.size());
      out_head_ = size;
      piece += "\r\n";
    } else {
      out_head_.clear();
    }
    out_body_ = std::move(piece);
    write_stream_part(std::move(ready));
  }

  void stream_end() {
    if (state_ != State::writing || !streaming_) return;
    streaming_ = false;
    if (watching_) {  // stop watching first: on_watch writes the end
      end_pending_ = true;
      beast::error_code ignored;
      socket_.cancel(ignored);  // no write is in progress (the last send completed)
      return;
    }
    write_stream_end();
  }

  void write_stream_end() {
    out_head_ = chunked_ ? "0\r\n\r\n" : "";
    out_body_.clear();
    arm(kWriteTimeout);
    std::array<net::const_buffer, 2> buffers = {net::buffer(out_head_), net::buffer(out_body_)};
    net::async_write(socket_, buffers,
                     [self = shared_from_this()](beast::error_code ec, std::size_t) {
                       self->exchange_.reset();
                       self->on_written(ec);
                     });
  }

  void stream_abort() { close(); }

 private:
  enum class State { idle, head, body, handling, writing, closing, closed };

  // --- deadlines ---

  void arm(SteadyClock::duration d) {
    const std::uint64_t gen = ++timer_gen_;
    timer_.expires_after(d);
    timer_.async_wait([self = shared_from_this(), gen](beast::error_code ec) {
      if (ec || gen != self->timer_gen_) return;
      self->close();  // idle, header, body, write or drain deadline
    });
  }
  void disarm() {
    ++timer_gen_;
    timer_.cancel();
  }

  // --- reading ---

  void read_next() {
    if (state_ == State::closed) return;
    if (close_after_ || core_.stopping) return graceful_close();
    state_ = State::idle;
    if (buffer_.size() > 0) return read_head();
    arm(core_.options.idle_timeout);
    socket_.async_wait(Socket::wait_read, [self = shared_from_this()](beast::error_code ec) {
      if (ec || self->state_ != State::idle) return self->close();
      if (self->core_.stopping) return self->close();
      self->read_head();
    });
  }

  void read_head() {
    state_ = State::head;
    arm(core_.options.header_timeout);
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(kHeadLimit));
    parser_->body_limit(core_.proxy
                            ? std::max(core_.options.max_body_bytes, core_.options.proxy_max_body)
                            : core_.options.max_body_bytes);
    proxy_up_ = nullptr;
    http::async_read_header(
        socket_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_head(ec); });
  }

  // The request line is over its limit when the first 8 KiB hold no line end.
  bool line_too_long() const {
    const auto data = buffer_.data();
    const std::string_view seen(static_cast<const char*>(data.data()),
                                std::min(data.size(), kRequestLineLimit + 1));
    return seen.find('\n') == std::string_view::npos && data.size() > kRequestLineLimit;
  }

  void begin_stream(Response head, std::function<void(bool)> ready) {
    state_ = State::writing;
    streaming_ = true;
    if (!keep_alive_ || core_.stopping || version_ == 10) close_after_ = true;
    chunked_ = version_ == 11;
    put_head(head, chunked_ ? "Transfer-Encoding: chunked\r\n" : "");
    out_body_.clear();
    write_stream_part(std::move(ready));
  }

  void write_stream_part(std::function<void(bool)> ready) {
    arm(kWriteTimeout);
    std::array<net::const_buffer, 2> buffers = {net::buffer(out_head_), net::buffer(out_body_)};
    net::async_write(
        socket_, buffers,
        [self = shared_from_this(), ready = std::move(ready)](beast::error_code ec, std::size_t) {
          self->disarm();
          if (ec || self->state_ != State::writing) {
            self->close();
            return ready(false);
          }
          self->watch();
          ready(true);
        });
  }

  void refuse(int status, std::string_view code, std::string message) {
    keep_alive_ = false;
    version_ = 11;
    head_only_ = false;
    write(core_.handlers.refuse(status, code, std::move(message)));
  }

  void on_head(beast::error_code ec) {
    if (state_ != State::head) return;
    if (ec) {
      if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
        if (line_too_long()) {
          return refuse(
              414, "uri_too_long",
              "the request line is longer than " + std::to_string(kRequestLineLimit) + " bytes");
        }
        return refuse(
            431, "headers_too_large",
            "the request headers are larger than " + std::to_string(kHeaderFieldsLimit) + " bytes");
      }
      if (ec == http::error::body_limit) return too_large();
      if (ec == http::error::end_of_stream || ec == http::error::partial_message ||
          ec.category() != http::make_error_code(http::error::end_of_stream).category()) {
        return close();  // the client left, a socket error, or a deadline
      }
      return refuse(400, "invalid_request",
                    "the request could not be parsed (" + ec.message() + ")");
    }
    auto& m = parser_->get();
    request_ = Request{};
    request_.method = std::string(m.method_string());
    request_.target = std::string(m.target());
    request_.version = static_cast<int>(m.version());
    if (request_.method.size() + request_.target.size() + 11 > kRequestLineLimit) {
      return refuse(
          414, "uri_too_long",
          "the request line is longer than " + std::to_string(kRequestLineLimit) + " bytes");
    }
    std::size_t field_bytes = 0;
    for (const auto& f : m) {
      field_bytes += f.name_string().size() + f.value().size() + 4;
      if (request_.headers.size() == kMaxFields || field_bytes > kHeaderFieldsLimit) {
        return refuse(431, "headers_too_large",
                      "the request has more than " + std::to_string(kMaxFields) +
                          " header fields or more than " + std::to_string(kHeaderFieldsLimit) +
                          " bytes of them");
      }
      request_.headers.push_back({std::string(f.name_string()), std::string(f.value())});
    }
    if (request_.version != 10 && request_.version != 11) {
      return refuse(505, "http_version_not_supported", "only HTTP/1.0 and HTTP/1.1 are served");
    }
    request_.path = decode_path(request_.target);
    version_ = request_.version;
    keep_alive_ = m.keep_alive();
    head_only_ = request_.method == "HEAD";
    const bool has_body = !parser_->is_done();
    // The proxy's routes (/NAME/ of an --upstream) have their own checks and body limit.
    proxy_up_ = core_.proxy ? core_.proxy->route(request_.path) : nullptr;
    auto refusal = proxy_up_ ? core_.proxy->check_head(*proxy_up_, request_)
                             : core_.handlers.check_head(request_);
    if (refusal) {
      if (has_body) refusal->close = true;
      return write(std::move(*refusal));
    }
    if (core_.proxy) {
      const std::uint64_t limit =
          proxy_up_ ? core_.options.proxy_max_body : core_.options.max_body_bytes;
      if (parser_->content_length() && *parser_->content_length() > limit) return too_large();
      parser_->body_limit(limit);
    }
    request_.head_checked = true;
    bool continue_first = false;
    if (const std::string* expect = request_.header("Expect")) {
      if (!iequals(*expect, "100-continue")) {
        return refuse(
            417, "expectation_failed",
            "only \"Expect: 100-continue\" is understood, got \"" + cli::printable(*expect) + "\"");
      }
      continue_first = has_body && request_.version == 11;
    }
    if (!has_body) return dispatch();
    state_ = State::body;
    if (!continue_first && body_from_buffer()) return;
    arm(core_.options.header_timeout);
    if (continue_first) {
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      net::async_write(socket_, net::buffer(kContinue.data(), kContinue.size()),
                       [self = shared_from_this()](beast::error_code ec, std::size_t) {
                         if (ec) return self->close();
                         self->read_body();
                       });
      return;
    }
    read_body();
  }

  // A small body usually arrives in the same segment as its head: parse what is already
  // buffered without another asynchronous read (and without re-arming the deadline). True when
  // that ended the body (complete, or an error answered as the asynchronous read would).
  bool body_from_buffer() {
    beast::error_code ec;
    while (buffer_.size() > 0 && !parser_->is_done()) {
      const std::size_t used = parser_->put(buffer_.data(), ec);
      buffer_.consume(used);
      if (ec == http::error::need_more) return false;
      if (ec) break;
      if (used == 0) return false;
    }
    if (!ec && !parser_->is_done()) return false;
    on_body(ec);
    return true;
  }

  void read_body() {
    http::async_read(
        socket_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_body(ec); });
  }

  void too_large() {
    if (proxy_up_) {
      keep_alive_ = false;
      return write(core_.proxy->too_large(*proxy_up_));
    }
    refuse(413, "payload_too_large",
           "the body is larger than " + std::to_string(core_.options.max_body_bytes) +
               " bytes (the server's --max-body)");
  }

  void on_body(beast::error_code ec) {
    if (state_ != State::body) return;
    if (ec) {
      if (ec == http::error::body_limit) return too_large();
      if (ec == http::error::end_of_stream || ec == http::error::partial_message ||
          ec.category() != http::make_error_code(http::error::end_of_stream).category()) {
        return close();
      }
      return refuse(400, "invalid_request", "the body could not be read (" + ec.message() + ")");
    }
    request_.body = std::move(parser_->get().body());
    dispatch();
  }

  // --- handling ---

  void dispatch() {
    state_ = State::handling;
    disarm();
    parser_.reset();
    // With the proxy, GET /metrics also carries its series (appended after the handlers').
    const bool proxy_metrics = core_.proxy && request_.path == "/metrics";
    exchange_ = std::make_shared<Exchange>([self = shared_from_this(), proxy_metrics](Response r) {
      if (proxy_metrics && r.status == 200 && r.stream) {
        r.stream =
            std::make_shared<AppendedStream>(std::move(r.stream), self->core_.proxy->prometheus());
      }
      if (self->strand_.running_in_this_thread()) {
        self->answer_ = std::move(r);  // answered at once, within handle()
        return;
      }
      auto held = std::make_shared<Response>(std::move(r));
      net::post(self->strand_, [self, held] { self->on_answer(std::move(*held)); });
    });
    if (proxy_up_) {
      core_.proxy->handle(*proxy_up_, std::move(request_), make_downstream());
    } else {
      core_.handlers.handle(request_, exchange_);
    }
    request_ = Request{};
    if (answer_) {
      Response r = std::move(*answer_);
      answer_.reset();
      return write(std::move(r));
    }
    watch();
  }

  // While an answer is pending (a waiting acquire), read on: pipelined requests are kept for
  // later, and the end of the stream means the client left. The same while a streamed proxy
  // answer is written: close() then tells the exchange, so the proxy stops the upstream at once.
  void watch() {
    const bool streaming = state_ == State::writing && streaming_;
    if (watching_ || (state_ != State::handling && !streaming)) return;
    if (buffer_.max_size() - buffer_.size() < kWatchRead) return;  // full: stop reading
    watching_ = true;
    socket_.async_read_some(buffer_.prepare(kWatchRead),
                            [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                              self->on_watch(ec, n);
                            });
  }

  void on_watch(beast::error_code ec, std::size_t n) {
    watching_ = false;
    if (!ec) buffer_.commit(n);
    if (end_pending_) {  // stream_end() stopped the watch: write the end now
      end_pending_ = false;
      if (state_ == State::writing) write_stream_end();
      return;
    }
    if (state_ == State::writing && streaming_) {
      if (ec) return close();
      return watch();
    }
    if (pending_start_) {
      auto [head, ready] = std::move(*pending_start_);
      pending_start_.reset();
      if (ec && ec != net::error::operation_aborted) {
        peer_gone_ = true;
        if (exchange_) exchange_->client_gone();
        return ready(false);
      }
      return begin_stream(std::move(head), std::move(ready));
    }
    if (answer_) {
      Response r = std::move(*answer_);
      answer_.reset();
      return write(std::move(r));
    }
    if (state_ != State::handling) return;
    if (ec) {
      peer_gone_ = true;
      if (exchange_) exchange_->client_gone();  // cancels the wait; its answer is dropped
      return;
    }
    watch();
  }

  void on_answer(Response r) {
    if (state_ != State::handling) return;  // closed meanwhile
    if (watching_) {
      answer_ = std::move(r);
      beast::error_code ignored;
      socket_.cancel(ignored);  // on_watch writes it
      return;
    }
    write(std::move(r));
  }

  // --- writing ---

  void write(Response r) {
    exchange_.reset();
    if (state_ == State::closed) return;
    if (peer_gone_) return close();
    state_ = State::writing;
    if (r.close || !keep_alive_ || core_.stopping) close_after_ = true;
    stream_ = std::move(r.stream);
    const bool no_body = head_only_ || r.status == 204 || r.status == 304;
    chunked_ = stream_ && version_ == 11 && !no_body;
    if (stream_ && version_ == 10) close_after_ = true;  // the end of the body is the close
    if (chunked_) {
      put_head(r, "Transfer-Encoding: chunked\r\n");
    } else if (!stream_ && r.status != 204) {
      put_head(r, "", static_cast<std::int64_t>(r.body.size()));
    } else {
      put_head(r, "");
    }
    out_body_ = no_body ? std::string() : std::move(r.body);
    if (no_body) stream_.reset();
    arm(kWriteTimeout);
    std::array<net::const_buffer, 2> buffers = {net::buffer(out_head_), net::buffer(out_body_)};
    net::async_write(
        socket_, buffers,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_written(ec); });
  }

  // The status line and headers of `r` into out_head_; `framing`: a Transfer-Encoding header or
  // nothing, and `content_length` (>= 0) the Content-Length header.
  void put_head(const Response& r, std::string_view framing, std::int64_t content_length = -1) {
    out_head_.clear();
    out_head_ += "HTTP/1.1 ";
    append_number(out_head_, static_cast<std::uint64_t>(r.status));
    out_head_ += ' ';
    out_head_ += reason_phrase(r.status);
    out_head_ += "\r\n";
    for (const Header& h : r.headers) {
      out_head_ += h.name;
      out_head_ += ": ";
      out_head_ += h.value;
      out_head_ += "\r\n";
    }
    if (!r.content_type.empty()) {
      out_head_ += "Content-Type: ";
      out_head_ += r.content_type;
      out_head_ += "\r\n";
    }
    out_head_ += framing;
    if (content_length >= 0) {
      out_head_ += "Content-Length: ";
      append_number(out_head_, static_cast<std::uint64_t>(content_length));
      out_head_ += "\r\n";
    }
    if (close_after_) {
      out_head_ += "Connection: close\r\n";
    } else if (version_ == 10) {
      out_head_ += "Connection: keep-alive\r\n";
    }
    out_head_ += "\r\n";
  }

  std::shared_ptr<Downstream> make_downstream();

  void on_written(beast::error_code ec) {
    if (ec || state_ != State::writing) return close();
    if (stream_) return write_piece();
    // The head's buffer is kept for the next answer on this connection (a few hundred bytes);
    // the body's goes (it came from the response).
    out_head_.clear();
    if (out_head_.capacity() > 4096) out_head_.shrink_to_fit();
    std::string().swap(out_body_);
    read_next();  // re-arms the deadline
  }

  void write_piece() {
    out_body_.clear();
    bool more = false;
    while ((more = stream_->next(out_body_)) && out_body_.empty()) {
    }
    if (!more && out_body_.empty()) {
      stream_.reset();
      if (!chunked_) return on_written({});
      out_head_ = "0\r\n\r\n";
      out_body_.clear();
    } else if (chunked_) {
      char size[24];
      std::snprintf(size, sizeof size, "%zx\r\n", out_body_.size());
      out_head_ = size;
      out_body_ += "\r\n";
    } else {
      out_head_.clear();
    }
    if (!more) stream_.reset();
    arm(kWriteTimeout);
    std::array<net::const_buffer, 2> buffers = {net::buffer(out_head_), net::buffer(out_body_)};
    net::async_write(
        socket_, buffers,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_written(ec); });
  }

  // --- closing ---

  // Sends FIN, then reads and drops what the client still sends (a refused body) for a short
  // while, so that the answer is not destroyed by a reset before the client reads it.
  void graceful_close() {
    if (state_ == State::closed || state_ == State::closing) return;
    state_ = State::closing;
    beast::error_code ignored;
    socket_.shutdown(Socket::shutdown_send, ignored);
    arm(kDrainTimeout);
    drain();
  }

  void drain() {
    drain_buffer_.resize(16 * 1024);
    socket_.async_read_some(net::buffer(drain_buffer_),
                            [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                              self->drained_ += n;
                              if (ec || self->drained_ > kDrainLimit) return self->close();
                              self->drain();
                            });
  }

  void close() {
    if (state_ == State::closed) return;
    state_ = State::closed;
    disarm();
    beast::error_code ignored;
    socket_.shutdown(Socket::shutdown_both, ignored);
    socket_.close(ignored);
    if (exchange_) {
      exchange_->client_gone();
      exchange_.reset();
    }
    stream_.reset();
    // parser_ stays: a read in progress still uses it until it completes (aborted); the
    // connection, which that read's handler holds, owns it until then.
  }

  Core& core_;
  Strand strand_;
  Socket socket_;
  Timer timer_;
  std::uint64_t timer_gen_ = 0;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<Response> refusal_;
  const bool counted_;
  State state_ = State::idle;
  Request request_;
  int version_ = 11;
  bool keep_alive_ = true;
  bool head_only_ = false;
  bool close_after_ = false;
  bool peer_gone_ = false;
  bool watching_ = false;
  bool chunked_ = false;
  bool streaming_ = false;    // a streamed proxy answer is being written
  bool end_pending_ = false;  // its end waits for the watch to stop
  const Upstream* proxy_up_ = nullptr;
  std::optional<std::pair<Response, std::function<void(bool)>>> pending_start_;
  std::shared_ptr<Exchange> exchange_;
  std::optional<Response> answer_;
  std::shared_ptr<BodyStream> stream_;
  std::string out_head_, out_body_;
  std::vector<char> drain_buffer_;
  std::size_t drained_ = 0;
};

// The HTTP layer's side of a proxied exchange: every call goes onto the connection's strand.
class ProxyDownstream : public Downstream {
 public:
  ProxyDownstream(std::weak_ptr<Connection> c, std::shared_ptr<Exchange> ex)
      : c_(std::move(c)), ex_(std::move(ex)) {}
  void respond(Response r) override { ex_->respond(std::move(r)); }
  void start(Response head, std::function<void(bool)> ready) override {
    on_strand([h = std::move(head),
               ready](Connection& c) mutable { c.stream_start(std::move(h), std::move(ready)); },
              ready);
  }
  void send(std::string piece, std::function<void(bool)> ready) override {
    on_strand([p = std::move(piece),
               ready](Connection& c) mutable { c.stream_send(std::move(p), std::move(ready)); },
              ready);
  }
  void end() override {
    on_strand([](Connection& c) { c.stream_end(); }, nullptr);
  }
  void abort() override {
    on_strand([](Connection& c) { c.stream_abort(); }, nullptr);
  }
  void on_gone(std::function<void()> f) override { ex_->on_gone(std::move(f)); }

 private:
  template <class F>
  void on_strand(F f, const std::function<void(bool)>& ready) {
    auto c = c_.lock();
    if (!c) {
      if (ready) ready(false);
      return;
    }
    net::post(c->strand(), [c, f = std::move(f)]() mutable { f(*c); });
  }
  std::weak_ptr<Connection> c_;
  std::shared_ptr<Exchange> ex_;
};

std::shared_ptr<Downstream> Connection::make_downstream() {
  return std::make_shared<ProxyDownstream>(weak_from_this(), exchange_);
}

void Core::accept() {
  next_strand.emplace(net::make_strand(ioc));
  next_socket.emplace(*next_strand);
  acceptor.async_accept(*next_socket, [this](beast::error_code ec) { on_accept(ec); });
}

void Core::on_accept(beast::error_code ec) {
  if (stopping || !acceptor.is_open()) return;
  if (ec) {
    // Out of descriptors (EMFILE) or a connection reset before it was accepted: pause briefly
    // instead of spinning, then accept again.
    accept_timer.expires_after(std::chrono::milliseconds(50));
    accept_timer.async_wait([this](beast::error_code e) {
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
    std::make_shared<Connection>(*this, std::move(*next_strand), std::move(*next_socket),
                                 std::move(r))
        ->start();
  } else {
    std::make_shared<Connection>(*this, std::move(*next_strand), std::move(*next_socket))->start();
  }
  accept();
}

void Core::begin_stop() {
  beast::error_code ignored;
  acceptor.close(ignored);
  accept_timer.cancel();
  auto open = connections();
  for (auto& c : open) c->on_stop();
  open.clear();
  bool empty;
  {
    std::lock_guard lock(mu);
    empty = live.empty();
  }
  if (empty) return end_grace();
  grace_timer.expires_after(options.shutdown_grace);
  grace_timer.async_wait([this](beast::error_code) { end_grace(); });
}

void Core::end_grace() {
  for (auto& c : connections()) c->cut();
  guard.reset();
}

void raise_fd_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
}

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
  beast::error_code ec;
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
  core.guard.emplace(core.ioc.get_executor());
  impl_->maintenance = std::thread([this] { impl_->maintain(); });
  net::post(core.acceptor.get_executor(), [&core] { core.accept(); });
  const std::size_t threads =
      impl_->handlers.options().threads == 0 ? 1 : impl_->handlers.options().threads;
  std::vector<std::thread> io;
  for (std::size_t i = 1; i < threads; ++i) io.emplace_back([&core] { core.ioc.run(); });
  core.ioc.run();
  for (auto& t : io) t.join();
  // Waiting acquires were cancelled by the stop; their callbacks may still be on their way.
  // Then run what they posted, so that every connection is gone before run() returns.
  impl_->handlers.wait_idle();
  if (core.proxy) core.proxy->wait_idle();
  core.ioc.restart();
  core.ioc.poll();
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
