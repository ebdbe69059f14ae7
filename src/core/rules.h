// Internal: the decision rules, written once for every store.
//
// go-ratelimit's order: invalid tokens, unknown model (allowed), unlimited, then the day, the
// minute's requests and the minute's tokens; ours adds, after invalid tokens, the unknown-model
// policy (deny), then what the provider said (a cooldown, a spent ceiling, which apply to every
// model, known or not), and after the minute's tokens its input and output tokens. A denial
// carries the exact retry-after: the latest over every exhausted limit (the moment enough of the
// window has left it, the day resets, the provider's reset), and Duration::max() when the
// estimate alone exceeds a per-minute token limit. Pure: a store calls evaluate()
// inside its atomic step with its usage and a probe that answers "when does enough capacity
// leave the window" from wherever its entries live (a ring buffer, SQL rows).
#pragma once

#include <algorithm>
#include <cstdint>

#include "core/time_util.h"
#include "ratelimit/config.h"
#include "ratelimit/decision.h"
#include "ratelimit/quota.h"

namespace ratelimit::detail {

inline constexpr std::int64_t kWindowNs = 60'000'000'000;
inline constexpr std::int64_t kDayNs = 86'400'000'000'000;

// a + b for non-negative a, b, saturating at INT64_MAX.
inline std::int64_t saturating_add(std::int64_t a, std::int64_t b) {
  return a > kInt64Max - b ? kInt64Max : a + b;
}
// prompt + output with negative counts taken as 0 (seed rule), saturating.
inline std::int64_t usage_tokens(std::int64_t prompt, std::int64_t output) {
  return saturating_add(prompt < 0 ? 0 : prompt, output < 0 ? 0 : output);
}
inline std::int64_t clamp_to_int64(Int128 v) {
  if (v > static_cast<Int128>(kInt64Max)) return kInt64Max;
  if (v < 0) return 0;
  return static_cast<std::int64_t>(v);
}

// Which tokens a probe or a limit counts.
enum class TokenDim { total, input, output };

// One model's usage at `now`, after the store pruned what left the window.
struct Usage {
  std::int64_t requests = 0;  // requests in the 60 s window
  Int128 tokens = 0;          // tokens in the 60 s window, input + output (exact: no saturation)
  Int128 input = 0;           // of which input
  Int128 output = 0;          // of which output
  bool day_started = false;
  std::int64_t day_start_ns = 0;
  std::int64_t day_end_ns = 0;  // when the day's count starts over (the day rule's)
  std::int64_t day_count = 0;   // requests today

  Int128 of(TokenDim dim) const {
    return dim == TokenDim::total ? tokens : dim == TokenDim::input ? input : output;
  }
};

// What the provider said (RateLimiter::observe), in force until the times given.
struct Learned {
  std::int64_t cooldown_until_ns = 0;  // 0: none
  struct Ceiling {
    std::int64_t left = -1;  // -1: none
    std::int64_t until_ns = 0;
    friend bool operator==(const Ceiling&, const Ceiling&) = default;
  };
  Ceiling requests, tokens, input, output;

  // (A ceiling's `left` is -1 or >= 0: the AND of four is negative only when all four are -1.)
  bool any() const {
    return cooldown_until_ns != 0 || (requests.left & tokens.left & input.left & output.left) >= 0;
  }
  // Drops what has expired at `now_ns`; true when something changed.
  bool expire(std::int64_t now_ns) {
    bool changed = false;
    if (cooldown_until_ns != 0 && cooldown_until_ns <= now_ns) {
      cooldown_until_ns = 0;
      changed = true;
    }
    for (Ceiling* c : {&requests, &tokens, &input, &output}) {
      if (c->left >= 0 && c->until_ns <= now_ns) {
        *c = Ceiling{};
        changed = true;
      }
    }
    return changed;
  }
  // A grant of one request with `input` + `output` tokens spends the ceilings; true when
  // something changed.
  bool spend(std::int64_t input_tokens, std::int64_t output_tokens) {
    auto take = [](Ceiling& c, std::int64_t n) {
      if (c.left < 0) return false;
      c.left = n >= c.left ? 0 : c.left - n;
      return true;
    };
    bool changed = take(requests, 1);
    changed |= take(tokens, saturating_add(input_tokens, output_tokens));
    changed |= take(input, input_tokens);
    changed |= take(output, output_tokens);
    return changed;
  }
  friend bool operator==(const Learned&, const Learned&) = default;
};

// Adds a newer observation to what is held: a cooldown that ends later replaces the held one;
// each ceiling given (left >= 0) replaces the held one. True when something changed.
inline bool merge_learned(Learned& held, const Learned& add) {
  bool changed = false;
  if (add.cooldown_until_ns > held.cooldown_until_ns) {
    held.cooldown_until_ns = add.cooldown_until_ns;
    changed = true;
  }
  auto take = [&](Learned::Ceiling& h, const Learned::Ceiling& a) {
    if (a.left >= 0 && !(a == h)) {
      h = a;
      changed = true;
    }
  };
  take(held.requests, add.requests);
  take(held.tokens, add.tokens);
  take(held.input, add.input);
  take(held.output, add.output);
  return changed;
}

// The limits that apply to a model: none (unknown model) or its quota, the unknown-model
// policy, and what the provider said.
struct Limits {
  bool known = false;
  ModelQuota quota;
  bool deny_unknown = false;  // !known: UnknownModelPolicy::deny
  Learned learned;
  bool unlimited() const { return quota.unlimited(); }
};

inline LearnedLimits public_learned(const Learned& l) {
  auto tp = [](std::int64_t ns) { return TimePoint(Duration(ns)); };
  LearnedLimits out;
  if (l.cooldown_until_ns != 0) out.cooldown_until = tp(l.cooldown_until_ns);
  auto ceiling = [&](const Learned::Ceiling& c) {
    LearnedLimits::Ceiling p;
    if (c.left >= 0) {
      p.left = c.left;
      p.until = tp(c.until_ns);
    }
    return p;
  };
  out.requests = ceiling(l.requests);
  out.tokens = ceiling(l.tokens);
  out.input_tokens = ceiling(l.input);
  out.output_tokens = ceiling(l.output);
  return out;
}

// What the provider said, as stats show it (out of line: rare, and large).
[[gnu::noinline]] inline void fill_learned(const Learned& l, ModelStats& s) {
  s.learned = public_learned(l);
}

// The stats a decision or stats() reports, written in place (a decision's stats are written on
// every call: no temporary). Always inlined: the decide path writes the fields straight from the
// window's totals.
[[gnu::always_inline]] inline void fill_stats(const Limits& limits, const Usage& u, ModelStats& s) {
  s.rpm = u.requests;
  s.tpm = clamp_to_int64(u.tokens);
  s.input_tpm = clamp_to_int64(u.input);
  s.output_tpm = clamp_to_int64(u.output);
  s.rpd = u.day_started ? u.day_count : 0;
  const bool known = limits.known;
  s.max_rpm = known ? limits.quota.max_rpm : 0;
  s.max_tpm = known ? limits.quota.max_tpm : 0;
  s.max_rpd = known ? limits.quota.max_rpd : 0;
  s.max_input_tpm = known ? limits.quota.max_input_tpm : 0;
  s.max_output_tpm = known ? limits.quota.max_output_tpm : 0;
  s.day_start = u.day_started ? TimePoint(Duration(u.day_start_ns)) : TimePoint{};
  s.day_end = u.day_started ? TimePoint(Duration(u.day_end_ns)) : TimePoint{};
  if (limits.learned.any() || s.learned.any()) [[unlikely]]
    fill_learned(limits.learned, s);
}
inline ModelStats stats_of(const Limits& limits, const Usage& u) {
  ModelStats s;
  fill_stats(limits, u, s);
  return s;
}

// The answer of decide/try_acquire when the store cannot be reached (or is closed).
inline Decision unavailable_decision() {
  Decision d;
  d.code = DecisionCode::store_unavailable;
  return d;
}

// Records a denial in `d`: the first limit found names the code, the retry-after is the latest.
inline void deny_into(Decision& d, bool& denied, DecisionCode code, Duration retry) {
  if (!denied) d.code = code;
  denied = true;
  d.retry_after = std::max(d.retry_after, retry);
}

// The provider's cooldown and ceilings (out of line: rare). True when one denies.
[[gnu::noinline]] inline bool deny_learned(const Learned& learned, TokenEstimate estimate,
                                           std::int64_t total, std::int64_t now_ns, Decision& d) {
  bool denied = false;
  if (learned.cooldown_until_ns > now_ns) {
    deny_into(d, denied, DecisionCode::provider_cooldown, until(learned.cooldown_until_ns, now_ns));
  }
  auto ceiling = [&](const Learned::Ceiling& c, std::int64_t need) {
    // A ceiling of 0 left refuses even a request of 0 tokens: the provider said "none".
    if (c.left >= 0 && c.until_ns > now_ns && (need > c.left || c.left == 0)) {
      deny_into(d, denied, DecisionCode::provider_limit, until(c.until_ns, now_ns));
    }
  };
  ceiling(learned.requests, 1);
  ceiling(learned.tokens, total);
  ceiling(learned.input, estimate.input);
  ceiling(learned.output, estimate.output);
  return denied;
}

// The quota's limits once one of them is reached (out of line: the allowed path only tests
// whether any is): which ones deny, and the exact retry-after of each.
template <class Probe>
[[gnu::noinline]] void deny_quota(const ModelQuota& q, const Usage& usage, TokenEstimate estimate,
                                  std::int64_t total, std::int64_t now_ns, Probe&& probe,
                                  Decision& d, bool& denied) {
  // An entry leaves the window 60 s after its time; entries never lie after `now` once the
  // store advanced, but a store reading a snapshot may see one: count it from `now`.
  auto leaves_after = [&](std::int64_t t) {
    return until(std::min(t, now_ns), now_ns) + Duration(kWindowNs);
  };
  if (q.max_rpd > 0 && usage.day_started && usage.day_count >= q.max_rpd) {
    deny_into(d, denied, DecisionCode::rpd_exceeded,
              std::max(Duration(0), until(usage.day_end_ns, now_ns)));
  }
  if (q.max_rpm > 0 && usage.requests >= q.max_rpm) {
    // The request at position requests - max_rpm + 1 (1-based) must leave.
    deny_into(d, denied, DecisionCode::rpm_exceeded,
              leaves_after(probe.request_time(usage.requests - q.max_rpm + 1)));
  }
  auto tokens = [&](std::int64_t limit, TokenDim dim, std::int64_t want, DecisionCode code) {
    if (limit <= 0 || usage.of(dim) + want <= limit) return;
    if (want > limit) {
      deny_into(d, denied, code, Duration::max());
    } else {
      const Int128 need = usage.of(dim) + want - limit;
      deny_into(d, denied, code, leaves_after(probe.tokens_time(need, dim)));
    }
  };
  tokens(q.max_tpm, TokenDim::total, total, DecisionCode::tpm_exceeded);
  tokens(q.max_input_tpm, TokenDim::input, estimate.input, DecisionCode::input_tpm_exceeded);
  tokens(q.max_output_tpm, TokenDim::output, estimate.output, DecisionCode::output_tpm_exceeded);
}

// The decision for `estimate` at `now_ns`. `probe` answers, only on the denied path:
//   std::int64_t request_time(std::int64_t k): the time of the k-th (1-based) request in the
//     window counted from the oldest (1 <= k <= usage.requests);
//   std::int64_t tokens_time(Int128 need, TokenDim dim): the time of the entry at which the
//     tokens of `dim` counted from the oldest first reach `need` (0 < need <= usage.of(dim)).
// Writes the decision into `d` (which the caller owns: no copy on the hot path). The learned
// limits must have been expired at `now_ns` (Learned::expire).
template <class Probe>
void evaluate_into(const Limits& limits, const Usage& usage, TokenEstimate estimate,
                   std::int64_t now_ns, Probe&& probe, Decision& d) {
  d.allowed = false;
  d.code = DecisionCode::ok;
  d.retry_after = Duration(0);
  fill_stats(limits, usage, d.stats);
  if ((estimate.input | estimate.output) < 0) {
    d.code = DecisionCode::invalid_tokens;
    return;
  }
  if (!limits.known && limits.deny_unknown) {
    d.code = DecisionCode::model_not_allowed;
    return;
  }
  const std::int64_t total = saturating_add(estimate.input, estimate.output);
  bool denied = false;
  if (limits.learned.any()) [[unlikely]] {
    denied = deny_learned(limits.learned, estimate, total, now_ns, d);
  }
  if (!limits.known || limits.unlimited()) {
    if (!denied) {
      d.allowed = true;
      d.code = limits.known ? DecisionCode::unlimited : DecisionCode::unknown_model;
    }
    return;
  }
  const ModelQuota& q = limits.quota;
  // The common case (every limit has room) in a few compares.
  const bool limit_reached =
      (q.max_rpd > 0 && usage.day_started && usage.day_count >= q.max_rpd) |
      (q.max_rpm > 0 && usage.requests >= q.max_rpm) |
      (q.max_tpm > 0 && usage.tokens + total > q.max_tpm) |
      (q.max_input_tpm > 0 && usage.input + estimate.input > q.max_input_tpm) |
      (q.max_output_tpm > 0 && usage.output + estimate.output > q.max_output_tpm);
  if (limit_reached) [[unlikely]] {
    deny_quota(q, usage, estimate, total, now_ns, probe, d, denied);
  }
  d.allowed = !denied;
}

template <class Probe>
Decision evaluate(const Limits& limits, const Usage& usage, TokenEstimate estimate,
                  std::int64_t now_ns, Probe&& probe) {
  Decision d;
  evaluate_into(limits, usage, estimate, now_ns, probe, d);
  return d;
}

// When a day that started at `day_start_ns` ends under `rule`.
std::int64_t day_end_ns(std::int64_t day_start_ns, DayStart rule);

}  // namespace ratelimit::detail
