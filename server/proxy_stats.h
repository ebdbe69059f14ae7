// The limiting proxy's figures in GET /v1/stats (the "proxy" object, docs/server.md), built
// from Proxy::counters(). Internal to the server (handlers.cc).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "proxy.h"

namespace ratelimit::server {

// {"tokens_committed", "waited", "upstream_429", "passed_unknown", "in_flight",
//  "upstreams": {"<upstream>": {"requests": {"<outcome>": n},
//                               "models": {"<model>": {"<outcome>": n}},
//                               "latency": {"count", "sum_seconds", "p50_seconds",
//                                           "p99_seconds", "bounds", "buckets"}}}}
// as one compact JSON document. "requests" sums the outcomes over models; "models" holds what
// the proxy keeps (bounded by --max-models; "(other)" past it, "" for calls refused before
// their model was known). "buckets" are per-bucket counts (not cumulative) for each of
// "bounds" (kProxyLatencyBounds) and a last one above them; p50/p99 are estimated from them
// by linear interpolation inside a bucket, like Prometheus' histogram_quantile (the largest
// bound for the last bucket), null without a call. Text that is not valid UTF-8 is written
// with U+FFFD.
std::string proxy_stats_json(const ProxyCounters& counters);
// Adds "proxy": proxy_stats_json(counters) to `stats_body`, a JSON object ({"models": ...}).
void add_proxy_stats(std::string& stats_body, const ProxyCounters& counters);

// The q-quantile (0..1) estimated from `buckets` (one per bound and one above them); nullopt
// without a count.
std::optional<double> latency_quantile(const std::vector<std::uint64_t>& buckets, double q);

}  // namespace ratelimit::server
