// The in-process engine (Backend::memory and Backend::yaml): one Window per model, each behind
// its own mutex; a lock-free model table; waiting with exact wake-ups and early wake on release.
#include <algorithm>
#include <charconv>
#include <condition_variable>
#include <list>
#include <mutex>
#include <random>
#include <stop_token>

#include "limiter/engine.h"
#include "limiter/metrics_counters.h"
#include "core/model_table.h"
#include "core/window.h"

namespace ratelimit::detail {
namespace {

// One thread waiting on a model (acquire or wait_for_capacity). Guarded by the model's mutex.
struct Waiter {
  std::stop_source* wake = nullptr;  // set while the thread sleeps
};

class LocalEngine;

// Everything about one model. The window, quota, waiter lists and counters' writes are guarded
// by mu.
class alignas(64) ModelSlot final : public Settler, public std::enable_shared_from_this<ModelSlot> {
 public:
  ModelSlot(std::string model_name, std::size_t model_hash, std::uint32_t model_index,
            std::uint64_t limiter_nonce, std::shared_ptr<Clock> limiter_clock)
      : name(std::move(model_name)),
        hash(model_hash),
        index(model_index),
        nonce(limiter_nonce),
        clock(std::move(limiter_clock)) {}

  Status commit(std::uint64_t seq, std::uint64_t generation, std::int64_t prompt_tokens,
                std::int64_t output_tokens) override {
    (void)generation;
    return settle_commit(seq, usage_tokens(prompt_tokens, output_tokens), "ratelimit.commit");
  }
  Status cancel(std::uint64_t seq, std::uint64_t generation) override {
    return settle_cancel(seq, generation, /*from_reservation=*/true, "ratelimit.cancel");
  }
  std::string format_id(std::uint64_t seq, std::uint64_t generation) const override {
    // <nonce:16 hex>-<model index>-<seq>-<day generation>, all hex.
    char buf[96];
    char* p = buf;
    char* end = buf + sizeof(buf);
    auto put = [&](std::uint64_t v, bool pad16) {
      char digits[16];
      auto r = std::to_chars(digits, digits + sizeof(digits), v, 16);
      const auto n = static_cast<std::size_t>(r.ptr - digits);
      if (pad16) {
        for (std::size_t i = n; i < 16; ++i) *p++ = '0';
      }
      p = std::copy(digits, r.ptr, p);
    };
    put(nonce, true);
    *p++ = '-';
    put(index, false);
    *p++ = '-';
    put(seq, false);
    *p++ = '-';
    put(generation, false);
    (void)end;
    return std::string(buf, p);
  }

  Status settle_commit(std::uint64_t seq, std::int64_t tokens, const char* operation) {
    std::lock_guard lock(mu);
    if (closed) return closed_error(operation);
    window.advance(clock->now().time_since_epoch().count());  // an entry that left is gone
    bool lowered = false;
    const SettleOutcome outcome = window.commit(seq, tokens, &lowered);
    if (lowered) notify_locked();
    if (settled(outcome)) counters.committed(tokens);
    return outcome_status(outcome, operation);
  }

  Status settle_cancel(std::uint64_t seq, std::uint64_t generation, bool from_reservation,
                       const char* operation) {
    std::lock_guard lock(mu);
    if (closed) return closed_error(operation);
    window.advance(clock->now().time_since_epoch().count());
    const SettleOutcome outcome = window.cancel(seq, generation, from_reservation);
    if (outcome == SettleOutcome::ok) notify_locked();
    if (settled(outcome)) counters.cancelled();
    return outcome_status(outcome, operation);
  }

  // Wakes every sleeping waiter so it re-checks (capacity was released or quotas changed).
  void notify_locked() {
    for (Waiter* w : queue) {
      if (w->wake != nullptr) w->wake->request_stop();
    }
    for (Waiter* w : watchers) {
      if (w->wake != nullptr) w->wake->request_stop();
    }
  }
  void notify_queue_except_head_locked() {
    for (auto it = queue.begin(); it != queue.end(); ++it) {
      if (it != queue.begin() && (*it)->wake != nullptr) (*it)->wake->request_stop();
    }
  }

  // The decision at `now` (prunes first). REQUIRES: mu held.
  Decision evaluate_locked(std::int64_t estimated_tokens, std::int64_t now_ns) {
    window.advance(now_ns);
    const ModelQuota limits = has_quota ? quota : ModelQuota{};
    if (estimated_tokens < 0) {
      Decision d;
      d.code = DecisionCode::invalid_tokens;
      d.stats = window.stats(limits);
      return d;
    }
    if (!has_quota || (quota.max_rpm == 0 && quota.max_tpm == 0 && quota.max_rpd == 0)) {
      Decision d;
      d.allowed = true;
      d.code = has_quota ? DecisionCode::unlimited : DecisionCode::unknown_model;
      d.stats = window.stats(limits);
      return d;
    }
    return window.evaluate(quota, estimated_tokens, now_ns);
  }

  // True when `estimated_tokens` alone exceeds the token limit, so no wait can help.
  // REQUIRES: mu held.
  bool never_fits_locked(std::int64_t estimated_tokens) const {
    return has_quota && quota.max_tpm > 0 && estimated_tokens > quota.max_tpm;
  }

  ModelStats stats_locked(std::int64_t now_ns) {
    window.advance(now_ns);
    return window.stats(has_quota ? quota : ModelQuota{});
  }

  const std::string name;
  const std::size_t hash;
  const std::uint32_t index;
  const std::uint64_t nonce;
  const std::shared_ptr<Clock> clock;

  std::mutex mu;
  bool closed = false;  // the limiter is gone
  bool has_quota = false;
  ModelQuota quota;
  Window window;
  std::list<Waiter*> queue;     // acquire(), in arrival order; the front is served first
  std::list<Waiter*> watchers;  // wait_for_capacity()
  TimePoint head_wake{};        // when the front of `queue` expects capacity
  ModelCounters counters;       // written under mu

 private:
  // Whether a commit/cancel succeeded for its caller: `gone` (the entry left the window, so
  // nothing changes) is an ok settle too, and counts as one.
  static bool settled(SettleOutcome outcome) {
    return outcome == SettleOutcome::ok || outcome == SettleOutcome::gone;
  }
  static Status closed_error(const char* operation) {
    return make_error(ErrorCode::closed, std::string(operation) +
                                             ": the limiter that granted this reservation is "
                                             "gone; nothing was changed");
  }
  static Status outcome_status(SettleOutcome outcome, const char* operation) {
    switch (outcome) {
      case SettleOutcome::ok:
      case SettleOutcome::gone:
        return {};
      case SettleOutcome::already_settled:
        return make_error(ErrorCode::invalid_argument,
                          std::string(operation) +
                              ": the reservation is already settled (commit or cancel it once)");
      case SettleOutcome::not_issued:
        break;
    }
    return make_error(ErrorCode::not_found,
                      std::string(operation) + ": no such reservation in this limiter");
  }
};

class LocalEngine final : public Engine {
 public:
  LocalEngine(Config config, std::unique_ptr<SnapshotStore> store)
      : config_(std::move(config)), clock_(config_.clock), store_(std::move(store)) {
    std::random_device rd;
    nonce_ = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
    for (const auto& [model, q] : merged_quotas(config_)) {
      ModelSlot* slot = slot_for(model);
      std::lock_guard lock(slot->mu);
      slot->has_quota = true;
      slot->quota = q;
    }
  }

  ~LocalEngine() override {
    for (const auto& slot : table_.all()) {
      std::lock_guard lock(slot->mu);
      slot->closed = true;
      slot->notify_locked();
    }
  }

  Decision decide(std::string_view model, std::int64_t estimated_tokens) override {
    ModelSlot* slot = table_.find(model);
    if (slot == nullptr) {
      Decision d;
      d.allowed = estimated_tokens >= 0;
      d.code = d.allowed ? DecisionCode::unknown_model : DecisionCode::invalid_tokens;
      return d;
    }
    std::lock_guard lock(slot->mu);
    return slot->evaluate_locked(estimated_tokens, now_ns());
  }

  Status record_usage(std::string_view model, std::int64_t prompt_tokens,
                      std::int64_t output_tokens) override {
    ModelSlot* slot = slot_for(model);
    std::lock_guard lock(slot->mu);
    const std::int64_t now = now_ns();
    const std::int64_t tokens = usage_tokens(prompt_tokens, output_tokens);
    slot->window.advance(now);
    slot->window.append(now, tokens, EntryKind::recorded);
    slot->counters.recorded(tokens);
    return {};
  }

  Reservation try_acquire(std::string_view model, std::int64_t estimated_tokens) override {
    // A negative estimate too gets a slot (once per model name), for its invalid_tokens count.
    ModelSlot* slot = slot_for(model);
    std::unique_lock lock(slot->mu);
    Reservation r = grant_locked(*slot, estimated_tokens, now_ns());
    slot->counters.decided(r.decision(), estimated_tokens);
    return r;
  }

  Result<Reservation> acquire(std::string_view model, std::int64_t estimated_tokens,
                              const WaitOptions& options) override {
    const std::optional<TimePoint> deadline = deadline_of(options);
    // Every return below counts the call once, under the slot's mutex.
    ModelSlot* slot = slot_for(model);
    std::unique_lock lock(slot->mu);
    if (estimated_tokens < 0) {
      slot->counters.request(RequestOutcome::invalid_tokens);
      return make_error(ErrorCode::invalid_argument,
                        "ratelimit.acquire: estimated tokens must be non-negative (got " +
                            std::to_string(estimated_tokens) + ")");
    }
    Waiter self;
    slot->queue.push_back(&self);
    const auto position = std::prev(slot->queue.end());
    auto leave = [&] {
      const bool was_head = slot->queue.begin() == position;
      slot->queue.erase(position);
      if (was_head) slot->notify_locked();  // the next in line becomes the head
    };
    for (;;) {
      const TimePoint now = clock_->now();
      std::optional<TimePoint> wake;
      if (slot->never_fits_locked(estimated_tokens)) {
        leave();
        slot->counters.request(RequestOutcome::tpm_exceeded);
        return make_error(
            ErrorCode::never_satisfiable,
            "ratelimit.acquire: " + quoted(model) + ": " + std::to_string(estimated_tokens) +
                " tokens can never fit within max_tpm " + std::to_string(slot->quota.max_tpm));
      }
      if (slot->queue.front() == &self) {
        Reservation r = grant_locked(*slot, estimated_tokens, to_ns(now));
        if (r.granted()) {
          leave();
          slot->counters.decided(r.decision(), estimated_tokens);
          return r;
        }
        wake = add_saturating(now, r.decision().retry_after);
        if (slot->head_wake != *wake) {
          slot->head_wake = *wake;
          slot->notify_queue_except_head_locked();
        }
      } else if (slot->head_wake > now) {
        wake = slot->head_wake;
      }
      if (deadline && now >= *deadline) {
        leave();
        slot->counters.request(RequestOutcome::deadline_exceeded);
        return make_error(ErrorCode::deadline_exceeded,
                          "ratelimit.acquire: " + quoted(model) +
                              ": no capacity before the deadline (raise the timeout, or lower "
                              "the estimate)");
      }
      if (options.stop.stop_requested()) {
        leave();
        slot->counters.request(RequestOutcome::cancelled);
        return make_error(ErrorCode::cancelled,
                          "ratelimit.acquire: " + quoted(model) + ": cancelled while waiting");
      }
      // A waiter behind the head with no known wake time sleeps until the head acts.
      sleep_locked(*slot, self, lock, wake, wake ? deadline : std::nullopt, options.stop);
    }
  }

  Status wait_for_capacity(std::string_view model, std::int64_t tokens,
                           const WaitOptions& options) override {
    if (tokens < 0) {
      return make_error(ErrorCode::invalid_argument,
                        "ratelimit.wait_for_capacity: tokens must be non-negative (got " +
                            std::to_string(tokens) + ")");
    }
    const std::optional<TimePoint> deadline = deadline_of(options);
    ModelSlot* slot = table_.find(model);
    if (slot == nullptr) return {};  // no quota: allowed
    std::unique_lock lock(slot->mu);
    Waiter self;
    slot->watchers.push_back(&self);
    const auto position = std::prev(slot->watchers.end());
    for (;;) {
      const TimePoint now = clock_->now();
      const Decision d = slot->evaluate_locked(tokens, to_ns(now));
      if (d.allowed) break;
      if (d.retry_after == Duration::max()) {
        slot->watchers.erase(position);
        return make_error(ErrorCode::never_satisfiable,
                          "ratelimit.wait_for_capacity: " + quoted(model) + ": " +
                              std::to_string(tokens) + " tokens can never fit within max_tpm " +
                              std::to_string(slot->quota.max_tpm));
      }
      if (deadline && now >= *deadline) {
        slot->watchers.erase(position);
        return make_error(
            ErrorCode::deadline_exceeded,
            "ratelimit.wait_for_capacity: " + quoted(model) + ": no capacity before the deadline");
      }
      if (options.stop.stop_requested()) {
        slot->watchers.erase(position);
        return make_error(ErrorCode::cancelled, "ratelimit.wait_for_capacity: " + quoted(model) +
                                                    ": cancelled while waiting");
      }
      sleep_locked(*slot, self, lock, add_saturating(now, d.retry_after), deadline, options.stop);
    }
    slot->watchers.erase(position);
    return {};
  }

  Status commit(std::string_view id, std::int64_t prompt_tokens,
                std::int64_t output_tokens) override {
    auto parsed = parse_id(id, "ratelimit.commit");
    if (!parsed) return tl::unexpected(parsed.error());
    return parsed->slot->settle_commit(parsed->seq, usage_tokens(prompt_tokens, output_tokens),
                                       "ratelimit.commit");
  }

  Status cancel(std::string_view id) override {
    auto parsed = parse_id(id, "ratelimit.cancel");
    if (!parsed) return tl::unexpected(parsed.error());
    return parsed->slot->settle_cancel(parsed->seq, parsed->generation,
                                       /*from_reservation=*/false, "ratelimit.cancel");
  }

  Result<ModelStats> stats(std::string_view model) override {
    ModelSlot* slot = table_.find(model);
    if (slot == nullptr) return ModelStats{};
    std::lock_guard lock(slot->mu);
    return slot->stats_locked(now_ns());
  }

  Result<std::map<std::string, ModelStats, std::less<>>> all_stats() override {
    std::map<std::string, ModelStats, std::less<>> out;
    for (const auto& slot : table_.all()) {
      std::lock_guard lock(slot->mu);
      const ModelStats s = slot->stats_locked(now_ns());
      if (slot->has_quota || !slot->window.idle()) out.emplace(slot->name, s);
    }
    return out;
  }

  Result<std::map<std::string, ModelMetrics, std::less<>>> metrics() override {
    std::map<std::string, ModelMetrics, std::less<>> out;
    for (const auto& slot : table_.all()) {
      // Under the mutex the counters are one consistent cut with the stats.
      std::lock_guard lock(slot->mu);
      const ModelStats s = slot->stats_locked(now_ns());
      if (slot->has_quota || !slot->window.idle() || slot->counters.any()) {
        ModelMetrics m = slot->counters.snapshot();
        m.stats = s;
        out.emplace(slot->name, m);
      }
    }
    return out;
  }

  Result<std::vector<std::string>> models() override {
    std::vector<std::string> out;
    for (const auto& slot : table_.all()) {
      std::lock_guard lock(slot->mu);
      slot->window.advance(now_ns());
      if (slot->has_quota || !slot->window.idle()) out.push_back(slot->name);
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  std::optional<ModelQuota> quota(std::string_view model) override {
    ModelSlot* slot = table_.find(model);
    if (slot == nullptr) return std::nullopt;
    std::lock_guard lock(slot->mu);
    if (!slot->has_quota) return std::nullopt;
    return slot->quota;
  }

  QuotaMap quotas() override {
    QuotaMap out;
    for (const auto& slot : table_.all()) {
      std::lock_guard lock(slot->mu);
      if (slot->has_quota) out.emplace(slot->name, slot->quota);
    }
    return out;
  }

  Status set_quota(std::string_view model, ModelQuota q) override {
    if (auto why = validate_quota("set_quota", model, q)) {
      return make_error(ErrorCode::invalid_argument, *why);
    }
    ModelSlot* slot = slot_for(model);
    std::lock_guard lock(slot->mu);
    slot->has_quota = true;
    slot->quota = q;
    slot->notify_locked();
    return {};
  }

  Status remove_quota(std::string_view model) override {
    ModelSlot* slot = table_.find(model);
    if (slot != nullptr) {
      std::lock_guard lock(slot->mu);
      if (slot->has_quota) {
        slot->has_quota = false;
        slot->quota = {};
        slot->notify_locked();
        return {};
      }
    }
    return make_error(ErrorCode::not_found,
                      "ratelimit.remove_quota: " + quoted(model) + " has no quota");
  }

  Status add_provider(Provider provider) override {
    const auto profiles = default_profiles();
    auto it = profiles.find(provider);
    if (it == profiles.end()) return {};  // unknown provider: a no-op (seed rule)
    for (const auto& [model, q] : it->second.models) {
      if (auto s = set_quota(model, q); !s) return s;
    }
    return {};
  }

  Status reset(std::string_view model) override {
    if (model.empty()) {
      for (const auto& slot : table_.all()) clear(*slot);
      return {};
    }
    if (ModelSlot* slot = table_.find(model)) clear(*slot);
    return {};
  }

  Status persist() override {
    std::lock_guard store_lock(store_mu_);
    if (closed_) return closed_error("ratelimit.persist");
    if (store_ == nullptr) return {};
    Snapshot snapshot;
    for (const auto& slot : table_.all()) {
      std::lock_guard lock(slot->mu);
      slot->window.advance(now_ns());
      if (slot->has_quota) snapshot.quotas.emplace(slot->name, slot->quota);
      if (!slot->window.idle()) snapshot.state.emplace(slot->name, slot->window.export_state());
    }
    return store_->save(snapshot);
  }

  Status load() override {
    std::lock_guard store_lock(store_mu_);
    if (closed_) return closed_error("ratelimit.load");
    if (store_ == nullptr) return {};
    auto loaded = store_->load();
    if (!loaded) return tl::unexpected(loaded.error());
    if (!loaded->has_value()) return {};  // nothing stored yet
    const Snapshot& snapshot = **loaded;
    for (const auto& [model, q] : snapshot.quotas) {
      if (auto why = validate_quota("load", model, q)) {
        return make_error(ErrorCode::corrupt_state, *why);
      }
    }
    // Every model in the file gets a slot first, so the swap below cannot fail half-way.
    for (const auto& [model, q] : snapshot.quotas) slot_for(model);
    for (const auto& [model, state] : snapshot.state) slot_for(model);
    for (const auto& slot : table_.all()) {
      std::lock_guard lock(slot->mu);
      const std::int64_t now = now_ns();
      if (!snapshot.quotas.empty()) {
        auto q = snapshot.quotas.find(slot->name);
        slot->has_quota = q != snapshot.quotas.end();
        slot->quota = slot->has_quota ? q->second : ModelQuota{};
      }
      auto s = snapshot.state.find(slot->name);
      if (s != snapshot.state.end()) {
        slot->window.import_state(s->second, now);
      } else {
        slot->window.clear();
      }
      slot->notify_locked();
    }
    return {};
  }

  Status close() override {
    std::lock_guard store_lock(store_mu_);
    closed_ = true;
    return {};
  }

  const Config& config() const override { return config_; }

 private:
  struct ParsedId {
    ModelSlot* slot;
    std::uint64_t seq;
    std::uint64_t generation;
  };

  std::int64_t now_ns() const { return to_ns(clock_->now()); }

  ModelSlot* slot_for(std::string_view model) {
    return table_.find_or_add(model, [this](std::string name, std::size_t h, std::uint32_t i) {
      return std::make_shared<ModelSlot>(std::move(name), h, i, nonce_, clock_);
    });
  }

  std::optional<TimePoint> deadline_of(const WaitOptions& options) const {
    if (!options.timeout) return std::nullopt;
    return add_saturating(clock_->now(), *options.timeout);
  }

  // Checks and, when allowed, records a reserved entry. REQUIRES: slot.mu held.
  Reservation grant_locked(ModelSlot& slot, std::int64_t estimated_tokens, std::int64_t now) {
    Decision d = slot.evaluate_locked(estimated_tokens, now);
    if (!d.allowed) return denied(d);
    const std::uint64_t seq = slot.window.append(now, estimated_tokens, EntryKind::reserved);
    return granted(d, slot.shared_from_this(), seq, slot.window.generation());
  }

  // Sleeps until `wake`/`deadline` (whichever is first; neither: until notified), or until
  // notified or `stop` is requested. REQUIRES: slot.mu held through `lock`; held again on return.
  void sleep_locked(ModelSlot& slot, Waiter& self, std::unique_lock<std::mutex>& lock,
                    std::optional<TimePoint> wake, std::optional<TimePoint> deadline,
                    const std::stop_token& stop) {
    std::stop_source source;
    self.wake = &source;
    std::stop_callback on_stop(stop, [&source] { source.request_stop(); });
    lock.unlock();
    std::optional<TimePoint> until = wake;
    if (deadline && (!until || *deadline < *until)) until = deadline;
    if (until) {
      clock_->sleep_until(*until, source.get_token());
    } else {
      block_until_stopped(source.get_token());
    }
    lock.lock();
    self.wake = nullptr;
    (void)slot;
  }

  void clear(ModelSlot& slot) {
    std::lock_guard lock(slot.mu);
    slot.window.clear();
    slot.notify_locked();
  }

  Result<ParsedId> parse_id(std::string_view id, const char* operation) const {
    auto not_found = [&] {
      return make_error(ErrorCode::not_found,
                        std::string(operation) + ": unknown reservation id \"" + std::string(id) +
                            "\" (ids come from Reservation::id() of this limiter)");
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
    ModelSlot* slot = table_.at_index(fields[1]);
    // Only the canonical spelling is an id (no leading zeros, lower-case hex).
    if (slot == nullptr || slot->format_id(fields[2], fields[3]) != id) return not_found();
    return ParsedId{slot, fields[2], fields[3]};
  }

  static Status closed_error(const char* operation) {
    return make_error(ErrorCode::closed,
                      std::string(operation) + ": the limiter is closed (open a new one)");
  }

  Config config_;
  std::shared_ptr<Clock> clock_;
  std::uint64_t nonce_ = 0;
  ModelTable<ModelSlot> table_;
  std::mutex store_mu_;  // serialises persist, load and close
  std::unique_ptr<SnapshotStore> store_;
  bool closed_ = false;  // guarded by store_mu_
};

}  // namespace

std::unique_ptr<Engine> make_local_engine(Config config, std::unique_ptr<SnapshotStore> store) {
  return std::make_unique<LocalEngine>(std::move(config), std::move(store));
}

}  // namespace ratelimit::detail
