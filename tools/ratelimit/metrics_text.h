// The Prometheus text exposition of the library's per-model metrics and the server's own
// counters (prometheus-cpp stays in metrics_text.cc). Names and labels: docs/server.md.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "ratelimit/metrics.h"

namespace ratelimit::cli {

// Requests the server answered, by route (the pattern, never the raw path) and status code.
struct HttpSeries {
  std::string route;
  int status = 0;
  std::uint64_t count = 0;
};

// Request durations of one route: counts per bucket (not cumulative), upper bounds in seconds.
struct HttpLatency {
  std::string route;
  std::vector<double> bounds;          // ascending; the +Inf bucket is implicit
  std::vector<std::uint64_t> buckets;  // bounds.size() + 1 counts (the last: above every bound)
  double sum_seconds = 0;
};

struct ServerSnapshot {
  std::size_t leases = 0, max_leases = 0;
  std::size_t waiters = 0, max_waiters = 0;
  std::size_t models = 0, max_models = 0;
  std::uint64_t leases_expired = 0;
  // Requests refused for their model name: by the server (model_problem, before the limiter)
  // plus the limiter's own count (LimiterMetrics::invalid_model).
  std::uint64_t invalid_model_requests = 0;
  // Quotas and usage the store skipped for an invalid name (LimiterMetrics).
  std::uint64_t invalid_model_names_skipped = 0;
  std::vector<HttpSeries> http;
  std::vector<HttpLatency> latency;
};

// Models whose name the model-name rule refuses get no series: a label value must be valid
// UTF-8 (the limiter never reports such a name; this keeps /metrics valid whatever it holds).
std::string prometheus_text(const std::map<std::string, ModelMetrics, std::less<>>& models,
                            const ServerSnapshot& server);

}  // namespace ratelimit::cli
