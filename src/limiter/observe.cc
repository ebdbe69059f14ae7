// RateLimiter::observe: what a provider's response says becomes a cooldown or ceilings in the
// store (src/providers/ reads the response; the store keeps what it learned for every process).
#include <algorithm>

#include "core/rules.h"
#include "limiter/limiter_core.h"
#include "limiter/validation.h"
#include "providers/response_signals.h"
#include "ratelimit/limiter.h"

namespace ratelimit {
namespace {

// The longest a provider can block a model: the longest day (25 h, a DST change).
constexpr std::int64_t kMaxCooldownNs = 25LL * 3600 * 1'000'000'000;

detail::Learned::Ceiling* ceiling_of(detail::Learned& l, detail::BudgetKind kind) {
  switch (kind) {
    case detail::BudgetKind::requests:
      return &l.requests;
    case detail::BudgetKind::tokens:
      return &l.tokens;
    case detail::BudgetKind::input_tokens:
      return &l.input;
    case detail::BudgetKind::output_tokens:
      break;
  }
  return &l.output;
}

// The quota a provider's stated limits describe (Config::learn_quotas).
std::optional<ModelQuota> stated_quota(const detail::ResponseSignals& signals) {
  ModelQuota q;
  bool any = false;
  for (const auto& b : signals.budgets) {
    if (!b.limit || *b.limit <= 0) continue;
    std::int64_t* field = nullptr;
    switch (b.kind) {
      case detail::BudgetKind::requests:
        field = b.per_day ? &q.max_rpd : &q.max_rpm;
        break;
      case detail::BudgetKind::tokens:
        field = b.per_day ? nullptr : &q.max_tpm;
        break;
      case detail::BudgetKind::input_tokens:
        field = b.per_day ? nullptr : &q.max_input_tpm;
        break;
      case detail::BudgetKind::output_tokens:
        field = b.per_day ? nullptr : &q.max_output_tpm;
        break;
    }
    if (field != nullptr && *field == 0) {
      *field = *b.limit;
      any = true;
    }
  }
  if (!any) return std::nullopt;
  return q;
}

}  // namespace

Result<Observation> RateLimiter::observe(std::string_view model, const ProviderResponse& response) {
  constexpr const char* kOp = "ratelimit.observe";
  detail::LimiterCore& core = *core_;
  if (core.is_closed()) return tl::unexpected(core.closed_error(kOp));
  auto target = core.model_for(model, kOp);
  if (!target) return tl::unexpected(target.error());
  detail::StoreModel& m = **target;
  const std::int64_t now = detail::to_ns(core.clock->now());
  const detail::ResponseSignals signals = detail::read_response(response, now);
  if (signals.bad_values > 0) {
    core.provider_values_ignored.fetch_add(static_cast<std::uint64_t>(signals.bad_values),
                                           std::memory_order_relaxed);
  }

  detail::Learned learned;
  if (signals.blocked_until_ns && *signals.blocked_until_ns > now) {
    learned.cooldown_until_ns =
        std::min(*signals.blocked_until_ns, detail::saturating_add(now, kMaxCooldownNs));
  }
  for (const auto& b : signals.budgets) {
    if (!b.remaining || !b.reset_at_ns || *b.remaining < 0 || *b.reset_at_ns <= now) continue;
    detail::Learned::Ceiling c{
        *b.remaining, std::min(*b.reset_at_ns, detail::saturating_add(now, kMaxCooldownNs))};
    detail::Learned::Ceiling* held = ceiling_of(learned, b.kind);
    // Two budgets of one kind (the minute's and the day's): the one with less left binds.
    if (held->left < 0 || c.left < held->left ||
        (c.left == held->left && c.until_ns > held->until_ns)) {
      *held = c;
    }
  }

  Observation out;
  out.resolved_model = m.name;
  out.format = signals.format;
  out.learned = detail::public_learned(learned);
  out.ignored = signals.problems;
  bool changed = false;
  if (learned.any()) {
    if (auto s = m.learn(learned, kOp, &changed); !s) return tl::unexpected(s.error());
  }
  m.counters.observed(learned.cooldown_until_ns != 0);
  if (core.config.learn_quotas) {
    auto held = core.store->quota(m.name);
    if (!held) return tl::unexpected(held.error());
    if (!held->has_value()) {
      if (auto q = stated_quota(signals)) {
        if (auto s = core.store->set_quotas(QuotaMap{{m.name, *q}}, kOp); !s) {
          return tl::unexpected(s.error());
        }
        out.quota_learned = q;
        changed = true;
      }
    }
  }
  if (changed) m.waiters.wake_all();
  return out;
}

}  // namespace ratelimit
