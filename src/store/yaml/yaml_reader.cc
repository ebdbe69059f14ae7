#include "store/yaml/yaml_reader.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <limits>
#include <set>
#include <string_view>
#include <vector>

#include "store/yaml/yaml_text.h"
#include "time_format.h"

namespace ratelimit::detail {
namespace {

// Turns a node tree into a Snapshot; every problem is a corrupt_state error naming the file and
// where in it.
class Reader {
 public:
  explicit Reader(const std::string& path) : path_(path) {}

  Result<Snapshot> read(const YAML::Node& root) {
    Snapshot snapshot;
    if (!root.IsDefined() || root.IsNull()) return snapshot;
    if (!root.IsMap()) return corrupt("top level is not a map", root);
    std::set<std::string, std::less<>> seen;
    // yaml-cpp iterators yield temporaries: copy the nodes (they are handles) out of each entry.
    for (const auto& entry : root) {
      const YAML::Node key = entry.first;
      if (!key.IsScalar()) continue;  // unknown key
      const std::string& name = key.Scalar();
      if (!seen.insert(name).second) {
        return corrupt("key " + quote(name) + " appears twice", key);
      }
      if (name == "quotas") {
        if (auto status = read_quotas(entry.second, snapshot.quotas); !status) {
          return tl::unexpected(status.error());
        }
      } else if (name == "state") {
        if (auto status = read_state(entry.second, snapshot.state); !status) {
          return tl::unexpected(status.error());
        }
      } else if (name == "aliases") {
        if (auto status = read_aliases(entry.second, snapshot.aliases); !status) {
          return tl::unexpected(status.error());
        }
      } else if (name == "unknown_models") {
        if (auto status = read_unknown(entry.second, snapshot.unknown_models); !status) {
          return tl::unexpected(status.error());
        }
      } else if (name == "learned") {
        if (auto status = read_learned(entry.second, snapshot.learned); !status) {
          return tl::unexpected(status.error());
        }
      }
    }
    return snapshot;
  }

 private:
  // "ratelimit.load: yaml: <path>: <what> (line L, column C)".
  tl::unexpected<Error> corrupt(const std::string& what, const YAML::Node& at) const {
    return corrupt(nullptr, what, at);
  }
  // "ratelimit.load: yaml: <path>: model "<model>": <what> (line L, column C)".
  tl::unexpected<Error> corrupt(std::string_view model, const std::string& what,
                                const YAML::Node& at) const {
    return corrupt(&model, what, at);
  }
  tl::unexpected<Error> corrupt(const std::string_view* model, const std::string& what,
                                const YAML::Node& at) const {
    std::string message = std::string(kLoad) + "yaml: " + path_ + ": ";
    if (model != nullptr) message += "model " + quote(*model) + ": ";
    message += what;
    const YAML::Mark mark = at.Mark();
    if (!mark.is_null() && mark.line >= 0) {
      message += " (line " + std::to_string(mark.line + 1) + ", column " +
                 std::to_string(mark.column + 1) + ")";
    }
    return make_error(ErrorCode::corrupt_state, std::move(message));
  }

  // A model name: a scalar, or null (the empty name, as Go reads it).
  Result<std::string> model_name(const YAML::Node& key, std::string_view section) const {
    if (key.IsNull()) return std::string();
    if (!key.IsScalar()) {
      return corrupt("a model name in " + std::string(section) + " is not a scalar", key);
    }
    return key.Scalar();
  }

  // A non-negative int64 in decimal, with an optional sign; null reads as 0. `field` names it
  // in errors.
  Result<std::int64_t> read_count(const YAML::Node& node, std::string_view model,
                                  const std::string& field) const {
    if (node.IsNull()) return 0;
    if (!node.IsScalar()) return corrupt(model, field + " is not an integer", node);
    const std::string& text = node.Scalar();
    std::string_view digits = text;
    if (!digits.empty() && digits.front() == '+') {
      digits.remove_prefix(1);
      if (!digits.empty() && digits.front() == '-') digits = {};  // "+-5"
    }
    std::int64_t value = 0;
    const char* end = digits.data() + digits.size();
    const auto [ptr, ec] = std::from_chars(digits.data(), end, value);
    if (digits.empty() || digits.front() == '+' || ptr != end ||
        (ec != std::errc() && ec != std::errc::result_out_of_range)) {
      return corrupt(model, field + " is not an integer (" + quote(text) + ")", node);
    }
    if (ec == std::errc::result_out_of_range) {
      return corrupt(model, field + " is out of range (" + text + ")", node);
    }
    if (value < 0) return corrupt(model, field + " is negative (" + text + ")", node);
    return value;
  }

  Result<std::int64_t> read_timestamp(const YAML::Node& node, std::string_view model,
                                      const std::string& field) const {
    if (!node.IsScalar()) return corrupt(model, field + " is not a timestamp", node);
    const std::string& text = node.Scalar();
    if (const std::optional<std::int64_t> ns = parse_rfc3339(text)) return *ns;
    return corrupt(
        model, field + " is not a timestamp in the years 1677..2262 (" + quote(text) + ")", node);
  }

  Status read_aliases(const YAML::Node& node, AliasMap& aliases) {
    if (node.IsNull()) return {};
    if (!node.IsMap()) return corrupt("\"aliases\" is not a map", node);
    for (const auto& entry : node) {
      const YAML::Node key = entry.first;
      const YAML::Node value = entry.second;
      Result<std::string> name = model_name(key, "aliases");
      if (!name) return tl::unexpected(name.error());
      if (!value.IsScalar()) return corrupt(*name, "alias target is not a scalar", value);
      if (!aliases.try_emplace(*name, value.Scalar()).second) {
        return corrupt(*name, "alias appears twice", key);
      }
    }
    return {};
  }

  Status read_unknown(const YAML::Node& node, std::optional<UnknownModels>& out) {
    if (node.IsNull()) return {};
    if (!node.IsMap()) return corrupt("\"unknown_models\" is not a map", node);
    UnknownModels u;
    const YAML::Node policy = node["policy"];
    if (policy.IsDefined()) {
      auto p = policy.IsScalar() ? unknown_model_policy_from_string(policy.Scalar()) : std::nullopt;
      if (!p) return corrupt("unknown_models.policy is not allow, deny or default_quota", policy);
      u.policy = *p;
    }
    const YAML::Node quota = node["quota"];
    if (quota.IsDefined() && !quota.IsNull()) {
      if (!quota.IsMap()) return corrupt("unknown_models.quota is not a map", quota);
      if (auto s = read_quota_fields(quota, "(unknown models)", u.quota); !s) return s;
    }
    out = u;
    return {};
  }

  Status read_learned(const YAML::Node& node, std::map<std::string, Learned, std::less<>>& out) {
    if (node.IsNull()) return {};
    if (!node.IsMap()) return corrupt("\"learned\" is not a map", node);
    for (const auto& entry : node) {
      const YAML::Node key = entry.first;
      const YAML::Node fields = entry.second;
      Result<std::string> model = model_name(key, "learned");
      if (!model) return tl::unexpected(model.error());
      Learned l;
      if (!fields.IsMap()) return corrupt(*model, "learned is not a map", fields);
      if (const YAML::Node c = fields["cooldown_until"]; c.IsDefined()) {
        Result<std::int64_t> t = read_timestamp(c, *model, "learned.cooldown_until");
        if (!t) return tl::unexpected(t.error());
        l.cooldown_until_ns = *t;
      }
      const std::pair<const char*, Learned::Ceiling*> ceilings[] = {{"requests", &l.requests},
                                                                    {"tokens", &l.tokens},
                                                                    {"input_tokens", &l.input},
                                                                    {"output_tokens", &l.output}};
      for (const auto& [name, c] : ceilings) {
        const YAML::Node n = fields[name];
        if (!n.IsDefined() || n.IsNull()) continue;
        const std::string where = std::string("learned.") + name;
        if (!n.IsMap()) return corrupt(*model, where + " is not a map", n);
        Result<std::int64_t> left = read_count(n["left"], *model, where + ".left");
        if (!left) return tl::unexpected(left.error());
        Result<std::int64_t> until = read_timestamp(n["until"], *model, where + ".until");
        if (!until) return tl::unexpected(until.error());
        *c = Learned::Ceiling{*left, *until};
      }
      out[*model] = l;
    }
    return {};
  }

  Status read_quota_fields(const YAML::Node& fields, const std::string& model, ModelQuota& quota) {
    std::set<std::string, std::less<>> seen;
    for (const auto& field_entry : fields) {
      const YAML::Node field_key = field_entry.first;
      if (!field_key.IsScalar()) continue;
      const std::string field = field_key.Scalar();
      if (field == "day_start") {
        if (!seen.insert(field).second) return corrupt(model, field + " appears twice", field_key);
        const YAML::Node v = field_entry.second;
        auto d = v.IsScalar() ? day_start_from_string(v.Scalar()) : std::nullopt;
        if (!d) return corrupt(model, "day_start is not first_request or pacific_midnight", v);
        quota.day_start = *d;
        continue;
      }
      std::int64_t* target = field == "max_rpm"          ? &quota.max_rpm
                             : field == "max_tpm"        ? &quota.max_tpm
                             : field == "max_rpd"        ? &quota.max_rpd
                             : field == "max_input_tpm"  ? &quota.max_input_tpm
                             : field == "max_output_tpm" ? &quota.max_output_tpm
                                                         : nullptr;
      if (target == nullptr) continue;  // unknown key
      if (!seen.insert(field).second) return corrupt(model, field + " appears twice", field_key);
      Result<std::int64_t> value = read_count(field_entry.second, model, field);
      if (!value) return tl::unexpected(value.error());
      *target = *value;
    }
    return {};
  }

  Status read_quotas(const YAML::Node& node, QuotaMap& quotas) {
    if (node.IsNull()) return {};
    if (!node.IsMap()) return corrupt("\"quotas\" is not a map", node);
    for (const auto& entry : node) {
      const YAML::Node key = entry.first;
      const YAML::Node fields = entry.second;
      Result<std::string> model = model_name(key, "quotas");
      if (!model) return tl::unexpected(model.error());
      const auto [slot, inserted] = quotas.try_emplace(*model);
      if (!inserted) return corrupt(*model, "quota appears twice", key);
      ModelQuota& quota = slot->second;
      if (fields.IsNull()) continue;
      if (!fields.IsMap()) return corrupt(*model, "quota is not a map", fields);
      if (auto s = read_quota_fields(fields, *model, quota); !s) return s;
    }
    return {};
  }

  Status read_state(const YAML::Node& node, std::map<std::string, ModelState, std::less<>>& state) {
    if (node.IsNull()) return {};
    if (!node.IsMap()) return corrupt("\"state\" is not a map", node);
    for (const auto& entry : node) {
      const YAML::Node key = entry.first;
      Result<std::string> model = model_name(key, "state");
      if (!model) return tl::unexpected(model.error());
      const auto [slot, inserted] = state.try_emplace(*model);
      if (!inserted) return corrupt(*model, "state appears twice", key);
      if (auto status = read_model_state(entry.second, *model, slot->second); !status) {
        return status;
      }
    }
    return {};
  }

  Status read_model_state(const YAML::Node& node, const std::string& model, ModelState& out) {
    if (node.IsNull()) return {};
    if (!node.IsMap()) return corrupt(model, "state is not a map", node);
    std::set<std::string, std::less<>> seen;
    for (const auto& entry : node) {
      const YAML::Node key = entry.first;
      if (!key.IsScalar()) continue;
      const std::string field = key.Scalar();
      const YAML::Node value = entry.second;
      if (field != "requests" && field != "tokens" && field != "day_start" &&
          field != "day_count") {
        continue;  // unknown key
      }
      if (!seen.insert(field).second) return corrupt(model, field + " appears twice", key);
      if (field == "requests") {
        if (value.IsNull()) continue;
        if (!value.IsSequence()) return corrupt(model, "requests is not a sequence", value);
        out.requests.reserve(value.size());
        std::size_t i = 0;
        for (const auto& element : value) {
          Result<std::int64_t> t =
              read_timestamp(element, model, "requests[" + std::to_string(i++) + "]");
          if (!t) return tl::unexpected(t.error());
          out.requests.push_back(*t);
        }
      } else if (field == "tokens") {
        if (value.IsNull()) continue;
        if (!value.IsSequence()) return corrupt(model, "tokens is not a sequence", value);
        out.tokens.reserve(value.size());
        std::size_t i = 0;
        for (const auto& element : value) {
          Result<TokenEntry> token = read_token(element, model, i++);
          if (!token) return tl::unexpected(token.error());
          out.tokens.push_back(*token);
        }
      } else if (field == "day_start") {
        if (value.IsNull() || (value.IsScalar() && is_go_zero_time(value.Scalar()))) {
          out.day_start_ns = 0;
          continue;
        }
        Result<std::int64_t> t = read_timestamp(value, model, "day_start");
        if (!t) return tl::unexpected(t.error());
        out.day_start_ns = *t;
      } else {
        Result<std::int64_t> count = read_count(value, model, "day_count");
        if (!count) return tl::unexpected(count.error());
        out.day_count = *count;
      }
    }
    std::sort(out.requests.begin(), out.requests.end());
    std::stable_sort(
        out.tokens.begin(), out.tokens.end(),
        [](const TokenEntry& a, const TokenEntry& b) { return a.time_ns < b.time_ns; });
    return {};
  }

  Result<TokenEntry> read_token(const YAML::Node& node, const std::string& model,
                                std::size_t index) const {
    const std::string where = "tokens[" + std::to_string(index) + "]";
    if (!node.IsMap()) return corrupt(model, where + " is not a map", node);
    TokenEntry entry;
    bool has_time = false;
    bool has_count = false;
    bool has_output = false;
    for (const auto& field_entry : node) {
      const YAML::Node key = field_entry.first;
      if (!key.IsScalar()) continue;
      const std::string field = key.Scalar();
      if (field == "time") {
        if (has_time) return corrupt(model, where + ".time appears twice", key);
        has_time = true;
        Result<std::int64_t> t = read_timestamp(field_entry.second, model, where + ".time");
        if (!t) return tl::unexpected(t.error());
        entry.time_ns = *t;
      } else if (field == "count") {
        if (has_count) return corrupt(model, where + ".count appears twice", key);
        has_count = true;
        Result<std::int64_t> count = read_count(field_entry.second, model, where + ".count");
        if (!count) return tl::unexpected(count.error());
        entry.count = *count;
      } else if (field == "output") {
        if (has_output) return corrupt(model, where + ".output appears twice", key);
        has_output = true;
        Result<std::int64_t> output = read_count(field_entry.second, model, where + ".output");
        if (!output) return tl::unexpected(output.error());
        entry.output = *output;
      }
    }
    if (!has_time) return corrupt(model, where + " has no time", node);
    if (entry.output > entry.count) {
      return corrupt(model, where + ".output is more than its count", node);
    }
    return entry;
  }

  const std::string& path_;
};

}  // namespace

Result<Snapshot> read_snapshot(const YAML::Node& root, const std::string& path) {
  return Reader(path).read(root);
}

}  // namespace ratelimit::detail
