#include "metrics_text.h"

#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <limits>
#include <utility>

#include "ratelimit/model_name.h"

namespace ratelimit::cli {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily family(std::string name, std::string help, MetricType type) {
  MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

void add(MetricFamily& f, std::vector<ClientMetric::Label> labels, double value) {
  ClientMetric m;
  m.label = std::move(labels);
  if (f.type == MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  f.metric.push_back(std::move(m));
}

}  // namespace

std::string prometheus_text(const std::map<std::string, ModelMetrics, std::less<>>& models,
                            const ServerSnapshot& server) {
  std::vector<MetricFamily> out;

  auto requests = family("ratelimit_requests_total",
                         "Requests by how they ended: admitted, recorded, or the reason they "
                         "were turned away (try-acquire, acquire and record calls).",
                         MetricType::Counter);
  auto reservations =
      family("ratelimit_reservations_total",
             "Reservations settled, by result (committed or cancelled).", MetricType::Counter);
  auto tokens = family("ratelimit_tokens_total",
                       "Tokens by kind: estimated (admitted estimates), committed (actual usage "
                       "given at commit) and recorded (record calls).",
                       MetricType::Counter);
  auto window_requests = family("ratelimit_window_requests",
                                "Requests in the model's 60-second window now.", MetricType::Gauge);
  auto window_tokens = family("ratelimit_window_tokens",
                              "Tokens in the model's 60-second window now.", MetricType::Gauge);
  auto day_requests = family("ratelimit_day_requests", "Requests counted today (since day_start).",
                             MetricType::Gauge);
  auto limit_rpm = family("ratelimit_limit_requests_per_minute",
                          "The model's max_rpm (0: unlimited).", MetricType::Gauge);
  auto limit_tpm = family("ratelimit_limit_tokens_per_minute",
                          "The model's max_tpm (0: unlimited).", MetricType::Gauge);
  auto limit_rpd = family("ratelimit_limit_requests_per_day", "The model's max_rpd (0: unlimited).",
                          MetricType::Gauge);

  for (const auto& [model, m] : models) {
    if (model_name_problem(model)) continue;
    for (std::size_t i = 0; i < kRequestOutcomeCount; ++i) {
      const auto outcome = static_cast<RequestOutcome>(i);
      add(requests, {{"model", model}, {"outcome", std::string(to_string(outcome))}},
          static_cast<double>(m.requests[i]));
    }
    add(reservations, {{"model", model}, {"result", "committed"}},
        static_cast<double>(m.committed));
    add(reservations, {{"model", model}, {"result", "cancelled"}},
        static_cast<double>(m.cancelled));
    add(tokens, {{"model", model}, {"kind", "estimated"}}, static_cast<double>(m.tokens_estimated));
    add(tokens, {{"model", model}, {"kind", "committed"}}, static_cast<double>(m.tokens_committed));
    add(tokens, {{"model", model}, {"kind", "recorded"}}, static_cast<double>(m.tokens_recorded));
    const std::pair<MetricFamily*, std::int64_t> gauges[] = {
        {&window_requests, m.stats.rpm}, {&window_tokens, m.stats.tpm},
        {&day_requests, m.stats.rpd},    {&limit_rpm, m.stats.max_rpm},
        {&limit_tpm, m.stats.max_tpm},   {&limit_rpd, m.stats.max_rpd}};
    for (const auto& [f, value] : gauges) add(*f, {{"model", model}}, static_cast<double>(value));
  }
  for (auto* f : {&requests, &reservations, &tokens, &window_requests, &window_tokens,
                  &day_requests, &limit_rpm, &limit_tpm, &limit_rpd}) {
    out.push_back(std::move(*f));
  }

  auto gauge = [&](const char* name, const char* help, double value) {
    auto f = family(name, help, MetricType::Gauge);
    add(f, {}, value);
    out.push_back(std::move(f));
  };
  gauge("ratelimit_server_leases", "Reservations the server holds (granted, not yet settled).",
        static_cast<double>(server.leases));
  gauge("ratelimit_server_leases_max", "The cap on held reservations (--max-leases).",
        static_cast<double>(server.max_leases));
  gauge("ratelimit_server_waiters", "Acquires waiting for capacity now (wait_ms).",
        static_cast<double>(server.waiters));
  gauge("ratelimit_server_waiters_max", "The cap on waiting acquires (--max-waiters).",
        static_cast<double>(server.max_waiters));
  gauge("ratelimit_server_models", "Distinct model names the server tracks.",
        static_cast<double>(server.models));
  gauge("ratelimit_server_models_max", "The cap on tracked model names (--max-models).",
        static_cast<double>(server.max_models));
  auto counter = [&](const char* name, const char* help, double value) {
    auto f = family(name, help, MetricType::Counter);
    add(f, {}, value);
    out.push_back(std::move(f));
  };
  counter("ratelimit_server_leases_expired_total",
          "Reservations forgotten at the end of their lease (their estimate was kept).",
          static_cast<double>(server.leases_expired));
  // Not labelled by model: the names are not valid label values.
  counter("ratelimit_invalid_model_requests_total",
          "Requests refused because their model name is not valid (empty, not UTF-8, a control "
          "character, or over 256 bytes).",
          static_cast<double>(server.invalid_model_requests));
  counter("ratelimit_invalid_model_names_skipped_total",
          "Quotas and usage in the state file or database skipped because their model name is "
          "not valid.",
          static_cast<double>(server.invalid_model_names_skipped));

  auto http = family("ratelimit_http_requests_total",
                     "HTTP requests answered, by route and status.", MetricType::Counter);
  for (const auto& s : server.http) {
    add(http, {{"route", s.route}, {"code", std::to_string(s.status)}},
        static_cast<double>(s.count));
  }
  out.push_back(std::move(http));

  auto latency =
      family("ratelimit_http_request_duration_seconds",
             "Time from a parsed request to its response, by route.", MetricType::Histogram);
  for (const auto& l : server.latency) {
    ClientMetric m;
    m.label = {{"route", l.route}};
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < l.bounds.size(); ++i) {
      cumulative += l.buckets[i];
      m.histogram.bucket.push_back({cumulative, l.bounds[i]});
    }
    cumulative += l.buckets.back();
    m.histogram.bucket.push_back({cumulative, std::numeric_limits<double>::infinity()});
    m.histogram.sample_count = cumulative;
    m.histogram.sample_sum = l.sum_seconds;
    latency.metric.push_back(std::move(m));
  }
  out.push_back(std::move(latency));

  return prometheus::TextSerializer().Serialize(out);
}

}  // namespace ratelimit::cli
