#include "json_format.h"

#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>

namespace ratelimit::json {
namespace {

using json = nlohmann::ordered_json;

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// RFC 3339 UTC with nanoseconds trimmed of trailing zeros ("2026-02-19T09:00:00.5Z"). Digits
// are written by hand: every decision carries two of these (day_start, day_end).
// Writes `t` as RFC 3339 into `buf` (48 bytes: enough for any year of a TimePoint) and returns
// the end.
char* write_rfc3339(char* buf, TimePoint t) {
  using namespace std::chrono;
  const auto ns = duration_cast<nanoseconds>(t.time_since_epoch());
  const auto day = floor<days>(ns);
  const year_month_day ymd{sys_days{day}};
  const hh_mm_ss hms{ns - day};
  char* p = buf;
  auto digits = [&p](long long v, int width) {
    if (v < 0) {  // years before 0: not a time this library produces, but keep it readable
      *p++ = '-';
      v = -v;
    }
    char tmp[24];
    int n = 0;
    do {
      tmp[n++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v > 0);
    for (int i = n; i < width; ++i) *p++ = '0';
    while (n > 0) *p++ = tmp[--n];
  };
  digits(static_cast<int>(ymd.year()), 4);
  *p++ = '-';
  digits(static_cast<unsigned>(ymd.month()), 2);
  *p++ = '-';
  digits(static_cast<unsigned>(ymd.day()), 2);
  *p++ = 'T';
  digits(hms.hours().count(), 2);
  *p++ = ':';
  digits(hms.minutes().count(), 2);
  *p++ = ':';
  digits(hms.seconds().count(), 2);
  if (auto sub = hms.subseconds().count(); sub != 0) {
    *p++ = '.';
    int width = 9;
    while (sub % 10 == 0) {
      sub /= 10;
      --width;
    }
    digits(sub, width);
  }
  *p++ = 'Z';
  return p;
}

std::string rfc3339(TimePoint t) {
  char buf[48];
  return std::string(buf, write_rfc3339(buf, t));
}

json time_or_null(TimePoint t) { return t == TimePoint{} ? json(nullptr) : json(rfc3339(t)); }

json learned_json(const LearnedLimits& l) {
  json j = json::object();
  j["cooldown_until"] = time_or_null(l.cooldown_until);
  const std::pair<const char*, const LearnedLimits::Ceiling*> ceilings[] = {
      {"requests", &l.requests},
      {"tokens", &l.tokens},
      {"input_tokens", &l.input_tokens},
      {"output_tokens", &l.output_tokens}};
  for (const auto& [name, c] : ceilings) {
    j[name] = c->left < 0 ? json(nullptr) : json{{"left", c->left}, {"until", rfc3339(c->until)}};
  }
  return j;
}

json stats_json(const ModelStats& s) {
  json j = json::object();
  j["rpm"] = s.rpm;
  j["max_rpm"] = s.max_rpm;
  j["tpm"] = s.tpm;
  j["max_tpm"] = s.max_tpm;
  j["rpd"] = s.rpd;
  j["max_rpd"] = s.max_rpd;
  j["day_start"] = s.day_start == TimePoint{} ? json(nullptr) : json(rfc3339(s.day_start));
  j["input_tpm"] = s.input_tpm;
  j["max_input_tpm"] = s.max_input_tpm;
  j["output_tpm"] = s.output_tpm;
  j["max_output_tpm"] = s.max_output_tpm;
  j["day_end"] = s.day_end == TimePoint{} ? json(nullptr) : json(rfc3339(s.day_end));
  if (s.learned.any()) j["learned"] = learned_json(s.learned);
  return j;
}

json decision_json(const Decision& d) {
  json j = json::object();
  j["allowed"] = d.allowed;
  j["code"] = std::string(to_string(d.code));
  j["reason"] = std::string(d.reason());
  if (d.retry_after == Duration::max()) {
    j["retry_after_ms"] = nullptr;
  } else {
    const std::int64_t ns = d.retry_after.count() < 0 ? 0 : d.retry_after.count();
    j["retry_after_ms"] = ns / 1'000'000 + (ns % 1'000'000 != 0 ? 1 : 0);
  }
  j["stats"] = stats_json(d.stats);
  j["resolved_model"] =
      d.resolved_model.empty() ? json(nullptr) : json(std::string(d.resolved_model));
  return j;
}

json quota_json(const ModelQuota& q) {
  return json{{"max_rpm", q.max_rpm},
              {"max_tpm", q.max_tpm},
              {"max_rpd", q.max_rpd},
              {"max_input_tpm", q.max_input_tpm},
              {"max_output_tpm", q.max_output_tpm},
              {"day_start", std::string(to_string(q.day_start))}};
}

json quota_map_json(const QuotaMap& quotas) {
  json j = json::object();
  for (const auto& [model, q] : quotas) j[model] = quota_json(q);
  return j;
}

// --- the decision without a DOM (every /v1/decide and /v1/acquire answer) ---
// The same text nlohmann's dump() gives for decision_json(), written straight into one string.

void put_string(std::string& out, std::string_view s) {
  out += '"';
  // Runs of characters that need no escape are appended whole (names are valid UTF-8:
  // model_name.h; codes and ids are ASCII).
  std::size_t run = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const auto u = static_cast<unsigned char>(c);
    if (c != '"' && c != '\\' && u >= 0x20) continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    if (u >= 0x20) {
      out += '\\';
      out += c;
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\u00";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    }
  }
  out.append(s.data() + run, s.size() - run);
  out += '"';
}

void put_int(std::string& out, std::int64_t v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

void put_field(std::string& out, std::string_view key, std::int64_t v) {
  out += '"';
  out += key;
  out += "\":";
  put_int(out, v);
  out += ',';
}

void put_time_field(std::string& out, std::string_view key, TimePoint t) {
  out += '"';
  out += key;
  out += "\":";
  if (t == TimePoint{}) {
    out += "null";
  } else {
    char buf[48];
    out += '"';
    out.append(buf, write_rfc3339(buf, t));  // digits and ASCII: nothing to escape
    out += '"';
  }
  out += ',';
}

void put_stats(std::string& out, const ModelStats& s) {
  out += '{';
  put_field(out, "rpm", s.rpm);
  put_field(out, "max_rpm", s.max_rpm);
  put_field(out, "tpm", s.tpm);
  put_field(out, "max_tpm", s.max_tpm);
  put_field(out, "rpd", s.rpd);
  put_field(out, "max_rpd", s.max_rpd);
  put_time_field(out, "day_start", s.day_start);
  put_field(out, "input_tpm", s.input_tpm);
  put_field(out, "max_input_tpm", s.max_input_tpm);
  put_field(out, "output_tpm", s.output_tpm);
  put_field(out, "max_output_tpm", s.max_output_tpm);
  put_time_field(out, "day_end", s.day_end);
  if (s.learned.any()) {
    out += "\"learned\":";
    out += dump(learned_json(s.learned));
  } else {
    out.pop_back();  // the last field's comma
  }
  out += '}';
}

std::string decision_text(const Decision& d,
                          const std::optional<std::string_view>* reservation_id) {
  std::string out;
  out.reserve(512);
  out += d.allowed ? "{\"allowed\":true,\"code\":" : "{\"allowed\":false,\"code\":";
  put_string(out, to_string(d.code));
  out += ",\"reason\":";
  put_string(out, d.reason());
  out += ",\"retry_after_ms\":";
  if (d.retry_after == Duration::max()) {
    out += "null";
  } else {
    const std::int64_t ns = d.retry_after.count() < 0 ? 0 : d.retry_after.count();
    put_int(out, ns / 1'000'000 + (ns % 1'000'000 != 0 ? 1 : 0));
  }
  out += ",\"stats\":";
  put_stats(out, d.stats);
  out += ",\"resolved_model\":";
  if (d.resolved_model.empty()) {
    out += "null";
  } else {
    put_string(out, d.resolved_model);
  }
  if (reservation_id != nullptr) {
    out += ",\"reservation_id\":";
    if (*reservation_id) {
      put_string(out, **reservation_id);
    } else {
      out += "null";
    }
  }
  out += '}';
  return out;
}

}  // namespace

std::string stats(const ModelStats& s) { return dump(stats_json(s)); }

std::string decision(const Decision& d) { return decision_text(d, nullptr); }

std::string decision(const Decision& d, std::optional<std::string_view> reservation_id) {
  return decision_text(d, &reservation_id);
}

std::string decision_via_dom(const Decision& d, const std::optional<std::string>& reservation_id) {
  json j = decision_json(d);
  j["reservation_id"] = reservation_id ? json(*reservation_id) : json(nullptr);
  return dump(j);
}

std::string status(const std::vector<StatusRow>& rows) {
  json models = json::object();
  for (const auto& row : rows) {
    json m = stats_json(row.decision.stats);
    m["decision"] = decision_json(row.decision);
    models[row.model] = std::move(m);
  }
  return dump(json{{"models", std::move(models)}});
}

std::string quota(const ModelQuota& q) { return dump(quota_json(q)); }

std::string quotas(const QuotaMap& q) { return dump(json{{"quotas", quota_map_json(q)}}); }

std::string model_quota(std::string_view model, const ModelQuota& q) {
  return dump(json{{"model", std::string(model)}, {"quota", quota_json(q)}});
}

std::string provider_quotas(std::string_view provider, const QuotaMap& q) {
  return dump(json{{"provider", std::string(provider)}, {"quotas", quota_map_json(q)}});
}

std::string profiles(const std::vector<ProviderProfile>& profiles) {
  json j = json::object();
  for (const auto& p : profiles) {
    json models = json::object();
    for (const auto& [model, q] : p.models) {
      models[model] = json{{"max_rpm", q.max_rpm},
                           {"max_tpm", q.max_tpm},
                           {"max_rpd", q.max_rpd},
                           {"max_input_tpm", q.max_input_tpm},
                           {"max_output_tpm", q.max_output_tpm},
                           {"day_start", std::string(to_string(q.day_start))}};
    }
    json aliases = json::object();
    for (const auto& [from, to] : p.aliases) aliases[from] = to;
    j[p.name()] = json{{"provider", std::string(to_string(p.provider))},
                       {"tier", p.tier},
                       {"models", std::move(models)},
                       {"aliases", std::move(aliases)}};
  }
  return dump(json{{"profiles", std::move(j)}});
}

std::string aliases(const AliasMap& aliases) {
  json j = json::object();
  for (const auto& [name, target] : aliases) j[name] = target;
  return dump(json{{"aliases", std::move(j)}});
}

std::string unknown_models(const UnknownModels& policy) {
  json j{{"policy", std::string(to_string(policy.policy))}};
  j["quota"] =
      policy.policy == UnknownModelPolicy::default_quota ? quota_json(policy.quota) : json(nullptr);
  return dump(json{{"unknown_models", std::move(j)}});
}

std::string observation(const Observation& o) {
  json ignored = json::array();
  for (const auto& line : o.ignored) ignored.push_back(line);
  json j{{"resolved_model", o.resolved_model},
         {"format", std::string(to_string(o.format))},
         {"learned", learned_json(o.learned)},
         {"quota_learned", o.quota_learned ? quota_json(*o.quota_learned) : json(nullptr)},
         {"ignored", std::move(ignored)}};
  return dump(j);
}

std::string model_stats(std::string_view model, const ModelStats& s) {
  return dump(json{{"model", std::string(model)}, {"stats", stats_json(s)}});
}

std::string settled(std::string_view reservation_id, std::string_view result) {
  return dump(
      json{{"reservation_id", std::string(reservation_id)}, {"result", std::string(result)}});
}

std::string reset(const std::vector<std::string>& models) {
  json list = json::array();
  for (const auto& m : models) list.push_back(m);
  return dump(json{{"reset", std::move(list)}});
}

std::string migrated(std::string_view yaml_path, std::string_view db_path) {
  return dump(json{{"migrated", {{"from", std::string(yaml_path)}, {"to", std::string(db_path)}}}});
}

std::string version(std::string_view v) { return dump(json{{"version", std::string(v)}}); }

std::string token_count(std::string_view model, std::int64_t tokens, std::string_view source) {
  return dump(
      json{{"model", std::string(model)}, {"tokens", tokens}, {"source", std::string(source)}});
}

std::string http_error(std::string_view code, std::string_view message) {
  return dump(json{{"error", {{"code", std::string(code)}, {"message", std::string(message)}}}});
}

std::string health(std::string_view status, std::string_view backend) {
  return dump(json{{"status", std::string(status)}, {"backend", std::string(backend)}});
}

std::string error(std::string_view code, int exit_code, std::string_view message) {
  return dump(json{{"error",
                    {{"code", std::string(code)},
                     {"exit_code", exit_code},
                     {"message", std::string(message)}}}});
}

}  // namespace ratelimit::json
