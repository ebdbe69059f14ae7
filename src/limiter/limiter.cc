// RateLimiter: the limiter written once for every store. Validation, counting outside the
// store's atomic step and waking waiters happen here; the store only stores (store/store.h).
#include "ratelimit/limiter.h"

#include <algorithm>
#include <iostream>

#include "core/rules.h"
#include "limiter/limiter_core.h"
#include "limiter/validation.h"
#include "limiter/waiting.h"
#include "ratelimit/model_name.h"

namespace ratelimit {

namespace detail {

LimiterCore::LimiterCore(Config resolved, std::unique_ptr<Store> opened)
    : config(std::move(resolved)), clock(config.clock), store(std::move(opened)) {}

LimiterCore::~LimiterCore() {
  closed.store(true, std::memory_order_release);
  std::unique_ptr<WaiterService> stopping_service;
  {
    MutexLock lock(watcher_mu);
    stopping_service = std::move(service_);
  }
  if (stopping_service) stopping_service->shutdown();  // pending acquire_async: `closed`
  std::jthread stopping;
  {
    MutexLock lock(watcher_mu);
    stopping = std::move(watcher);
  }
  if (stopping.joinable()) {
    stopping.request_stop();
    stopping.join();
  }
  store->close();
  wake_everyone();
}

WaiterService& LimiterCore::service() {
  MutexLock lock(watcher_mu);
  if (!service_) service_ = std::make_unique<WaiterService>(clock);
  return *service_;
}

std::unique_ptr<RateLimiter> LimiterCore::make_limiter(std::unique_ptr<LimiterCore> core) {
  return std::unique_ptr<RateLimiter>(new RateLimiter(std::move(core)));
}

Result<StoreModel*> LimiterCore::model_for(std::string_view name, const char* operation) {
  StoreModel* own = store->find(name);  // a name in the table is valid
  if (own == nullptr) {
    if (auto s = check_name(name, operation); !s) return tl::unexpected(s.error());
  }
  return target_of(name, own, /*create=*/true, operation);
}

namespace {

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// One trailing version suffix of the family rule, or 0 when `name` has none: -YYYY-MM-DD,
// -YYYYMMDD, -latest, -NNN, -vN. Never the whole name.
std::size_t version_suffix(std::string_view name) {
  auto ends = [&](std::size_t n) { return name.size() > n ? name.substr(name.size() - n) : ""; };
  if (std::string_view t = ends(11); t.size() == 11 && t[0] == '-' && t[5] == '-' && t[8] == '-' &&
                                     all_digits(t.substr(1, 4)) && all_digits(t.substr(6, 2)) &&
                                     all_digits(t.substr(9, 2))) {
    return 11;
  }
  if (std::string_view t = ends(9); t.size() == 9 && t[0] == '-' && all_digits(t.substr(1))) {
    return 9;
  }
  if (ends(7) == "-latest") return 7;
  if (std::string_view t = ends(4); t.size() == 4 && t[0] == '-' && all_digits(t.substr(1))) {
    return 4;
  }
  const std::size_t dash = name.rfind("-v");
  if (dash != std::string_view::npos && dash > 0 && all_digits(name.substr(dash + 2))) {
    return name.size() - dash;
  }
  return 0;
}

constexpr int kMaxAliasHops = 8;

}  // namespace

Result<std::optional<std::string>> LimiterCore::resolve_name(std::string_view name,
                                                             const char* operation) {
  using Found = std::optional<std::string>;
  // The store's reads name their own operation: the caller's is the one to report.
  auto named = [&](Error e) {
    const std::size_t colon = e.message.find(": ");
    if (e.message.starts_with("ratelimit.") && colon != std::string::npos) {
      e.message = operation + e.message.substr(colon);
    }
    return tl::unexpected(std::move(e));
  };
  // An exact name with a quota, or an alias (followed while its target has none).
  auto exact = [&](std::string_view candidate) -> Result<Found> {
    std::string current(candidate);
    for (int hop = 0; hop <= kMaxAliasHops; ++hop) {
      auto q = store->quota(current);
      if (!q) return named(q.error());
      if (q->has_value()) return Found(current);
      auto a = store->alias(current);
      if (!a) return named(a.error());
      if (!a->has_value() || **a == current) return hop == 0 ? Found() : Found(current);
      current = **a;
    }
    return Found(current);  // a cycle: the name it stopped at
  };
  auto found = exact(name);
  if (!found || found->has_value()) return found;
  std::string_view family = name;
  if (family.starts_with("models/") && family.size() > 7) {
    family.remove_prefix(7);
    found = exact(family);
    if (!found || found->has_value()) return found;
  }
  while (const std::size_t n = version_suffix(family)) {
    family.remove_suffix(n);
    found = exact(family);
    if (!found || found->has_value()) return found;
  }
  return Found();
}

void LimiterCore::report_unknown(std::string_view name, const char* operation) {
  {
    MutexLock lock(unknown_mu);
    if (unknown_names.size() >= kMaxUnknownReported || unknown_names.contains(name)) return;
    unknown_names.emplace(name);
  }
  unknown_models.fetch_add(1, std::memory_order_relaxed);
  if (config.on_warning) {
    config.on_warning(std::string(operation) + ": " + quoted(name) +
                      " has no quota (no alias or family match): the unknown-model policy "
                      "applies (set a quota or an alias)");
  }
}

Result<StoreModel*> LimiterCore::resolve_target(std::string_view name, StoreModel* own, bool create,
                                                const char* operation) {
  const std::uint64_t epoch = store->config_epoch();
  if (own != nullptr) {
    const std::uint64_t r = own->resolution.load(std::memory_order_acquire);
    if ((r >> 32) == (epoch & 0xffffffffu)) {
      const auto index = static_cast<std::uint32_t>(r);
      if (index == own->index) return own;
      if (StoreModel* t = store->at_index(index)) return t;
    }
  }
  auto resolved = resolve_name(name, operation);
  if (!resolved) {
    // A store that admits unchecked while it fails (Redis with fail_open) cannot resolve the
    // name either: the name's own handle (none for a read of an unseen name) is checked, and
    // that check, failing too, admits it unchecked. Nothing is cached: the name is resolved
    // again once the store answers.
    if (resolved.error().code == ErrorCode::unavailable && store->admits_unchecked()) {
      if (own == nullptr && create) own = store->model(name).get();
      return own;
    }
    return tl::unexpected(resolved.error());
  }
  StoreModel* target = nullptr;
  if (resolved->has_value() && **resolved != name) {
    target = store->model(**resolved).get();
    if (own == nullptr) own = store->model(name).get();  // the cache entry (a handle)
  } else {
    // Unseen and unknown: nothing is made (a name with a quota gets its handle).
    if (own == nullptr && !create && !resolved->has_value()) {
      report_unknown(name, operation);
      return nullptr;
    }
    if (own == nullptr) own = store->model(name).get();
    target = own;
    if (!resolved->has_value() && !own->unknown_reported.exchange(true)) {
      report_unknown(name, operation);
    }
  }
  own->resolution.store(((epoch & 0xffffffffu) << 32) | target->index, std::memory_order_release);
  return target;
}

Status LimiterCore::check_name(std::string_view name, const char* operation) {
  if (store->find(name) != nullptr) return {};
  if (auto error = check_model_name(std::string_view(operation).substr(10), name)) {
    invalid_model.fetch_add(1, std::memory_order_relaxed);
    return tl::unexpected(std::move(*error));
  }
  return {};
}

Error LimiterCore::closed_error(const char* operation) const {
  return Error{ErrorCode::closed,
               std::string(operation) + ": the limiter is closed (open a new one)"};
}

void LimiterCore::wake_everyone() {
  for (const auto& m : store->handles()) m->waiters.wake_all();
}

Status settle_entry(StoreModel& model, EntryRef entry, const SettleRequest& request) {
  bool released = false;
  Status s = model.settle(entry, request, &released);
  if (released) model.waiters.wake_all();
  return s;
}

}  // namespace detail

namespace {

using detail::CheckRequest;
using detail::StoreModel;

// Commit's argument check, for a Reservation and for an id alike (stores never see negatives).
Status check_commit_tokens(std::int64_t prompt_tokens, std::int64_t output_tokens) {
  if (prompt_tokens < 0 || output_tokens < 0) {
    return make_error(ErrorCode::invalid_argument,
                      "ratelimit.commit: token counts must be non-negative (got prompt " +
                          std::to_string(prompt_tokens) + ", output " +
                          std::to_string(output_tokens) + ")");
  }
  return {};
}

Decision invalid_tokens_decision() {
  Decision d;
  d.code = DecisionCode::invalid_tokens;
  return d;
}

Decision invalid_model_decision() {
  Decision d;
  d.code = DecisionCode::invalid_model;
  return d;
}

}  // namespace

// --- Reservation ---

Reservation::Reservation(Decision decision, std::shared_ptr<detail::StoreModel> model,
                         std::uint64_t seq, std::uint64_t generation)
    : decision_(std::move(decision)),
      model_(std::move(model)),
      seq_(seq),
      generation_(generation) {}

Reservation::Reservation(Reservation&& other) noexcept
    : decision_(std::exchange(other.decision_, Decision{})),
      model_(std::move(other.model_)),
      seq_(std::exchange(other.seq_, 0)),
      generation_(std::exchange(other.generation_, 0)),
      settled_(std::exchange(other.settled_, false)),
      id_(std::move(other.id_)) {
  other.id_.clear();
}

Reservation& Reservation::operator=(Reservation&& other) noexcept {
  if (this != &other) {
    // Settling "as the destructor would" keeps the estimate: nothing to do but let go.
    decision_ = std::exchange(other.decision_, Decision{});
    model_ = std::move(other.model_);
    seq_ = std::exchange(other.seq_, 0);
    generation_ = std::exchange(other.generation_, 0);
    settled_ = std::exchange(other.settled_, false);
    id_ = std::move(other.id_);
    other.id_.clear();
  }
  return *this;
}

Reservation::~Reservation() = default;

const std::string& Reservation::id() const {
  if (model_ != nullptr && id_.empty()) id_ = model_->format_id({seq_, generation_});
  return id_;
}

Status Reservation::settle_check(const char* operation) const {
  if (model_ == nullptr) {
    return make_error(ErrorCode::invalid_argument,
                      std::string("ratelimit.") + operation +
                          ": the reservation was not granted (check granted() first)");
  }
  if (settled_) {
    return make_error(ErrorCode::invalid_argument,
                      std::string("ratelimit.") + operation +
                          ": the reservation is already settled (commit or cancel it once)");
  }
  return {};
}

Status Reservation::commit(std::int64_t prompt_tokens, std::int64_t output_tokens) {
  if (auto s = settle_check("commit"); !s) return s;
  if (auto s = check_commit_tokens(prompt_tokens, output_tokens); !s) return s;
  detail::SettleRequest request;
  request.operation = "ratelimit.commit";
  request.kind = detail::SettleKind::commit;
  request.tokens = TokenEstimate{prompt_tokens, output_tokens};
  request.from_reservation = true;
  Status s = detail::settle_entry(*model_, {seq_, generation_}, request);
  if (s || s.error().code == ErrorCode::closed) settled_ = true;
  return s;
}

Status Reservation::cancel() {
  if (auto s = settle_check("cancel"); !s) return s;
  detail::SettleRequest request;
  request.operation = "ratelimit.cancel";
  request.kind = detail::SettleKind::cancel;
  request.from_reservation = true;
  Status s = detail::settle_entry(*model_, {seq_, generation_}, request);
  if (s || s.error().code == ErrorCode::closed) settled_ = true;
  return s;
}

// --- RateLimiter: checks ---

RateLimiter::RateLimiter(std::unique_ptr<detail::LimiterCore> core) : core_(std::move(core)) {}
RateLimiter::~RateLimiter() = default;

Decision RateLimiter::decide(std::string_view model, std::int64_t estimated_tokens) {
  return decide(model, TokenEstimate{estimated_tokens, 0});
}

Decision RateLimiter::decide(std::string_view model, TokenEstimate estimate) {
  // One named result on every path, so that the (large) Decision is built in the caller's
  // storage.
  Decision d;
  if (core_->is_closed()) {
    d.code = DecisionCode::store_unavailable;
    return d;
  }
  StoreModel* own = core_->store->find(model);
  if (own == nullptr) {
    if (estimate.input < 0 || estimate.output < 0) {
      d.code = DecisionCode::invalid_tokens;
      return d;
    }
    if (model_name_problem(model)) {
      core_->invalid_model.fetch_add(1, std::memory_order_relaxed);
      d.code = DecisionCode::invalid_model;
      return d;
    }
  }
  auto target = core_->target_of(model, own, /*create=*/false, "ratelimit.decide");
  if (!target) [[unlikely]] {
    d.code = DecisionCode::store_unavailable;
    return d;
  }
  if (*target == nullptr) {
    d = core_->store->decide_unseen(model, estimate);
    return d;
  }
  CheckRequest request;
  request.operation = "ratelimit.decide";
  request.estimate = estimate;
  (void)(*target)->check_into(request, d);  // a store failure is in the decision
  d.resolved_model = (*target)->name;
  return d;
}

bool RateLimiter::can_send(std::string_view model, std::int64_t estimated_tokens) {
  return decide(model, estimated_tokens).allowed;
}

Reservation RateLimiter::try_acquire(std::string_view model, std::int64_t estimated_tokens) {
  return try_acquire(model, TokenEstimate{estimated_tokens, 0});
}

Reservation RateLimiter::try_acquire(std::string_view model, TokenEstimate estimate) {
  if (core_->is_closed()) return detail::Grants::denied(detail::unavailable_decision());
  StoreModel* own = core_->store->find(model);
  if (own == nullptr) {
    // invalid_tokens is checked first (go-ratelimit's order); only an invalid_model answer
    // counts as one, as in decide().
    const bool bad_name = model_name_problem(model).has_value();
    if ((estimate.input < 0 || estimate.output < 0) && bad_name) {
      return detail::Grants::denied(invalid_tokens_decision());
    }
    if (bad_name) {
      core_->invalid_model.fetch_add(1, std::memory_order_relaxed);
      return detail::Grants::denied(invalid_model_decision());
    }
  }
  // A negative estimate too gets a handle (once per name), for its invalid_tokens count.
  auto target = core_->target_of(model, own, /*create=*/true, "ratelimit.try_acquire");
  if (!target) return detail::Grants::denied(detail::unavailable_decision());
  CheckRequest request;
  request.operation = "ratelimit.try_acquire";
  request.estimate = estimate;
  request.record = true;
  request.count = true;
  return detail::Grants::check(**target, request);
}

Status RateLimiter::record_usage(std::string_view model, std::int64_t prompt_tokens,
                                 std::int64_t output_tokens) {
  if (core_->is_closed()) return tl::unexpected(core_->closed_error("ratelimit.record_usage"));
  auto m = core_->model_for(model, "ratelimit.record_usage");
  if (!m) return tl::unexpected(m.error());
  // Negative counts are taken as 0 (seed rule).
  const TokenEstimate usage{std::max<std::int64_t>(0, prompt_tokens),
                            std::max<std::int64_t>(0, output_tokens)};
  return (*m)->record(usage, "ratelimit.record_usage");
}

// --- settling by id ---

Status RateLimiter::commit(std::string_view reservation_id, std::int64_t prompt_tokens,
                           std::int64_t output_tokens) {
  if (auto s = check_commit_tokens(prompt_tokens, output_tokens); !s) return s;
  if (core_->is_closed()) return tl::unexpected(core_->closed_error("ratelimit.commit"));
  auto found = core_->store->find_entry(reservation_id, "ratelimit.commit");
  if (!found) return tl::unexpected(found.error());
  detail::SettleRequest request;
  request.operation = "ratelimit.commit";
  request.kind = detail::SettleKind::commit;
  request.tokens = TokenEstimate{prompt_tokens, output_tokens};
  return detail::settle_entry(*found->model, found->entry, request);
}

Status RateLimiter::cancel(std::string_view reservation_id) {
  if (core_->is_closed()) return tl::unexpected(core_->closed_error("ratelimit.cancel"));
  auto found = core_->store->find_entry(reservation_id, "ratelimit.cancel");
  if (!found) return tl::unexpected(found.error());
  detail::SettleRequest request;
  request.operation = "ratelimit.cancel";
  request.kind = detail::SettleKind::cancel;
  return detail::settle_entry(*found->model, found->entry, request);
}

// --- reads ---

Result<ModelStats> RateLimiter::stats(std::string_view model) {
  if (core_->is_closed()) return tl::unexpected(core_->closed_error("ratelimit.stats"));
  if (auto s = core_->check_name(model, "ratelimit.stats"); !s) return tl::unexpected(s.error());
  // The pool the name uses (creates no state).
  auto target =
      core_->target_of(model, core_->store->find(model), /*create=*/false, "ratelimit.stats");
  if (!target) return tl::unexpected(target.error());
  return core_->store->stats(*target == nullptr ? model : std::string_view((*target)->name));
}

Result<std::map<std::string, ModelStats, std::less<>>> RateLimiter::all_stats() {
  if (core_->is_closed()) return tl::unexpected(core_->closed_error("ratelimit.all_stats"));
  return core_->store->all_stats();
}

Result<std::map<std::string, ModelMetrics, std::less<>>> RateLimiter::metrics() {
  std::map<std::string, ModelMetrics, std::less<>> out;
  auto s = visit_metrics(
      [&](std::string_view model, const ModelMetrics& m) { out.emplace(std::string(model), m); });
  if (!s) return tl::unexpected(s.error());
  return out;
}

Status RateLimiter::visit_metrics(
    const std::function<void(std::string_view, const ModelMetrics&)>& visit) {
  if (core_->is_closed()) return tl::unexpected(core_->closed_error("ratelimit.metrics"));
  return core_->store->visit_stats(
      [&](std::string_view model, const ModelStats& stats, StoreModel* handle) {
        ModelMetrics m;
        if (handle != nullptr) m = handle->counters.snapshot();
        m.stats = stats;
        visit(model, m);
      });
}
LimiterMetrics RateLimiter::limiter_metrics() const {
  LimiterMetrics m;
  m.invalid_model = core_->invalid_model.load(std::memory_order_relaxed);
  m.invalid_names_skipped = core_->store->names_skipped();
  m.unknown_models = core_->unknown_models.load(std::memory_order_relaxed);
  m.provider_values_ignored = core_->provider_values_ignored.load(std::memory_order_relaxed);
  return m;
}

Result<std::vector<std::string>> RateLimiter::models() {
  if (core_->is_closed()) return tl::unexpected(core_->closed_error("ratelimit.models"));
  auto stats = core_->store->all_stats();
  if (!stats) return tl::unexpected(stats.error());
  std::vector<std::string> out;
  for (const auto& [model, s] : *stats) out.push_back(model);
  return out;  // the map is sorted
}

// --- quotas ---

Result<std::optional<ModelQuota>> RateLimiter::quota(std::string_view model) {
  if (core_->is_closed()) return tl::unexpected(core_->closed_error("ratelimit.quota"));
  if (auto s = core_->check_name(model, "ratelimit.quota"); !s) return tl::unexpected(s.error());
  return core_->store->quota(model);
}

Result<QuotaMap> RateLimiter::quotas() {
  if (core_->is_closed()) return tl::unexpected(core_->closed_error("ratelimit.quotas"));
  return core_->store->quotas();
}

namespace {

// Validates and sets `quotas` in one store step, then wakes the waiters of each model.
Status set_quotas(detail::LimiterCore& core, const QuotaMap& quotas, const char* operation) {
  if (core.is_closed()) return tl::unexpected(core.closed_error(operation));
  const std::string_view op = std::string_view(operation).substr(10);
  for (const auto& [model, q] : quotas) {
    if (auto error = detail::check_model_name(op, model)) {
      core.invalid_model.fetch_add(1, std::memory_order_relaxed);
      return tl::unexpected(std::move(*error));
    }
    if (auto why = detail::validate_quota(op, model, q)) {
      return make_error(ErrorCode::invalid_argument, *why);
    }
  }
  if (auto s = core.store->set_quotas(quotas, operation); !s) return s;
  for (const auto& [model, q] : quotas) {
    if (StoreModel* m = core.store->find(model)) m->waiters.wake_all();
  }
  return {};
}

}  // namespace

Status RateLimiter::set_quota(std::string_view model, ModelQuota quota) {
  return set_quotas(*core_, QuotaMap{{std::string(model), quota}}, "ratelimit.set_quota");
}

Status RateLimiter::remove_quota(std::string_view model) {
  if (core_->is_closed()) return tl::unexpected(core_->closed_error("ratelimit.remove_quota"));
  if (auto s = core_->check_name(model, "ratelimit.remove_quota"); !s) return s;
  if (auto s = core_->store->remove_quota(model); !s) return s;
  if (StoreModel* m = core_->store->find(model)) m->waiters.wake_all();
  return {};
}

// --- names ---

Result<std::string> RateLimiter::resolve_model(std::string_view model) {
  if (core_->is_closed()) return tl::unexpected(core_->closed_error("ratelimit.resolve_model"));
  if (auto s = core_->check_name(model, "ratelimit.resolve_model"); !s) {
    return tl::unexpected(s.error());
  }
  auto r = core_->resolve_name(model, "ratelimit.resolve_model");
  if (!r) return tl::unexpected(r.error());
  return r->value_or(std::string(model));
}

Status RateLimiter::set_alias(std::string_view name, std::string_view target) {
  constexpr const char* kOp = "ratelimit.set_alias";
  if (core_->is_closed()) return tl::unexpected(core_->closed_error(kOp));
  for (std::string_view n : {name, target}) {
    if (auto error = detail::check_model_name("set_alias", n)) {
      core_->invalid_model.fetch_add(1, std::memory_order_relaxed);
      return tl::unexpected(std::move(*error));
    }
  }
  if (name == target) {
    return make_error(ErrorCode::invalid_argument,
                      "ratelimit.set_alias: " + detail::quoted(name) +
                          " cannot be an alias of itself (remove_alias removes an alias)");
  }
  if (auto s = core_->store->set_aliases(AliasMap{{std::string(name), std::string(target)}}, kOp);
      !s) {
    return s;
  }
  core_->wake_everyone();  // waiters on the name now wait on another pool: let them look again
  return {};
}

Status RateLimiter::remove_alias(std::string_view name) {
  if (core_->is_closed()) return tl::unexpected(core_->closed_error("ratelimit.remove_alias"));
  if (auto s = core_->check_name(name, "ratelimit.remove_alias"); !s) return s;
  if (auto s = core_->store->remove_alias(name); !s) return s;
  core_->wake_everyone();
  return {};
}

Result<AliasMap> RateLimiter::aliases() {
  if (core_->is_closed()) return tl::unexpected(core_->closed_error("ratelimit.aliases"));
  return core_->store->aliases();
}

Status RateLimiter::set_unknown_models(UnknownModels policy) {
  if (core_->is_closed()) {
    return tl::unexpected(core_->closed_error("ratelimit.set_unknown_models"));
  }
  if (policy.policy == UnknownModelPolicy::default_quota) {
    if (auto why = detail::validate_quota("set_unknown_models", "(default quota)", policy.quota)) {
      return make_error(ErrorCode::invalid_argument, *why);
    }
  } else {
    policy.quota = ModelQuota{};
  }
  if (auto s = core_->store->set_unknown_models(policy); !s) return s;
  core_->wake_everyone();
  return {};
}

Result<UnknownModels> RateLimiter::unknown_models() {
  if (core_->is_closed()) return tl::unexpected(core_->closed_error("ratelimit.unknown_models"));
  return core_->store->unknown_models();
}

Status RateLimiter::add_provider(Provider provider) {
  const auto profiles = default_profiles();
  auto it = profiles.find(provider);
  if (it == profiles.end()) return {};  // unknown provider: a no-op (seed rule)
  return apply_profile(it->second);
}

Status RateLimiter::apply_profile(const ProviderProfile& profile) {
  constexpr const char* kOp = "ratelimit.apply_profile";
  if (core_->is_closed()) return tl::unexpected(core_->closed_error(kOp));
  for (const auto& [model, q] : profile.models) {
    if (auto error = detail::check_model_name("apply_profile", model)) {
      return tl::unexpected(std::move(*error));
    }
    if (auto why = detail::validate_quota("apply_profile", model, q)) {
      return make_error(ErrorCode::invalid_argument, *why);
    }
  }
  for (const auto& [name, target] : profile.aliases) {
    for (std::string_view n : {std::string_view(name), std::string_view(target)}) {
      if (auto error = detail::check_model_name("apply_profile", n)) {
        return tl::unexpected(std::move(*error));
      }
    }
  }
  if (auto s = core_->store->set_profile(profile.models, profile.aliases, kOp); !s) return s;
  core_->wake_everyone();
  return {};
}
Status RateLimiter::reset(std::string_view model) {
  if (core_->is_closed()) return tl::unexpected(core_->closed_error("ratelimit.reset"));
  if (!model.empty()) {
    if (auto s = core_->check_name(model, "ratelimit.reset"); !s) return s;
  }
  if (auto s = core_->store->reset(model); !s) return s;
  if (model.empty()) {
    core_->wake_everyone();
  } else if (StoreModel* m = core_->store->find(model)) {
    m->waiters.wake_all();
  }
  return {};
}

// --- lifetime ---

Status RateLimiter::persist() {
  if (core_->is_closed()) return tl::unexpected(core_->closed_error("ratelimit.persist"));
  return core_->store->persist();
}

Status RateLimiter::load() {
  if (core_->is_closed()) return tl::unexpected(core_->closed_error("ratelimit.load"));
  Status s = core_->store->load();
  core_->wake_everyone();
  return s;
}

Status RateLimiter::close() {
  if (core_->closed.exchange(true, std::memory_order_acq_rel)) return {};
  Status s = core_->store->close();
  core_->wake_everyone();
  return s;
}

const Config& RateLimiter::config() const { return core_->config; }

}  // namespace ratelimit
