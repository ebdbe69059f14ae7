// How a RateLimiter is opened: backend, state path, quotas, clock.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ratelimit/clock.h"
#include "ratelimit/quota.h"
#include "ratelimit/status.h"

namespace ratelimit {

enum class Backend { yaml, sqlite, memory };

// "yaml", "sqlite", "memory".
std::string_view to_string(Backend backend);
// "" and "yaml" → yaml, "sqlite", "memory"; surrounding white space is trimmed and case is
// ignored. Anything else: invalid_argument `unknown backend "<name>"`.
Result<Backend> backend_from_string(std::string_view name);

struct Config {
  std::string file_path;            // empty → default path (default_state_path)
  Backend backend = Backend::yaml;  // the library's default, as in go-ratelimit
  std::vector<Provider> providers;  // empty together with quotas → {gemini}
  QuotaMap quotas;                  // override provider defaults
  std::shared_ptr<Clock> clock;     // null → system_clock()
  // A damaged state file (YAML: at load(); SQLite: at open) is moved aside to
  // "<path>.corrupt-<UTC time>" and the limiter starts fresh, with a warning (on_warning).
  bool recover_corrupt = false;
  // Called with each warning (e.g. a state file row skipped because its model name is not
  // valid); null: written to stderr as "ratelimit: warning: <message>". Any thread.
  std::function<void(std::string_view message)> on_warning;
};

// The quota table a Config describes (seed merge order): if providers and quotas are both
// empty, the gemini profile; otherwise each known provider's profile in order (unknown ones
// skipped), then the explicit quotas over matching models.
QuotaMap merged_quotas(const Config& config);

// `<home>/.core/ratelimits.yaml` (yaml, memory) or `<home>/.core/ratelimits.db` (sqlite), where
// <home> is the first non-empty of $CORE_HOME and $HOME. Neither set: invalid_argument.
Result<std::string> default_state_path(Backend backend);

}  // namespace ratelimit
