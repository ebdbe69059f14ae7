// The Prometheus text exposition (format 0.0.4) of the library's per-model metrics and the
// server's own counters, written piece by piece: a scrape at 10,000 models holds the metrics
// snapshot and one piece of text (about 32 KiB), never the whole text. Our own writer (label
// values escaped as the format requires: \\, \" and \n). Names and labels: docs/server.md.
#pragma once

#include <array>
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
  // Distinct names with no quota, and provider response values ignored (LimiterMetrics).
  std::uint64_t unknown_models = 0;
  std::uint64_t provider_values_ignored = 0;
  std::vector<HttpSeries> http;
  std::vector<HttpLatency> latency;
};

using ModelMetricsMap = std::map<std::string, ModelMetrics, std::less<>>;

// What the exposition needs of one model's ModelMetrics: about a third of its size, so that a
// scrape at 10,000 models holds a few MiB (RateLimiter::visit_metrics fills them one by one).
struct ModelSeries {
  std::string model;
  std::array<std::uint64_t, kRequestOutcomeCount> requests{};
  std::uint64_t committed = 0, cancelled = 0;
  std::uint64_t tokens_estimated = 0, tokens_committed = 0, tokens_recorded = 0;
  std::uint64_t responses_observed = 0, cooldowns_learned = 0;
  std::int64_t rpm = 0, tpm = 0, rpd = 0, input_tpm = 0, output_tpm = 0;
  std::int64_t max_rpm = 0, max_tpm = 0, max_rpd = 0, max_input_tpm = 0, max_output_tpm = 0;
  std::int64_t cooldown_until_ns = 0;  // 0: none
};
ModelSeries series_of(std::string_view model, const ModelMetrics& metrics);

// The exposition as a stream of pieces of about `piece_bytes`, models in name order. Models
// whose name the model-name rule refuses get no series (a label value must be valid UTF-8).
std::unique_ptr<BodyStream> prometheus_stream(std::vector<ModelSeries> models,
                                              ServerSnapshot server,
                                              std::size_t piece_bytes = 32 * 1024);
std::unique_ptr<BodyStream> prometheus_stream(const ModelMetricsMap& models, ServerSnapshot server,
                                              std::size_t piece_bytes = 32 * 1024);

// The whole exposition in one string (tests).
std::string prometheus_text(const ModelMetricsMap& models, ServerSnapshot server);

// `value` escaped for a label value: backslash, double quote and newline.
std::string escape_label_value(std::string_view value);

}  // namespace ratelimit::server
