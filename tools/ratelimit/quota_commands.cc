// The `quota` and `observe` commands: quotas, profiles applied, aliases, the unknown-model
// policy, and what a provider's response said.
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "command_parts.h"
#include "commands.h"

namespace ratelimit::cli {

using namespace command_parts;  // NOLINT(google-build-using-namespace)

// --- quota -----------------------------------------------------------------------------------

int Commands::quota_set(const std::string& model, const QuotaFlags& flags) {
  if (auto ok = check_model(model); !ok) return fail("quota set", ok.error());
  if (!flags.any()) {
    return fail("quota set",
                usage_error("give at least one of --rpm, --tpm, --rpd, --input-tpm, --output-tpm, "
                            "--day-start (0 means unlimited), e.g. --rpm 500 --tpm 30000"));
  }
  auto session = open_store();
  if (!session) return fail("quota set", session.error());
  RateLimiter& limiter = (*session)->limiter();
  auto current = limiter.quota(model);
  if (!current) {
    return fail("quota set", store_error("cannot read the quota: " + current.error().to_string()));
  }
  auto q = apply_quota_flags(current->value_or(ModelQuota{}), flags);  // omitted flags keep theirs
  if (!q) return fail("quota set", q.error());
  if (auto s = limiter.set_quota(model, *q); !s) {
    return fail("quota set", store_error("cannot set the quota: " + s.error().to_string()));
  }
  (*session)->mark_changed();
  if (auto done = (*session)->finish(); !done) return fail("quota set", done.error());
  print(options_.json ? json::model_quota(model, *q)
                      : "quota " + printable(model) + ": " + quota_text(*q) + " (- is unlimited)");
  return kOk;
}

int Commands::quota_rm(const std::string& model) {
  if (auto ok = check_model(model); !ok) return fail("quota rm", ok.error());
  auto session = open_store();
  if (!session) return fail("quota rm", session.error());
  if (auto s = (*session)->limiter().remove_quota(model); !s) {
    if (s.error().code == ErrorCode::not_found) {
      return fail("quota rm",
                  usage_error(quote_name(model) + " has no quota; see `ratelimit quota "
                                                  "list` for the models that have one"));
    }
    return fail("quota rm", store_error("cannot remove the quota: " + s.error().to_string()));
  }
  (*session)->mark_changed();
  auto left = (*session)->limiter().quotas();
  if (!left)
    return fail("quota rm", store_error("cannot read the quotas: " + left.error().to_string()));
  if (auto done = (*session)->finish(); !done) return fail("quota rm", done.error());
  print(options_.json ? json::quotas(*left)
                      : "removed the quota of " + printable(model) +
                            " (its requests are now allowed as unknown_model)");
  return kOk;
}

int Commands::quota_list() {
  auto session = open_store();
  if (!session) return fail("quota list", session.error());
  auto read = (*session)->limiter().quotas();
  if (!read)
    return fail("quota list", store_error("cannot read the quotas: " + read.error().to_string()));
  const QuotaMap quotas = std::move(*read);
  if (auto done = (*session)->finish(); !done) return fail("quota list", done.error());
  if (options_.json) {
    print(json::quotas(quotas));
  } else if (quotas.empty()) {
    print("no quotas yet: `ratelimit quota apply openai` or `ratelimit quota set MODEL --rpm N`");
  } else {
    print(quota_table(quotas));
  }
  return kOk;
}

int Commands::quota_apply(const std::string& provider) {
  std::optional<ProviderProfile> profile;
  if (provider.find(':') != std::string::npos) {  // a tier: "openai:tier3"
    if (auto ok = check_profile(provider); !ok) return fail("quota apply", ok.error());
    profile = *find_profile(provider);
  } else {
    auto p = check_provider(provider);
    if (!p) return fail("quota apply", p.error());
    profile = default_profiles().at(*p);
  }
  auto session = open_store();
  if (!session) return fail("quota apply", session.error());
  if (auto s = (*session)->limiter().apply_profile(*profile); !s) {
    return fail("quota apply", store_error("cannot apply the profile: " + s.error().to_string()));
  }
  (*session)->mark_changed();
  if (auto done = (*session)->finish(); !done) return fail("quota apply", done.error());
  const QuotaMap& models = profile->models;
  if (options_.json) {
    print(json::provider_quotas(provider, models));
  } else if (models.empty()) {
    print("the " + provider + " profile has no models; nothing changed");
  } else {
    print("applied the " + provider + " profile:\n" + quota_table(models));
  }
  return kOk;
}

int Commands::quota_alias(const std::string& name, const std::string& target) {
  for (const std::string* n : {&name, &target}) {
    if (auto ok = check_model(*n); !ok) return fail("quota alias", ok.error());
  }
  if (name == target) {
    return fail("quota alias",
                usage_error("an alias cannot name itself; `ratelimit quota unalias " +
                            printable(name) + "` removes an alias"));
  }
  auto session = open_store();
  if (!session) return fail("quota alias", session.error());
  if (auto s = (*session)->limiter().set_alias(name, target); !s) {
    return fail("quota alias", store_error("cannot set the alias: " + s.error().to_string()));
  }
  (*session)->mark_changed();
  if (auto done = (*session)->finish(); !done) return fail("quota alias", done.error());
  print(options_.json ? json::aliases(AliasMap{{name, target}})
                      : printable(name) + " now uses the quota and usage of " + printable(target));
  return kOk;
}

int Commands::quota_unalias(const std::string& name) {
  if (auto ok = check_model(name); !ok) return fail("quota unalias", ok.error());
  auto session = open_store();
  if (!session) return fail("quota unalias", session.error());
  if (auto s = (*session)->limiter().remove_alias(name); !s) {
    if (s.error().code == ErrorCode::not_found) {
      return fail("quota unalias",
                  usage_error(quote_name(name) + " has no alias; see `ratelimit quota aliases`"));
    }
    return fail("quota unalias", store_error("cannot remove the alias: " + s.error().to_string()));
  }
  (*session)->mark_changed();
  auto left = (*session)->limiter().aliases();
  if (!left) {
    return fail("quota unalias",
                store_error("cannot read the aliases: " + left.error().to_string()));
  }
  if (auto done = (*session)->finish(); !done) return fail("quota unalias", done.error());
  print(options_.json ? json::aliases(*left) : "removed the alias " + printable(name));
  return kOk;
}

int Commands::quota_aliases() {
  auto session = open_store();
  if (!session) return fail("quota aliases", session.error());
  auto read = (*session)->limiter().aliases();
  if (!read) {
    return fail("quota aliases",
                store_error("cannot read the aliases: " + read.error().to_string()));
  }
  if (auto done = (*session)->finish(); !done) return fail("quota aliases", done.error());
  if (options_.json) {
    print(json::aliases(*read));
  } else if (read->empty()) {
    print("no aliases: `ratelimit quota alias NAME TARGET` adds one");
  } else {
    Table t;
    t.rows.push_back({"NAME", "USES"});
    for (const auto& [name, target] : *read) t.rows.push_back({printable(name), printable(target)});
    print(t.render());
  }
  return kOk;
}

int Commands::quota_unknown(const std::optional<std::string>& policy, const QuotaFlags& flags) {
  std::optional<UnknownModels> next;
  if (policy) {
    auto p = unknown_model_policy_from_string(*policy);
    if (!p) {
      return fail("quota unknown", usage_error("policy " + quote_name(*policy) +
                                               " is not allow, deny or default_quota"));
    }
    next = UnknownModels{*p, {}};
    if (*p == UnknownModelPolicy::default_quota) {
      if (!flags.any()) {
        return fail("quota unknown", usage_error("default_quota needs the quota: give --rpm, "
                                                 "--tpm, --rpd, --input-tpm or --output-tpm"));
      }
      auto q = apply_quota_flags(ModelQuota{}, flags);
      if (!q) return fail("quota unknown", q.error());
      next->quota = *q;
    } else if (flags.any()) {
      return fail("quota unknown", usage_error("limits apply only to the default_quota policy"));
    }
  } else if (flags.any()) {
    return fail("quota unknown", usage_error("give the policy: allow, deny or default_quota"));
  }
  auto session = open_store();
  if (!session) return fail("quota unknown", session.error());
  RateLimiter& limiter = (*session)->limiter();
  if (next) {
    if (auto s = limiter.set_unknown_models(*next); !s) {
      return fail("quota unknown", store_error("cannot set the policy: " + s.error().to_string()));
    }
    (*session)->mark_changed();
  }
  auto now = limiter.unknown_models();
  if (!now) {
    return fail("quota unknown", store_error("cannot read the policy: " + now.error().to_string()));
  }
  if (auto done = (*session)->finish(); !done) return fail("quota unknown", done.error());
  if (options_.json) {
    print(json::unknown_models(*now));
  } else {
    std::string text = "models with no quota: " + std::string(to_string(now->policy));
    if (now->policy == UnknownModelPolicy::default_quota)
      text += " (" + quota_text(now->quota) + ")";
    print(text);
  }
  return kOk;
}

int Commands::observe(const ObserveArgs& args) {
  if (auto ok = check_model(args.model); !ok) return fail("observe", ok.error());
  ProviderResponse response;
  auto format = response_format_from_string(args.format);
  if (!format) {
    return fail("observe", usage_error("--format " + quote_name(args.format) +
                                       " is not auto, openai, azure_openai, groq, anthropic, "
                                       "mistral or gemini"));
  }
  response.format = *format;
  auto status = check_count("--status", args.status, "429");
  if (!status || *status < 100 || *status > 599) {
    return fail("observe", usage_error("--status " + quote_name(args.status) +
                                       " is not an HTTP status code (100..599)"));
  }
  response.status = static_cast<int>(*status);
  for (const std::string& h : args.headers) {
    const std::size_t colon = h.find(':');
    if (colon == std::string::npos || colon == 0) {
      return fail("observe", usage_error("--header " + quote_name(h) +
                                         " is not \"name: value\", e.g. --header "
                                         "'retry-after: 30'"));
    }
    std::string value = h.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.erase(0, 1);
    response.headers.emplace_back(h.substr(0, colon), std::move(value));
  }
  if (args.body_file) {
    std::FILE* f = std::fopen(args.body_file->c_str(), "rb");
    if (f == nullptr) {
      return fail("observe", usage_error("cannot read --body-file " + quote_name(*args.body_file) +
                                         ": " + std::strerror(errno)));
    }
    constexpr std::size_t kMaxBody = 1 << 20;
    char buf[65536];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0 && response.body.size() <= kMaxBody) {
      response.body.append(buf, n);
    }
    std::fclose(f);
    if (response.body.size() > kMaxBody) {
      return fail("observe", usage_error("--body-file is larger than 1 MiB; give the response "
                                         "body only"));
    }
  }
  auto session = open_store();
  if (!session) return fail("observe", session.error());
  auto learned = (*session)->limiter().observe(args.model, response);
  if (!learned) {
    return fail("observe", store_error("cannot record what the provider said: " +
                                       learned.error().to_string()));
  }
  (*session)->mark_changed();
  if (auto done = (*session)->finish(); !done) return fail("observe", done.error());
  if (options_.json) {
    print(json::observation(*learned));
    return kOk;
  }
  const LearnedLimits& l = learned->learned;
  std::string text =
      printable(learned->resolved_model) + " (" + std::string(to_string(learned->format)) + "): ";
  std::vector<std::string> parts;
  const TimePoint now = (*session)->limiter().config().clock->now();
  if (l.cooldown_until != TimePoint{}) {
    parts.push_back("blocked for " + format_duration(l.cooldown_until - now));
  }
  const std::pair<const char*, const LearnedLimits::Ceiling*> ceilings[] = {
      {"requests", &l.requests},
      {"tokens", &l.tokens},
      {"input tokens", &l.input_tokens},
      {"output tokens", &l.output_tokens}};
  for (const auto& [what, c] : ceilings) {
    if (c->left < 0) continue;
    parts.push_back(std::to_string(c->left) + " more " + what + " for " +
                    format_duration(c->until - now));
  }
  if (learned->quota_learned)
    parts.push_back("quota learned: " + quota_text(*learned->quota_learned));
  if (parts.empty()) parts.push_back("nothing to learn");
  for (std::size_t i = 0; i < parts.size(); ++i) text += (i ? "; " : "") + parts[i];
  for (const auto& line : learned->ignored) text += "\n  ignored: " + printable(line);
  print(text);
  return kOk;
}

}  // namespace ratelimit::cli
