#include "handlers.h"

#include <algorithm>
#include <array>
#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <stop_token>
#include <utility>

#include "args.h"
#include "handler_parts.h"
#include "json_format.h"
#include "leases.h"
#include "live_page.h"
#include "prometheus_text.h"
#include "proxy_stats.h"
#include "ratelimit/model_name.h"

namespace ratelimit::server {

using namespace handler_parts;  // NOLINT(google-build-using-namespace)

// --- the handlers ---------------------------------------------------------------------------

struct Handlers::Impl {
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
  ModelNames names;
  Leases leases;
  std::atomic<std::size_t> waiters{0};
  std::atomic<std::size_t> connections{0};
  // acquire_async calls whose callback has not returned yet (wait_idle).
  std::mutex idle_mu;
  std::condition_variable idle_cv;
  std::size_t inflight = 0;
  std::stop_source shutdown;
  std::array<RouteCounters, kRouteCount> routes;
  // Requests refused for their model name (model_problem) before they reach the limiter.
  std::atomic<std::uint64_t> invalid_model_requests{0};
  std::mutex persist_mu;
  std::chrono::steady_clock::time_point last_persist = std::chrono::steady_clock::now();
  std::mutex proxy_mu;
  std::function<ProxyCounters()> proxy_counters;  // set_proxy_counters; empty: no proxy

  void count(Route route, int status, std::chrono::nanoseconds took) {
    RouteCounters& c = routes[static_cast<std::size_t>(route)];
    c.by_status[status_index(status)].fetch_add(1, std::memory_order_relaxed);
    const double s = std::chrono::duration<double>(took).count();
    std::size_t b = 0;
    while (b < kLatencyBounds.size() && s > kLatencyBounds[b]) ++b;
    c.latency[b].fetch_add(1, std::memory_order_relaxed);
    c.latency_ns.fetch_add(static_cast<std::uint64_t>(took.count()), std::memory_order_relaxed);
  }

  // The refusal of a request from its head alone (nullopt: go on).
  std::optional<Response> precheck(Route route, const Request& req) const {
    if (route != Route::healthz && options.token.empty() && !local_browser_context(req)) {
      return error_response(
          403, "forbidden",
          request_name(req) +
              ": refused a request for another host or from a web page of another origin (a "
              "browser tricked into calling this server); call it as 127.0.0.1/localhost, or "
              "protect it with --token-file");
    }
    if (route != Route::healthz && route != Route::page && !authorized(req, options.token)) {
      Response r = error_response(
          401, "unauthorized",
          request_name(req) +
              ": missing or wrong bearer token; send `Authorization: Bearer <token>` with the "
              "token from the server's --token-file");
      r.set_header("WWW-Authenticate", "Bearer realm=\"ratelimit\"");
      return r;
    }
    if (route == Route::unmatched) {
      return error_response(
          404, "not_found",
          "no such endpoint: " + request_name(req) + " (see docs/server.md for the endpoints)");
    }
    if (!method_allowed(route, req.method)) {
      Response r =
          error_response(405, "method_not_allowed",
                         request_name(req) + " is not supported; use " + allowed_methods(route));
      r.set_header("Allow", allowed_methods(route));
      return r;
    }
    return std::nullopt;
  }

  static void finish(Response& r) { r.set_header("Cache-Control", "no-store"); }
  static void reply(const std::shared_ptr<Exchange>& ex, Response r) {
    finish(r);
    ex->respond(std::move(r));
  }

  // --- endpoints ---

  std::optional<Body> body(const Request& req, Response& res,
                           std::initializer_list<const char*> accepted) {
    std::string error;
    auto b = Body::parse(req, accepted, error);
    if (!b) res = error_response(400, "invalid_request", error);
    return b;
  }

  bool admit(std::string_view op, const std::string& model, Response& res) {
    if (names.admit(model)) return true;
    res = error_response(400, "too_many_models",
                         std::string(op) + ": the server already tracks " +
                             std::to_string(names.cap()) +
                             " model names; use a known model, or restart with a larger "
                             "--max-models");
    return false;
  }

  // The model of a request body (Body::model), counting a name the rule refuses.
  std::optional<std::string> model_of(const Body& b, std::string& error) {
    bool bad_name = false;
    auto model = b.model(error, bad_name);
    if (bad_name) invalid_model_requests.fetch_add(1, std::memory_order_relaxed);
    return model;
  }

  // A model named in the path: false (400 set, the refusal counted) when the rule refuses it.
  bool path_model_ok(const std::string& op, const std::string& model, Response& res) {
    auto why = model_problem(model);
    if (!why) return true;
    invalid_model_requests.fetch_add(1, std::memory_order_relaxed);
    res = error_response(400, "invalid_request", op + ": " + *why);
    return false;
  }

  // A decision the limiter answered with invalid_model (its rule refused the name): bad input,
  // 400 like a name the server refuses itself.
  static Response invalid_model(const std::string& op, const std::string& model) {
    std::string why = model_problem(model).value_or(
        "model \"" + printable_model_name(model) + "\": the limiter refused the " +
        std::string(reason(DecisionCode::invalid_model)));
    return error_response(400, "invalid_request", op + ": " + why);
  }

  // A library call that failed: invalid_argument (the limiter refused the request, e.g. its
  // model name) is bad input (400); anything else is the store's failure (503).
  static Response call_failed(const std::string& op, const Error& e) {
    if (e.code == ErrorCode::invalid_argument) {
      return error_response(400, "invalid_request", op + ": " + e.message);
    }
    return store_failed(op, e.to_string());
  }

  static Response store_failed(const std::string& op, const std::string& what) {
    Response r = error_response(
        503, "store_unavailable",
        op + ": the state store is unavailable (" + printable(what) + "); retry shortly");
    r.set_header("Retry-After", "1");
    return r;
  }

  Response decide(const Request& req) {
    Response res;
    auto b = body(req, res, {"model", "tokens", "output_tokens"});
    if (!b) return res;
    std::string error;
    auto model = model_of(*b, error);
    auto tokens = model ? b->count("tokens", 0, -kMaxCount, error) : std::nullopt;
    auto output = tokens ? b->count("output_tokens", 0, -kMaxCount, error) : std::nullopt;
    if (!output) return error_response(400, "invalid_request", error);
    const Decision d = limiter.decide(*model, TokenEstimate{*tokens, *output});
    if (d.code == DecisionCode::invalid_model) return invalid_model("POST /v1/decide", *model);
    return json_response(200, json::decision(d));
  }

  // The answer to an acquire whose reservation (granted or not) is `r`.
  Response acquired(const std::string& model, TokenEstimate estimate, Reservation r) {
    const std::int64_t tokens = estimate.total();
    static const std::string op = "POST /v1/acquire";
    const Decision d = r.decision();
    Response res;
    if (r.granted()) {
      // The id is held; the reservation object goes (an unsettled one keeps its estimate).
      const std::string& id = r.id();
      const TimePoint now = clock->now();
      leases.add(id, now + options.lease, now);
      res = json_response(200, json::decision(d, id));
      set_rate_limit_headers(res, d, tokens);
      return res;
    }
    leases.unclaim();
    if (d.code == DecisionCode::store_unavailable) return store_failed(op, "try_acquire");
    if (d.code == DecisionCode::invalid_model) return invalid_model(op, model);
    if (d.retry_after == Duration::max()) {
      res = json_response(422, json::decision(d));
    } else {
      res = json_response(429, json::decision(d));
      res.set_header("Retry-After", ceil_seconds(d.retry_after));
    }
    set_rate_limit_headers(res, d, tokens);
    return res;
  }

  // The end of a waiting acquire (on the calling thread or the limiter's waiter thread).
  void waited(const std::string& model, TokenEstimate tokens, Result<Reservation> got,
              const std::shared_ptr<Exchange>& ex) {
    static const std::string op = "POST /v1/acquire";
    if (got) {
      if (ex->gone()) {
        // The client left as the grant came: it can never settle it, so refund it now.
        (void)got->cancel();
        leases.unclaim();
        reply(ex, error_response(499, "client_closed", op + ": the client closed the request"));
        return;
      }
      reply(ex, acquired(model, tokens, std::move(*got)));
      return;
    }
    switch (got.error().code) {
      case ErrorCode::deadline_exceeded:
      case ErrorCode::never_satisfiable: {
        // The acquire was counted (deadline_exceeded or tpm_exceeded); the answer shows the
        // decision now, without counting again. Capacity freed at that very moment is taken.
        Decision d = limiter.decide(model, tokens);
        if (d.allowed)
          return reply(ex, acquired(model, tokens, limiter.try_acquire(model, tokens)));
        leases.unclaim();
        Response res =
            json_response(d.retry_after == Duration::max() ? 422 : 429, json::decision(d));
        if (d.retry_after != Duration::max()) {
          res.set_header("Retry-After", ceil_seconds(d.retry_after));
        }
        set_rate_limit_headers(res, d, tokens.total());
        return reply(ex, std::move(res));
      }
      case ErrorCode::cancelled:
      case ErrorCode::closed: {
        leases.unclaim();
        if (got.error().code == ErrorCode::closed && !shutdown.stop_requested()) {
          return reply(ex, store_failed(op, got.error().to_string()));
        }
        if (ex->gone()) {
          return reply(
              ex, error_response(499, "client_closed", op + ": the client closed the request"));
        }
        Response res =
            error_response(503, "shutting_down",
                           op + ": the server is shutting down; retry against its successor");
        res.set_header("Retry-After", "1");
        return reply(ex, std::move(res));
      }
      default:
        leases.unclaim();
        return reply(ex, call_failed(op, got.error()));
    }
  }

  void acquire(const Request& req, const std::shared_ptr<Exchange>& ex) {
    static const std::string op = "POST /v1/acquire";
    Response res;
    auto b = body(req, res, {"model", "tokens", "output_tokens", "wait_ms"});
    if (!b) return reply(ex, std::move(res));
    std::string error;
    auto model = model_of(*b, error);
    if (!model) return reply(ex, error_response(400, "invalid_request", error));
    auto input = b->count("tokens", 0, -kMaxCount, error);
    auto output = input ? b->count("output_tokens", 0, -kMaxCount, error) : std::nullopt;
    if (!output) return reply(ex, error_response(400, "invalid_request", error));
    if (*input < 0 || *output < 0) {
      return reply(ex,
                   error_response(400, "invalid_tokens",
                                  op +
                                      ": \"tokens\" and \"output_tokens\" must be >= 0 (the "
                                      "estimated input and output tokens of the call), got " +
                                      std::to_string(*input) + " and " + std::to_string(*output)));
    }
    const std::optional<TokenEstimate> tokens = TokenEstimate{*input, *output};
    const std::int64_t max_wait_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(options.max_wait).count();
    auto wait_ms = b->count("wait_ms", 0, 0, error);
    if (!wait_ms) return reply(ex, error_response(400, "invalid_request", error));
    if (*wait_ms > max_wait_ms) {
      return reply(
          ex, error_response(400, "invalid_request",
                             op + ": \"wait_ms\" must be at most " + std::to_string(max_wait_ms) +
                                 " (the server's --max-wait), got " + std::to_string(*wait_ms)));
    }
    if (!admit(op, *model, res)) return reply(ex, std::move(res));
    if (ex->gone()) {
      // The client left before its request was handled (a pipelined request on a closed
      // connection): nobody could settle a grant.
      return reply(ex,
                   error_response(499, "client_closed", op + ": the client closed the request"));
    }
    if (!leases.claim()) {
      res = error_response(503, "too_many_reservations",
                           op + ": the server holds " + std::to_string(leases.cap()) +
                               " unsettled reservations; commit or cancel them (or restart with "
                               "a larger --max-leases)");
      res.set_header("Retry-After", "1");
      return reply(ex, std::move(res));
    }
    if (*wait_ms == 0)
      return reply(ex, acquired(*model, *tokens, limiter.try_acquire(*model, *tokens)));
    if (shutdown.stop_requested()) {
      leases.unclaim();
      res = error_response(503, "shutting_down",
                           op + ": the server is shutting down; retry against its successor");
      res.set_header("Retry-After", "1");
      return reply(ex, std::move(res));
    }
    // Only an acquire that actually waits takes a waiter's place: when every place is taken,
    // the request is tried once and answered at once.
    if (waiters.fetch_add(1) >= options.max_waiters) {
      waiters.fetch_sub(1);
      Reservation r = limiter.try_acquire(*model, *tokens);
      if (r.granted() || r.decision().retry_after == Duration::max() ||
          r.decision().code == DecisionCode::store_unavailable ||
          r.decision().code == DecisionCode::invalid_model) {
        return reply(ex, acquired(*model, *tokens, std::move(r)));
      }
      leases.unclaim();
      res = error_response(503, "too_many_waiters",
                           op + ": " + std::to_string(options.max_waiters) +
                               " acquires are already waiting; retry, or send wait_ms 0 and "
                               "honour Retry-After");
      res.set_header("Retry-After", "1");
      return reply(ex, std::move(res));
    }
    WaitOptions wait;
    wait.timeout = std::chrono::milliseconds(*wait_ms);
    wait.stop = shutdown.get_token();
    {
      std::lock_guard lock(idle_mu);
      ++inflight;
    }
    PendingAcquire pending = limiter.acquire_async(
        *model, *tokens,
        [this, model = *model, tokens = *tokens, ex](Result<Reservation> got) {
          waiters.fetch_sub(1);
          waited(model, tokens, std::move(got), ex);
          std::lock_guard lock(idle_mu);
          if (--inflight == 0) idle_cv.notify_all();
        },
        wait);
    ex->on_gone([pending]() mutable { pending.cancel(); });
  }

  Response settle(bool is_commit, const Request& req) {
    const std::string op = "POST " + printable(req.path);
    Response res;
    auto b = is_commit ? body(req, res, {"prompt_tokens", "output_tokens"}) : body(req, res, {});
    if (!b) return res;
    const std::string_view rest = std::string_view(req.path).substr(17);
    const std::string id(rest.substr(0, rest.find('/')));
    std::int64_t prompt = 0, output = 0;
    if (is_commit) {
      std::string error;
      auto p = b->count("prompt_tokens", std::nullopt, 0, error);
      auto o = p ? b->count("output_tokens", std::nullopt, 0, error) : std::nullopt;
      if (!o) return error_response(400, "invalid_request", error);
      prompt = *p, output = *o;
    }
    // Held here or not (an id from another process on the same store, or one whose lease
    // ended), the store decides; a held id is no longer held, whatever it answers.
    leases.take(id, clock->now());
    const Status s = is_commit ? limiter.commit(id, prompt, output) : limiter.cancel(id);
    if (s) return json_response(200, json::settled(id, is_commit ? "committed" : "cancelled"));
    const Error& e = s.error();
    switch (e.code) {
      case ErrorCode::not_found:
        return error_response(404, "not_found",
                              op + ": no reservation \"" + printable(id) +
                                  "\" in this store (ids come from a granted POST /v1/acquire)");
      case ErrorCode::invalid_argument:
        return error_response(409, "already_settled", op + ": " + e.message);
      default:
        return store_failed(op, e.to_string());
    }
  }

  Response record(const Request& req) {
    const std::string op = "POST /v1/record";
    Response res;
    auto b = body(req, res, {"model", "prompt_tokens", "output_tokens"});
    if (!b) return res;
    std::string error;
    auto model = model_of(*b, error);
    auto prompt = model ? b->count("prompt_tokens", 0, 0, error) : std::nullopt;
    auto output = prompt ? b->count("output_tokens", 0, 0, error) : std::nullopt;
    if (!output) return error_response(400, "invalid_request", error);
    if (!admit(op, *model, res)) return res;
    if (auto s = limiter.record_usage(*model, *prompt, *output); !s) {
      return call_failed(op, s.error());
    }
    auto st = limiter.stats(*model);
    if (!st) return call_failed(op, st.error());
    return json_response(200, json::model_stats(*model, *st));
  }

  Response stats() {
    const std::string op = "GET /v1/stats";
    auto names_now = limiter.models();
    if (!names_now) return store_failed(op, "cannot list models: " + names_now.error().to_string());
    std::vector<json::StatusRow> rows;
    for (auto& name : *names_now) {
      Decision d = limiter.decide(name, 0);
      if (d.code == DecisionCode::store_unavailable) return store_failed(op, "decide");
      rows.push_back({std::move(name), d});
    }
    std::string body = json::status(rows);
    std::unique_lock lock(proxy_mu);
    const auto proxy = proxy_counters;  // called unlocked
    lock.unlock();
    if (proxy) add_proxy_stats(body, proxy());
    return json_response(200, std::move(body));
  }

  Response model_stats(const Request& req) {
    const std::string op = "GET " + printable(req.path);
    const std::string model = req.path.substr(10);
    Response res;
    if (!path_model_ok(op, model, res)) return res;
    auto st = limiter.stats(model);
    if (!st) return call_failed(op, st.error());
    return json_response(200, json::model_stats(model, *st));
  }

  Response quota(const Request& req) {
    const std::string op = request_name(req);
    const std::string model = req.path.substr(11);
    Response res;
    if (!path_model_ok(op, model, res)) return res;
    if (req.method == "GET" || req.method == "HEAD") {
      auto q = limiter.quota(model);
      if (!q) return call_failed(op, q.error());
      if (!*q) {
        return error_response(
            404, "not_found",
            op + ": \"" + printable(model) + "\" has no quota (set one with PUT)");
      }
      return json_response(200, json::model_quota(model, **q));
    }
    if (req.method == "DELETE") {
      auto s = limiter.remove_quota(model);
      if (!s && s.error().code == ErrorCode::not_found) {
        return error_response(404, "not_found", op + ": \"" + printable(model) + "\" has no quota");
      }
      if (!s) return call_failed(op, s.error());
      res.status = 204;
      return res;
    }
    auto b =
        body(req, res,
             {"max_rpm", "max_tpm", "max_rpd", "max_input_tpm", "max_output_tpm", "day_start"});
    if (!b) return res;
    if (!b->has("max_rpm") && !b->has("max_tpm") && !b->has("max_rpd") &&
        !b->has("max_input_tpm") && !b->has("max_output_tpm") && !b->has("day_start")) {
      return error_response(400, "invalid_request",
                            op + ": give at least one of max_rpm, max_tpm, max_rpd, "
                                 "max_input_tpm, max_output_tpm, day_start (0: unlimited)");
    }
    auto stored = limiter.quota(model);
    if (!stored) return call_failed(op, stored.error());
    ModelQuota q = stored->value_or(ModelQuota{});
    std::string error;
    for (auto [key, field] :
         {std::pair{"max_rpm", &q.max_rpm}, std::pair{"max_tpm", &q.max_tpm},
          std::pair{"max_rpd", &q.max_rpd}, std::pair{"max_input_tpm", &q.max_input_tpm},
          std::pair{"max_output_tpm", &q.max_output_tpm}}) {
      auto v = b->count(key, *field, 0, error);
      if (!v) return error_response(400, "invalid_request", error);
      *field = *v;
    }
    if (const Json& day = b->raw("day_start"); !day.is_null()) {
      auto d = day.is_string() ? day_start_from_string(day.get<std::string>()) : std::nullopt;
      if (!d) {
        return error_response(400, "invalid_request",
                              op + ": \"day_start\" must be \"first_request\" or "
                                   "\"pacific_midnight\"");
      }
      q.day_start = *d;
    }
    if (!admit(op, model, res)) return res;
    if (auto s = limiter.set_quota(model, q); !s) return call_failed(op, s.error());
    return json_response(200, json::model_quota(model, q));
  }

  // {"model", "status", "headers", "body", "format"}: a provider's response, so that any
  // language can feed what the provider said into the limiter (RateLimiter::observe).
  Response observe(const Request& req) {
    const std::string op = "POST /v1/observe";
    Response res;
    auto b = body(req, res, {"model", "status", "headers", "body", "format"});
    if (!b) return res;
    std::string error;
    auto model = model_of(*b, error);
    auto status = model ? b->count("status", 200, 100, error) : std::nullopt;
    if (!status) return error_response(400, "invalid_request", error);
    if (*status > 599) {
      return error_response(400, "invalid_request",
                            op + ": \"status\" must be an HTTP status code (100..599), got " +
                                std::to_string(*status));
    }
    ProviderResponse response;
    response.status = static_cast<int>(*status);
    const Json& format = b->raw("format");
    if (!format.is_null()) {
      auto f = format.is_string() ? response_format_from_string(format.get<std::string>())
                                  : std::nullopt;
      if (!f) {
        return error_response(400, "invalid_request",
                              op + ": \"format\" must be one of auto, openai, azure_openai, "
                                   "groq, anthropic, mistral, gemini");
      }
      response.format = *f;
    }
    const Json& headers = b->raw("headers");
    const std::string shape =
        op + ": \"headers\" must be an object of strings or a list of [name, value] string pairs";
    if (headers.is_object()) {
      for (const auto& [name, value] : headers.items()) {
        if (!value.is_string()) return error_response(400, "invalid_request", shape);
        response.headers.emplace_back(name, value.get<std::string>());
      }
    } else if (headers.is_array()) {
      for (const auto& pair : headers) {
        if (!pair.is_array() || pair.size() != 2 || !pair[0].is_string() || !pair[1].is_string()) {
          return error_response(400, "invalid_request", shape);
        }
        response.headers.emplace_back(pair[0].get<std::string>(), pair[1].get<std::string>());
      }
    } else if (!headers.is_null()) {
      return error_response(400, "invalid_request", shape);
    }
    const Json& text = b->raw("body");
    if (!text.is_null()) {
      if (!text.is_string()) {
        return error_response(400, "invalid_request",
                              op + ": \"body\" must be the response body as a string");
      }
      response.body = text.get<std::string>();
    }
    if (!admit(op, *model, res)) return res;
    auto o = limiter.observe(*model, response);
    if (!o) return call_failed(op, o.error());
    return json_response(200, json::observation(*o));
  }

  Response reset(const Request& req) {
    const std::string op = "POST /v1/reset";
    Response res;
    auto b = body(req, res, {"model", "all"});
    if (!b) return res;
    std::string error;
    auto all = b->flag("all", error);
    if (!all) return error_response(400, "invalid_request", error);
    if (*all == b->has("model")) {
      return error_response(400, "invalid_request",
                            op + ": give either {\"model\": \"<name>\"} or {\"all\": true}");
    }
    std::vector<std::string> reset;
    if (*all) {
      auto m = limiter.models();
      if (!m) return store_failed(op, m.error().to_string());
      reset = std::move(*m);
      if (auto s = limiter.reset(""); !s) return store_failed(op, s.error().to_string());
    } else {
      auto model = model_of(*b, error);
      if (!model) return error_response(400, "invalid_request", error);
      if (auto s = limiter.reset(*model); !s) return call_failed(op, s.error());
      reset.push_back(*model);
    }
    return json_response(200, json::reset(reset));
  }

  ServerSnapshot snapshot() const {
    ServerSnapshot snap;
    snap.leases = leases.size();
    snap.max_leases = leases.cap();
    snap.waiters = waiters.load();
    snap.max_waiters = options.max_waiters;
    snap.models = names.size();
    snap.max_models = names.cap();
    snap.connections = connections.load();
    snap.max_connections = options.max_connections;
    snap.leases_expired = leases.expired();
    const LimiterMetrics lm = limiter.limiter_metrics();
    snap.invalid_model_requests =
        invalid_model_requests.load(std::memory_order_relaxed) + lm.invalid_model;
    snap.invalid_model_names_skipped = lm.invalid_names_skipped;
    snap.unknown_models = lm.unknown_models;
    snap.provider_values_ignored = lm.provider_values_ignored;
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
    return snap;
  }

  Response metrics() {
    // One compact series per model, visited one at a time: no map of every ModelMetrics.
    // Counted first, so that the vector is allocated once (doubling would hold up to 1.5×
    // twice the series while it grows).
    std::size_t count = 0;
    if (auto c = limiter.visit_metrics([&](std::string_view, const ModelMetrics&) { ++count; });
        !c) {
      return store_failed("GET /metrics", c.error().to_string());
    }
    std::vector<ModelSeries> series;
    series.reserve(count + count / 16 + 16);  // models added meanwhile: no reallocation
    auto m = limiter.visit_metrics([&](std::string_view model, const ModelMetrics& metrics) {
      series.push_back(series_of(model, metrics));
    });
    if (!m) return store_failed("GET /metrics", m.error().to_string());
    Response res;
    res.status = 200;
    res.content_type = "text/plain; version=0.0.4; charset=utf-8";
    res.stream = prometheus_stream(std::move(series), snapshot());
    return res;
  }

  Response page() {
    Response res;
    res.status = 200;
    res.content_type = "text/html; charset=utf-8";
    res.body = std::string(live_page_html());
    res.set_header("X-Frame-Options", "DENY");
    res.set_header("Referrer-Policy", "no-referrer");
    return res;
  }

  Response health() {
    if (shutdown.stop_requested()) {
      return json_response(503, json::health("stopping", options.backend));
    }
    return json_response(200, json::health("ok", options.backend));
  }

  // Every route but acquire (which may answer later).
  Response serve(Route route, const Request& req) {
    switch (route) {
      case Route::page:
        return page();
      case Route::healthz:
        return health();
      case Route::metrics:
        return metrics();
      case Route::decide:
        return decide(req);
      case Route::commit:
      case Route::cancel:
        return settle(route == Route::commit, req);
      case Route::record:
        return record(req);
      case Route::stats:
        return stats();
      case Route::model_stats:
        return model_stats(req);
      case Route::quota:
        return quota(req);
      case Route::reset:
        return reset(req);
      case Route::observe:
        return observe(req);
      case Route::acquire:
      case Route::unmatched:
        break;
    }
    return error_response(404, "not_found", "no such endpoint: " + request_name(req));
  }
};

Handlers::Handlers(RateLimiter& limiter, ServerOptions options)
    : impl_(std::make_unique<Impl>(limiter, std::move(options))) {}

Handlers::~Handlers() {
  begin_shutdown();
  wait_idle();
}

std::optional<Response> Handlers::check_head(const Request& head) {
  const Route route = route_of(head.path);
  auto refusal = impl_->precheck(route, head);
  if (refusal) {
    Impl::finish(*refusal);
    impl_->count(route, refusal->status, std::chrono::nanoseconds(0));
  }
  return refusal;
}

void Handlers::handle(const Request& request, const std::shared_ptr<Exchange>& exchange) {
  const auto start = std::chrono::steady_clock::now();
  const Route route = route_of(request.path);
  exchange->observe([this, route, start](const Response& r) {
    impl_->count(route, r.status, std::chrono::steady_clock::now() - start);
  });
  // Every answer gets Cache-Control (set here, before delivery, whatever thread answers).
  auto respond_finished = [&](Response r) {
    Impl::finish(r);
    exchange->respond(std::move(r));
  };
  if (!request.head_checked) {
    if (auto refusal = impl_->precheck(route, request)) {
      return respond_finished(std::move(*refusal));
    }
  }
  try {
    if (route == Route::acquire) {
      // Answered at once or later, through Impl::reply (which sets Cache-Control too).
      impl_->acquire(request, exchange);
      return;
    }
    respond_finished(impl_->serve(route, request));
  } catch (const std::exception& e) {
    respond_finished(error_response(
        500, "internal",
        request_name(request) + ": " + printable(e.what()) + " (nothing was changed)"));
  }
}

Response Handlers::refuse(int status, std::string_view code, std::string message) {
  Response r = error_response(status, code, message);
  Impl::finish(r);
  r.close = true;
  impl_->count(Route::unmatched, status, std::chrono::nanoseconds(0));
  return r;
}

void Handlers::begin_shutdown() { impl_->shutdown.request_stop(); }

bool Handlers::shutting_down() const { return impl_->shutdown.stop_requested(); }

void Handlers::wait_idle() {
  std::unique_lock lock(impl_->idle_mu);
  impl_->idle_cv.wait(lock, [this] { return impl_->inflight == 0; });
}

std::size_t Handlers::expire_leases() { return impl_->leases.expire(impl_->clock->now()); }

void Handlers::maintain() {
  impl_->leases.expire(impl_->clock->now());
  const ServerOptions& o = impl_->options;
  if (!o.persist_every) return;
  std::lock_guard lock(impl_->persist_mu);
  const auto now = std::chrono::steady_clock::now();
  if (now - impl_->last_persist < *o.persist_every) return;
  if (auto s = impl_->limiter.persist(); !s) {
    std::fprintf(stderr, "ratelimit serve: cannot persist the state: %s\n",
                 s.error().to_string().c_str());
  }
  impl_->last_persist = now;
}

void Handlers::set_proxy_counters(std::function<ProxyCounters()> source) {
  std::lock_guard lock(impl_->proxy_mu);
  impl_->proxy_counters = std::move(source);
}

ServerCounters Handlers::counters() const {
  ServerCounters c;
  c.leases = impl_->leases.size();
  c.waiters = impl_->waiters.load();
  c.models = impl_->names.size();
  c.connections = impl_->connections.load();
  c.leases_expired = impl_->leases.expired();
  return c;
}

std::atomic<std::size_t>& Handlers::connections() { return impl_->connections; }

const ServerOptions& Handlers::options() const { return impl_->options; }

}  // namespace ratelimit::server
