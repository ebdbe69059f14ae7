// Plain values for one HTTP exchange, independent of the HTTP library: what the handlers read
// (Request) and answer (Response), and the Exchange through which an answer may come later
// (a waiting acquire) or be abandoned (the client went away).
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace ratelimit::server {

struct Header {
  std::string name, value;
};

// Case-insensitive ASCII comparison (header names, "Bearer", "localhost").
bool iequals(std::string_view a, std::string_view b);

struct Request {
  std::string method;  // as sent: "GET", "POST", ...
  std::string target;  // the raw request-target
  std::string path;    // the target's path, percent-decoded, without the query
  int version = 11;    // 10 for HTTP/1.0, 11 for HTTP/1.1
  std::vector<Header> headers;
  std::string body;
  // Set by the HTTP layer once Handlers::check_head passed (handle() then skips the checks).
  bool head_checked = false;

  // The first header named `name` (any case); nullptr when absent.
  const std::string* header(std::string_view name) const;
};

// A body written piece by piece (GET /metrics), so that no answer needs to be held whole.
class BodyStream {
 public:
  virtual ~BodyStream() = default;
  // Appends the next piece to `out` (which it may leave empty); false once the body is done.
  virtual bool next(std::string& out) = 0;
};

struct Response {
  int status = 200;
  std::vector<Header> headers;
  std::string content_type;
  std::string body;
  std::shared_ptr<BodyStream> stream;  // when set: the body, sent chunked (body is ignored)
  bool close = false;                  // close the connection after this answer

  void set_header(std::string name, std::string value);
  // The header's value, "" when absent.
  std::string header(std::string_view name) const;
};

// "Too Many Requests" for 429; "Unknown" for a status it does not know.
std::string_view reason_phrase(int status);

// One request in flight: the handlers answer through respond(), at once or later from any
// thread. Thread-safe.
class Exchange {
 public:
  // `deliver` gets the answer, once; it must not block.
  explicit Exchange(std::function<void(Response)> deliver);

  // Sends the answer; calls after the first are ignored. Runs the observer first.
  void respond(Response response);
  bool answered() const;

  // Called with each answer before delivery (the handlers count it). Set it before the
  // request can be answered from another thread.
  void observe(std::function<void(const Response&)> observer);

  // The client went away before the answer: runs the on_gone callback (once), so that a
  // waiting acquire is cancelled. Later answers are still observed but not delivered.
  void client_gone();
  bool gone() const;
  // Runs `f` when the client goes (at once if it already has).
  void on_gone(std::function<void()> f);

 private:
  mutable std::mutex mu_;
  std::function<void(Response)> deliver_;
  std::function<void(const Response&)> observer_;
  std::function<void()> on_gone_;
  bool answered_ = false;
  bool gone_ = false;
};

}  // namespace ratelimit::server
