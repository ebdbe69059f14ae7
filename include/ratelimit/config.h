// How a RateLimiter is opened: backend, state path, quotas, clock.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ratelimit/clock.h"
#include "ratelimit/quota.h"
#include "ratelimit/status.h"

namespace ratelimit {

enum class Backend { yaml, sqlite, memory, redis };  // redis: appended

// "yaml", "sqlite", "memory", "redis".
std::string_view to_string(Backend backend);
// "" and "yaml" → yaml, "sqlite", "memory", "redis"; surrounding white space is trimmed and case is
// ignored. Anything else: invalid_argument `unknown backend "<name>"`.
Result<Backend> backend_from_string(std::string_view name);

// What a model with no quota (after aliases and its family) gets.
enum class UnknownModelPolicy {
  allow,          // allowed, unlimited (go-ratelimit's behaviour): decision code unknown_model
  deny,           // denied: decision code model_not_allowed
  default_quota,  // limited by UnknownModels::quota, in a pool of its own per name
};
// "allow", "deny", "default_quota".
std::string_view to_string(UnknownModelPolicy policy);
std::optional<UnknownModelPolicy> unknown_model_policy_from_string(std::string_view name);

// What the Redis store answers while Redis fails (Config::redis_failure_policy).
enum class RedisFailurePolicy {
  fail_closed,  // checks answer store_unavailable
  fail_open,    // checks answer allowed, code admitted_unchecked
};

struct UnknownModels {
  UnknownModelPolicy policy = UnknownModelPolicy::allow;
  ModelQuota quota;  // for default_quota
  friend bool operator==(const UnknownModels&, const UnknownModels&) = default;
};

struct Config {
  std::string file_path;            // empty → default path (default_state_path)
  Backend backend = Backend::yaml;  // the library's default, as in go-ratelimit
  std::vector<Provider> providers;  // empty together with quotas and profiles → {gemini}
  // Built-in profiles by name ("openai:tier3", "gemini:free", "anthropic"; see find_profile),
  // applied after `providers`.
  std::vector<std::string> profiles;
  QuotaMap quotas;  // override provider defaults
  // Model-name aliases (name → the name whose quota it uses), over the profiles' built-in
  // aliases. Shared stores own them: these are written for names that have no alias yet.
  AliasMap aliases;
  // What a model with no quota gets. Shared stores own it: this is written when the store has
  // no policy yet.
  UnknownModels unknown_models;
  // observe(): the provider's stated limit becomes the quota of a model that has none.
  bool learn_quotas = false;
  std::shared_ptr<Clock> clock;  // null → system_clock()
  // A damaged state file (YAML: at load(); SQLite: at open) is moved aside to
  // "<path>.corrupt-<UTC time>" and the limiter starts fresh, with a warning (on_warning).
  bool recover_corrupt = false;
  // Called with each warning (e.g. a state file row skipped because its model name is not
  // valid); null: written to stderr as "ratelimit: warning: <message>". Any thread.
  std::function<void(std::string_view message)> on_warning;

  // --- Backend::redis (a fleet of machines shares one quota; see docs/design.md) ---
  // redis://[[user]:password@]host[:port][/db] or unix:///path/to.sock[?db=N]. The password
  // never appears in errors or logs. Plain TCP only (hiredis 0.14 has no TLS): reach a
  // TLS-only Redis through a local tunnel such as stunnel.
  std::string redis_url;
  // Every key starts with "<key_prefix>:"; several fleets may share one Redis.
  std::string key_prefix = "ratelimit";
  // Bounds on connecting and on every command (a call never hangs longer): a stopped or
  // unreachable Redis answers store_unavailable (checks) or unavailable (other calls).
  std::chrono::milliseconds redis_connect_timeout{1000};
  std::chrono::milliseconds redis_command_timeout{1000};
  // Connections per limiter (threads do not serialise on one socket).
  int redis_pool_size = 4;
  // What decide/try_acquire/acquire answer while Redis fails (unreachable, stopped, timing
  // out). fail_closed (default): store_unavailable. fail_open: allowed with the code
  // admitted_unchecked (counted in metrics as such; nothing is recorded in Redis, so the
  // fleet's window does not hold that usage when Redis returns). Other calls fail with
  // `unavailable` either way. See docs/storage.md.
  RedisFailurePolicy redis_failure_policy = RedisFailurePolicy::fail_closed;
  // false (default): the Redis server's clock (TIME inside each script) decides, so clients
  // whose clocks disagree still share one exact window. true: the scripts get this client's
  // `clock` instead (tests on a ManualClock; every client of a fleet must then agree).
  bool redis_use_client_clock = false;
};

// The quota table a Config describes (seed merge order): if providers and quotas are both
// empty, the gemini profile; otherwise each known provider's profile in order (unknown ones
// skipped), then the explicit quotas over matching models.
// An unknown profile name in `profiles` is skipped here (RateLimiter::open refuses it).
QuotaMap merged_quotas(const Config& config);
// The aliases a Config describes: its profiles' built-in aliases, then config.aliases over them.
AliasMap merged_aliases(const Config& config);

// `<home>/.core/ratelimits.yaml` (yaml, memory) or `<home>/.core/ratelimits.db` (sqlite), where
// <home> is the first non-empty of $CORE_HOME and $HOME. Neither set: invalid_argument.
Result<std::string> default_state_path(Backend backend);

}  // namespace ratelimit
