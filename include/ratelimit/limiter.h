// RateLimiter: keeps calls to each model inside its quota. Reservation: a granted request
// that is settled later with the actual usage (commit) or refunded (cancel).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "ratelimit/clock.h"
#include "ratelimit/config.h"
#include "ratelimit/decision.h"
#include "ratelimit/metrics.h"
#include "ratelimit/provider.h"
#include "ratelimit/quota.h"
#include "ratelimit/status.h"

namespace ratelimit {

namespace detail {
class AsyncAcquire;  // an acquire that waits without a thread (internal)
class StoreModel;    // one model in a store: where a reservation's entry lives (internal)
struct LimiterCore;  // the limiter's state: its store, clock and waiting (internal)
struct Grants;       // makes Reservations (internal)
}  // namespace detail

struct WaitOptions {
  std::optional<Duration> timeout;  // none: wait until capacity or cancellation
  std::stop_token stop;             // cancellation
};

// A request admitted by try_acquire/acquire (or the denial, when not granted).
// Move-only. Thread-safety: one Reservation object must not be used from two threads at once;
// different reservations (and RateLimiter::commit/cancel by id) may run concurrently.
class Reservation {
 public:
  Reservation() = default;  // empty: not granted
  Reservation(Reservation&& other) noexcept;
  // Move-assigning over a granted reservation first settles it as its destructor would.
  Reservation& operator=(Reservation&& other) noexcept;
  Reservation(const Reservation&) = delete;
  Reservation& operator=(const Reservation&) = delete;
  // Destroying a granted reservation without commit/cancel keeps the estimate as usage (and
  // the entry can still be settled by id()).
  ~Reservation();

  bool granted() const { return model_ != nullptr; }
  explicit operator bool() const { return granted(); }
  // The decision that granted or denied it. A moved-from reservation holds a default Decision.
  const Decision& decision() const { return decision_; }
  // Opaque id, unique within the store; empty when not granted. RateLimiter::commit/cancel
  // accept it from anywhere.
  const std::string& id() const;
  // Actual usage (input = prompt, output) replaces the estimate, at the reservation's original
  // time (a commit after the entry left the minute window changes nothing there). Negative
  // counts: invalid_argument.
  Status commit(std::int64_t prompt_tokens, std::int64_t output_tokens);
  // The call was never made: the request and its tokens are refunded, and its day count too
  // unless the day has rolled over since.
  Status cancel();
  // commit/cancel on a denied, empty or already settled reservation: invalid_argument.
  // Once the limiter is gone, settling does nothing and returns `closed`.

 private:
  friend struct detail::Grants;
  Reservation(Decision decision, std::shared_ptr<detail::StoreModel> model, std::uint64_t seq,
              std::uint64_t generation);
  Status settle_check(const char* operation) const;

  Decision decision_;
  std::shared_ptr<detail::StoreModel> model_;
  std::uint64_t seq_ = 0;
  std::uint64_t generation_ = 0;
  bool settled_ = false;
  mutable std::string id_;  // formatted on first use, so that granting never allocates
};

// An acquire_async in progress. Copyable; a default-constructed one refers to nothing.
// Thread-safety: any thread, any number of times, also after it completed.
class PendingAcquire {
 public:
  PendingAcquire() = default;
  // Completes the acquire with `cancelled` unless it has completed already (then nothing
  // happens: a granted reservation stays granted).
  void cancel();
  // Whether its callback has been called (or is being called).
  bool done() const;

 private:
  friend struct detail::LimiterCore;
  explicit PendingAcquire(std::weak_ptr<detail::AsyncAcquire> waiter)
      : waiter_(std::move(waiter)) {}
  std::weak_ptr<detail::AsyncAcquire> waiter_;
};

// Called exactly once with what acquire() would have returned.
using AcquireCallback = std::function<void(Result<Reservation>)>;

// Thread-safety: every method is safe to call from any number of threads.
class RateLimiter {
 public:
  // Opens a limiter for config.backend. Does not load state: call load(). Fails with
  // invalid_argument when a default path is needed but neither CORE_HOME nor HOME is set.
  static Result<std::unique_ptr<RateLimiter>> open(Config config = {});
  // Opens the shared SQLite store at `path` (the argument wins over config.file_path; empty:
  // config.file_path, then the default path), creating the database when missing; its parent
  // directory must exist. The database owns the quotas: config quotas and profiles are written
  // only for models that have no quota row yet. Errors: io_error, unavailable, corrupt_state
  // (a damaged, truncated or foreign file; see Config::recover_corrupt).
  static Result<std::unique_ptr<RateLimiter>> open_sqlite(std::string path, Config config = {});
  // Opens the shared Redis store at `url` (the argument wins over config.redis_url; see
  // Config::redis_url for the forms). Redis owns the quotas, aliases and unknown-model policy:
  // config values are written only where Redis has none yet. Errors: invalid_argument (a
  // malformed URL), unavailable (cannot connect, wrong password or db; the message names the
  // host, never the password).
  static Result<std::unique_ptr<RateLimiter>> open_redis(std::string url, Config config = {});

  ~RateLimiter();  // neither persists nor throws; call persist()/close()
  RateLimiter(const RateLimiter&) = delete;
  RateLimiter& operator=(const RateLimiter&) = delete;

  // Checks without recording. See DecisionCode for the order of the checks. The model name is
  // resolved (exact, alias, family: see resolve_model) and the decision says which name it
  // used (Decision::resolved_model). A single token count is counted as input.
  Decision decide(std::string_view model, std::int64_t estimated_tokens);
  Decision decide(std::string_view model, TokenEstimate estimate);
  bool can_send(std::string_view model, std::int64_t estimated_tokens);
  // Records usage that happened, without checking quotas; any model name. Negative counts
  // are taken as 0.
  Status record_usage(std::string_view model, std::int64_t prompt_tokens,
                      std::int64_t output_tokens);
  // Checks and records in one atomic step. Not granted: decision() says why.
  Reservation try_acquire(std::string_view model, std::int64_t estimated_tokens);
  Reservation try_acquire(std::string_view model, TokenEstimate estimate);
  // The blocking form of try_acquire: waiters on one model are served in arrival order.
  // Errors: invalid_argument (negative tokens), never_satisfiable, deadline_exceeded,
  // cancelled, unavailable (store failure).
  Result<Reservation> acquire(std::string_view model, std::int64_t estimated_tokens,
                              WaitOptions options = {});
  Result<Reservation> acquire(std::string_view model, TokenEstimate estimate,
                              WaitOptions options = {});
  // acquire() without holding a thread while it waits: `done` is called exactly once with the
  // reservation or the error acquire() would give (plus `closed` when the limiter closes or
  // is destroyed first). It runs on the calling thread when the answer is known at once (a
  // grant, a bad argument, never_satisfiable), otherwise on the limiter's waiter thread, which
  // serves every pending acquire_async of this limiter: keep it short. Waiters of one model are
  // served in arrival order together with the blocking acquire() calls.
  PendingAcquire acquire_async(std::string_view model, std::int64_t estimated_tokens,
                               AcquireCallback done, WaitOptions options = {});
  PendingAcquire acquire_async(std::string_view model, TokenEstimate estimate, AcquireCallback done,
                               WaitOptions options = {});
  // Returns ok as soon as decide() would allow `tokens`, without recording anything.
  Status wait_for_capacity(std::string_view model, std::int64_t tokens, WaitOptions options = {});
  Status wait_for_capacity(std::string_view model, TokenEstimate tokens, WaitOptions options = {});

  // Learns from a provider's response to a call on `model` (resolved like decide): a 429 or an
  // exhausted budget with a reset time sets a cooldown (decision code provider_cooldown until
  // then), a remaining budget sets a ceiling (provider_limit once spent), kept in the store so
  // that every process (and machine) on it sees them; never raises a configured quota.
  // Values that cannot be used are ignored and counted (LimiterMetrics), never an error.
  // With Config::learn_quotas, the provider's stated limits become the quota of a model that
  // has none. Errors: invalid_argument (model name), closed, store errors.
  Result<Observation> observe(std::string_view model, const ProviderResponse& response);

  // The name whose quota and usage `model` uses (see decide); the name itself when it has no
  // quota anywhere. Errors: invalid_argument (name), closed, store errors.
  Result<std::string> resolve_model(std::string_view model);
  // Aliases: `name` uses `target`'s quota and usage. Shared stores keep them for every process.
  Status set_alias(std::string_view name, std::string_view target);
  Status remove_alias(std::string_view name);  // not_found when it has none
  Result<AliasMap> aliases();
  // The unknown-model policy (see UnknownModelPolicy). Shared stores keep it.
  Status set_unknown_models(UnknownModels policy);
  Result<UnknownModels> unknown_models();

  // Settle a reservation by id (from another thread, process or request). An id this store
  // issued whose entry has already left every window: ok, nothing changes. An id it never
  // issued (or malformed): not_found. Already settled: invalid_argument.
  Status commit(std::string_view reservation_id, std::int64_t prompt_tokens,
                std::int64_t output_tokens);
  Status cancel(std::string_view reservation_id);

  // An unknown model gives all zeros and creates no state.
  Result<ModelStats> stats(std::string_view model);
  Result<std::map<std::string, ModelStats, std::less<>>> all_stats();
  // Per-model counters and gauges, for monitoring: every model that has a quota, usage in the
  // window or today, or any non-zero counter (a model only ever named by decide or stats is
  // absent). Counters count this RateLimiter's try_acquire, acquire, record_usage, commit and
  // cancel calls since it was opened; reset() leaves them alone. `stats` is the store now, as
  // stats() gives it. Errors as all_stats (sqlite: `closed` after close()).
  Result<std::map<std::string, ModelMetrics, std::less<>>> metrics();
  // What metrics() holds, one model at a time and in no particular order, without a map of
  // them all (a Prometheus scrape at 10,000 models). `visit` must not call back into this
  // limiter's store-wide operations.
  Status visit_metrics(const std::function<void(std::string_view, const ModelMetrics&)>& visit);
  // Counters without a model label (requests whose model name was not valid, file or database
  // rows skipped for one). Never fails.
  LimiterMetrics limiter_metrics() const;
  Result<std::vector<std::string>> models();  // sorted union of quota and state keys
  // The model's quota; nullopt when it has none. Errors: `closed` after close(), store errors,
  // invalid_argument for a name that is not valid.
  Result<std::optional<ModelQuota>> quota(std::string_view model);
  Result<QuotaMap> quotas();
  Status set_quota(std::string_view model, ModelQuota quota);  // negative limit → invalid_argument
  Status remove_quota(std::string_view model);
  Status add_provider(Provider provider);  // overwrites that provider's models (seed rule)
  // Overwrites the quotas of the profile's models and its aliases (e.g. find_profile
  // ("openai:tier3")).
  Status apply_profile(const ProviderProfile& profile);
  Status reset(std::string_view model);  // "" → all models' usage

  Status persist();  // memory: nothing to do; sqlite: a WAL checkpoint (state is durable)
  Status load();     // memory: nothing to do; a missing file is not an error; sqlite: re-reads
                     // the quota copy
  // Idempotent; later persist/load fail with `closed`. sqlite: every call that needs the
  // database fails with `closed` (decide/try_acquire: store_unavailable).
  Status close();

  // The configuration this limiter was opened with (file_path resolved).
  const Config& config() const;

 private:
  friend struct detail::LimiterCore;
  explicit RateLimiter(std::unique_ptr<detail::LimiterCore> core);
  std::unique_ptr<detail::LimiterCore> core_;
};

// Copies a YAML state file (ours or go-ratelimit's) into the SQLite database at `sqlite_path`
// (created when missing; its parent directory must exist) in one transaction: its state
// replaces the database's usage, and its quotas (when it has any) replace the database's
// quotas. A re-run overwrites; a failure leaves the database as it was. Errors: not_found (no
// YAML file), corrupt_state, io_error, unavailable. Entries whose model name is not valid
// (model_name.h) are skipped, each named in a warning to `on_warning` (null: stderr).
Status migrate_yaml_to_sqlite(const std::string& yaml_path, const std::string& sqlite_path,
                              std::function<void(std::string_view)> on_warning = nullptr);

}  // namespace ratelimit
