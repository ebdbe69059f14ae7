// The limiting proxy of `ratelimit serve --upstream` (issue 14), end to end on loopback: the
// real `ratelimit` binary (its path is compiled in) is started as a sidecar in front of a fake
// OpenAI upstream that this program serves itself, and HTTP/1.1 keep-alive clients (one
// blocking socket per client thread) call the fake directly and through the proxy.
//
//   BM_AddedLatency/store/pace_ms/clients  a non-streamed chat completion, 1 and 64
//       concurrent clients, back to back (pace_ms 0) or each client calling every pace_ms.
//       Each iteration is a round: every client makes 10 calls straight to the fake, all wait
//       at a barrier, then every client makes 10 calls through the proxy, barrier again; so
//       both figures see the same machine load. Counters (µs, over the calls of every client):
//       direct_p50/p99, proxy_p50/p99 and added_p50/p99 = proxy - direct; and
//       server_cpu_us_per_call, the sidecar's user + system CPU (/proc/PID/stat, 10 ms ticks)
//       over the proxied calls, warm-up included.
//   BM_StreamTtfb/store/pace_ms/clients  a streamed chat completion (SSE): the fake sends the
//       head and the first event at once and the rest 1 ms later; time from sending the
//       request to the first body byte (ttfb_direct/proxy/added p50/p99, µs), rounds as above.
//   BM_InFlightMemory/store        a fresh sidecar; VmRSS of the server (/proc/PID/status)
//       after 200 warm-up calls, then with 1,000 calls held open at once by the fake (every
//       call on its own client connection); kib_per_in_flight = the growth / 1,000. Then the
//       fake answers them all (each must be a 200).
//
// store 0 = memory (--backend memory), 1 = SQLite (--state FILE.db in a temporary directory).
// The quota of the model is far above what the load reaches (PUT /v1/quotas/MODEL), so the
// whole admission path runs and nothing waits. Everything is bounded: fixed iteration counts,
// 10 s socket timeouts, 1,000 held calls at most.
//
// Build and run (a Release build; figures and targets: docs/benchmarks.md):
//   cmake -S . -B build-rel -G Ninja -DCMAKE_BUILD_TYPE=Release
//   ninja -C build-rel proxy_bench ratelimit_cli
//   build-rel/bench/proxy_bench --benchmark_repetitions=3
// About 100 s. The sidecar is the binary of the same build; in the environment,
//   RATELIMIT_BENCH_BIN=PATH          runs another one (an older build, to compare),
//   RATELIMIT_BENCH_WRAP="valgrind --tool=callgrind"   prefixes its command line with those
//                                     words (instruction counts do not depend on the load),
//   RATELIMIT_BENCH_SERVE_ARGS="--threads 1"           adds options to its `serve`.

// First: Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
// clang-format off
#include <utility>
// clang-format on

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <boost/asio.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench_support.h"

namespace ratelimit {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr const char* kModel = "gpt-4o-mini";

// The sidecars running now, stopped by die() too.
std::mutex g_pids_mu;
std::vector<pid_t> g_pids;

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "proxy_bench: %s\n", why.c_str());
  {
    std::lock_guard lock(g_pids_mu);
    for (pid_t p : g_pids) ::kill(p, SIGTERM);
  }
  std::_Exit(1);
}

// ---------------------------------------------------------------------------------------------
// The fake upstream: Asio on one thread of its own, keep-alive, no parsing beyond the head's
// Content-Length. The request decides the answer: "stream":true in the body → SSE (head and
// the first event at once, the rest 1 ms later); an X-Fake-Hold header → held until release().

const std::string kRateHeaders =
    "x-ratelimit-limit-requests: 30000000\r\n"
    "x-ratelimit-limit-tokens: 150000000000\r\n"
    "x-ratelimit-remaining-requests: 29999999\r\n"
    "x-ratelimit-remaining-tokens: 149999999985\r\n"
    "x-ratelimit-reset-requests: 2ms\r\n"
    "x-ratelimit-reset-tokens: 0s\r\n"
    "openai-processing-ms: 1\r\n"
    "x-request-id: req_0123456789abcdef0123456789abcdef\r\n";

std::string whole_answer() {
  const std::string body =
      R"({"id":"chatcmpl-bench","object":"chat.completion","created":1764633600,)"
      R"("model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant",)"
      R"("content":"Hello! How can I help you today?","refusal":null},"logprobs":null,)"
      R"("finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":9,)"
      R"("total_tokens":21},"system_fingerprint":"fp_bench"})";
  return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + kRateHeaders +
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

std::string chunk(const std::string& data) {
  char size[24];
  std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  return size + data + "\r\n";
}

const std::string kEventHead = R"(data: {"id":"chatcmpl-bench","object":"chat.completion.chunk",)"
                               R"("created":1764633600,"model":"gpt-4o-mini-2024-07-18",)";

std::string stream_first() {
  return "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n" + kRateHeaders +
         "Transfer-Encoding: chunked\r\n\r\n" +
         chunk(kEventHead + R"("choices":[{"index":0,"delta":{"role":"assistant","content":""},)"
                            R"("finish_reason":null}]})"
                            "\n\n");
}

std::string stream_rest() {
  return chunk(kEventHead +
               R"("choices":[{"index":0,"delta":{"content":"Hello!"},"finish_reason":null}]})"
               "\n\n" +
               kEventHead +
               R"("choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})"
               "\n\n" +
               kEventHead +
               R"("choices":[],"usage":{"prompt_tokens":12,"completion_tokens":2,)"
               R"("total_tokens":14}})"
               "\n\ndata: [DONE]\n\n") +
         "0\r\n\r\n";
}

bool icontains(std::string_view hay, std::string_view needle) {
  return std::search(hay.begin(), hay.end(), needle.begin(), needle.end(), [](char a, char b) {
           return std::tolower(static_cast<unsigned char>(a)) ==
                  std::tolower(static_cast<unsigned char>(b));
         }) != hay.end();
}

std::size_t content_length(std::string_view head) {
  std::string lower(head);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  const auto at = lower.find("\r\ncontent-length:");
  if (at == std::string::npos) return 0;
  return std::strtoull(lower.c_str() + at + 17, nullptr, 10);
}

class FakeUpstream {
 public:
  FakeUpstream() : acceptor_(ioc_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)) {
    accept();
    thread_ = std::thread([this] { ioc_.run(); });
  }
  ~FakeUpstream() {
    ioc_.stop();
    thread_.join();
  }
  int port() const { return acceptor_.local_endpoint().port(); }
  int held() const { return held_count_.load(); }
  // Answers every held request.
  void release() {
    net::post(ioc_, [this] {
      for (auto& c : held_) c->answer(whole_answer());
      held_.clear();
      held_count_ = 0;
    });
  }

 private:
  struct Conn : std::enable_shared_from_this<Conn> {
    Conn(FakeUpstream& f, tcp::socket s)
        : fake(f), socket(std::move(s)), timer(socket.get_executor()) {}
    void read() {
      net::async_read_until(
          socket, net::dynamic_buffer(in), "\r\n\r\n",
          [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
            if (ec) return;
            self->head_size = n;
            self->read_body();
          });
    }
    void read_body() {
      const std::size_t want =
          head_size + content_length(std::string_view(in).substr(0, head_size));
      if (in.size() >= want) return on_request(want);
      net::async_read(socket, net::dynamic_buffer(in), net::transfer_exactly(want - in.size()),
                      [self = shared_from_this(), want](boost::system::error_code ec, std::size_t) {
                        if (ec) return;
                        self->on_request(want);
                      });
    }
    void on_request(std::size_t size) {
      const std::string_view req(in.data(), size);
      const bool hold = icontains(req.substr(0, head_size), "\r\nx-fake-hold:");
      const bool stream = req.substr(head_size).find("\"stream\":true") != std::string_view::npos;
      in.erase(0, size);
      if (hold) {
        fake.held_.push_back(shared_from_this());
        ++fake.held_count_;
        return;
      }
      if (!stream) return answer(whole_answer());
      out = stream_first();
      net::async_write(socket, net::buffer(out),
                       [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                         if (ec) return;
                         self->timer.expires_after(std::chrono::milliseconds(1));
                         self->timer.async_wait(
                             [self](boost::system::error_code) { self->answer(stream_rest()); });
                       });
    }
    void answer(std::string text) {
      out = std::move(text);
      net::async_write(socket, net::buffer(out),
                       [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                         if (!ec) self->read();
                       });
    }
    FakeUpstream& fake;
    tcp::socket socket;
    net::steady_timer timer;
    std::string in, out;
    std::size_t head_size = 0;
  };

  void accept() {
    acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket s) {
      if (!ec) {
        s.set_option(tcp::no_delay(true));
        std::make_shared<Conn>(*this, std::move(s))->read();
      }
      accept();
    });
  }

  net::io_context ioc_;
  tcp::acceptor acceptor_;
  std::vector<std::shared_ptr<Conn>> held_;  // on the io thread only
  std::atomic<int> held_count_{0};
  std::thread thread_;
};

FakeUpstream& fake() {
  static FakeUpstream f;
  return f;
}

// ---------------------------------------------------------------------------------------------
// A blocking HTTP/1.1 client on one keep-alive connection (Content-Length or chunked answers).

class Client {
 public:
  explicit Client(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) die("socket: " + std::string(std::strerror(errno)));
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      die("connect to port " + std::to_string(port) + ": " + std::strerror(errno));
    }
  }
  ~Client() { ::close(fd_); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  void send(const std::string& text) {
    std::size_t done = 0;
    while (done < text.size()) {
      const ssize_t n = ::send(fd_, text.data() + done, text.size() - done, MSG_NOSIGNAL);
      if (n <= 0) die("send: " + std::string(std::strerror(errno)));
      done += static_cast<std::size_t>(n);
    }
  }

  struct Answer {
    int status = 0;
    Clock::time_point first_byte;  // when the first byte of the body arrived
    std::string body;
  };
  // Reads one whole answer.
  Answer receive() {
    Answer a;
    std::size_t head_end;
    while ((head_end = buf_.find("\r\n\r\n")) == std::string::npos) more();
    head_end += 4;
    const std::string head = buf_.substr(0, head_end);
    a.status = std::atoi(head.c_str() + 9);
    buf_.erase(0, head_end);
    while (buf_.empty()) more();
    a.first_byte = Clock::now();
    if (icontains(head, "\r\ntransfer-encoding: chunked")) {
      for (;;) {
        std::size_t eol;
        while ((eol = buf_.find("\r\n")) == std::string::npos) more();
        const std::size_t size = std::strtoull(buf_.c_str(), nullptr, 16);
        while (buf_.size() < eol + 2 + size + 2) more();
        a.body.append(buf_, eol + 2, size);
        buf_.erase(0, eol + 2 + size + 2);
        if (size == 0) break;
      }
    } else {
      const std::size_t size = content_length(head);
      while (buf_.size() < size) more();
      a.body = buf_.substr(0, size);
      buf_.erase(0, size);
    }
    return a;
  }

 private:
  void more() {
    char tmp[16384];
    const ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) die("recv: " + std::string(n == 0 ? "connection closed" : std::strerror(errno)));
    buf_.append(tmp, static_cast<std::size_t>(n));
  }
  int fd_;
  std::string buf_;
};

std::string chat_request(const std::string& prefix, bool stream, bool hold = false) {
  std::string body = std::string(R"({"model":")") + kModel +
                     R"(","messages":[{"role":"system","content":"You are a helpful assistant."},)"
                     R"({"role":"user","content":"Say hello."}],"max_tokens":64)" +
                     (stream ? R"(,"stream":true})" : "}");
  return "POST " + prefix +
         "/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
         "application/json\r\nAuthorization: Bearer sk-bench\r\nUser-Agent: OpenAI/Python "
         "1.54.0\r\n" +
         (hold ? "X-Fake-Hold: 1\r\n" : "") + "Content-Length: " + std::to_string(body.size()) +
         "\r\n\r\n" + body;
}

// ---------------------------------------------------------------------------------------------
// The sidecar: `ratelimit [--backend memory | --state FILE.db] serve --upstream openai=...`.

std::string temp_dir() {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/proxy_bench.XXXXXX";
    if (!::mkdtemp(tmpl)) die("mkdtemp: " + std::string(std::strerror(errno)));
    return std::string(tmpl);
  }();
  return dir;
}

std::vector<std::string> words(const char* text) {
  std::vector<std::string> out;
  std::istringstream in(text ? text : "");
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

class Sidecar {
 public:
  // store 0: memory, 1: SQLite.
  explicit Sidecar(int store) {
    static int started = 0;
    const std::string tag = std::to_string(++started);
    log_ = temp_dir() + "/serve" + tag + ".log";
    const char* bin = std::getenv("RATELIMIT_BENCH_BIN");
    std::vector<std::string> argv = words(std::getenv("RATELIMIT_BENCH_WRAP"));
    argv.push_back(bin ? bin : RATELIMIT_BIN);
    if (store == 0) {
      argv.insert(argv.end(), {"--backend", "memory"});
    } else {
      argv.insert(argv.end(), {"--state", temp_dir() + "/state" + tag + ".db"});
    }
    argv.insert(argv.end(), {"serve", "--listen", "127.0.0.1:0", "--upstream",
                             "openai=http://127.0.0.1:" + std::to_string(fake().port())});
    for (std::string& w : words(std::getenv("RATELIMIT_BENCH_SERVE_ARGS"))) argv.push_back(w);
    pid_ = ::fork();
    if (pid_ < 0) die("fork: " + std::string(std::strerror(errno)));
    if (pid_ == 0) {
      std::FILE* out = std::fopen(log_.c_str(), "w");
      if (!out) _exit(127);
      ::dup2(::fileno(out), 1);
      ::dup2(::fileno(out), 2);
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      ::execvp(args[0], args.data());
      _exit(127);
    }
    {
      std::lock_guard lock(g_pids_mu);
      g_pids.push_back(pid_);
    }
    // "ratelimit serve: listening on http://127.0.0.1:PORT (store: ...)"
    for (int i = 0; i < 600 && port_ == 0; ++i) {  // up to 60 s (valgrind starts slowly)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      std::ifstream in(log_);
      std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      const auto at = text.find("listening on http://127.0.0.1:");
      if (at != std::string::npos) port_ = std::atoi(text.c_str() + at + 30);
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) die("the sidecar exited:\n" + text);
    }
    if (port_ == 0) die("the sidecar printed no listening line (" + log_ + ")");
    // A quota that the load never reaches.
    Client c(port_);
    const std::string body = R"({"max_rpm": 1000000000, "max_tpm": 1000000000000})";
    c.send(std::string("PUT /v1/quotas/") + kModel +
           " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + body);
    const auto a = c.receive();
    if (a.status != 200) die("PUT /v1/quotas answered " + std::to_string(a.status) + ": " + a.body);
  }
  ~Sidecar() {
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    std::lock_guard lock(g_pids_mu);
    std::erase(g_pids, pid_);
  }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  std::string log_;
};

// The long-lived sidecars of the latency benchmarks, one per store, stopped at exit.
std::unique_ptr<Sidecar> g_sidecars[2];
Sidecar& sidecar(int store) {
  static std::mutex mu;
  std::lock_guard lock(mu);
  if (!g_sidecars[store]) g_sidecars[store] = std::make_unique<Sidecar>(store);
  return *g_sidecars[store];
}

long rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return -1;
}

// CPU time (user + system) the process has used so far, in µs.
double cpu_us(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = text.rfind(')');  // the command name may hold spaces
  if (close == std::string::npos) return 0;
  std::istringstream rest(text.substr(close + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::atof(field.c_str());  // utime, stime
  }
  return ticks * 1e6 / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// ---------------------------------------------------------------------------------------------
// Rounds: direct calls, barrier, proxied calls, barrier. Thread 0 sets the counters from the
// calls of every thread.

struct Samples {
  std::vector<double> direct, proxy;
};

double pct(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(static_cast<double>(v.size()) * p))];
}

struct Shared {
  std::unique_ptr<std::barrier<>> barrier;
  std::mutex mu;
  Samples all;
};
Shared g_shared;

constexpr int kCallsPerPhase = 10;
constexpr int kWarmUp = 20;

// stream: time to the first body byte; otherwise time to the whole answer.
void rounds(benchmark::State& state, bool stream, const char* a, const char* b) {
  const int store = static_cast<int>(state.range(0));
  const int proxy_port = sidecar(store).port();
  if (state.thread_index() == 0) {
    g_shared.barrier = std::make_unique<std::barrier<>>(state.threads());
    g_shared.all = {};
  }
  // The sidecar's CPU per proxied call (only the proxied calls reach it; warm-up included).
  const double cpu_before = cpu_us(sidecar(store).pid());
  Client direct(fake().port()), proxied(proxy_port);
  const std::string to_direct = chat_request("", stream);
  const std::string to_proxy = chat_request("/openai", stream);
  auto call = [&](Client& c, const std::string& req) {
    const auto start = Clock::now();
    c.send(req);
    const auto answer = c.receive();
    if (answer.status != 200) {
      die("a call answered " + std::to_string(answer.status) + ": " + answer.body);
    }
    const auto end = stream ? answer.first_byte : Clock::now();
    return std::chrono::duration<double, std::micro>(end - start).count();
  };
  for (int i = 0; i < kWarmUp; ++i) {
    call(direct, to_direct);
    call(proxied, to_proxy);
  }
  // Paced (range(1) = an interval in ms per client): each client starts its calls that far
  // apart, the clients spread evenly over the interval.
  const auto interval = std::chrono::milliseconds(state.range(1));
  auto phase = [&](Client& c, const std::string& req, std::vector<double>& out) {
    auto next = Clock::now() + interval * state.thread_index() / state.threads();
    for (int i = 0; i < kCallsPerPhase; ++i) {
      if (interval.count() > 0) std::this_thread::sleep_until(next);
      next += interval;
      out.push_back(call(c, req));
    }
  };
  Samples mine;
  for (auto _ : state) {
    phase(direct, to_direct, mine.direct);
    g_shared.barrier->arrive_and_wait();
    phase(proxied, to_proxy, mine.proxy);
    g_shared.barrier->arrive_and_wait();
  }
  {
    std::lock_guard lock(g_shared.mu);
    g_shared.all.direct.insert(g_shared.all.direct.end(), mine.direct.begin(), mine.direct.end());
    g_shared.all.proxy.insert(g_shared.all.proxy.end(), mine.proxy.begin(), mine.proxy.end());
  }
  g_shared.barrier->arrive_and_wait();
  if (state.thread_index() != 0) return;
  auto& s = g_shared.all;
  const double d50 = pct(s.direct, 0.5), d99 = pct(s.direct, 0.99);
  const double p50 = pct(s.proxy, 0.5), p99 = pct(s.proxy, 0.99);
  const std::string pre(a), post(b);
  state.counters[pre + "direct_p50" + post] = d50;
  state.counters[pre + "direct_p99" + post] = d99;
  state.counters[pre + "proxy_p50" + post] = p50;
  state.counters[pre + "proxy_p99" + post] = p99;
  state.counters[pre + "added_p50" + post] = p50 - d50;
  state.counters[pre + "added_p99" + post] = p99 - d99;
  state.counters["calls"] = static_cast<double>(s.proxy.size());
  state.counters["server_cpu_us_per_call"] =
      (cpu_us(sidecar(store).pid()) - cpu_before) /
      static_cast<double>(s.proxy.size() + static_cast<std::size_t>(kWarmUp * state.threads()));
}

void BM_AddedLatency(benchmark::State& state) { rounds(state, false, "", "_us"); }
void BM_StreamTtfb(benchmark::State& state) { rounds(state, true, "ttfb_", "_us"); }

constexpr int kHeld = 1000;

void BM_InFlightMemory(benchmark::State& state) {
  const int store = static_cast<int>(state.range(0));
  for (auto _ : state) {
    Sidecar server(store);
    {
      Client c(server.port());
      const std::string req = chat_request("/openai", false);
      for (int i = 0; i < 200; ++i) {
        c.send(req);
        (void)c.receive();
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const long before = rss_kib(server.pid());
    std::vector<std::unique_ptr<Client>> clients;
    const std::string held = chat_request("/openai", false, true);
    for (int i = 0; i < kHeld; ++i) {
      clients.push_back(std::make_unique<Client>(server.port()));
      clients.back()->send(held);
    }
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (fake().held() < kHeld) {
      if (Clock::now() > deadline) die("the fake got only " + std::to_string(fake().held()));
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const long with = rss_kib(server.pid());
    fake().release();
    for (auto& c : clients) {
      const auto a = c->receive();
      if (a.status != 200) die("a held call answered " + std::to_string(a.status) + ": " + a.body);
    }
    state.counters["rss_before_kib"] = static_cast<double>(before);
    state.counters["rss_held_kib"] = static_cast<double>(with);
    state.counters["kib_per_in_flight"] = static_cast<double>(with - before) / kHeld;
  }
}

}  // namespace
}  // namespace ratelimit

// Args: store (0 memory, 1 SQLite), pace (0: back to back; N: each client calls every N ms).
// Iterations are rounds of 10 + 10 calls per client. 64 clients back to back keep both cores
// busy (the figure is then mostly queueing: 64 x the server's time per call); paced at 64 ms
// they make 1,000 calls/s in all, with 64 connections open and calls overlapping.
BENCHMARK(ratelimit::BM_AddedLatency)
    ->ArgNames({"store", "pace_ms"})
    ->Args({0, 0})
    ->Args({1, 0})
    ->Threads(1)
    ->Iterations(300)
    ->UseRealTime();
BENCHMARK(ratelimit::BM_AddedLatency)
    ->ArgNames({"store", "pace_ms"})
    ->Args({0, 0})
    ->Args({1, 0})
    ->Args({0, 64})
    ->Args({1, 64})
    ->Threads(64)
    ->Iterations(5)
    ->UseRealTime();
BENCHMARK(ratelimit::BM_StreamTtfb)
    ->ArgNames({"store", "pace_ms"})
    ->Args({0, 0})
    ->Args({1, 0})
    ->Threads(1)
    ->Iterations(100)
    ->UseRealTime();
BENCHMARK(ratelimit::BM_StreamTtfb)
    ->ArgNames({"store", "pace_ms"})
    ->Args({0, 64})
    ->Args({1, 64})
    ->Threads(64)
    ->Iterations(3)
    ->UseRealTime();
BENCHMARK(ratelimit::BM_InFlightMemory)
    ->ArgName("store")
    ->Arg(0)
    ->Arg(1)
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

int main(int argc, char** argv) {
  // 1,000 held calls: a client socket and the fake's socket each, in this process.
  rlimit r{};
  if (::getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &r);
  }
  ::signal(SIGPIPE, SIG_IGN);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  for (auto& s : ratelimit::g_sidecars) s.reset();
  std::string dir = ratelimit::temp_dir();
  std::system(("rm -rf '" + dir + "'").c_str());
  return 0;
}
