// Internal: the decision rules, written once for every store.
//
// go-ratelimit's order: invalid tokens, unknown model (allowed), unlimited, then the day, the
// minute's requests and the minute's tokens. A denial carries the exact retry-after: the latest
// over every exhausted limit (the moment enough of the window has left it, or the day resets),
// and Duration::max() when the estimate alone exceeds max_tpm. Pure: a store calls evaluate()
// inside its atomic step with its usage and a probe that answers "when does enough capacity
// leave the window" from wherever its entries live (a ring buffer, SQL rows).
#pragma once

#include <algorithm>
#include <cstdint>

#include "core/time_util.h"
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

// One model's usage at `now`, after the store pruned what left the window.
struct Usage {
  std::int64_t requests = 0;  // requests in the 60 s window
  Int128 tokens = 0;          // tokens in the 60 s window (exact: no saturation)
  bool day_started = false;
  std::int64_t day_start_ns = 0;
  std::int64_t day_count = 0;  // requests today
};

// The limits that apply to a model: none (unknown model) or its quota.
struct Limits {
  bool known = false;
  ModelQuota quota;
  bool unlimited() const { return quota.max_rpm == 0 && quota.max_tpm == 0 && quota.max_rpd == 0; }
};

// The stats a decision or stats() reports.
inline ModelStats stats_of(const Limits& limits, const Usage& u) {
  ModelStats s;
  s.rpm = u.requests;
  s.tpm = clamp_to_int64(u.tokens);
  s.rpd = u.day_started ? u.day_count : 0;
  if (limits.known) {
    s.max_rpm = limits.quota.max_rpm;
    s.max_tpm = limits.quota.max_tpm;
    s.max_rpd = limits.quota.max_rpd;
  }
  if (u.day_started) s.day_start = TimePoint(Duration(u.day_start_ns));
  return s;
}

// The decision for `estimated_tokens` at `now_ns`. `probe` answers, only on the denied path:
//   std::int64_t request_time(std::int64_t k): the time of the k-th (1-based) request in the
//     window counted from the oldest (1 <= k <= usage.requests);
//   std::int64_t tokens_time(Int128 need): the time of the entry at which the tokens counted
//     from the oldest first reach `need` (0 < need <= usage.tokens).
// Writes the decision into `d` (which the caller owns: no copy on the hot path).
template <class Probe>
void evaluate_into(const Limits& limits, const Usage& usage, std::int64_t estimated_tokens,
                   std::int64_t now_ns, Probe&& probe, Decision& d) {
  d.allowed = false;
  d.code = DecisionCode::ok;
  d.retry_after = Duration(0);
  d.stats = stats_of(limits, usage);
  if (estimated_tokens < 0) {
    d.code = DecisionCode::invalid_tokens;
    return;
  }
  if (!limits.known || limits.unlimited()) {
    d.allowed = true;
    d.code = limits.known ? DecisionCode::unlimited : DecisionCode::unknown_model;
    return;
  }
  const ModelQuota& q = limits.quota;
  bool denied = false;
  auto deny = [&](DecisionCode code, Duration retry) {
    if (!denied) d.code = code;
    denied = true;
    d.retry_after = std::max(d.retry_after, retry);
  };
  // An entry leaves the window 60 s after its time; entries never lie after `now` once the
  // store advanced, but a store reading a snapshot may see one: count it from `now`.
  auto leaves_after = [&](std::int64_t t) {
    return until(std::min(t, now_ns), now_ns) + Duration(kWindowNs);
  };
  if (q.max_rpd > 0 && usage.day_started && usage.day_count >= q.max_rpd) {
    deny(DecisionCode::rpd_exceeded,
         std::max(Duration(0), until(saturating_add(usage.day_start_ns, kDayNs), now_ns)));
  }
  if (q.max_rpm > 0 && usage.requests >= q.max_rpm) {
    // The request at position requests - max_rpm + 1 (1-based) must leave.
    deny(DecisionCode::rpm_exceeded,
         leaves_after(probe.request_time(usage.requests - q.max_rpm + 1)));
  }
  if (q.max_tpm > 0 && usage.tokens + estimated_tokens > q.max_tpm) {
    if (estimated_tokens > q.max_tpm) {
      deny(DecisionCode::tpm_exceeded, Duration::max());
    } else {
      const Int128 need = usage.tokens + estimated_tokens - q.max_tpm;
      deny(DecisionCode::tpm_exceeded, leaves_after(probe.tokens_time(need)));
    }
  }
  d.allowed = !denied;
}

template <class Probe>
Decision evaluate(const Limits& limits, const Usage& usage, std::int64_t estimated_tokens,
                  std::int64_t now_ns, Probe&& probe) {
  Decision d;
  evaluate_into(limits, usage, estimated_tokens, now_ns, probe, d);
  return d;
}

}  // namespace ratelimit::detail
