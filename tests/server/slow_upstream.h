// A deliberately slow OpenAI-shaped upstream for the proxy's load test (proxy_test.cc): one
// thread and poll() hold any number of loopback connections, and answer each request `hold`
// after it arrived with a chat completion that reports 11 + 7 tokens. (The httplib fake spends
// a thread per connection; a thousand requests held at once need this one.)
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace ratelimit::testing {

class SlowUpstream {
 public:
  explicit SlowUpstream(std::chrono::milliseconds hold) : hold_(hold) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    ::listen(fd_, 4096);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { loop(); });
  }
  ~SlowUpstream() {
    stop_ = true;
    thread_.join();
    for (auto& c : conns_) ::close(c.fd);
    ::close(fd_);
  }
  int port() const { return port_; }
  int answered() const { return answered_.load(); }
  int most_held() const { return most_held_.load(); }

 private:
  using Clock = std::chrono::steady_clock;
  struct Conn {
    int fd;
    std::string in;
    Clock::time_point due{};
    bool held = false;
  };

  static std::size_t request_end(const std::string& in) {
    const auto head = in.find("\r\n\r\n");
    if (head == std::string::npos) return std::string::npos;
    std::size_t length = 0;
    const auto at = in.find("Content-Length: ");
    if (at != std::string::npos && at < head) length = std::stoul(in.substr(at + 16));
    return in.size() >= head + 4 + length ? head + 4 + length : std::string::npos;
  }

  void loop() {
    static const std::string body =
        R"({"id":"c","object":"chat.completion","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":7}})";
    const std::string reply =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body;
    while (!stop_) {
      std::vector<pollfd> fds = {{fd_, POLLIN, 0}};
      for (auto& c : conns_) fds.push_back({c.fd, POLLIN, 0});
      ::poll(fds.data(), fds.size(), 5);
      for (;;) {
        const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) break;
        conns_.push_back(Conn{c, {}, {}, false});
      }
      const auto now = Clock::now();
      int held = 0;
      for (std::size_t i = 0; i < conns_.size();) {
        Conn& c = conns_[i];
        bool closed = false;
        if (i + 1 < fds.size() && (fds[i + 1].revents & (POLLIN | POLLHUP | POLLERR))) {
          char buf[8192];
          const ssize_t n = ::recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
          if (n == 0 || (n < 0 && errno != EAGAIN)) closed = true;
          if (n > 0) c.in.append(buf, static_cast<std::size_t>(n));
        }
        if (!c.held && request_end(c.in) != std::string::npos) {
          c.held = true;
          c.due = now + hold_;
        }
        if (c.held && now >= c.due) {
          c.in.erase(0, request_end(c.in));
          c.held = false;
          ::send(c.fd, reply.data(), reply.size(), MSG_NOSIGNAL);
          answered_.fetch_add(1);
        }
        held += c.held ? 1 : 0;
        if (closed) {
          ::close(c.fd);
          conns_.erase(conns_.begin() + static_cast<std::ptrdiff_t>(i));
          continue;
        }
        ++i;
      }
      if (held > most_held_) most_held_ = held;
    }
  }

  std::chrono::milliseconds hold_;
  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::vector<Conn> conns_;  // the loop's thread only
  std::atomic<int> answered_{0};
  std::atomic<int> most_held_{0};
};

}  // namespace ratelimit::testing
