// A raw HTTP/1.x client over a loopback TCP socket, for tests that must send what a normal
// client never would (partial heads, huge lines, pipelined requests, half-closes) and read
// answers byte by byte with deadlines. Header-only; POSIX.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace ratelimit::testing {

struct RawReply {
  int status = 0;
  std::string version;                         // "HTTP/1.1"
  std::map<std::string, std::string> headers;  // names in lower case
  std::string body;                            // de-chunked
  std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? "" : it->second;
  }
};

class RawConn {
 public:
  // Connects to 127.0.0.1:port (blocking). ok() says whether it worked.
  explicit RawConn(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      error_ = std::strerror(errno);
      close();
    }
  }
  ~RawConn() { close(); }
  RawConn(const RawConn&) = delete;
  RawConn& operator=(const RawConn&) = delete;
  RawConn(RawConn&& o) noexcept : fd_(o.fd_), buf_(std::move(o.buf_)), error_(o.error_) {
    o.fd_ = -1;
  }

  bool ok() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  const std::string& error() const { return error_; }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  // Sends everything (false on an error such as a reset).
  bool send(std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        error_ = std::strerror(errno);
        return false;
      }
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }
  void shutdown_write() { ::shutdown(fd_, SHUT_WR); }

  // True when the server closed the connection (end of stream or reset) within `timeout`;
  // bytes that arrive meanwhile are kept for read_reply.
  bool closed_within(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      const int r = fill(deadline);
      if (r <= 0) return r == 0 || r == -2;  // end of stream or reset
      // r > 0: data; keep reading
    }
  }

  // Reads one answer (a 100 Continue is an answer of its own) within `timeout`. `on_body`,
  // when set, receives the body in pieces instead of RawReply::body.
  std::optional<RawReply> read_reply(
      std::chrono::milliseconds timeout = std::chrono::seconds(10), bool head_request = false,
      const std::function<void(std::string_view)>& on_body = nullptr) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (fill(deadline) <= 0) return std::nullopt;
    }
    RawReply r;
    std::string head = buf_.substr(0, end);
    buf_.erase(0, end + 4);
    std::size_t line_end = head.find("\r\n");
    const std::string status_line = head.substr(0, line_end);
    r.version = status_line.substr(0, status_line.find(' '));
    r.status = std::atoi(status_line.c_str() + status_line.find(' ') + 1);
    while (line_end != std::string::npos) {
      const std::size_t start = line_end + 2;
      line_end = head.find("\r\n", start);
      std::string line =
          head.substr(start, line_end == std::string::npos ? std::string::npos : line_end - start);
      const auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string name = line.substr(0, colon);
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      std::string value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      r.headers[name] = value;
    }
    auto emit = [&](std::string_view piece) {
      if (on_body) {
        on_body(piece);
      } else {
        r.body.append(piece);
      }
    };
    if (r.status / 100 == 1 || r.status == 204 || head_request) return r;
    if (r.header("transfer-encoding") == "chunked") {
      for (;;) {
        std::size_t eol;
        while ((eol = buf_.find("\r\n")) == std::string::npos) {
          if (fill(deadline) <= 0) return std::nullopt;
        }
        const std::size_t size = std::stoul(buf_.substr(0, eol), nullptr, 16);
        buf_.erase(0, eol + 2);
        while (buf_.size() < size + 2) {
          if (fill(deadline) <= 0) return std::nullopt;
        }
        if (size > 0) emit(std::string_view(buf_).substr(0, size));
        buf_.erase(0, size + 2);
        if (size == 0) return r;
      }
    }
    if (auto length = r.header("content-length"); !length.empty()) {
      const std::size_t n = std::stoul(length);
      while (buf_.size() < n) {
        if (fill(deadline) <= 0) return std::nullopt;
      }
      emit(std::string_view(buf_).substr(0, n));
      buf_.erase(0, n);
      return r;
    }
    // Until the end of the stream.
    while (fill(deadline) > 0) {
    }
    emit(buf_);
    buf_.clear();
    return r;
  }

 private:
  // Reads what is there into buf_: > 0 bytes read, 0 end of stream, -1 timeout, -2 error.
  int fill(std::chrono::steady_clock::time_point deadline) {
    if (fd_ < 0) return -2;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                            deadline - std::chrono::steady_clock::now())
                            .count();
      if (left <= 0) return -1;
      pollfd p{fd_, POLLIN, 0};
      const int ready = ::poll(&p, 1, static_cast<int>(left));
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) return -1;
      char chunk[16 * 1024];
      const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        return -2;
      }
      if (n == 0) return 0;
      buf_.append(chunk, static_cast<std::size_t>(n));
      return static_cast<int>(n);
    }
  }

  int fd_ = -1;
  std::string buf_;
  std::string error_;
};

// "POST <path> HTTP/1.1" with a JSON body and a loopback Host.
inline std::string post_request(const std::string& path, const std::string& body,
                                const std::string& extra_headers = "") {
  return "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" +
         extra_headers + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

inline std::string get_request(const std::string& path, const std::string& extra_headers = "") {
  return "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra_headers + "\r\n";
}

}  // namespace ratelimit::testing
