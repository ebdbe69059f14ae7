// The in-process store (Backend::memory, and Backend::yaml with snapshots): one Window per
// model behind its own mutex, found through the lock-free model table.
#include "store/memory/memory_store.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <functional>
#include <random>
#include <set>

#include "core/model_table.h"
#include "core/window.h"
#include "limiter/validation.h"
#include "ratelimit/model_name.h"
#include "util/mutex.h"

namespace ratelimit::detail {
namespace {

Error closed_error(const char* operation) {
  return Error{ErrorCode::closed,
               std::string(operation) + ": the limiter is closed (open a new one)"};
}

// Everything the store keeps about one model. The window, limits and `closed` are guarded by
// mu, and so are the counters' writes (the counting contract of store.h).
class alignas(64) MemoryModel final : public StoreModel {
 public:
  MemoryModel(std::string model_name, std::size_t model_hash, std::uint32_t model_index,
              std::uint64_t store_nonce, std::shared_ptr<Clock> store_clock)
      : StoreModel(std::move(model_name), model_hash, model_index),
        nonce_(store_nonce),
        clock_(std::move(store_clock)) {}

  CheckOutcome check_into(const CheckRequest& request, Decision& decision) override
      RL_EXCLUDES(mu_) {
    CheckOutcome r;
    MutexLock lock(mu_);
    if (closed_) {
      decision = Decision{};
      decision.code = DecisionCode::store_unavailable;
      r.error = closed_error(request.operation);
    } else {
      const std::int64_t now = now_ns();
      advance(now);
      window_.evaluate_into(limits_, request.estimate, now, decision);
      if (decision.allowed && request.record) {
        r.entry.seq = window_.append(now, request.estimate, EntryKind::reserved);
        r.entry.generation = window_.generation();
        if (limits_.learned.any()) [[unlikely]] {
          limits_.learned.spend(request.estimate.input, request.estimate.output);
        }
      }
    }
    if (request.count && (decision.allowed || request.count_denials || r.error)) {
      counters.decided(decision, saturating_add(request.estimate.input, request.estimate.output));
    }
    return r;
  }

  Status learn(const Learned& learned, const char* operation, bool* changed) override
      RL_EXCLUDES(mu_) {
    *changed = false;
    MutexLock lock(mu_);
    if (closed_) return tl::unexpected(closed_error(operation));
    advance(now_ns());
    *changed = merge_learned(limits_.learned, learned);
    return {};
  }

  Status record(TokenEstimate tokens, const char* operation) override RL_EXCLUDES(mu_) {
    MutexLock lock(mu_);
    if (closed_) {
      counters.request(RequestOutcome::store_unavailable);
      return tl::unexpected(closed_error(operation));
    }
    const std::int64_t now = now_ns();
    advance(now);
    window_.append(now, tokens, EntryKind::recorded);
    counters.recorded(saturating_add(tokens.input, tokens.output));
    return {};
  }

  Status settle(EntryRef entry, const SettleRequest& request, bool* released) override
      RL_EXCLUDES(mu_) {
    *released = false;
    MutexLock lock(mu_);
    if (closed_) {
      return make_error(ErrorCode::closed,
                        std::string(request.operation) +
                            ": the limiter that granted this reservation is closed or gone; "
                            "nothing was changed");
    }
    advance(now_ns());  // an entry that left the window is gone
    SettleOutcome outcome;
    if (request.kind == SettleKind::commit) {
      outcome = window_.commit(entry.seq, request.tokens, released);
    } else {
      outcome = window_.cancel(entry.seq, entry.generation, request.from_reservation);
      *released = outcome == SettleOutcome::ok;
    }
    switch (outcome) {
      case SettleOutcome::ok:
      case SettleOutcome::gone:
        if (request.kind == SettleKind::commit) {
          counters.committed(saturating_add(request.tokens.input, request.tokens.output));
        } else {
          counters.cancelled();
        }
        return {};
      case SettleOutcome::already_settled:
        return make_error(ErrorCode::invalid_argument,
                          std::string(request.operation) +
                              ": the reservation is already settled (commit or cancel it once)");
      case SettleOutcome::not_issued:
        break;
    }
    return make_error(ErrorCode::not_found,
                      std::string(request.operation) + ": no such reservation in this limiter");
  }

  std::string format_id(EntryRef entry) const override {
    // <nonce:16 hex>-<model index>-<seq>-<day generation>, all hex.
    char buf[96];
    char* p = buf;
    auto put = [&](std::uint64_t v, bool pad16) {
      char digits[16];
      auto r = std::to_chars(digits, digits + sizeof(digits), v, 16);
      const auto n = static_cast<std::size_t>(r.ptr - digits);
      if (pad16) p = std::fill_n(p, 16 - n, '0');
      p = std::copy(digits, r.ptr, p);
    };
    put(nonce_, true);
    *p++ = '-';
    put(index, false);
    *p++ = '-';
    put(entry.seq, false);
    *p++ = '-';
    put(entry.generation, false);
    return std::string(buf, p);
  }

  void count(RequestOutcome outcome) override RL_EXCLUDES(mu_) {
    MutexLock lock(mu_);
    counters.request(outcome);
  }

  // --- for the store ---

  ModelStats stats() RL_EXCLUDES(mu_) {
    MutexLock lock(mu_);
    advance(now_ns());
    return stats_of(limits_, window_.usage());
  }
  // Stats when the model has a quota, usage or learned limits; nullopt otherwise.
  std::optional<ModelStats> stats_if_shown() RL_EXCLUDES(mu_) {
    MutexLock lock(mu_);
    advance(now_ns());
    if (!quota_ && window_.idle() && !limits_.learned.any()) return std::nullopt;
    return stats_of(limits_, window_.usage());
  }
  std::optional<ModelQuota> quota() RL_EXCLUDES(mu_) {
    MutexLock lock(mu_);
    return quota_;
  }
  void set_quota(std::optional<ModelQuota> quota) RL_EXCLUDES(mu_) {
    MutexLock lock(mu_);
    quota_ = quota;
    update_limits();
  }
  void set_unknown_models(const UnknownModels& policy) RL_EXCLUDES(mu_) {
    MutexLock lock(mu_);
    unknown_ = policy;
    update_limits();
  }
  void clear() RL_EXCLUDES(mu_) {
    MutexLock lock(mu_);
    window_.clear();
    limits_.learned = Learned{};
  }
  void close() RL_EXCLUDES(mu_) {
    MutexLock lock(mu_);
    closed_ = true;
  }
  // Adds this model's quota and state to `snapshot`.
  void export_to(Snapshot& snapshot) RL_EXCLUDES(mu_) {
    MutexLock lock(mu_);
    advance(now_ns());
    if (quota_) snapshot.quotas.emplace(name, *quota_);
    if (!window_.idle()) snapshot.state.emplace(name, window_.export_state());
    if (limits_.learned.any()) snapshot.learned.emplace(name, limits_.learned);
  }
  // Replaces the quota (when `replace_quota`) and the state with the snapshot's.
  void import_from(const Snapshot& snapshot, bool replace_quota) RL_EXCLUDES(mu_) {
    MutexLock lock(mu_);
    const std::int64_t now = now_ns();
    if (replace_quota) {
      auto q = snapshot.quotas.find(name);
      quota_ = q != snapshot.quotas.end() ? std::optional<ModelQuota>(q->second) : std::nullopt;
    }
    if (snapshot.unknown_models) unknown_ = *snapshot.unknown_models;
    update_limits();
    auto s = snapshot.state.find(name);
    if (s != snapshot.state.end()) {
      window_.import_state(s->second, now, limits_.quota.day_start);
    } else {
      window_.clear();
    }
    auto l = snapshot.learned.find(name);
    limits_.learned = l != snapshot.learned.end() ? l->second : Learned{};
    limits_.learned.expire(now);
  }

 private:
  std::int64_t now_ns() const { return to_ns(clock_->now()); }
  void advance(std::int64_t now) RL_REQUIRES(mu_) {
    window_.advance(now, limits_.quota.day_start);
    if (limits_.learned.any()) [[unlikely]] {
      limits_.learned.expire(now);
    }
  }
  // The limits that apply: the quota, else what the unknown-model policy gives.
  void update_limits() RL_REQUIRES(mu_) {
    Learned learned = limits_.learned;
    limits_ = Limits{};
    if (quota_) {
      limits_.known = true;
      limits_.quota = *quota_;
    } else if (unknown_.policy == UnknownModelPolicy::default_quota) {
      limits_.known = true;
      limits_.quota = unknown_.quota;
    } else {
      limits_.deny_unknown = unknown_.policy == UnknownModelPolicy::deny;
    }
    limits_.learned = learned;
  }

  const std::uint64_t nonce_;
  const std::shared_ptr<Clock> clock_;
  Mutex mu_;
  bool closed_ RL_GUARDED_BY(mu_) = false;
  std::optional<ModelQuota> quota_ RL_GUARDED_BY(mu_);
  UnknownModels unknown_ RL_GUARDED_BY(mu_);
  Limits limits_ RL_GUARDED_BY(mu_);  // what applies (quota_ or unknown_) and what was learned
  Window window_ RL_GUARDED_BY(mu_);
};

class MemoryStore final : public Store {
 public:
  MemoryStore(const Config& config, std::unique_ptr<SnapshotStore> snapshots)
      : clock_(config.clock),
        snapshots_(std::move(snapshots)),
        warn_(config.on_warning),
        recover_corrupt_(config.recover_corrupt) {
    std::random_device rd;
    nonce_ = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
    unknown_ = config.unknown_models;
    aliases_ = merged_aliases(config);
    for (const auto& [model, q] : merged_quotas(config)) slot(model)->set_quota(q);
  }

  ~MemoryStore() override { close_all(); }

  std::shared_ptr<StoreModel> model(std::string_view name) override {
    return slot(name)->shared_from_this();
  }
  StoreModel* find(std::string_view name) override { return table_.find(name); }
  Decision decide_unseen(std::string_view name, TokenEstimate estimate) override {
    (void)name;
    Limits limits;
    {
      MutexLock lock(config_mu_);
      if (unknown_.policy == UnknownModelPolicy::default_quota) {
        limits.known = true;
        limits.quota = unknown_.quota;
      } else {
        limits.deny_unknown = unknown_.policy == UnknownModelPolicy::deny;
      }
    }
    // No handle: no usage and nothing learned. The probe is never asked (the window is empty).
    Window empty;
    return empty.evaluate(limits, estimate, to_ns(clock_->now()));
  }
  StoreModel* at_index(std::uint32_t index) override { return table_.at_index(index); }

  std::vector<std::shared_ptr<StoreModel>> handles() override {
    auto all = table_.all();
    return {all.begin(), all.end()};
  }

  Result<Found> find_entry(std::string_view id, const char* operation) override {
    auto not_found = [&] {
      return tl::unexpected(unknown_reservation_id(operation, id, "this limiter"));
    };
    std::uint64_t fields[4];
    std::string_view rest = id;
    for (int i = 0; i < 4; ++i) {
      const std::size_t dash = i < 3 ? rest.find('-') : rest.size();
      if (dash == std::string_view::npos || dash == 0 || dash > 16) return not_found();
      const std::string_view part = rest.substr(0, dash);
      auto r = std::from_chars(part.data(), part.data() + part.size(), fields[i], 16);
      if (r.ec != std::errc() || r.ptr != part.data() + part.size()) return not_found();
      rest = i < 3 ? rest.substr(dash + 1) : std::string_view();
    }
    if (fields[0] != nonce_) return not_found();
    MemoryModel* slot = table_.at_index(fields[1]);
    const EntryRef entry{fields[2], fields[3]};
    // Only the canonical spelling is an id (no leading zeros, lower-case hex).
    if (slot == nullptr || slot->format_id(entry) != id) return not_found();
    return Found{slot->shared_from_this(), entry};
  }

  Result<ModelStats> stats(std::string_view name) override {
    MemoryModel* slot = table_.find(name);
    if (slot == nullptr) return ModelStats{};
    return slot->stats();
  }

  Result<std::map<std::string, ModelStats, std::less<>>> all_stats() override {
    std::map<std::string, ModelStats, std::less<>> out;
    for (const auto& slot : table_.all()) {
      if (auto s = slot->stats_if_shown()) out.emplace(slot->name, *s);
    }
    return out;
  }

  Status visit_stats(const StatsVisitor& visit) override {
    for (const auto& slot : table_.all()) {
      if (auto s = slot->stats_if_shown()) {
        visit(slot->name, *s, slot.get());
      } else if (slot->counters.any()) {
        visit(slot->name, slot->stats(), slot.get());
      }
    }
    return {};
  }

  Result<std::optional<ModelQuota>> quota(std::string_view name) override {
    MemoryModel* slot = table_.find(name);
    if (slot == nullptr) return std::optional<ModelQuota>();
    return slot->quota();
  }
  Result<QuotaMap> quotas() override {
    QuotaMap out;
    for (const auto& slot : table_.all()) {
      if (auto q = slot->quota()) out.emplace(slot->name, *q);
    }
    return out;
  }
  Status set_quotas(const QuotaMap& quotas, const char* operation) override {
    (void)operation;
    for (const auto& [model, q] : quotas) slot(model)->set_quota(q);
    bump_epoch();
    return {};
  }

  Status set_profile(const QuotaMap& quotas, const AliasMap& aliases,
                     const char* operation) override {
    // Nothing here can fail: the two steps are all or nothing.
    if (auto s = set_quotas(quotas, operation); !s) return s;
    return set_aliases(aliases, operation);
  }

  std::uint64_t config_epoch() override { return epoch_.load(std::memory_order_acquire); }

  Result<AliasMap> aliases() override {
    MutexLock lock(config_mu_);
    return aliases_;
  }
  Result<std::optional<std::string>> alias(std::string_view name) override {
    MutexLock lock(config_mu_);
    auto it = aliases_.find(name);
    if (it == aliases_.end()) return std::optional<std::string>();
    return std::optional<std::string>(it->second);
  }
  Status set_aliases(const AliasMap& aliases, const char* operation) override {
    (void)operation;
    {
      MutexLock lock(config_mu_);
      for (const auto& [name, target] : aliases) aliases_[name] = target;
    }
    bump_epoch();
    return {};
  }
  Status remove_alias(std::string_view name) override {
    {
      MutexLock lock(config_mu_);
      auto it = aliases_.find(name);
      if (it == aliases_.end()) {
        return make_error(ErrorCode::not_found,
                          "ratelimit.remove_alias: " + quoted(name) + " has no alias");
      }
      aliases_.erase(it);
    }
    bump_epoch();
    return {};
  }
  Result<UnknownModels> unknown_models() override {
    MutexLock lock(config_mu_);
    return unknown_;
  }
  Status set_unknown_models(const UnknownModels& policy) override {
    {
      MutexLock lock(config_mu_);
      unknown_ = policy;
      // Under config_mu_, so that a model made meanwhile cannot miss the new policy.
      for (const auto& slot : table_.all()) slot->set_unknown_models(policy);
    }
    bump_epoch();
    return {};
  }
  Status remove_quota(std::string_view name) override {
    MemoryModel* slot = table_.find(name);
    if (slot == nullptr || !slot->quota()) {
      return make_error(ErrorCode::not_found,
                        "ratelimit.remove_quota: " + quoted(name) + " has no quota");
    }
    slot->set_quota(std::nullopt);
    bump_epoch();
    return {};
  }

  Status reset(std::string_view name) override {
    if (name.empty()) {
      for (const auto& slot : table_.all()) slot->clear();
    } else if (MemoryModel* slot = table_.find(name)) {
      slot->clear();
    }
    return {};
  }

  Status persist() override {
    MutexLock lock(store_mu_);
    if (closed_) return tl::unexpected(closed_error("ratelimit.persist"));
    if (snapshots_ == nullptr) return {};
    Snapshot snapshot;
    for (const auto& slot : table_.all()) slot->export_to(snapshot);
    {
      MutexLock config_lock(config_mu_);
      snapshot.aliases = aliases_;
      if (unknown_ != UnknownModels{}) snapshot.unknown_models = unknown_;
    }
    return snapshots_->save(snapshot);
  }

  Status load() override {
    MutexLock lock(store_mu_);
    if (closed_) return tl::unexpected(closed_error("ratelimit.load"));
    if (snapshots_ == nullptr) return {};
    auto loaded = snapshots_->load();
    if (!loaded && loaded.error().code == ErrorCode::corrupt_state && recover_corrupt_) {
      // Config::recover_corrupt: the damaged file is kept aside, never deleted, and the
      // limiter starts with no usage (as the SQLite store does).
      auto aside = snapshots_->move_aside();
      if (!aside) return tl::unexpected(aside.error());
      warn("ratelimit.load: moved the damaged state file aside to " + *aside + " (" +
           loaded.error().message + "); starting with no usage");
      loaded = std::optional<Snapshot>();
    }
    if (!loaded) return tl::unexpected(loaded.error());
    if (!loaded->has_value()) return {};  // nothing stored yet
    Snapshot snapshot = std::move(**loaded);
    drop_invalid_names(snapshot);
    for (const auto& [model, q] : snapshot.quotas) {
      if (auto why = validate_quota("load", model, q)) {
        return make_error(ErrorCode::corrupt_state, *why);
      }
    }
    // Every model in the file gets a slot first, so the swap below cannot fail half-way.
    for (const auto& [model, q] : snapshot.quotas) slot(model);
    for (const auto& [model, state] : snapshot.state) slot(model);
    for (const auto& [model, learned] : snapshot.learned) slot(model);
    {
      MutexLock config_lock(config_mu_);
      for (const auto& [name, target] : snapshot.aliases) aliases_[name] = target;
      if (snapshot.unknown_models) unknown_ = *snapshot.unknown_models;
      for (const auto& slot : table_.all()) {
        slot->import_from(snapshot, /*replace_quota=*/!snapshot.quotas.empty());
      }
    }
    bump_epoch();
    return {};
  }

  Status close() override {
    {
      MutexLock lock(store_mu_);
      if (closed_) return {};
      closed_ = true;
    }
    close_all();
    return {};
  }

  std::uint64_t names_skipped() const override {
    return skipped_names_.load(std::memory_order_relaxed);
  }

  bool shared() const override { return false; }
  bool wait_for_change(std::chrono::milliseconds max_wait, std::stop_token stop) override {
    (void)max_wait;
    (void)stop;
    return false;  // nothing else changes an in-process store (the limiter is never asked)
  }

 private:
  MemoryModel* slot(std::string_view name) {
    if (MemoryModel* found = table_.find(name)) return found;
    MutexLock lock(config_mu_);  // a new model starts with the policy in force
    const UnknownModels policy = unknown_;
    return table_.find_or_add(name, [&](std::string n, std::size_t h, std::uint32_t i) {
      auto m = std::make_shared<MemoryModel>(std::move(n), h, i, nonce_, clock_);
      m->set_unknown_models(policy);
      return m;
    });
  }
  void bump_epoch() { epoch_.fetch_add(1, std::memory_order_acq_rel); }

  void close_all() {
    for (const auto& slot : table_.all()) slot->close();
  }

  // A file may hold names the model-name rule refuses (written by another tool or an older
  // release): they are skipped and reported, never the whole file.
  void drop_invalid_names(Snapshot& snapshot) {
    std::size_t dropped = 0;
    auto drop = [&](auto& map, const char* what) {
      for (auto it = map.begin(); it != map.end();) {
        if (auto problem = model_name_problem(it->first)) {
          warn("ratelimit.load: skipped the " + std::string(what) + " of " + quoted(it->first) +
               ": the name " + *problem);
          ++dropped;
          it = map.erase(it);
        } else {
          ++it;
        }
      }
    };
    std::set<std::string> names;
    for (const auto& [name, q] : snapshot.quotas) names.insert(name);
    for (const auto& [name, st] : snapshot.state) names.insert(name);
    drop(snapshot.quotas, "quota");
    drop(snapshot.state, "usage");
    std::size_t invalid = 0;
    for (const auto& name : names) invalid += model_name_problem(name) ? 1 : 0;
    (void)dropped;
    skipped_names_ += invalid;
  }

  void warn(const std::string& message) {
    if (warn_) warn_(message);
  }

  std::shared_ptr<Clock> clock_;
  std::uint64_t nonce_ = 0;
  ModelTable<MemoryModel> table_;
  Mutex config_mu_;  // aliases and the unknown-model policy
  AliasMap aliases_ RL_GUARDED_BY(config_mu_);
  UnknownModels unknown_ RL_GUARDED_BY(config_mu_);
  std::atomic<std::uint64_t> epoch_{0};
  Mutex store_mu_;  // serialises persist, load and close
  bool closed_ RL_GUARDED_BY(store_mu_) = false;
  std::unique_ptr<SnapshotStore> snapshots_;
  std::function<void(std::string_view)> warn_;
  const bool recover_corrupt_;
  std::atomic<std::uint64_t> skipped_names_{0};
};

}  // namespace

std::unique_ptr<Store> make_memory_store(const Config& config,
                                         std::unique_ptr<SnapshotStore> snapshots) {
  return std::make_unique<MemoryStore>(config, std::move(snapshots));
}

}  // namespace ratelimit::detail
