// The reading side of a connection (http_connection.h): deadlines, the request's head and
// body within their bounds, handing the request to the handlers or the proxy, watching the
// socket while the answer is pending, and closing.

#include "http_connection.h"

#include <algorithm>
#include <string>

#include "args.h"

namespace ratelimit::server::http_layer {
namespace {

constexpr std::size_t kRequestLineLimit = 8 * 1024;    // beyond: 414
constexpr std::size_t kHeaderFieldsLimit = 16 * 1024;  // beyond: 431
constexpr std::size_t kMaxFields = 100;                // beyond: 431
constexpr std::size_t kHeadLimit = kRequestLineLimit + kHeaderFieldsLimit + 4;
constexpr std::size_t kBufferLimit = 64 * 1024;  // bytes read ahead of the parser
constexpr std::size_t kWatchRead = 4096;
constexpr std::size_t kDrainLimit = 1024 * 1024;  // read and dropped before a close
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

}  // namespace

void start_connection(Core& core, Strand strand, Socket socket, std::optional<Response> refusal) {
  std::make_shared<Connection>(core, std::move(strand), std::move(socket), std::move(refusal))
      ->start();
}

void stop_connection(Connection& c) { c.on_stop(); }

void cut_connection(Connection& c) { c.cut(); }

Connection::Connection(Core& core, Strand strand, Socket socket, std::optional<Response> refusal)
    : core_(core),
      strand_(std::move(strand)),
      socket_(std::move(socket)),
      timer_(strand_),
      buffer_(kBufferLimit),
      refusal_(std::move(refusal)),
      counted_(!refusal_) {}

Connection::~Connection() {
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

void Connection::start() {
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

void Connection::on_stop() {
  net::dispatch(strand_, [self = shared_from_this()] {
    self->close_after_ = true;
    if (self->state_ == State::idle || self->state_ == State::head) self->close();
  });
}

void Connection::cut() {
  net::dispatch(strand_, [self = shared_from_this()] { self->close(); });
}

// --- deadlines ---

void Connection::arm(SteadyClock::duration d) {
  const std::uint64_t gen = ++timer_gen_;
  timer_.expires_after(d);
  timer_.async_wait([self = shared_from_this(), gen](beast::error_code ec) {
    if (ec || gen != self->timer_gen_) return;
    self->close();  // idle, header, body, write or drain deadline
  });
}

void Connection::disarm() {
  ++timer_gen_;
  timer_.cancel();
}

// --- reading ---

void Connection::read_next() {
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

void Connection::read_head() {
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

bool Connection::line_too_long() const {
  const auto data = buffer_.data();
  const std::string_view seen(static_cast<const char*>(data.data()),
                              std::min(data.size(), kRequestLineLimit + 1));
  return seen.find('\n') == std::string_view::npos && data.size() > kRequestLineLimit;
}

void Connection::refuse(int status, std::string_view code, std::string message) {
  keep_alive_ = false;
  version_ = 11;
  head_only_ = false;
  write(core_.handlers.refuse(status, code, std::move(message)));
}

void Connection::on_head(beast::error_code ec) {
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
    return refuse(400, "invalid_request", "the request could not be parsed (" + ec.message() + ")");
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

bool Connection::body_from_buffer() {
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

void Connection::read_body() {
  http::async_read(
      socket_, buffer_, *parser_,
      [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_body(ec); });
}

void Connection::too_large() {
  if (proxy_up_) {
    keep_alive_ = false;
    return write(core_.proxy->too_large(*proxy_up_));
  }
  refuse(413, "payload_too_large",
         "the body is larger than " + std::to_string(core_.options.max_body_bytes) +
             " bytes (the server's --max-body)");
}

void Connection::on_body(beast::error_code ec) {
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

void Connection::dispatch() {
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
    core_.proxy->handle(*proxy_up_, std::move(request_), make_downstream(),
                        strand_.get_inner_executor().context());
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

void Connection::watch() {
  const bool streaming = state_ == State::writing && streaming_;
  if (watching_ || (state_ != State::handling && !streaming)) return;
  if (buffer_.max_size() - buffer_.size() < kWatchRead) return;  // full: stop reading
  watching_ = true;
  socket_.async_read_some(
      buffer_.prepare(kWatchRead),
      [self = shared_from_this()](beast::error_code ec, std::size_t n) { self->on_watch(ec, n); });
}

void Connection::on_watch(beast::error_code ec, std::size_t n) {
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

void Connection::on_answer(Response r) {
  if (state_ != State::handling) return;  // closed meanwhile
  if (watching_) {
    answer_ = std::move(r);
    beast::error_code ignored;
    socket_.cancel(ignored);  // on_watch writes it
    return;
  }
  write(std::move(r));
}

// --- closing ---

void Connection::graceful_close() {
  if (state_ == State::closed || state_ == State::closing) return;
  state_ = State::closing;
  beast::error_code ignored;
  socket_.shutdown(Socket::shutdown_send, ignored);
  arm(kDrainTimeout);
  drain();
}

void Connection::drain() {
  drain_buffer_.resize(16 * 1024);
  socket_.async_read_some(net::buffer(drain_buffer_),
                          [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                            self->drained_ += n;
                            if (ec || self->drained_ > kDrainLimit) return self->close();
                            self->drain();
                          });
}

void Connection::close() {
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

}  // namespace ratelimit::server::http_layer
