#include "prometheus_text.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <utility>

#include "ratelimit/model_name.h"

namespace ratelimit::server {
namespace {

void append_double(std::string& out, double v) {
  if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
    return;
  }
  if (std::isnan(v)) {
    out += "NaN";
    return;
  }
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, ec == std::errc() ? end : buf);
}

void header(std::string& out, std::string_view name, std::string_view help, std::string_view type) {
  out += "# HELP ";
  out += name;
  out += ' ';
  for (char c : help) {  // HELP escapes backslash and newline
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

// name{model="<escaped>"[,key="value"]} value
void model_line(std::string& out, std::string_view name, std::string_view model,
                std::string_view key, std::string_view value, std::uint64_t n) {
  out += name;
  out += "{model=\"";
  out += model;
  out += '"';
  if (!key.empty()) {
    out += ',';
    out += key;
    out += "=\"";
    out += value;
    out += '"';
  }
  out += "} ";
  out += std::to_string(n);
  out += '\n';
}

std::uint64_t gauge(std::int64_t v) { return v < 0 ? 0 : static_cast<std::uint64_t>(v); }

struct ModelFamily {
  const char* name;
  const char* help;
  const char* type;
  void (*write)(std::string& out, const char* name, std::string_view model, const ModelSeries&);
};

const ModelFamily kModelFamilies[] = {
    {"ratelimit_requests_total",
     "Requests by how they ended: admitted, recorded, or the reason they were turned away "
     "(try-acquire, acquire and record calls).",
     "counter",
     [](std::string& out, const char* name, std::string_view model, const ModelSeries& m) {
       for (std::size_t i = 0; i < kRequestOutcomeCount; ++i) {
         model_line(out, name, model, "outcome", to_string(static_cast<RequestOutcome>(i)),
                    m.requests[i]);
       }
     }},
    {"ratelimit_reservations_total", "Reservations settled, by result (committed or cancelled).",
     "counter",
     [](std::string& out, const char* name, std::string_view model, const ModelSeries& m) {
       model_line(out, name, model, "result", "committed", m.committed);
       model_line(out, name, model, "result", "cancelled", m.cancelled);
     }},
    {"ratelimit_tokens_total",
     "Tokens by kind: estimated (admitted estimates), committed (actual usage given at commit) "
     "and recorded (record calls).",
     "counter",
     [](std::string& out, const char* name, std::string_view model, const ModelSeries& m) {
       model_line(out, name, model, "kind", "estimated", m.tokens_estimated);
       model_line(out, name, model, "kind", "committed", m.tokens_committed);
       model_line(out, name, model, "kind", "recorded", m.tokens_recorded);
     }},
    {"ratelimit_window_requests", "Requests in the model's 60-second window now.", "gauge",
     [](std::string& out, const char* name, std::string_view model, const ModelSeries& m) {
       model_line(out, name, model, "", "", gauge(m.rpm));
     }},
    {"ratelimit_window_tokens", "Tokens in the model's 60-second window now.", "gauge",
     [](std::string& out, const char* name, std::string_view model, const ModelSeries& m) {
       model_line(out, name, model, "", "", gauge(m.tpm));
     }},
    {"ratelimit_day_requests", "Requests counted today (since day_start).", "gauge",
     [](std::string& out, const char* name, std::string_view model, const ModelSeries& m) {
       model_line(out, name, model, "", "", gauge(m.rpd));
     }},
    {"ratelimit_limit_requests_per_minute", "The model's max_rpm (0: unlimited).", "gauge",
     [](std::string& out, const char* name, std::string_view model, const ModelSeries& m) {
       model_line(out, name, model, "", "", gauge(m.max_rpm));
     }},
    {"ratelimit_limit_tokens_per_minute", "The model's max_tpm (0: unlimited).", "gauge",
     [](std::string& out, const char* name, std::string_view model, const ModelSeries& m) {
       model_line(out, name, model, "", "", gauge(m.max_tpm));
     }},
    {"ratelimit_limit_requests_per_day", "The model's max_rpd (0: unlimited).", "gauge",
     [](std::string& out, const char* name, std::string_view model, const ModelSeries& m) {
       model_line(out, name, model, "", "", gauge(m.max_rpd));
     }},
    {"ratelimit_window_input_tokens", "Input tokens in the model's 60-second window now.", "gauge",
     [](std::string& out, const char* name, std::string_view model, const ModelSeries& m) {
       model_line(out, name, model, "", "", gauge(m.input_tpm));
     }},
    {"ratelimit_window_output_tokens", "Output tokens in the model's 60-second window now.",
     "gauge",
     [](std::string& out, const char* name, std::string_view model, const ModelSeries& m) {
       model_line(out, name, model, "", "", gauge(m.output_tpm));
     }},
    {"ratelimit_limit_input_tokens_per_minute", "The model's max_input_tpm (0: unlimited).",
     "gauge",
     [](std::string& out, const char* name, std::string_view model, const ModelSeries& m) {
       model_line(out, name, model, "", "", gauge(m.max_input_tpm));
     }},
    {"ratelimit_limit_output_tokens_per_minute", "The model's max_output_tpm (0: unlimited).",
     "gauge",
     [](std::string& out, const char* name, std::string_view model, const ModelSeries& m) {
       model_line(out, name, model, "", "", gauge(m.max_output_tpm));
     }},
    {"ratelimit_provider_cooldown_until_seconds",
     "When the provider's cooldown on the model ends (Unix seconds; 0: none).", "gauge",
     [](std::string& out, const char* name, std::string_view model, const ModelSeries& m) {
       model_line(out, name, model, "", "",
                  gauge((m.cooldown_until_ns + 999'999'999) / 1'000'000'000));
     }},
    {"ratelimit_provider_responses_total",
     "Provider responses given to observe, by whether they set a cooldown.", "counter",
     [](std::string& out, const char* name, std::string_view model, const ModelSeries& m) {
       model_line(out, name, model, "cooldown", "true", m.cooldowns_learned);
       model_line(out, name, model, "cooldown", "false",
                  m.responses_observed - m.cooldowns_learned);
     }},
};
constexpr std::size_t kModelFamilyCount = std::size(kModelFamilies);

// The families without a model label, written in one piece at the end.
void server_families(std::string& out, const ServerSnapshot& s) {
  auto scalar = [&](const char* name, const char* help, const char* type, std::uint64_t v) {
    header(out, name, help, type);
    out += name;
    out += ' ';
    out += std::to_string(v);
    out += '\n';
  };
  scalar("ratelimit_server_leases", "Reservations the server holds (granted, not yet settled).",
         "gauge", s.leases);
  scalar("ratelimit_server_leases_max", "The cap on held reservations (--max-leases).", "gauge",
         s.max_leases);
  scalar("ratelimit_server_waiters", "Acquires waiting for capacity now (wait_ms).", "gauge",
         s.waiters);
  scalar("ratelimit_server_waiters_max", "The cap on waiting acquires (--max-waiters).", "gauge",
         s.max_waiters);
  scalar("ratelimit_server_models", "Distinct model names the server tracks.", "gauge", s.models);
  scalar("ratelimit_server_models_max", "The cap on tracked model names (--max-models).", "gauge",
         s.max_models);
  scalar("ratelimit_server_connections", "Open HTTP connections.", "gauge", s.connections);
  scalar("ratelimit_server_connections_max", "The cap on open connections (--max-connections).",
         "gauge", s.max_connections);
  scalar("ratelimit_server_leases_expired_total",
         "Reservations forgotten at the end of their lease (their estimate was kept).", "counter",
         s.leases_expired);
  scalar("ratelimit_invalid_model_requests_total",
         "Requests refused because their model name is not valid (empty, not UTF-8, a control "
         "character, or over 256 bytes).",
         "counter", s.invalid_model_requests);
  scalar("ratelimit_invalid_model_names_skipped_total",
         "Quotas and usage in the state file or database skipped because their model name is "
         "not valid.",
         "counter", s.invalid_model_names_skipped);
  scalar("ratelimit_unknown_models_total",
         "Distinct model names found with no quota (after aliases and families).", "counter",
         s.unknown_models);
  scalar("ratelimit_provider_values_ignored_total",
         "Provider response values observe ignored (garbage, negative, huge, wrong units).",
         "counter", s.provider_values_ignored);

  header(out, "ratelimit_http_requests_total", "HTTP requests answered, by route and status.",
         "counter");
  for (const HttpSeries& h : s.http) {
    out += "ratelimit_http_requests_total{route=\"";
    out += escape_label_value(h.route);
    out += "\",code=\"";
    out += std::to_string(h.status);
    out += "\"} ";
    out += std::to_string(h.count);
    out += '\n';
  }
  header(out, "ratelimit_http_request_duration_seconds",
         "Time from a parsed request to its response, by route.", "histogram");
  for (const HttpLatency& l : s.latency) {
    const std::string route = escape_label_value(l.route);
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i <= l.bounds.size() && i < l.buckets.size(); ++i) {
      cumulative += l.buckets[i];
      out += "ratelimit_http_request_duration_seconds_bucket{route=\"";
      out += route;
      out += "\",le=\"";
      if (i < l.bounds.size()) {
        append_double(out, l.bounds[i]);
      } else {
        out += "+Inf";
      }
      out += "\"} ";
      out += std::to_string(cumulative);
      out += '\n';
    }
    out += "ratelimit_http_request_duration_seconds_sum{route=\"" + route + "\"} ";
    append_double(out, l.sum_seconds);
    out += "\nratelimit_http_request_duration_seconds_count{route=\"" + route + "\"} ";
    out += std::to_string(cumulative);
    out += '\n';
  }
}

class Exposition final : public BodyStream {
 public:
  Exposition(std::vector<ModelSeries> models, ServerSnapshot server, std::size_t piece)
      : models_(std::move(models)), server_(std::move(server)), piece_(piece) {
    std::sort(models_.begin(), models_.end(),
              [](const ModelSeries& a, const ModelSeries& b) { return a.model < b.model; });
    it_ = models_.begin();
  }

  bool next(std::string& out) override {
    if (done_) return false;
    const std::size_t start = out.size();
    while (out.size() - start < piece_ && family_ < kModelFamilyCount) {
      const ModelFamily& f = kModelFamilies[family_];
      if (it_ == models_.begin() && !started_family_) {
        header(out, f.name, f.help, f.type);
        started_family_ = true;
      }
      if (it_ == models_.end()) {
        ++family_;
        it_ = models_.begin();
        started_family_ = false;
        continue;
      }
      if (!model_name_problem(it_->model)) {
        f.write(out, f.name, escape_label_value(it_->model), *it_);
      }
      ++it_;
    }
    if (family_ == kModelFamilyCount && out.size() - start < piece_) {
      // The model snapshot is no longer needed: free it before the last piece.
      std::vector<ModelSeries>().swap(models_);
      server_families(out, server_);
      done_ = true;
    }
    return true;
  }

 private:
  std::vector<ModelSeries> models_;
  ServerSnapshot server_;
  const std::size_t piece_;
  std::size_t family_ = 0;
  std::vector<ModelSeries>::const_iterator it_;
  bool started_family_ = false;
  bool done_ = false;
};

}  // namespace

std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

ModelSeries series_of(std::string_view model, const ModelMetrics& m) {
  ModelSeries s;
  s.model = std::string(model);
  s.requests = m.requests;
  s.committed = m.committed;
  s.cancelled = m.cancelled;
  s.tokens_estimated = m.tokens_estimated;
  s.tokens_committed = m.tokens_committed;
  s.tokens_recorded = m.tokens_recorded;
  s.responses_observed = m.responses_observed;
  s.cooldowns_learned = m.cooldowns_learned;
  s.rpm = m.stats.rpm;
  s.tpm = m.stats.tpm;
  s.rpd = m.stats.rpd;
  s.input_tpm = m.stats.input_tpm;
  s.output_tpm = m.stats.output_tpm;
  s.max_rpm = m.stats.max_rpm;
  s.max_tpm = m.stats.max_tpm;
  s.max_rpd = m.stats.max_rpd;
  s.max_input_tpm = m.stats.max_input_tpm;
  s.max_output_tpm = m.stats.max_output_tpm;
  s.cooldown_until_ns = m.stats.learned.cooldown_until.time_since_epoch().count();
  return s;
}

std::unique_ptr<BodyStream> prometheus_stream(std::vector<ModelSeries> models,
                                              ServerSnapshot server, std::size_t piece_bytes) {
  return std::make_unique<Exposition>(std::move(models), std::move(server),
                                      piece_bytes == 0 ? 1 : piece_bytes);
}

std::unique_ptr<BodyStream> prometheus_stream(const ModelMetricsMap& models, ServerSnapshot server,
                                              std::size_t piece_bytes) {
  std::vector<ModelSeries> series;
  series.reserve(models.size());
  for (const auto& [model, m] : models) series.push_back(series_of(model, m));
  return prometheus_stream(std::move(series), std::move(server), piece_bytes);
}

std::string prometheus_text(const ModelMetricsMap& models, ServerSnapshot server) {
  auto stream = prometheus_stream(models, std::move(server));
  std::string out;
  while (stream->next(out)) {
  }
  return out;
}

}  // namespace ratelimit::server
