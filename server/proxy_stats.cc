#include "proxy_stats.h"

#include <iterator>
#include <nlohmann/json.hpp>
#include <optional>

namespace ratelimit::server {

namespace {
using json = nlohmann::ordered_json;
constexpr std::size_t kBounds = std::size(kProxyLatencyBounds);
}  // namespace

std::optional<double> latency_quantile(const std::vector<std::uint64_t>& buckets, double q) {
  std::uint64_t count = 0;
  for (const auto n : buckets) count += n;
  if (count == 0) return std::nullopt;
  const double rank = q * static_cast<double>(count);
  std::uint64_t below = 0;
  for (std::size_t i = 0; i < buckets.size(); ++i) {
    const std::uint64_t in = buckets[i];
    if (in == 0 || static_cast<double>(below + in) < rank) {
      below += in;
      continue;
    }
    if (i >= kBounds) return kProxyLatencyBounds[kBounds - 1];
    const double lower = i == 0 ? 0.0 : kProxyLatencyBounds[i - 1];
    const double upper = kProxyLatencyBounds[i];
    return lower + (upper - lower) * (rank - static_cast<double>(below)) / static_cast<double>(in);
  }
  return kProxyLatencyBounds[kBounds - 1];
}

std::string proxy_stats_json(const ProxyCounters& c) {
  json upstreams = json::object();
  auto upstream = [&](const std::string& name) -> json& {
    json& u = upstreams[name];
    if (u.is_null()) {
      u = json{{"requests", json::object()}, {"models", json::object()}, {"latency", nullptr}};
    }
    return u;
  };
  // Every configured upstream has a histogram (from the start), so it is listed even idle.
  for (const auto& [name, h] : c.latency) {
    const auto& [buckets, sum] = h;
    std::uint64_t count = 0;
    for (const auto n : buckets) count += n;
    auto quantile = [&](double q) -> json {
      auto v = latency_quantile(buckets, q);
      return v ? json(*v) : json(nullptr);
    };
    upstream(name)["latency"] = json{{"count", count},
                                     {"sum_seconds", sum},
                                     {"p50_seconds", quantile(0.5)},
                                     {"p99_seconds", quantile(0.99)},
                                     {"bounds", std::vector<double>(std::begin(kProxyLatencyBounds),
                                                                    std::end(kProxyLatencyBounds))},
                                     {"buckets", buckets}};
  }
  for (const auto& [key, n] : c.requests) {
    const auto a = key.find('\t');
    const auto b = a == std::string::npos ? std::string::npos : key.find('\t', a + 1);
    if (b == std::string::npos) continue;  // not "upstream\tmodel\toutcome"
    const std::string outcome = key.substr(b + 1);
    json& u = upstream(key.substr(0, a));
    json& total = u["requests"][outcome];
    total = (total.is_null() ? 0 : total.get<std::uint64_t>()) + n;
    u["models"][key.substr(a + 1, b - a - 1)][outcome] = n;
  }
  const json j{{"tokens_committed", c.tokens_committed},
               {"waited", c.waited},
               {"upstream_429", c.upstream_429},
               {"passed_unknown", c.passed_unknown},
               {"in_flight", c.in_flight},
               {"upstreams", std::move(upstreams)}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

void add_proxy_stats(std::string& stats_body, const ProxyCounters& counters) {
  if (stats_body.empty() || stats_body.back() != '}') return;
  stats_body.pop_back();
  if (stats_body != "{") stats_body += ',';
  stats_body += "\"proxy\":" + proxy_stats_json(counters) + "}";
}

}  // namespace ratelimit::server
