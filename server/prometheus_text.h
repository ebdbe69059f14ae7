// The Prometheus text exposition (format 0.0.4) of the library's per-model metrics and the
// server's own counters, written piece by piece: a scrape at 10,000 models holds the metrics
// snapshot and one piece of text (about 32 KiB), never the whole text. Our own writer (label
// values escaped as the format requires: \\, \" and \n). Names and labels: docs/server.md.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "http.h"
#include "ratelimit/metrics.h"

namespace ratelimit::server {

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
  std::size_t connections = 0, max_connections = 0;
  std::uint64_t leases_expired = 0;
  // Requests refused for their model name: by the server (model_problem, before the limiter)
  // plus the limiter's own count (LimiterMetrics::invalid_model).
  std::uint64_t invalid_model_requests = 0;
  // Quotas and usage the store skipped for an invalid name (LimiterMetrics).
  std::uint64_t invalid_model_names_skipped = 0;
  std::vector<HttpSeries> http;
  std::vector<HttpLatency> latency;
};

using ModelMetricsMap = std::map<std::string, ModelMetrics, std::less<>>;

// The exposition as a stream of pieces of about `piece_bytes`. Models whose name the
// model-name rule refuses get no series (a label value must be valid UTF-8).
std::unique_ptr<BodyStream> prometheus_stream(ModelMetricsMap models, ServerSnapshot server,
                                              std::size_t piece_bytes = 32 * 1024);

// The whole exposition in one string (tests).
std::string prometheus_text(ModelMetricsMap models, ServerSnapshot server);

// `value` escaped for a label value: backslash, double quote and newline.
std::string escape_label_value(std::string_view value);

}  // namespace ratelimit::server
