// Internal to the server: the pieces Handlers (handlers.cc) is built from — the route table
// and its counters, the access checks, JSON and error responses, the RateLimit headers, request
// bodies and the bounded set of model names (the leases are in leases.h).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "args.h"
#include "flat_json.h"
#include "http.h"
#include "json_format.h"
#include "ratelimit/limiter.h"

namespace ratelimit::server::handler_parts {

using Json = nlohmann::json;
using cli::model_problem;
using cli::printable;

// The largest count a request may carry: JSON's exact integer range (2^53 - 1), which every
// client language can represent.
inline constexpr std::int64_t kMaxCount = (std::int64_t{1} << 53) - 1;

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
  observe,
  unmatched,
};
inline constexpr std::size_t kRouteCount = 14;
inline constexpr std::array<const char*, kRouteCount> kRouteNames = {"/",
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
                                                                     "/v1/observe",
                                                                     "unmatched"};

// Every status the server answers (499: the client closed its connection before the answer,
// as nginx counts it; nothing is sent). Anything else is counted as 500.
inline constexpr std::array<int, 20> kStatuses = {200, 204, 400, 401, 403, 404, 405, 408, 409, 413,
                                                  414, 417, 422, 429, 431, 499, 500, 501, 503, 505};
inline std::size_t status_index(int status) {
  for (std::size_t i = 0; i < kStatuses.size(); ++i) {
    if (kStatuses[i] == status) return i;
  }
  return status_index(500);
}

// Seconds.
inline constexpr std::array<double, 10> kLatencyBounds = {0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                                          0.005,  0.01,    0.05,   0.25,  1.0};

struct RouteCounters {
  std::array<std::atomic<std::uint64_t>, kStatuses.size()> by_status{};
  std::array<std::atomic<std::uint64_t>, kLatencyBounds.size() + 1> latency{};
  std::atomic<std::uint64_t> latency_ns{0};
};

// --- small helpers --------------------------------------------------------------------------

// "POST /v1/decide": how error messages name a request; a path's bytes that are not printable
// UTF-8 are written as \xNN.
inline std::string request_name(const Request& req) {
  return printable(req.method) + " " + printable(req.path);
}

inline Response json_response(int status, std::string body) {
  Response r;
  r.status = status;
  r.content_type = "application/json";
  r.body = std::move(body);
  return r;
}

inline Response error_response(int status, std::string_view code, const std::string& message) {
  return json_response(status, json::http_error(code, message));
}

inline std::string ceil_seconds(Duration d) {
  const std::int64_t ns = d.count() < 0 ? 0 : d.count();
  return std::to_string(ns / 1'000'000'000 + (ns % 1'000'000'000 != 0 ? 1 : 0));
}

// The IETF RateLimit-Policy and RateLimit fields (draft-ietf-httpapi-ratelimit-headers): one
// policy per limited dimension; `remaining` after this request when it was granted.
inline void set_rate_limit_headers(Response& res, const Decision& d, std::int64_t tokens) {
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
  // Appended in place (this runs on every acquire): no temporary strings.
  std::string policy, state;
  policy.reserve(96);
  state.reserve(96);
  auto put = [](std::string& out, std::int64_t v) { out += std::to_string(v); };
  for (const Dim& dim : dims) {
    if (dim.limit <= 0) continue;
    std::int64_t remaining = dim.limit - dim.used - (d.allowed ? dim.cost : 0);
    if (remaining < 0) remaining = 0;
    if (!policy.empty()) policy += ", ", state += ", ";
    policy += '"';
    policy += dim.name;
    policy += "\";q=";
    put(policy, dim.limit);
    policy += ";w=";
    put(policy, dim.window_s);
    state += '"';
    state += dim.name;
    state += "\";r=";
    put(state, remaining);
    // A denial names the exhausted dimension's reset; d.retry_after is the latest over all.
    if (!d.allowed && (dim.exhausted || remaining == 0) && d.retry_after != Duration::max()) {
      state += ";t=";
      state += ceil_seconds(d.retry_after);
    }
  }
  if (!policy.empty()) {
    res.set_header("RateLimit-Policy", std::move(policy));
    res.set_header("RateLimit", std::move(state));
  }
}

// A parsed request body: a JSON object whose keys were checked against the accepted ones.
class Body {
 public:
  // Parses the body of `req` (which must outlive the Body); on failure `error` says why, named
  // by the request ("POST /v1/acquire": written only for a message). An empty body is an
  // empty object.
  static std::optional<Body> parse(const Request& req, std::initializer_list<const char*> accepted,
                                   std::string& error) {
    Body b;
    b.req_ = &req;
    const std::string& text = req.body;
    if (text.find_first_not_of(" \t\r\n") == std::string::npos) {
      b.j_ = Json::object();
      return b;
    }
    // The common shape first, without a DOM; anything else (and every error) goes through
    // nlohmann/json, as does raw().
    if (b.flat_.parse(text) && b.flat_known(accepted)) {
      b.is_flat_ = true;
      return b;
    }
    try {
      b.j_ = Json::parse(text);
    } catch (const Json::exception& e) {
      // parse_error, and out_of_range for a number no double holds (1e9999).
      std::string what = e.what();
      if (auto cut = what.find("] "); cut != std::string::npos) what = what.substr(cut + 2);
      error = b.op() + ": the body is not valid JSON (" + printable(what) +
              "); send an object such as {\"model\": \"gpt-4o\", \"tokens\": 1500}";
      return std::nullopt;
    }
    if (!b.j_.is_object()) {
      error = b.op() + ": the body must be a JSON object, not " + b.j_.type_name();
      return std::nullopt;
    }
    for (const auto& [key, value] : b.j_.items()) {
      bool known = false;
      for (const char* a : accepted) known = known || key == a;
      if (!known) {
        std::string list;
        for (const char* a : accepted) list += std::string(list.empty() ? "" : ", ") + a;
        error = b.op() + ": unknown field \"" + printable(key) +
                "\" (accepted: " + (list.empty() ? "none" : list) + ")";
        return std::nullopt;
      }
    }
    return b;
  }

  bool has(const char* key) const {
    return is_flat_ ? flat_.find(key) != nullptr : j_.contains(key);
  }
  // The field as parsed (null when absent).
  const Json& raw(const char* key) const {
    static const Json kNull;
    if (is_flat_ && j_.is_null()) j_ = Json::parse(req_->body);  // valid: it parsed flat
    auto it = j_.find(key);
    return it == j_.end() ? kNull : *it;
  }

  // An integer field in [min, kMaxCount]; `fallback` when absent (nullopt: required).
  std::optional<std::int64_t> count(const char* key, std::optional<std::int64_t> fallback,
                                    std::int64_t min, std::string& error) const {
    if (is_flat_) {
      const FlatField* f = flat_.find(key);
      if (f == nullptr) {
        if (!fallback) error = op() + ": \"" + key + "\" is required (an integer >= 0)";
        return fallback;
      }
      if (f->is_string || f->integer < min || f->integer > kMaxCount) {
        error = op() + ": \"" + key + "\" must be an integer from " + std::to_string(min) + " to " +
                std::to_string(kMaxCount) + ", got " + dump(*f);
        return std::nullopt;
      }
      return f->integer;
    }
    auto it = j_.find(key);
    if (it == j_.end()) {
      if (!fallback) error = op() + ": \"" + key + "\" is required (an integer >= 0)";
      return fallback;
    }
    // The messages are built only on failure: this runs on every acquire.
    auto fail = [&] {
      error = op() + ": \"" + key + "\" must be an integer from " + std::to_string(min) + " to " +
              std::to_string(kMaxCount) + ", got " +
              it->dump(-1, ' ', false, Json::error_handler_t::replace);
      return std::nullopt;
    };
    if (!it->is_number_integer()) return fail();
    if (it->is_number_unsigned() && it->get<std::uint64_t>() > std::uint64_t(kMaxCount)) {
      return fail();
    }
    const std::int64_t v = it->get<std::int64_t>();
    if (v < min || v > kMaxCount) return fail();
    return v;
  }

  // The "model" field: required, a string, and a name the model-name rule accepts (args.h);
  // `bad_name` is set when the string breaks that rule.
  std::optional<std::string> model(std::string& error, bool& bad_name) const {
    if (is_flat_) {
      const FlatField* f = flat_.find("model");
      if (f == nullptr) {
        error = op() + ": \"model\" is required";
        return std::nullopt;
      }
      if (!f->is_string) {
        error = op() + ": \"model\" must be a string, got " + dump(*f);
        return std::nullopt;
      }
      return checked_model(std::string(f->text), error, bad_name);
    }
    auto it = j_.find("model");
    if (it == j_.end()) {
      error = op() + ": \"model\" is required";
      return std::nullopt;
    }
    if (!it->is_string()) {
      error = op() + ": \"model\" must be a string, got " +
              it->dump(-1, ' ', false, Json::error_handler_t::replace);
      return std::nullopt;
    }
    return checked_model(it->get<std::string>(), error, bad_name);
  }

  std::optional<bool> flag(const char* key, std::string& error) const {
    if (is_flat_) {  // a flat body holds no booleans
      const FlatField* f = flat_.find(key);
      if (f == nullptr) return false;
      error = op() + ": \"" + key + "\" must be true or false, got " + dump(*f);
      return std::nullopt;
    }
    auto it = j_.find(key);
    if (it == j_.end()) return false;
    if (!it->is_boolean()) {
      error = op() + ": \"" + key + "\" must be true or false, got " +
              it->dump(-1, ' ', false, Json::error_handler_t::replace);
      return std::nullopt;
    }
    return it->get<bool>();
  }

 private:
  std::string op() const { return request_name(*req_); }

  std::optional<std::string> checked_model(std::string name, std::string& error,
                                           bool& bad_name) const {
    if (auto why = model_problem(name)) {
      error = op() + ": " + *why;
      bad_name = true;
      return std::nullopt;
    }
    return name;
  }

  // True when every field of the flat body is accepted (else the DOM path words the error).
  bool flat_known(std::initializer_list<const char*> accepted) const {
    for (std::size_t i = 0; i < flat_.size(); ++i) {
      bool known = false;
      for (const char* a : accepted) known = known || flat_[i].key == a;
      if (!known) return false;
    }
    return true;
  }
  // What nlohmann's dump() writes for the field (a flat string needs no escapes).
  static std::string dump(const FlatField& f) {
    return f.is_string ? "\"" + std::string(f.text) + "\"" : std::string(f.text);
  }

  const Request* req_ = nullptr;
  FlatJson flat_;
  bool is_flat_ = false;
  mutable Json j_;
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

// --- routing and access (access.cc) ----------------------------------------------------------

Route route_of(const std::string& path);
// "GET", "POST" or "GET, PUT, DELETE" (the Allow header).
const char* allowed_methods(Route route);
// HEAD counts as GET.
bool method_allowed(Route route, const std::string& method);
// True when `token` is empty or the request carries `Authorization: Bearer <token>`.
bool authorized(const Request& req, const std::string& token);
// Without a token the server trusts whatever can reach loopback, which includes every web
// page the user's browser opens: a page may POST to 127.0.0.1 (no preflight for a text/plain
// body) or rebind its own name to 127.0.0.1. So the Host must name a loopback address and an
// Origin, when a browser sends one, must be a loopback origin. Programs (curl, SDKs) send a
// loopback Host and no Origin; an HTTP/1.0 client may send no Host at all (browsers always
// send one).
bool local_browser_context(const Request& req);

}  // namespace ratelimit::server::handler_parts
