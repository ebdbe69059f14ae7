// Internal: the narrow interface between the limiter and where the window state lives.
//
// A store does only what must happen where the state lives, atomically: check every limit and
// record in one step (all or nothing), settle an entry by id, record usage, read one model or
// all, keep the quotas (shared stores own them), reset, persist/load/close, and raise a change
// signal when another process or machine changed something. The limiter (src/limiter/) does
// everything else once for every store: argument and name validation, waiting, metrics.
//
// Each store evaluates the decision rules of core/rules.h inside its atomic step with its own
// probe for "when does enough capacity leave the window"; a store that runs remotely (Redis:
// one Lua script per operation) carries the same rules in its script and joins the same
// conformance suite.
//
// Time: a store reads its own time source (Config::clock for the in-process and SQLite
// stores; Redis may use the server's clock), once per operation.
//
// Thread-safety: every method of Store and StoreModel may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "core/rules.h"
#include "limiter/metrics_counters.h"
#include "limiter/wait_queue.h"
#include "ratelimit/config.h"
#include "ratelimit/decision.h"
#include "ratelimit/quota.h"
#include "ratelimit/status.h"

namespace ratelimit::detail {

// Where a granted entry lives within its model: enough to settle it.
struct EntryRef {
  std::uint64_t seq = 0;
  std::uint64_t generation = 0;  // the model's day generation when granted
};

// One check (decide, try_acquire, acquire's attempts).
struct CheckRequest {
  const char* operation = "ratelimit.try_acquire";  // names errors
  TokenEstimate estimate;                           // may be negative: invalid_tokens
  bool record = false;        // record the estimate when allowed (false: decide)
  bool count = false;         // count the outcome in the model's counters ...
  bool count_denials = true;  // ... denials included (an acquire counts how its wait ends)
};

// The outcome of a check besides its decision.
struct CheckOutcome {
  EntryRef entry;              // when recorded
  std::optional<Error> error;  // the store failed (the decision says store_unavailable)
};
// Both, for callers off the hot path.
struct CheckResult {
  Decision decision;
  EntryRef entry;
  std::optional<Error> error;
};

enum class SettleKind { commit, cancel };

struct SettleRequest {
  const char* operation = "ratelimit.commit";
  SettleKind kind = SettleKind::commit;
  TokenEstimate tokens;           // commit: the actual usage (>= 0, checked by the limiter)
  bool from_reservation = false;  // a Reservation object, which knows it never settled before:
                                  // a cancel refunds the day's count even when the entry left
                                  // the window
};

// One model as a store holds it: handed out once per name and kept as long as the store or a
// Reservation needs it (shared_ptr). Settling after the store closed answers `closed`.
//
// Counting contract: when a request asks to count, the store bumps `counters` exactly once per
// operation, after the outcome is final and while still holding what serialises this model's
// writes in this process, so that ModelCounters needs no atomic read-modify-write:
//   check:  counters.decided(decision, estimate) — store_unavailable included; a denial only
//           when count_denials;
//   record: counters.recorded(tokens), or request(store_unavailable) on failure;
//   settle: counters.committed(tokens) / cancelled() when it returns ok;
//   count:  counters.request(outcome) (the limiter's own outcomes: timeouts, cancels, ...).
class StoreModel : public std::enable_shared_from_this<StoreModel> {
 public:
  StoreModel(std::string model_name, std::size_t model_hash, std::uint32_t model_index)
      : name(std::move(model_name)), hash(model_hash), index(model_index) {}
  virtual ~StoreModel() = default;
  StoreModel(const StoreModel&) = delete;
  StoreModel& operator=(const StoreModel&) = delete;

  // Prunes what left the window, evaluates the rules into `decision` (the caller's storage: no
  // copy on the hot path) and, when allowed and asked to, records the estimate: all or nothing.
  virtual CheckOutcome check_into(const CheckRequest& request, Decision& decision) = 0;
  CheckResult check(const CheckRequest& request) {
    CheckResult r;
    CheckOutcome o = check_into(request, r.decision);
    r.entry = o.entry;
    r.error = std::move(o.error);
    return r;
  }
  // Records usage that happened, without checking (tokens >= 0).
  virtual Status record(TokenEstimate tokens, const char* operation) = 0;
  // Settles one granted entry. ok also when the entry has left the window (nothing changes);
  // not_found for an entry never issued; invalid_argument when already settled; closed after
  // the store closed. `*released` says whether capacity grew (waiters should look again).
  virtual Status settle(EntryRef entry, const SettleRequest& request, bool* released) = 0;
  // The opaque id Store::find_entry accepts.
  virtual std::string format_id(EntryRef entry) const = 0;
  // Counts the limiter's own outcome for this model (see the counting contract).
  virtual void count(RequestOutcome outcome) = 0;
  // Adds what a provider said (RateLimiter::observe): a later cooldown replaces an earlier one
  // only when it ends later; each ceiling given (left >= 0) replaces the one held. `*changed`
  // says whether anything changed (waiters then look again: a ceiling may have been lifted).
  virtual Status learn(const Learned& learned, const char* operation, bool* changed) = 0;

  // The limiter's resolution cache for the name this handle was made for, in one word so that
  // a reader never pairs one resolution's target with another's epoch: the low 32 bits of the
  // store's config_epoch() when it was resolved, then the index of the handle whose quota and
  // usage the name uses (Store::at_index).
  std::atomic<std::uint64_t> resolution{~std::uint64_t{0}};
  std::atomic<bool> unknown_reported{false};  // the limiter warned that it has no quota

  const std::string name;
  const std::size_t hash;     // ModelTable's
  const std::uint32_t index;  // ModelTable's

  // The limiter's part, kept here so that one lookup finds the model's state and its waiters:
  ModelCounters counters;  // written as the counting contract says
  WaitQueue waiters;       // acquire() and wait_for_capacity() on this model
};

class Store {
 public:
  virtual ~Store() = default;

  // The model's handle, made on first use. `name` is valid (the limiter checked it).
  virtual std::shared_ptr<StoreModel> model(std::string_view name) = 0;
  // The handle when the store already has one, else null; decide and stats use it so that a
  // name only ever asked about creates no state. Lock-free for the in-process store.
  virtual StoreModel* find(std::string_view name) = 0;
  // The decision for a model without a handle (unknown_model or invalid_tokens for the
  // in-process store; a shared store reads the model's rows).
  // The unknown-model policy applies; a shared store also applies its learned limits.
  virtual Decision decide_unseen(std::string_view name, TokenEstimate estimate) = 0;
  // The handle with this index (StoreModel::index); null for one never made.
  virtual StoreModel* at_index(std::uint32_t index) = 0;
  // Every handle made so far (for waking every waiter).
  virtual std::vector<std::shared_ptr<StoreModel>> handles() = 0;

  // The model and entry an id names: not_found (naming `operation`) for an id this store never
  // issued or a malformed one.
  struct Found {
    std::shared_ptr<StoreModel> model;
    EntryRef entry;
  };
  virtual Result<Found> find_entry(std::string_view id, const char* operation) = 0;

  // Bumped by every change to quotas, aliases or the unknown-model policy, by any process
  // sharing the store (SQLite: read from the database). Cheap: the limiter calls it on the hot
  // path to validate its resolution cache.
  virtual std::uint64_t config_epoch() = 0;

  // Model-name aliases (name → target). Shared stores own them.
  virtual Result<AliasMap> aliases() = 0;
  virtual Result<std::optional<std::string>> alias(std::string_view name) = 0;
  // Sets every alias in `aliases` in one step (validated by the limiter).
  virtual Status set_aliases(const AliasMap& aliases, const char* operation) = 0;
  // not_found when `name` has no alias.
  virtual Status remove_alias(std::string_view name) = 0;
  // The unknown-model policy. Shared stores own it.
  virtual Result<UnknownModels> unknown_models() = 0;
  virtual Status set_unknown_models(const UnknownModels& policy) = 0;

  // Stats of one model (all zeros for an unknown one; creates no state).
  virtual Result<ModelStats> stats(std::string_view name) = 0;
  // Every model with a quota or usage in the window or today.
  virtual Result<std::map<std::string, ModelStats, std::less<>>> all_stats() = 0;
  // Calls `visit(name, stats, handle)` for every model all_stats() lists (`handle` null when
  // this process has none) and for every other handle whose counters counted something (with
  // what stats() gives), without building a map of them all (a scrape at 10,000 models).
  using StatsVisitor = std::function<void(std::string_view, const ModelStats&, StoreModel*)>;
  virtual Status visit_stats(const StatsVisitor& visit) = 0;

  // Quotas. Shared stores own them (every process sees a change).
  virtual Result<std::optional<ModelQuota>> quota(std::string_view name) = 0;
  virtual Result<QuotaMap> quotas() = 0;
  // Sets every quota in `quotas` in one step (validated by the limiter).
  virtual Status set_quotas(const QuotaMap& quotas, const char* operation) = 0;
  // not_found when the model has no quota.
  virtual Status remove_quota(std::string_view name) = 0;
  // Sets `quotas` and `aliases` in one step (a provider profile): all or nothing.
  virtual Status set_profile(const QuotaMap& quotas, const AliasMap& aliases,
                             const char* operation) = 0;

  // Clears the usage of one model ("" : every model).
  virtual Status reset(std::string_view name) = 0;

  virtual Status persist() = 0;
  virtual Status load() = 0;
  // Idempotent. Afterwards checks answer store_unavailable and everything else `closed`.
  virtual Status close() = 0;

  // Rows or entries skipped because their model name is not valid (each named in a warning).
  virtual std::uint64_t names_skipped() const = 0;

  // Whether other processes or machines share this store (its change signal then matters).
  virtual bool shared() const = 0;
  // True when a check while the store fails admits the request unchecked (Redis with
  // fail_open) instead of answering store_unavailable.
  virtual bool admits_unchecked() const { return false; }
  // Blocks until another process or machine changed the store since the last call (true), or
  // `max_wait` passed or `stop` was requested (false). Only for shared stores; polls or
  // subscribes as it must. Wall time (not the injected clock): it watches other processes.
  virtual bool wait_for_change(std::chrono::milliseconds max_wait, std::stop_token stop) = 0;
};

}  // namespace ratelimit::detail
