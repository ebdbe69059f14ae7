// Internal to the HTTP layer: one client connection, a state machine on its own strand:
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
// http_connection.cc reads, hands the request over and closes; http_write.cc writes answers,
// whole or piece by piece (a BodyStream, or a streamed proxy answer through ProxyDownstream).
#pragma once

#include <array>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "http_core.h"

namespace ratelimit::server::http_layer {

namespace beast = boost::beast;
namespace http = beast::http;
using Timer = net::basic_waitable_timer<SteadyClock, net::wait_traits<SteadyClock>, Strand>;

inline constexpr auto kWriteTimeout = std::chrono::seconds(10);

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  // `refusal`: answer it and close (too many connections); such a connection is not counted.
  Connection(Core& core, Strand strand, Socket socket,
             std::optional<Response> refusal = std::nullopt);
  ~Connection();

  // The socket's executor is `strand` (Core::accept makes it so).
  void start();
  // The server stops: a connection between requests closes now; one in a request closes after
  // its answer.
  void on_stop();
  // The shutdown grace has passed: cut the connection, whatever it is doing.
  void cut();

  Strand& strand() { return strand_; }

  // --- a streamed proxy answer (ProxyDownstream, on the strand; http_write.cc) ---

  void stream_start(Response head, std::function<void(bool)> ready);
  void stream_send(std::string piece, std::function<void(bool)> ready);
  void stream_end();
  void write_stream_end();
  void stream_abort() { close(); }

 private:
  enum class State { idle, head, body, handling, writing, closing, closed };

  // --- deadlines ---
  void arm(SteadyClock::duration d);
  void disarm();

  // --- reading ---
  void read_next();
  void read_head();
  // The request line is over its limit when the first 8 KiB hold no line end.
  bool line_too_long() const;
  void refuse(int status, std::string_view code, std::string message);
  void on_head(error_code ec);
  // A small body usually arrives in the same segment as its head: parse what is already
  // buffered without another asynchronous read (and without re-arming the deadline). True when
  // that ended the body (complete, or an error answered as the asynchronous read would).
  bool body_from_buffer();
  void read_body();
  void too_large();
  void on_body(error_code ec);

  // --- handling ---
  void dispatch();
  // While an answer is pending (a waiting acquire), read on: pipelined requests are kept for
  // later, and the end of the stream means the client left. The same while a streamed proxy
  // answer is written: close() then tells the exchange, so the proxy stops the upstream at once.
  void watch();
  void on_watch(error_code ec, std::size_t n);
  void on_answer(Response r);
  std::shared_ptr<Downstream> make_downstream();

  // --- writing (http_write.cc) ---
  void begin_stream(Response head, std::function<void(bool)> ready);
  void write_stream_part(std::function<void(bool)> ready);
  void put_piece(std::string piece);
  void write(Response r);
  // The status line and headers of `r` into out_head_; `framing`: a Transfer-Encoding header or
  // nothing, and `content_length` (>= 0) the Content-Length header.
  void put_head(const Response& r, std::string_view framing, std::int64_t content_length = -1);
  void on_written(error_code ec);
  void write_piece();

  // --- closing ---
  // Sends FIN, then reads and drops what the client still sends (a refused body) for a short
  // while, so that the answer is not destroyed by a reset before the client reads it.
  void graceful_close();
  void drain();
  void close();

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

}  // namespace ratelimit::server::http_layer
