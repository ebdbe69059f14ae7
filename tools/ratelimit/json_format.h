// The one JSON serializer for ratelimit's machine-readable shapes, shared by the CLI's --json
// output and the HTTP server (`ratelimit serve`). Each function returns one compact JSON document
// without a trailing newline; nlohmann/json stays inside json_format.cc (and the server's
// parser). Model names arrive valid (the library, the CLI and the server refuse others); any
// other text that is not valid UTF-8 is written with U+FFFD in place of the bad bytes, so the
// output is always valid UTF-8.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ratelimit/config.h"
#include "ratelimit/decision.h"
#include "ratelimit/provider.h"
#include "ratelimit/quota.h"

namespace ratelimit::json {

// {"rpm", "max_rpm", "tpm", "max_tpm", "rpd", "max_rpd", "day_start", "input_tpm",
// "max_input_tpm", "output_tpm", "max_output_tpm", "day_end"} and, when the provider said
// something, "learned": {"cooldown_until", "requests", "tokens", "input_tokens",
// "output_tokens"} (each ceiling {"left", "until"} or null). Times are RFC 3339 UTC
// ("2026-02-19T09:00:00Z", fractional seconds when not whole), null when unset.
std::string stats(const ModelStats& stats);

// {"allowed", "code", "reason", "retry_after_ms", "stats", "resolved_model"}: retry_after_ms is an
// integer in milliseconds rounded up, null when the request can never pass (Duration::max()). The
// second form (a granted acquire) adds "reservation_id": the id, or null for a store whose ids do
// not outlive the process (YAML).
std::string decision(const Decision& decision);
std::string decision(const Decision& decision, std::optional<std::string_view> reservation_id);
// The same text built through nlohmann/json's DOM: what decision() is checked against in tests.
std::string decision_via_dom(const Decision& decision,
                             const std::optional<std::string>& reservation_id);

// One row of `status`: a model, its stats and the decision a new request would get.
struct StatusRow {
  std::string model;
  Decision decision;  // decision.stats are the row's stats
};
// {"models": {"<name>": {<stats fields>, "decision": <decision>}}}.
std::string status(const std::vector<StatusRow>& rows);

// {"max_rpm", "max_tpm", "max_rpd", "max_input_tpm", "max_output_tpm", "day_start"}.
std::string quota(const ModelQuota& quota);
// {"quotas": {"<model>": <quota>}}.
std::string quotas(const QuotaMap& quotas);
// {"model": "<model>", "quota": <quota>}.
std::string model_quota(std::string_view model, const ModelQuota& quota);
// {"provider": "<name>", "quotas": {"<model>": <quota>}}.
std::string provider_quotas(std::string_view provider, const QuotaMap& quotas);
// {"profiles": {"<profile name>": {"provider": "openai", "tier": "tier1", "models": {"<model>":
// {"max_rpm", "max_tpm", "max_rpd", "max_input_tpm", "max_output_tpm", "day_start"}},
// "aliases": {"<provider id>": "<model>"}}}}; "tier" is "" for a bare profile.
std::string profiles(const std::vector<ProviderProfile>& profiles);

// {"aliases": {"<name>": "<target>"}}.
std::string aliases(const AliasMap& aliases);
// {"unknown_models": {"policy": "allow|deny|default_quota", "quota": <quota> or null}}.
std::string unknown_models(const UnknownModels& policy);
// {"resolved_model", "format", "learned", "quota_learned", "ignored": [...]} (observe).
std::string observation(const Observation& observation);

// {"model": "<model>", "stats": <stats>} (after `record`).
std::string model_stats(std::string_view model, const ModelStats& stats);
// {"reservation_id": "<id>", "result": "<committed|cancelled>"}.
std::string settled(std::string_view reservation_id, std::string_view result);
// {"reset": ["<model>", ...]}.
std::string reset(const std::vector<std::string>& models);
// {"migrated": {"from": "<yaml>", "to": "<db>"}}.
std::string migrated(std::string_view yaml_path, std::string_view db_path);
// {"version": "<version>"}.
std::string version(std::string_view version);

// {"model": "...", "tokens": N, "source": "gemini" | "estimate"} (ratelimit count-tokens).
std::string token_count(std::string_view model, std::int64_t tokens, std::string_view source);
// {"error": {"code": "<code>", "message": "<message>"}} (the server's error body).
std::string http_error(std::string_view code, std::string_view message);
// {"status": "<ok|stopping>", "backend": "<backend>"} (GET /healthz).
std::string health(std::string_view status, std::string_view backend);
// {"error": {"code": "<code>", "exit_code": N, "message": "<message>"}}.
std::string error(std::string_view code, int exit_code, std::string_view message);

}  // namespace ratelimit::json
