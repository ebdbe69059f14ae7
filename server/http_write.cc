// The writing side of a connection (http_connection.h): an answer whole, a BodyStream piece by
// piece (GET /metrics), and a streamed proxy answer, which the proxy drives through
// ProxyDownstream.

#include <charconv>
#include <cstdio>

#include "http_connection.h"

namespace ratelimit::server::http_layer {
namespace {

// Appends a number in decimal (no temporary string).
void append_number(std::string& out, std::uint64_t v) {
  char buf[24];
  out.append(buf, std::to_chars(buf, buf + sizeof buf, v).ptr);
}

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

}  // namespace

std::shared_ptr<Downstream> Connection::make_downstream() {
  return std::make_shared<ProxyDownstream>(weak_from_this(), exchange_);
}

// --- a streamed proxy answer ---

void Connection::stream_start(Response head, std::function<void(bool)> ready) {
  if (state_ != State::handling || peer_gone_) return ready(false);
  if (watching_) {  // stop watching first: on_watch begins the stream
    pending_start_.emplace(std::move(head), std::move(ready));
    beast::error_code ignored;
    socket_.cancel(ignored);
    return;
  }
  begin_stream(std::move(head), std::move(ready));
}

// Appends `piece` to what is written next (out_head_ + out_body_), as a chunk when chunked.
void Connection::put_piece(std::string piece) {
  if (chunked_ && !piece.empty()) {
    char size[24];
    std::snprintf(size, sizeof size, "%zx\r\n", piece.size());
    out_head_ += size;
    piece += "\r\n";
  }
  out_body_ = std::move(piece);
}

void Connection::stream_send(std::string piece, std::function<void(bool)> ready) {
  if (state_ != State::writing || !streaming_) return ready(false);
  out_head_.clear();
  put_piece(std::move(piece));
  write_stream_part(std::move(ready));
}

void Connection::stream_end() {
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

void Connection::write_stream_end() {
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

void Connection::begin_stream(Response head, std::function<void(bool)> ready) {
  state_ = State::writing;
  streaming_ = true;
  if (!keep_alive_ || core_.stopping || version_ == 10) close_after_ = true;
  chunked_ = version_ == 11;
  put_head(head, chunked_ ? "Transfer-Encoding: chunked\r\n" : "");
  put_piece(std::move(head.body));  // the first piece, if any: in the same write
  write_stream_part(std::move(ready));
}

void Connection::write_stream_part(std::function<void(bool)> ready) {
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

// --- an answer whole, or a BodyStream piece by piece ---

void Connection::write(Response r) {
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

void Connection::put_head(const Response& r, std::string_view framing,
                          std::int64_t content_length) {
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

void Connection::on_written(beast::error_code ec) {
  if (ec || state_ != State::writing) return close();
  if (stream_) return write_piece();
  // The head's buffer is kept for the next answer on this connection (a few hundred bytes);
  // the body's goes (it came from the response).
  out_head_.clear();
  if (out_head_.capacity() > 4096) out_head_.shrink_to_fit();
  std::string().swap(out_body_);
  read_next();  // re-arms the deadline
}

void Connection::write_piece() {
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

}  // namespace ratelimit::server::http_layer
