#include "proxy_api.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "args.h"
#include "handler_parts.h"
#include "prometheus_text.h"
#include "proxy_fast_json.h"
#include "ratelimit/tokens.h"

namespace ratelimit::server {

std::string_view to_string(UpstreamApi api) {
  switch (api) {
    case UpstreamApi::openai:
      return "openai";
    case UpstreamApi::anthropic:
      return "anthropic";
    case UpstreamApi::gemini:
      return "gemini";
  }
  return "openai";
}

namespace {

std::optional<UpstreamApi> api_named(std::string_view name) {
  for (UpstreamApi a : {UpstreamApi::openai, UpstreamApi::anthropic, UpstreamApi::gemini}) {
    if (name == to_string(a)) return a;
  }
  return std::nullopt;
}

constexpr std::array<std::pair<std::string_view, std::string_view>, 3> kPublicUrls = {{
    {"openai", "https://api.openai.com"},
    {"anthropic", "https://api.anthropic.com"},
    {"gemini", "https://generativelanguage.googleapis.com"},
}};

}  // namespace

Result<Upstream> parse_upstream(std::string_view text) {
  const std::string shown = "--upstream \"" + cli::printable(text) + "\"";
  auto bad = [&](const std::string& why) {
    return make_error(ErrorCode::invalid_argument,
                      shown + ": " + why +
                          "; write NAME=URL[,api=openai|anthropic|gemini] (e.g. "
                          "openai=https://api.openai.com) or just openai, anthropic or gemini");
  };
  Upstream u;
  std::string_view spec = text;
  std::optional<UpstreamApi> api;
  if (const auto comma = spec.find(','); comma != std::string_view::npos) {
    std::string_view opt = spec.substr(comma + 1);
    spec = spec.substr(0, comma);
    if (opt.substr(0, 4) != "api=") return bad("unknown option \"" + cli::printable(opt) + "\"");
    api = api_named(opt.substr(4));
    if (!api) return bad("unknown api \"" + cli::printable(opt.substr(4)) + "\"");
  }
  const auto eq = spec.find('=');
  u.name = std::string(spec.substr(0, eq));
  if (eq == std::string_view::npos) {
    const auto* known = std::find_if(kPublicUrls.begin(), kPublicUrls.end(),
                                     [&](const auto& p) { return p.first == u.name; });
    if (known == kPublicUrls.end())
      return bad("no URL (only openai, anthropic and gemini have one)");
    u.url = std::string(known->second);
  } else {
    u.url = std::string(spec.substr(eq + 1));
  }
  if (u.name.empty() || u.name.size() > 64 ||
      !std::all_of(u.name.begin(), u.name.end(), [](unsigned char c) {
        return std::isalnum(c) || c == '-' || c == '_' || c == '.';
      })) {
    return bad("the name must be 1 to 64 letters, digits, '-', '_' or '.'");
  }
  if (u.name == "v1" || u.name == "metrics" || u.name == "healthz") {
    return bad("the name \"" + u.name +
               "\" is one of the server's own routes (/v1, /metrics, "
               "/healthz); pick another");
  }
  if (!api) api = api_named(u.name);
  if (!api)
    return bad("the api of \"" + u.name + "\" is not known; add ,api=openai|anthropic|gemini");
  u.api = *api;
  while (!u.url.empty() && u.url.back() == '/') u.url.pop_back();
  std::string_view rest = u.url;
  if (rest.substr(0, 8) == "https://") {
    u.tls = true;
    rest.remove_prefix(8);
  } else if (rest.substr(0, 7) == "http://") {
    rest.remove_prefix(7);
  } else {
    return bad("the URL must start with http:// or https://");
  }
  if (rest.find_first_of("?#@ ") != std::string_view::npos) {
    return bad("the URL must have no query, fragment, user or spaces");
  }
  const auto slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  u.base_path = slash == std::string_view::npos ? "" : std::string(rest.substr(slash));
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return bad("unclosed '[' in the URL's host");
    u.host = std::string(authority.substr(1, close - 1));
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') return bad("garbage after the URL's host");
      port = authority.substr(close + 2);
    }
  } else {
    const auto colon = authority.find(':');
    u.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (u.host.empty()) return bad("the URL has no host");
  if (port.empty()) {
    u.port = u.tls ? "443" : "80";
  } else {
    if (port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), [](unsigned char c) { return std::isdigit(c); }) ||
        std::stoi(std::string(port)) < 1 || std::stoi(std::string(port)) > 65535) {
      return bad("the URL's port must be 1 to 65535");
    }
    u.port = std::string(port);
  }
  return u;
}

namespace proxy {
namespace {

using nlohmann::json;

bool ends_with(std::string_view s, std::string_view tail) {
  return s.size() >= tail.size() && s.substr(s.size() - tail.size()) == tail;
}

// The bytes of every string in `j` (prompt text, roles and names alike: a small overcount).
std::int64_t text_bytes(const json& j) {
  if (j.is_string()) return static_cast<std::int64_t>(j.get_ref<const std::string&>().size());
  std::int64_t n = 0;
  if (j.is_array() || j.is_object()) {
    for (const auto& v : j) n += text_bytes(v);
  }
  return n;
}

std::optional<std::int64_t> int_at(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_integer()) return std::nullopt;
  return it->get<std::int64_t>();
}

std::string fmt_double(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace

namespace {

// classify(); `fast`: try the fast reader first.
Call classify_call(UpstreamApi api, std::string_view method, std::string_view path,
                   std::string_view body, bool fast) {
  Call c;
  if (method != "POST") return c;
  std::string model;
  static constexpr std::array<const char*, 4> kOpenAi = {"/chat/completions", "/completions",
                                                         "/responses", "/embeddings"};
  if (api == UpstreamApi::openai) {
    if (std::none_of(kOpenAi.begin(), kOpenAi.end(),
                     [&](const char* t) { return ends_with(path, t); })) {
      return c;
    }
  } else if (api == UpstreamApi::anthropic) {
    if (!ends_with(path, "/messages")) return c;
  } else {
    const auto at = path.rfind("/models/");
    const auto colon = path.rfind(':');
    if (at == std::string_view::npos || colon == std::string_view::npos || colon < at) return c;
    const std::string_view verb = path.substr(colon + 1);
    if (verb != "generateContent" && verb != "streamGenerateContent") return c;
    model = std::string(path.substr(at + 8, colon - at - 8));
    c.stream = verb == "streamGenerateContent";
  }
  c.kind = Call::Kind::unparseable;
  std::int64_t input = 0;
  std::optional<std::int64_t> max_out;
  // stream_options: openai's {"include_usage": true} given; absent (or null).
  bool usage_asked = false, no_stream_options = true;
  std::optional<RequestFields> f;
  if (fast) f = fast_request(api, body);
  if (f && (api == UpstreamApi::gemini || !f->model.empty())) {
    if (api != UpstreamApi::gemini) {
      model = std::string(f->model);
      c.stream = f->stream;
    }
    input = f->input;
    max_out = f->max_out;
  } else {
    const std::string op = "POST " + cli::printable(path);
    const json j = json::parse(body, nullptr, false);
    if (!j.is_object()) {
      c.error = op + ": the body is not a JSON object; send the provider's request JSON";
      return c;
    }
    if (api == UpstreamApi::gemini) {
      for (const char* k : {"contents", "systemInstruction", "tools"}) {
        if (auto it = j.find(k); it != j.end()) input += text_bytes(*it);
      }
      if (auto g = j.find("generationConfig"); g != j.end() && g->is_object()) {
        max_out = int_at(*g, "maxOutputTokens");
      }
    } else {
      auto m = j.find("model");
      if (m == j.end() || !m->is_string() || m->get_ref<const std::string&>().empty()) {
        c.error = op + ": the body has no \"model\" string; name the model to call";
        return c;
      }
      model = m->get<std::string>();
      for (const char* k : {"messages", "system", "input", "prompt", "instructions", "tools"}) {
        if (auto it = j.find(k); it != j.end()) input += text_bytes(*it);
      }
      for (const char* k : {"max_tokens", "max_completion_tokens", "max_output_tokens"}) {
        if (!max_out) max_out = int_at(j, k);
      }
      auto s = j.find("stream");
      c.stream = s != j.end() && s->is_boolean() && s->get<bool>();
      auto so = j.find("stream_options");
      usage_asked = so != j.end() && so->is_object() && so->value("include_usage", false);
      no_stream_options = so == j.end() || so->is_null();
    }
  }
  if (model.empty()) {
    c.error = "POST " + cli::printable(path) +
              ": no model in the path; call /v1beta/models/MODEL:generateContent";
    return c;
  }
  c.kind = Call::Kind::inference;
  c.model = std::move(model);
  const std::int64_t in_tokens = (input + kEstimateBytesPerToken - 1) / kEstimateBytesPerToken;
  if (api == UpstreamApi::openai && ends_with(path, "/embeddings")) {
    c.estimate = {in_tokens, 0};
  } else {
    c.estimate = {in_tokens,
                  max_out ? std::max<std::int64_t>(*max_out, 0) : kDefaultOutputEstimate};
  }
  if (api == UpstreamApi::openai && c.stream && ends_with(path, "/chat/completions")) {
    c.add_include_usage = !usage_asked && no_stream_options;
  }
  return c;
}

}  // namespace

Call classify(UpstreamApi api, std::string_view method, std::string_view path,
              std::string_view body) {
  return classify_call(api, method, path, body, true);
}

Call classify_with_full_parser(UpstreamApi api, std::string_view method, std::string_view path,
                               std::string_view body) {
  return classify_call(api, method, path, body, false);
}

std::string splice_include_usage(std::string_view body) {
  const auto open = body.find('{');
  std::string out(body.substr(0, open + 1));
  out += "\"stream_options\":{\"include_usage\":true},";
  std::string_view rest = body.substr(open + 1);
  const auto first = rest.find_first_not_of(" \t\r\n");
  if (first != std::string_view::npos && rest[first] == '}') out.pop_back();  // "{}"
  out += rest;
  return out;
}

namespace {

// The usage object of one response (or event) JSON, by dialect.
std::optional<Usage> usage_in(UpstreamApi api, const json& j) {
  if (!j.is_object()) return std::nullopt;
  if (api == UpstreamApi::gemini) {
    auto m = j.find("usageMetadata");
    if (m == j.end() || !m->is_object()) return std::nullopt;
    Usage u;
    u.input = int_at(*m, "promptTokenCount").value_or(0);
    u.output = int_at(*m, "candidatesTokenCount").value_or(0) +
               int_at(*m, "thoughtsTokenCount").value_or(0);
    return u;
  }
  auto m = j.find("usage");
  if (m == j.end() || !m->is_object()) return std::nullopt;
  Usage u;
  if (api == UpstreamApi::anthropic) {
    u.input = int_at(*m, "input_tokens").value_or(0) +
              int_at(*m, "cache_creation_input_tokens").value_or(0);
    u.output = int_at(*m, "output_tokens").value_or(0);
    return u;
  }
  if (auto p = int_at(*m, "prompt_tokens")) {  // chat, completions, embeddings
    u.input = *p;
    u.output = int_at(*m, "completion_tokens").value_or(0);
    return u;
  }
  auto in = int_at(*m, "input_tokens");  // responses
  if (!in) return std::nullopt;
  u.input = *in;
  u.output = int_at(*m, "output_tokens").value_or(0);
  return u;
}

constexpr std::size_t kMaxEvent = 4 * 1024 * 1024;

}  // namespace

std::optional<Usage> usage_of(UpstreamApi api, std::string_view body) {
  if (auto fast = fast_usage(api, body)) return *fast;
  return usage_of_with_full_parser(api, body);
}

std::optional<Usage> usage_of_with_full_parser(UpstreamApi api, std::string_view body) {
  return usage_in(api, json::parse(body, nullptr, false));
}

void EventReader::array_bytes(std::string_view data) {
  for (const char ch : data) {
    const bool inside = depth_ >= 2 || (depth_ == 1 && ch == '{');
    if (inside && !overflow_) pending_ += ch;
    if (in_string_) {
      if (escaped_) {
        escaped_ = false;
      } else if (ch == '\\') {
        escaped_ = true;
      } else if (ch == '"') {
        in_string_ = false;
      }
      continue;
    }
    if (ch == '"') {
      in_string_ = true;
    } else if (ch == '{' || ch == '[') {
      ++depth_;
    } else if (ch == '}' || ch == ']') {
      --depth_;
      if (depth_ == 1) {  // an element of the array is complete
        if (!overflow_ && pending_.find("usageMetadata") != std::string::npos) {
          if (auto u = usage_in(api_, json::parse(pending_, nullptr, false))) {
            input_ = u->input, output_ = u->output;
          }
        }
        pending_.clear();
        overflow_ = false;
      }
    }
    if (pending_.size() > kMaxEvent) {  // a huge element: its usage is not read
      overflow_ = true;
      pending_.clear();
    }
  }
}

void EventReader::feed(std::string_view data, std::string& out) {
  if (array_) {
    out.append(data);
    return array_bytes(data);
  }
  if (overflow_) {
    out.append(data);
    return;
  }
  pending_.append(data);
  std::size_t start = 0;
  for (;;) {
    std::size_t end = pending_.find("\n\n", start);
    std::size_t sep = 2;
    const std::size_t crlf = pending_.find("\r\n\r\n", start);
    if (crlf != std::string::npos && (end == std::string::npos || crlf < end)) end = crlf, sep = 4;
    if (end == std::string::npos) break;
    event(std::string_view(pending_).substr(start, end + sep - start), out);
    start = end + sep;
  }
  pending_.erase(0, start);
  if (pending_.size() > kMaxEvent) {  // not SSE after all, or a huge event: stop reading
    overflow_ = true;
    out += pending_;
    pending_.clear();
  }
}

void EventReader::finish(std::string& out) {
  if (array_) return pending_.clear();  // an element cut short carries no usage
  if (!pending_.empty() && !overflow_) event(pending_, out);
  pending_.clear();
}

std::optional<Usage> EventReader::usage() const {
  if (!input_ && !output_) return std::nullopt;
  return Usage{input_.value_or(0), output_.value_or(0)};
}

void EventReader::event(std::string_view text, std::string& out) {
  std::string data;
  std::string_view type;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(pos, nl - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.substr(0, 5) == "data:") {
      std::string_view v = line.substr(5);
      if (!v.empty() && v.front() == ' ') v.remove_prefix(1);
      if (!data.empty()) data += '\n';
      data += v;
    } else if (line.substr(0, 6) == "event:") {
      type = line.substr(6);
      if (!type.empty() && type.front() == ' ') type.remove_prefix(1);
    }
    pos = nl + 1;
  }
  if (data.empty() || data == "[DONE]" || data.find("usage") == std::string::npos) {
    out.append(text);
    return;
  }
  const json j = json::parse(data, nullptr, false);
  if (api_ == UpstreamApi::anthropic && j.is_object()) {
    // message_start carries the input (and a first output count), message_delta the output.
    const std::string t = j.value("type", std::string(type));
    const json* holder = &j;
    if (t == "message_start" && j.contains("message")) holder = &j["message"];
    if (auto u = usage_in(api_, *holder)) {
      auto it = (*holder)["usage"].find("input_tokens");
      if (it != (*holder)["usage"].end() || t == "message_start") input_ = u->input;
      output_ = u->output;
    }
    out.append(text);
    return;
  }
  if (api_ == UpstreamApi::openai && j.is_object() && j.contains("response")) {
    if (auto u = usage_in(api_, j["response"])) input_ = u->input, output_ = u->output;
    out.append(text);
    return;
  }
  if (auto u = usage_in(api_, j)) {
    input_ = u->input, output_ = u->output;
    // The usage chunk the proxy asked for (no choices): the client did not ask for it.
    if (strip_ && j.contains("choices") && j["choices"].is_array() && j["choices"].empty()) {
      return;
    }
  }
  out.append(text);
}

std::optional<std::pair<int, std::string>> access_problem(const Request& head,
                                                          const std::string& token) {
  // Only for the refusals: this runs on every proxied call.
  auto op = [&] { return head.method + " " + cli::printable(head.path); };
  if (!token.empty()) {
    const std::string* sent = head.header("X-Ratelimit-Token");
    if (sent == nullptr || !constant_time_equal(*sent, token)) {
      return std::pair{401, "ratelimit proxy: " + op() +
                                ": missing or wrong X-Ratelimit-Token header; send the token from "
                                "the server's --token-file in it (Authorization goes to the "
                                "provider untouched)"};
    }
    return std::nullopt;
  }
  if (!handler_parts::local_browser_context(head)) {
    return std::pair{403, "ratelimit proxy: " + op() +
                              ": refused a request for another host or from a web page of "
                              "another origin; call it as 127.0.0.1/localhost, or protect the "
                              "server with --token-file"};
  }
  return std::nullopt;
}

std::string prometheus_text(const ProxyCounters& c) {
  std::string out;
  auto help = [&](const char* name, const char* type, const char* text) {
    out += std::string("# HELP ") + name + " " + text + "\n# TYPE " + name + " " + type + "\n";
  };
  help("ratelimit_proxy_requests_total", "counter",
       "Proxied requests by upstream, model and outcome.");
  for (const auto& [key, n] : c.requests) {
    const auto a = key.find('\t'), b = key.find('\t', a + 1);
    out += "ratelimit_proxy_requests_total{upstream=\"" + escape_label_value(key.substr(0, a)) +
           "\",model=\"" + escape_label_value(key.substr(a + 1, b - a - 1)) + "\",outcome=\"" +
           key.substr(b + 1) + "\"} " + std::to_string(n) + "\n";
  }
  const std::pair<const char*, std::uint64_t> plain[] = {
      {"ratelimit_proxy_tokens_committed_total", c.tokens_committed},
      {"ratelimit_proxy_waited_total", c.waited},
      {"ratelimit_proxy_upstream_429_total", c.upstream_429},
      {"ratelimit_proxy_passed_unknown_total", c.passed_unknown},
  };
  const char* const texts[] = {
      "Tokens committed from the usage of proxied calls.",
      "Proxied calls that waited for capacity instead of meeting a 429 (429s avoided).",
      "429 answers received from upstreams.",
      "Unparseable inference calls forwarded unlimited (--pass-unknown)."};
  for (std::size_t i = 0; i < std::size(plain); ++i) {
    help(plain[i].first, "counter", texts[i]);
    out += std::string(plain[i].first) + " " + std::to_string(plain[i].second) + "\n";
  }
  help("ratelimit_proxy_in_flight", "gauge", "Proxied requests in flight.");
  out += "ratelimit_proxy_in_flight " + std::to_string(c.in_flight) + "\n";
  help("ratelimit_proxy_upstream_latency_seconds", "histogram",
       "Time from sending a request upstream to its answer's head, by upstream.");
  for (const auto& [up, h] : c.latency) {
    const std::string label = "upstream=\"" + escape_label_value(up) + "\"";
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < h.first.size(); ++i) {
      cumulative += h.first[i];
      const std::string le =
          i < std::size(kProxyLatencyBounds) ? fmt_double(kProxyLatencyBounds[i]) : "+Inf";
      out += "ratelimit_proxy_upstream_latency_seconds_bucket{" + label + ",le=\"" + le + "\"} " +
             std::to_string(cumulative) + "\n";
    }
    out += "ratelimit_proxy_upstream_latency_seconds_sum{" + label + "} " + fmt_double(h.second) +
           "\n";
    out += "ratelimit_proxy_upstream_latency_seconds_count{" + label + "} " +
           std::to_string(cumulative) + "\n";
  }
  return out;
}

std::string error_body(UpstreamApi api, int status, std::string_view kind,
                       const std::string& message) {
  json j;
  if (api == UpstreamApi::anthropic) {
    const char* type = kind == "rate_limit" ? "rate_limit_error"
                       : kind == "invalid"  ? "invalid_request_error"
                                            : "api_error";
    j = {{"type", "error"}, {"error", {{"type", type}, {"message", message}}}};
  } else if (api == UpstreamApi::gemini) {
    const char* st = kind == "rate_limit" ? "RESOURCE_EXHAUSTED"
                     : kind == "invalid"  ? "INVALID_ARGUMENT"
                                          : "UNAVAILABLE";
    j = {{"error", {{"code", status}, {"message", message}, {"status", st}}}};
  } else {
    const char* type = kind == "rate_limit" ? "requests"
                       : kind == "invalid"  ? "invalid_request_error"
                                            : "api_error";
    const char* code = kind == "rate_limit" ? "rate_limit_exceeded"
                       : kind == "invalid"  ? "invalid_request"
                                            : "upstream_unavailable";
    j = {{"error", {{"message", message}, {"type", type}, {"param", nullptr}, {"code", code}}}};
  }
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace proxy
}  // namespace ratelimit::server
