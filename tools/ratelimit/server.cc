#include "server.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <fstream>
#include <functional>
#include <list>
#include <mutex>
#include <nlohmann/json.hpp>
#include <shared_mutex>
#include <sstream>
#include <stop_token>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "args.h"
#include "commands.h"
#include "json_format.h"
#include "live_page.h"
#include "metrics_text.h"
#include "ratelimit/model_name.h"

namespace ratelimit::cli {
namespace {

using Json = nlohmann::json;

// The largest count a request may carry: JSON's exact integer range (2^53 - 1), which every
// client language can represent.
constexpr std::int64_t kMaxCount = (std::int64_t{1} << 53) - 1;

// --- routes and their counters --------------------------------------------------------------

enum class Route : std::uint8_t {
  page,
  healthz,
  metrics,
  decide,
  acquire,
  commit,
  cancel,
  record,
  stats,
  model_stats,
  quota,
  reset,
  unmatched,
};
constexpr std::size_t kRouteCount = 13;
constexpr std::array<const char*, kRouteCount> kRouteNames = {"/",
                                                              "/healthz",
                                                              "/metrics",
                                                              "/v1/decide",
                                                              "/v1/acquire",
                                                              "/v1/reservations/{id}/commit",
                                                              "/v1/reservations/{id}/cancel",
                                                              "/v1/record",
                                                              "/v1/stats",
                                                              "/v1/stats/{model}",
                                                              "/v1/quotas/{model}",
                                                              "/v1/reset",
                                                              "unmatched"};

constexpr std::array<int, 14> kStatuses = {200, 204, 400, 401, 403, 404, 405,
                                           409, 413, 422, 429, 500, 503, 0 /* other */};
std::size_t status_index(int status) {
  for (std::size_t i = 0; i + 1 < kStatuses.size(); ++i) {
    if (kStatuses[i] == status) return i;
  }
  return kStatuses.size() - 1;
}

// Seconds.
constexpr std::array<double, 10> kLatencyBounds = {0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                                   0.005,  0.01,    0.05,   0.25,  1.0};

struct RouteCounters {
  std::array<std::atomic<std::uint64_t>, kStatuses.size()> by_status{};
  std::array<std::atomic<std::uint64_t>, kLatencyBounds.size() + 1> latency{};
  std::atomic<std::uint64_t> latency_ns{0};
};

// --- small helpers --------------------------------------------------------------------------

// "POST /v1/decide": how error messages name a request; a path's bytes that are not printable
// UTF-8 (percent-decoded by httplib) are written as \xNN.
std::string request_name(const httplib::Request& req) {
  return req.method + " " + printable(req.path);
}

void send_json(httplib::Response& res, int status, std::string body) {
  res.status = status;
  res.set_content(std::move(body), "application/json");
}

void send_error(httplib::Response& res, int status, std::string_view code, std::string message) {
  send_json(res, status, json::http_error(code, message));
}

std::string ceil_seconds(Duration d) {
  const std::int64_t ns = d.count() < 0 ? 0 : d.count();
  return std::to_string(ns / 1'000'000'000 + (ns % 1'000'000'000 != 0 ? 1 : 0));
}

// The IETF RateLimit-Policy and RateLimit fields (draft-ietf-httpapi-ratelimit-headers): one
// policy per limited dimension; `remaining` after this request when it was granted.
void set_rate_limit_headers(httplib::Response& res, const Decision& d, std::int64_t tokens) {
  const ModelStats& s = d.stats;
  struct Dim {
    const char* name;
    std::int64_t limit, used, cost, window_s;
    bool exhausted;
  };
  const Dim dims[] = {
      {"rpm", s.max_rpm, s.rpm, 1, 60, d.code == DecisionCode::rpm_exceeded},
      {"tpm", s.max_tpm, s.tpm, tokens, 60, d.code == DecisionCode::tpm_exceeded},
      {"rpd", s.max_rpd, s.rpd, 1, 86400, d.code == DecisionCode::rpd_exceeded},
  };
  std::string policy, state;
  for (const Dim& dim : dims) {
    if (dim.limit <= 0) continue;
    std::int64_t remaining = dim.limit - dim.used - (d.allowed ? dim.cost : 0);
    if (remaining < 0) remaining = 0;
    if (!policy.empty()) policy += ", ", state += ", ";
    policy += "\"" + std::string(dim.name) + "\";q=" + std::to_string(dim.limit) +
              ";w=" + std::to_string(dim.window_s);
    state += "\"" + std::string(dim.name) + "\";r=" + std::to_string(remaining);
    // A denial names the exhausted dimension's reset; d.retry_after is the latest over all.
    if (!d.allowed && (dim.exhausted || remaining == 0) && d.retry_after != Duration::max()) {
      state += ";t=" + ceil_seconds(d.retry_after);
    }
  }
  if (!policy.empty()) {
    res.set_header("RateLimit-Policy", policy);
    res.set_header("RateLimit", state);
  }
}

// A parsed request body: a JSON object whose keys were checked against the accepted ones.
class Body {
 public:
  // Parses `text` for `op` ("POST /v1/acquire"); on failure `error` says why. An empty body
  // is an empty object.
  static std::optional<Body> parse(std::string_view op, const std::string& text,
                                   std::initializer_list<const char*> accepted,
                                   std::string& error) {
    Body b;
    b.op_ = op;
    if (text.find_first_not_of(" \t\r\n") == std::string::npos) {
      b.j_ = Json::object();
      return b;
    }
    try {
      b.j_ = Json::parse(text);
    } catch (const Json::parse_error& e) {
      std::string what = e.what();
      if (auto cut = what.find("] "); cut != std::string::npos) what = what.substr(cut + 2);
      error = std::string(op) + ": the body is not valid JSON (" + what +
              "); send an object such as {\"model\": \"gpt-4o\", \"tokens\": 1500}";
      return std::nullopt;
    }
    if (!b.j_.is_object()) {
      error = std::string(op) + ": the body must be a JSON object, not " + b.j_.type_name();
      return std::nullopt;
    }
    for (const auto& [key, value] : b.j_.items()) {
      bool known = false;
      for (const char* a : accepted) known = known || key == a;
      if (!known) {
        std::string list;
        for (const char* a : accepted) list += std::string(list.empty() ? "" : ", ") + a;
        error = std::string(op) + ": unknown field \"" + printable(key) +
                "\" (accepted: " + (list.empty() ? "none" : list) + ")";
        return std::nullopt;
      }
    }
    return b;
  }

  bool has(const char* key) const { return j_.contains(key); }

  // An integer field in [min, kMaxCount]; `fallback` when absent (nullopt: required).
  std::optional<std::int64_t> count(const char* key, std::optional<std::int64_t> fallback,
                                    std::int64_t min, std::string& error) const {
    auto it = j_.find(key);
    if (it == j_.end()) {
      if (!fallback) error = op_ + ": \"" + key + "\" is required (an integer >= 0)";
      return fallback;
    }
    const std::string range =
        "an integer from " + std::to_string(min) + " to " + std::to_string(kMaxCount);
    if (!it->is_number_integer()) {
      error = op_ + ": \"" + key + "\" must be " + range + ", got " + it->dump();
      return std::nullopt;
    }
    if (it->is_number_unsigned() && it->get<std::uint64_t>() > std::uint64_t(kMaxCount)) {
      error = op_ + ": \"" + key + "\" must be " + range + ", got " + it->dump();
      return std::nullopt;
    }
    const std::int64_t v = it->get<std::int64_t>();
    if (v < min || v > kMaxCount) {
      error = op_ + ": \"" + key + "\" must be " + range + ", got " + it->dump();
      return std::nullopt;
    }
    return v;
  }

  // The "model" field: required, a string, and a name the model-name rule accepts (args.h);
  // `bad_name` is set when the string breaks that rule.
  std::optional<std::string> model(std::string& error, bool& bad_name) const {
    auto it = j_.find("model");
    if (it == j_.end()) {
      error = op_ + ": \"model\" is required";
      return std::nullopt;
    }
    if (!it->is_string()) {
      error = op_ + ": \"model\" must be a string, got " + it->dump();
      return std::nullopt;
    }
    std::string name = it->get<std::string>();
    if (auto why = model_problem(name)) {
      error = op_ + ": " + *why;
      bad_name = true;
      return std::nullopt;
    }
    return name;
  }

  std::optional<bool> flag(const char* key, std::string& error) const {
    auto it = j_.find(key);
    if (it == j_.end()) return false;
    if (!it->is_boolean()) {
      error = op_ + ": \"" + key + "\" must be true or false, got " + it->dump();
      return std::nullopt;
    }
    return it->get<bool>();
  }

 private:
  std::string op_;
  Json j_;
};

// Hash for heterogeneous lookup of std::string keys by string_view.
struct NameHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

// The model names the server has seen (bounded: hostile input must not grow state or metric
// labels without end). A name counts from its first use until the server stops.
class ModelNames {
 public:
  explicit ModelNames(std::size_t cap) : cap_(cap) {}

  void seed(const std::vector<std::string>& names) {
    std::unique_lock lock(mu_);
    for (const auto& n : names) names_.insert(n);
  }
  // True when `name` is tracked or there is room to track it.
  bool admit(std::string_view name) {
    {
      std::shared_lock lock(mu_);
      if (names_.find(name) != names_.end()) return true;
    }
    std::unique_lock lock(mu_);
    if (names_.find(name) != names_.end()) return true;
    if (names_.size() >= cap_) return false;
    names_.emplace(name);
    return true;
  }
  std::size_t size() const {
    std::shared_lock lock(mu_);
    return names_.size();
  }
  std::size_t cap() const { return cap_; }

 private:
  const std::size_t cap_;
  mutable std::shared_mutex mu_;
  std::unordered_set<std::string, NameHash, std::equal_to<>> names_;
};

// Reservations granted over HTTP and not settled yet, each until its lease ends. Sharded so that
// concurrent acquires and commits rarely share a lock.
class Leases {
 public:
  explicit Leases(std::size_t cap) : cap_(cap) {}

  // Claims room for one lease; false when the server already holds `cap` reservations.
  bool claim() {
    if (count_.fetch_add(1, std::memory_order_relaxed) >= cap_) {
      count_.fetch_sub(1, std::memory_order_relaxed);
      return false;
    }
    return true;
  }
  void unclaim() { count_.fetch_sub(1, std::memory_order_relaxed); }

  // Holds `r` (whose room was claimed) until `expires`; forgets expired leases of its shard.
  void add(Reservation r, TimePoint expires, TimePoint now) {
    std::string id = r.id();
    Shard& s = shard(id);
    std::lock_guard lock(s.mu);
    expire_locked(s, now);
    auto [it, inserted] = s.held.try_emplace(std::move(id));
    it->second.reservation = std::move(r);
    if (inserted) {
      s.order.push_back({expires, &it->first});
      it->second.position = std::prev(s.order.end());
    }
  }

  // Takes the reservation out when it is held and its lease has not ended.
  std::optional<Reservation> take(std::string_view id, TimePoint now) {
    Shard& s = shard(id);
    std::lock_guard lock(s.mu);
    expire_locked(s, now);
    auto it = s.held.find(id);
    if (it == s.held.end()) return std::nullopt;
    Reservation r = std::move(it->second.reservation);
    s.order.erase(it->second.position);
    s.held.erase(it);
    count_.fetch_sub(1, std::memory_order_relaxed);
    return r;
  }

  std::size_t expire(TimePoint now) {
    std::size_t n = 0;
    for (Shard& s : shards_) {
      std::lock_guard lock(s.mu);
      n += expire_locked(s, now);
    }
    return n;
  }

  std::size_t size() const { return count_.load(std::memory_order_relaxed); }
  std::size_t cap() const { return cap_; }
  std::uint64_t expired() const { return expired_.load(std::memory_order_relaxed); }

 private:
  struct Node {
    TimePoint expires;
    const std::string* id;
  };
  struct Held {
    Reservation reservation;
    std::list<Node>::iterator position;
  };
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, Held, NameHash, std::equal_to<>> held;
    std::list<Node> order;  // by expiry (leases all last the same time)
  };

  Shard& shard(std::string_view id) { return shards_[NameHash{}(id) % shards_.size()]; }

  // The reservation's destructor keeps its estimate as usage.
  std::size_t expire_locked(Shard& s, TimePoint now) {
    std::size_t n = 0;
    while (!s.order.empty() && s.order.front().expires <= now) {
      s.held.erase(*s.order.front().id);
      s.order.pop_front();
      ++n;
    }
    if (n > 0) {
      count_.fetch_sub(n, std::memory_order_relaxed);
      expired_.fetch_add(n, std::memory_order_relaxed);
    }
    return n;
  }

  const std::size_t cap_;
  std::atomic<std::size_t> count_{0};
  std::atomic<std::uint64_t> expired_{0};
  std::array<Shard, 16> shards_;
};

// A request held in memory, for HttpServer::warm_up (answers are discarded).
class MemoryStream final : public httplib::Stream {
 public:
  explicit MemoryStream(std::string request) : in_(std::move(request)) {}
  bool is_readable() const override { return pos_ < in_.size(); }
  bool is_writable() const override { return true; }
  ssize_t read(char* ptr, size_t size) override {
    const std::size_t n = std::min(size, in_.size() - pos_);
    std::copy_n(in_.data() + pos_, n, ptr);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }
  ssize_t write(const char*, size_t size) override { return static_cast<ssize_t>(size); }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = "127.0.0.1";
    port = 0;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    ip = "127.0.0.1";
    port = 0;
  }
  socket_t socket() const override { return INVALID_SOCKET; }

 private:
  std::string in_;
  std::size_t pos_ = 0;
};

// cpp-httplib builds function-local statics (the std::regex objects of its request parser) on
// first use. Debian ships it as an uninstrumented shared library, so ThreadSanitizer cannot see
// the acquire load that hands such a static to a second worker thread, and reports the first
// concurrent requests as a race inside the library. warm_up() runs requests through the
// parser on the thread that then starts the workers, so the statics exist before any worker.
class HttpServer final : public httplib::Server {
 public:
  void warm_up(std::string request) {
    MemoryStream stream(std::move(request));
    bool closed = false;
    process_request(stream, true, closed, [](httplib::Request&) {});
  }
};

bool parse_ipv4(std::string_view host, in_addr& out) {
  return ::inet_pton(AF_INET, std::string(host).c_str(), &out) == 1;
}

}  // namespace

// --- public helpers -------------------------------------------------------------------------

Outcome<ListenAddress> parse_listen(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return tl::unexpected(usage_error("--listen \"" + printable(text) + "\": " + why +
                                      "; use HOST:PORT such as 127.0.0.1:8787 or [::1]:8787"));
  };
  std::string_view host, port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return bad("an IPv6 address needs brackets and a port");
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad("no port");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return bad("an IPv6 address needs brackets");
  }
  if (host.empty()) return bad("no host");
  const auto n = parse_count(port);
  if (!n || *n > 65535) return bad("the port must be a number from 0 to 65535");
  return ListenAddress{std::string(host), static_cast<int>(*n)};
}

bool is_loopback(std::string_view host) {
  if (host == "localhost" || host == "::1") return true;
  in_addr v4{};
  if (parse_ipv4(host, v4)) return (ntohl(v4.s_addr) >> 24) == 127;
  if (host.substr(0, 7) == "::ffff:" && parse_ipv4(host.substr(7), v4)) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  return false;
}

Outcome<std::string> read_token_file(const std::string& path, std::string& warning) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return tl::unexpected(usage_error("cannot read --token-file " + path + ": " +
                                      std::strerror(errno) +
                                      "; give a readable file that holds the bearer token"));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  std::string token = ss.str();
  const auto first = token.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) {
    return tl::unexpected(usage_error("--token-file " + path +
                                      " is empty; put a secret of at least 16 characters in it, "
                                      "e.g. `head -c 32 /dev/urandom | base64 > " +
                                      path + "`"));
  }
  token = token.substr(first, token.find_last_not_of(" \t\r\n") - first + 1);
  for (char c : token) {
    if (c < 0x21 || c > 0x7E) {
      return tl::unexpected(usage_error("--token-file " + path +
                                        ": the token must be printable ASCII without spaces"));
    }
  }
  if (token.size() < 16) {
    return tl::unexpected(usage_error("--token-file " + path + ": the token has " +
                                      std::to_string(token.size()) +
                                      " characters; use at least 16 (e.g. `head -c 32 "
                                      "/dev/urandom | base64`)"));
  }
  struct stat info {};
  if (::stat(path.c_str(), &info) == 0 && (info.st_mode & 077) != 0) {
    warning = "--token-file " + path + " can be read by other users; `chmod 600 " + path + "`";
  }
  return token;
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  // Every byte of `a` is compared whatever the contents; lengths are not secret.
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff |=
        static_cast<unsigned char>(a[i]) ^ static_cast<unsigned char>(i < b.size() ? b[i] : ~a[i]);
  }
  return diff == 0;
}

// --- the server -----------------------------------------------------------------------------

struct Server::Impl {
  Impl(RateLimiter& l, ServerOptions o)
      : limiter(l),
        options(std::move(o)),
        clock(l.config().clock ? l.config().clock : system_clock()),
        names(options.max_models),
        leases(options.max_leases) {
    if (auto m = limiter.models()) names.seed(*m);
    std::vector<std::string> quota_names;
    if (auto quotas = limiter.quotas()) {
      for (const auto& [model, q] : *quotas) quota_names.push_back(model);
    }
    names.seed(quota_names);
  }

  RateLimiter& limiter;
  const ServerOptions options;
  const std::shared_ptr<Clock> clock;
  HttpServer http;
  bool warming = false;  // set only before the workers exist
  ModelNames names;
  Leases leases;
  std::atomic<std::size_t> waiters{0};
  std::stop_source shutdown;
  std::array<RouteCounters, kRouteCount> routes;
  // Requests refused for their model name (model_problem) before they reach the limiter.
  std::atomic<std::uint64_t> invalid_model_requests{0};
  bool bound = false;
  std::atomic<bool> running{false}, stopping{false}, finished{false};

  std::mutex maintenance_mu;
  std::condition_variable maintenance_cv;
  bool maintenance_stop = false;
  std::thread maintenance;

  // --- dispatch ---

  void install() {
    const std::size_t threads = options.threads == 0 ? 1 : options.threads;
    http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    http.set_payload_max_length(options.max_body_bytes);
    // httplib's default also sets SO_REUSEPORT, which lets a second server bind the same port
    // and silently take half the traffic (with its own store). Only SO_REUSEADDR here.
    http.set_socket_options([](int sock) {
      int yes = 1;
      ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });
    // Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and
    // the client's delayed ACK add ~40 ms to every keep-alive request.
    http.set_tcp_nodelay(true);
    http.set_keep_alive_max_count(100'000);
    http.set_keep_alive_timeout(5);
    http.set_read_timeout(10, 0);
    http.set_write_timeout(10, 0);
    auto handler = [this](const httplib::Request& req, httplib::Response& res) {
      dispatch(req, res);
    };
    http.Get(".*", handler);
    http.Post(".*", handler);
    http.Put(".*", handler);
    http.Delete(".*", handler);
    http.Patch(".*", handler);
    http.Options(".*", handler);
    // httplib answers some requests itself (413 for a body over the limit, 400 for a bad
    // request line): give those a JSON body too.
    http.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      if (res.status == 413) {
        send_error(res, 413, "payload_too_large",
                   request_name(req) + ": the body is larger than " +
                       std::to_string(options.max_body_bytes) + " bytes");
      } else if (res.status == 404) {
        send_error(res, 404, "not_found", "no such endpoint: " + request_name(req));
      } else {
        send_error(res, res.status, "invalid_request",
                   "the request could not be read (" + std::to_string(res.status) + ")");
      }
      count(Route::unmatched, res.status, std::chrono::nanoseconds(0));
    });
    http.set_exception_handler([this](const httplib::Request& req, httplib::Response& res,
                                      std::exception_ptr ep) {
      std::string what = "unknown error";
      try {
        if (ep) std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      send_error(res, 500, "internal", request_name(req) + ": " + what + " (nothing was changed)");
      count(Route::unmatched, 500, std::chrono::nanoseconds(0));
    });
  }

  void count(Route route, int status, std::chrono::nanoseconds took) {
    RouteCounters& c = routes[static_cast<std::size_t>(route)];
    c.by_status[status_index(status)].fetch_add(1, std::memory_order_relaxed);
    const double s = std::chrono::duration<double>(took).count();
    std::size_t b = 0;
    while (b < kLatencyBounds.size() && s > kLatencyBounds[b]) ++b;
    c.latency[b].fetch_add(1, std::memory_order_relaxed);
    c.latency_ns.fetch_add(static_cast<std::uint64_t>(took.count()), std::memory_order_relaxed);
  }

  bool authorized(const httplib::Request& req) const {
    if (options.token.empty()) return true;
    const std::string header = req.get_header_value("Authorization");
    constexpr std::string_view kBearer = "Bearer ";
    if (header.size() < kBearer.size() || header.compare(0, kBearer.size(), kBearer) != 0) {
      return false;
    }
    return constant_time_equal(std::string_view(header).substr(kBearer.size()), options.token);
  }

  // Without a token the server trusts whatever can reach loopback, which includes every web
  // page the user's browser opens: a page may POST to 127.0.0.1 (no preflight for a text/plain
  // body) or rebind its own name to 127.0.0.1. So the Host must name a loopback address and an
  // Origin, when a browser sends one, must be a loopback origin. Programs (curl, SDKs) send a
  // loopback Host and no Origin.
  static bool local_browser_context(const httplib::Request& req) {
    auto host_of = [](std::string_view authority) {
      if (!authority.empty() && authority.front() == '[') {
        const auto close = authority.find(']');
        return close == std::string_view::npos ? std::string_view()
                                               : authority.substr(1, close - 1);
      }
      return authority.substr(0, authority.find(':'));
    };
    const std::string host = req.get_header_value("Host");
    if (!is_loopback(host_of(host))) return false;
    if (!req.has_header("Origin")) return true;
    const std::string origin_header = req.get_header_value("Origin");
    std::string_view origin = origin_header;
    constexpr std::string_view kHttp = "http://";
    if (origin.substr(0, kHttp.size()) != kHttp) return false;  // "null", https, file
    origin.remove_prefix(kHttp.size());
    return is_loopback(host_of(origin.substr(0, origin.find('/'))));
  }

  void dispatch(const httplib::Request& req, httplib::Response& res) {
    if (warming) {  // HttpServer::warm_up: parse only, no effect, not counted
      res.status = 204;
      return;
    }
    const auto start = std::chrono::steady_clock::now();
    const Route route = route_of(req.path);
    res.set_header("Cache-Control", "no-store");
    if (route != Route::healthz && options.token.empty() && !local_browser_context(req)) {
      send_error(res, 403, "forbidden",
                 request_name(req) +
                     ": refused a request for another host or from a web page of another "
                     "origin (a browser tricked into calling this server); call it as "
                     "127.0.0.1/localhost, or protect it with --token-file");
    } else if (route != Route::healthz && route != Route::page && !authorized(req)) {
      res.set_header("WWW-Authenticate", "Bearer realm=\"ratelimit\"");
      send_error(res, 401, "unauthorized",
                 request_name(req) +
                     ": missing or wrong bearer token; send `Authorization: Bearer <token>` "
                     "with the token from the server's --token-file");
    } else {
      serve(route, req, res);
    }
    count(route, res.status, std::chrono::steady_clock::now() - start);
  }

  static Route route_of(const std::string& path) {
    if (path == "/") return Route::page;
    if (path == "/healthz") return Route::healthz;
    if (path == "/metrics") return Route::metrics;
    if (path == "/v1/decide") return Route::decide;
    if (path == "/v1/acquire") return Route::acquire;
    if (path == "/v1/record") return Route::record;
    if (path == "/v1/stats") return Route::stats;
    if (path == "/v1/reset") return Route::reset;
    if (path.rfind("/v1/stats/", 0) == 0 && path.size() > 10) return Route::model_stats;
    if (path.rfind("/v1/quotas/", 0) == 0 && path.size() > 11) return Route::quota;
    if (path.rfind("/v1/reservations/", 0) == 0) {
      const std::string_view rest = std::string_view(path).substr(17);
      const auto slash = rest.find('/');
      if (slash != std::string_view::npos && slash > 0) {
        const std::string_view action = rest.substr(slash + 1);
        if (action == "commit") return Route::commit;
        if (action == "cancel") return Route::cancel;
      }
    }
    return Route::unmatched;
  }

  static const char* allowed_methods(Route route) {
    switch (route) {
      case Route::page:
      case Route::healthz:
      case Route::metrics:
      case Route::stats:
      case Route::model_stats:
        return "GET";
      case Route::quota:
        return "GET, PUT, DELETE";
      default:
        return "POST";
    }
  }

  // The model named by the rest of the (already percent-decoded) path after `prefix`.
  static std::string path_model(const httplib::Request& req, std::size_t prefix) {
    return req.path.substr(prefix);
  }

  void serve(Route route, const httplib::Request& req, httplib::Response& res) {
    if (route == Route::unmatched) {
      send_error(
          res, 404, "not_found",
          "no such endpoint: " + request_name(req) + " (see docs/server.md for the endpoints)");
      return;
    }
    const std::string allowed = allowed_methods(route);
    const std::string method = req.method == "HEAD" ? "GET" : req.method;
    if (method.empty() || allowed.find(method) == std::string::npos) {
      res.set_header("Allow", allowed);
      send_error(res, 405, "method_not_allowed",
                 request_name(req) + " is not supported; use " + allowed);
      return;
    }
    switch (route) {
      case Route::page:
        res.status = 200;
        res.set_header("X-Frame-Options", "DENY");
        res.set_header("Referrer-Policy", "no-referrer");
        res.set_content(std::string(live_page_html()), "text/html; charset=utf-8");
        return;
      case Route::healthz:
        if (shutdown.stop_requested()) {
          send_json(res, 503, json::health("stopping", options.backend));
        } else {
          send_json(res, 200, json::health("ok", options.backend));
        }
        return;
      case Route::metrics:
        return metrics(res);
      case Route::decide:
        return decide(req, res);
      case Route::acquire:
        return acquire(req, res);
      case Route::commit:
      case Route::cancel:
        return settle(route == Route::commit, req, res);
      case Route::record:
        return record(req, res);
      case Route::stats:
        return stats(res);
      case Route::model_stats:
        return model_stats(req, res);
      case Route::quota:
        return quota(req, res);
      case Route::reset:
        return reset(req, res);
      case Route::unmatched:
        break;
    }
  }

  // --- endpoints ---

  std::optional<Body> body(const httplib::Request& req, httplib::Response& res,
                           std::initializer_list<const char*> accepted) {
    std::string error;
    auto b = Body::parse(request_name(req), req.body, accepted, error);
    if (!b) send_error(res, 400, "invalid_request", error);
    return b;
  }

  bool admit(std::string_view op, const std::string& model, httplib::Response& res) {
    if (names.admit(model)) return true;
    send_error(res, 400, "too_many_models",
               std::string(op) + ": the server already tracks " + std::to_string(names.cap()) +
                   " model names; use a known model, or restart with a larger --max-models");
    return false;
  }

  // The model of a request body (Body::model), counting a name the rule refuses.
  std::optional<std::string> model_of(const Body& b, std::string& error) {
    bool bad_name = false;
    auto model = b.model(error, bad_name);
    if (bad_name) invalid_model_requests.fetch_add(1, std::memory_order_relaxed);
    return model;
  }

  // A model named in the path: false (400 sent, the refusal counted) when the rule refuses it.
  bool path_model_ok(const std::string& op, const std::string& model, httplib::Response& res) {
    auto why = model_problem(model);
    if (!why) return true;
    invalid_model_requests.fetch_add(1, std::memory_order_relaxed);
    send_error(res, 400, "invalid_request", op + ": " + *why);
    return false;
  }

  // A decision the limiter answered with invalid_model (its rule refused the name): bad input,
  // 400 like a name the server refuses itself.
  void invalid_model(httplib::Response& res, const std::string& op, const std::string& model) {
    std::string why = model_problem(model).value_or(
        "model \"" + printable_model_name(model) + "\": the limiter refused the " +
        std::string(reason(DecisionCode::invalid_model)));
    send_error(res, 400, "invalid_request", op + ": " + why);
  }

  // A library call that failed: invalid_argument (the limiter refused the request, e.g. its
  // model name) is bad input (400); anything else is the store's failure (503).
  void call_failed(httplib::Response& res, const std::string& op, const Error& e) {
    if (e.code == ErrorCode::invalid_argument) {
      return send_error(res, 400, "invalid_request", op + ": " + e.message);
    }
    store_failed(res, op, e.to_string());
  }

  void store_failed(httplib::Response& res, const std::string& op, const std::string& what) {
    res.set_header("Retry-After", "1");
    send_error(res, 503, "store_unavailable",
               op + ": the state store is unavailable (" + what + "); retry shortly");
  }

  void decide(const httplib::Request& req, httplib::Response& res) {
    auto b = body(req, res, {"model", "tokens"});
    if (!b) return;
    std::string error;
    auto model = model_of(*b, error);
    auto tokens = model ? b->count("tokens", 0, -kMaxCount, error) : std::nullopt;
    if (!tokens) return send_error(res, 400, "invalid_request", error);
    const Decision d = limiter.decide(*model, *tokens);
    if (d.code == DecisionCode::invalid_model) return invalid_model(res, "POST /v1/decide", *model);
    send_json(res, 200, json::decision(d));
  }

  void acquire(const httplib::Request& req, httplib::Response& res) {
    const std::string op = "POST /v1/acquire";
    auto b = body(req, res, {"model", "tokens", "wait_ms"});
    if (!b) return;
    std::string error;
    auto model = model_of(*b, error);
    if (!model) return send_error(res, 400, "invalid_request", error);
    auto tokens = b->count("tokens", 0, -kMaxCount, error);
    if (!tokens) return send_error(res, 400, "invalid_request", error);
    if (*tokens < 0) {
      return send_error(res, 400, "invalid_tokens",
                        op + ": \"tokens\" must be >= 0 (the estimated tokens of the call), got " +
                            std::to_string(*tokens));
    }
    const std::int64_t max_wait_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(options.max_wait).count();
    auto wait_ms = b->count("wait_ms", 0, 0, error);
    if (!wait_ms) return send_error(res, 400, "invalid_request", error);
    if (*wait_ms > max_wait_ms) {
      return send_error(res, 400, "invalid_request",
                        op + ": \"wait_ms\" must be at most " + std::to_string(max_wait_ms) +
                            " (the server's --max-wait), got " + std::to_string(*wait_ms));
    }
    if (!admit(op, *model, res)) return;
    if (!leases.claim()) {
      res.set_header("Retry-After", "1");
      return send_error(res, 503, "too_many_reservations",
                        op + ": the server holds " + std::to_string(leases.cap()) +
                            " unsettled reservations; commit or cancel them (or restart with a "
                            "larger --max-leases)");
    }
    Reservation r;
    if (*wait_ms == 0) {
      r = limiter.try_acquire(*model, *tokens);
    } else {
      if (waiters.fetch_add(1) >= options.max_waiters) {
        waiters.fetch_sub(1);
        leases.unclaim();
        res.set_header("Retry-After", "1");
        return send_error(res, 503, "too_many_waiters",
                          op + ": " + std::to_string(options.max_waiters) +
                              " acquires are already waiting; retry, or send wait_ms 0 and "
                              "honour Retry-After");
      }
      WaitOptions wait;
      wait.timeout = std::chrono::milliseconds(*wait_ms);
      wait.stop = shutdown.get_token();
      auto got = limiter.acquire(*model, *tokens, wait);
      waiters.fetch_sub(1);
      if (got) {
        r = std::move(*got);
      } else {
        switch (got.error().code) {
          case ErrorCode::deadline_exceeded:
          case ErrorCode::never_satisfiable:
            // The answer is the decision now (a last attempt, so no freed capacity is wasted).
            r = limiter.try_acquire(*model, *tokens);
            break;
          case ErrorCode::cancelled:
            leases.unclaim();
            res.set_header("Retry-After", "1");
            return send_error(res, 503, "shutting_down",
                              op + ": the server is shutting down; retry against its successor");
          default:
            leases.unclaim();
            return call_failed(res, op, got.error());
        }
      }
    }
    const Decision d = r.decision();
    set_rate_limit_headers(res, d, *tokens);
    if (r.granted()) {
      std::string id = r.id();
      leases.add(std::move(r), clock->now() + options.lease, clock->now());
      return send_json(res, 200, json::decision(d, id));
    }
    leases.unclaim();
    if (d.code == DecisionCode::store_unavailable) return store_failed(res, op, "try_acquire");
    if (d.code == DecisionCode::invalid_model) return invalid_model(res, op, *model);
    if (d.retry_after == Duration::max()) return send_json(res, 422, json::decision(d));
    res.set_header("Retry-After", ceil_seconds(d.retry_after));
    send_json(res, 429, json::decision(d));
  }

  void settle(bool is_commit, const httplib::Request& req, httplib::Response& res) {
    const std::string op = "POST " + printable(req.path);
    auto b = is_commit ? body(req, res, {"prompt_tokens", "output_tokens"}) : body(req, res, {});
    if (!b) return;
    const std::string_view rest = std::string_view(req.path).substr(17);
    const std::string id(rest.substr(0, rest.find('/')));
    std::int64_t prompt = 0, output = 0;
    if (is_commit) {
      std::string error;
      auto p = b->count("prompt_tokens", std::nullopt, 0, error);
      auto o = p ? b->count("output_tokens", std::nullopt, 0, error) : std::nullopt;
      if (!o) return send_error(res, 400, "invalid_request", error);
      prompt = *p, output = *o;
    }
    Status s;
    if (auto held = leases.take(id, clock->now())) {
      s = is_commit ? held->commit(prompt, output) : held->cancel();
    } else {
      // Not held here: an id from another process on the same store (the CLI), or one whose
      // lease ended; the store decides.
      s = is_commit ? limiter.commit(id, prompt, output) : limiter.cancel(id);
    }
    if (s) return send_json(res, 200, json::settled(id, is_commit ? "committed" : "cancelled"));
    const Error& e = s.error();
    switch (e.code) {
      case ErrorCode::not_found:
        return send_error(res, 404, "not_found",
                          op + ": no reservation \"" + printable(id) +
                              "\" in this store (ids come from a granted POST /v1/acquire)");
      case ErrorCode::invalid_argument:
        return send_error(res, 409, "already_settled", op + ": " + e.message);
      default:
        return store_failed(res, op, e.to_string());
    }
  }

  void record(const httplib::Request& req, httplib::Response& res) {
    const std::string op = "POST /v1/record";
    auto b = body(req, res, {"model", "prompt_tokens", "output_tokens"});
    if (!b) return;
    std::string error;
    auto model = model_of(*b, error);
    auto prompt = model ? b->count("prompt_tokens", 0, 0, error) : std::nullopt;
    auto output = prompt ? b->count("output_tokens", 0, 0, error) : std::nullopt;
    if (!output) return send_error(res, 400, "invalid_request", error);
    if (!admit(op, *model, res)) return;
    if (auto s = limiter.record_usage(*model, *prompt, *output); !s) {
      return call_failed(res, op, s.error());
    }
    auto st = limiter.stats(*model);
    if (!st) return call_failed(res, op, st.error());
    send_json(res, 200, json::model_stats(*model, *st));
  }

  void stats(httplib::Response& res) {
    auto rows = status_rows(limiter, std::nullopt);
    if (!rows) return store_failed(res, "GET /v1/stats", rows.error().message);
    send_json(res, 200, json::status(*rows));
  }

  void model_stats(const httplib::Request& req, httplib::Response& res) {
    const std::string op = "GET " + printable(req.path);
    const std::string model = path_model(req, 10);
    if (!path_model_ok(op, model, res)) return;
    auto st = limiter.stats(model);
    if (!st) return call_failed(res, op, st.error());
    send_json(res, 200, json::model_stats(model, *st));
  }

  void quota(const httplib::Request& req, httplib::Response& res) {
    const std::string op = request_name(req);
    const std::string model = path_model(req, 11);
    if (!path_model_ok(op, model, res)) return;
    if (req.method == "GET" || req.method == "HEAD") {
      auto q = limiter.quota(model);
      if (!q) return call_failed(res, op, q.error());
      if (!*q) {
        return send_error(res, 404, "not_found",
                          op + ": \"" + printable(model) + "\" has no quota (set one with PUT)");
      }
      return send_json(res, 200, json::model_quota(model, **q));
    }
    if (req.method == "DELETE") {
      auto s = limiter.remove_quota(model);
      if (!s && s.error().code == ErrorCode::not_found) {
        return send_error(res, 404, "not_found",
                          op + ": \"" + printable(model) + "\" has no quota");
      }
      if (!s) return call_failed(res, op, s.error());
      res.status = 204;
      return;
    }
    auto b = body(req, res, {"max_rpm", "max_tpm", "max_rpd"});
    if (!b) return;
    if (!b->has("max_rpm") && !b->has("max_tpm") && !b->has("max_rpd")) {
      return send_error(res, 400, "invalid_request",
                        op + ": give at least one of max_rpm, max_tpm, max_rpd (0: unlimited)");
    }
    auto stored = limiter.quota(model);
    if (!stored) return call_failed(res, op, stored.error());
    const ModelQuota current = stored->value_or(ModelQuota{});
    std::string error;
    auto rpm = b->count("max_rpm", current.max_rpm, 0, error);
    auto tpm = rpm ? b->count("max_tpm", current.max_tpm, 0, error) : std::nullopt;
    auto rpd = tpm ? b->count("max_rpd", current.max_rpd, 0, error) : std::nullopt;
    if (!rpd) return send_error(res, 400, "invalid_request", error);
    if (!admit(op, model, res)) return;
    const ModelQuota q{*rpm, *tpm, *rpd};
    if (auto s = limiter.set_quota(model, q); !s) return call_failed(res, op, s.error());
    send_json(res, 200, json::model_quota(model, q));
  }

  void reset(const httplib::Request& req, httplib::Response& res) {
    const std::string op = "POST /v1/reset";
    auto b = body(req, res, {"model", "all"});
    if (!b) return;
    std::string error;
    auto all = b->flag("all", error);
    if (!all) return send_error(res, 400, "invalid_request", error);
    if (*all == b->has("model")) {
      return send_error(res, 400, "invalid_request",
                        op + ": give either {\"model\": \"<name>\"} or {\"all\": true}");
    }
    std::vector<std::string> reset;
    if (*all) {
      auto m = limiter.models();
      if (!m) return store_failed(res, op, m.error().to_string());
      reset = std::move(*m);
      if (auto s = limiter.reset(""); !s) return store_failed(res, op, s.error().to_string());
    } else {
      auto model = model_of(*b, error);
      if (!model) return send_error(res, 400, "invalid_request", error);
      if (auto s = limiter.reset(*model); !s) return call_failed(res, op, s.error());
      reset.push_back(*model);
    }
    send_json(res, 200, json::reset(reset));
  }

  void metrics(httplib::Response& res) {
    auto m = limiter.metrics();
    if (!m) return store_failed(res, "GET /metrics", m.error().to_string());
    ServerSnapshot snap;
    snap.leases = leases.size();
    snap.max_leases = leases.cap();
    snap.waiters = waiters.load();
    snap.max_waiters = options.max_waiters;
    snap.models = names.size();
    snap.max_models = names.cap();
    snap.leases_expired = leases.expired();
    const LimiterMetrics lm = limiter.limiter_metrics();
    snap.invalid_model_requests =
        invalid_model_requests.load(std::memory_order_relaxed) + lm.invalid_model;
    snap.invalid_model_names_skipped = lm.invalid_names_skipped;
    for (std::size_t r = 0; r < kRouteCount; ++r) {
      const RouteCounters& c = routes[r];
      std::uint64_t total = 0;
      for (std::size_t i = 0; i < kStatuses.size(); ++i) {
        const std::uint64_t n = c.by_status[i].load(std::memory_order_relaxed);
        total += n;
        if (n > 0) snap.http.push_back({kRouteNames[r], kStatuses[i], n});
      }
      if (total == 0) continue;
      HttpLatency l;
      l.route = kRouteNames[r];
      l.bounds.assign(kLatencyBounds.begin(), kLatencyBounds.end());
      for (const auto& b : c.latency) l.buckets.push_back(b.load(std::memory_order_relaxed));
      l.sum_seconds = static_cast<double>(c.latency_ns.load(std::memory_order_relaxed)) / 1e9;
      snap.latency.push_back(std::move(l));
    }
    res.status = 200;
    res.set_content(prometheus_text(*m, snap), "text/plain; version=0.0.4; charset=utf-8");
  }

  // --- maintenance: expire leases, persist the YAML store ---

  void maintain() {
    auto last_persist = std::chrono::steady_clock::now();
    std::unique_lock lock(maintenance_mu);
    while (!maintenance_stop) {
      maintenance_cv.wait_for(lock, std::chrono::seconds(1));
      if (maintenance_stop) break;
      lock.unlock();
      leases.expire(clock->now());
      if (options.persist_every &&
          std::chrono::steady_clock::now() - last_persist >= *options.persist_every) {
        if (auto s = limiter.persist(); !s) {
          std::fprintf(stderr, "ratelimit serve: cannot persist the state: %s\n",
                       s.error().to_string().c_str());
        }
        last_persist = std::chrono::steady_clock::now();
      }
      lock.lock();
    }
  }
};

Server::Server(RateLimiter& limiter, ServerOptions options)
    : impl_(std::make_unique<Impl>(limiter, std::move(options))) {
  impl_->install();
}

Server::~Server() {
  stop();
  {
    std::lock_guard lock(impl_->maintenance_mu);
    impl_->maintenance_stop = true;
  }
  impl_->maintenance_cv.notify_all();
  if (impl_->maintenance.joinable()) impl_->maintenance.join();
}

Outcome<int> Server::bind() {
  const ServerOptions& o = impl_->options;
  if (!is_loopback(o.listen.host) && o.token.empty()) {
    return tl::unexpected(usage_error(
        "refusing to listen on " + o.listen.host + ":" + std::to_string(o.listen.port) +
        " without a token: anyone who can reach it could spend your quotas; pass --token-file "
        "PATH (a file holding a secret), or listen on 127.0.0.1"));
  }
  int port = o.listen.port;
  bool ok;
  if (port == 0) {
    port = impl_->http.bind_to_any_port(o.listen.host);
    ok = port > 0;
  } else {
    ok = impl_->http.bind_to_port(o.listen.host, port);
  }
  if (!ok) {
    return tl::unexpected(store_error("cannot listen on " + o.listen.host + ":" +
                                      std::to_string(o.listen.port) + ": " + std::strerror(errno) +
                                      "; is another server using the port? pick another with "
                                      "--listen HOST:PORT"));
  }
  impl_->bound = true;
  return port;
}

void Server::run() {
  if (!impl_->bound) return;
  // `running` before `stopping` is read (and the reverse in stop()): a stop() that races with
  // this start is never lost.
  impl_->running = true;
  if (!impl_->stopping) {
    impl_->maintenance = std::thread([this] { impl_->maintain(); });
    impl_->warming = true;
    impl_->http.warm_up("GET /healthz?warm=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    impl_->http.warm_up(
        "POST /v1/decide HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: 2\r\n\r\n{}");
    impl_->warming = false;
    impl_->http.listen_after_bind();
  }
  impl_->finished = true;
}

void Server::stop() {
  impl_->stopping = true;
  impl_->shutdown.request_stop();
  if (!impl_->running) return;
  // httplib ignores stop() until its accept loop has started.
  while (!impl_->http.is_running() && !impl_->finished) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  impl_->http.stop();
}

std::size_t Server::expire_leases() { return impl_->leases.expire(impl_->clock->now()); }

ServerCounters Server::counters() const {
  ServerCounters c;
  c.leases = impl_->leases.size();
  c.waiters = impl_->waiters.load();
  c.models = impl_->names.size();
  c.leases_expired = impl_->leases.expired();
  return c;
}

}  // namespace ratelimit::cli
