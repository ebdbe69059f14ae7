// Per-model counters and gauges of one RateLimiter, for monitoring (the server exposes them in
// Prometheus text format). Plain data: the library has no Prometheus dependency.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ratelimit/decision.h"

namespace ratelimit {

// How one request (a try_acquire, an acquire or a record_usage call) ended. Each call counts
// exactly once, whatever happened inside it (an acquire that waited counts once).
enum class RequestOutcome : std::uint8_t {
  admitted,           // granted by try_acquire/acquire (codes ok, unlimited, unknown_model)
  recorded,           // record_usage
  invalid_tokens,     // negative estimate (try_acquire, acquire)
  rpd_exceeded,       // try_acquire denied by the daily request limit
  rpm_exceeded,       // try_acquire denied by the per-minute request limit
  tpm_exceeded,       // try_acquire denied by the per-minute token limit; also an acquire whose
                      // estimate alone exceeds max_tpm (never_satisfiable)
  store_unavailable,  // the store failed (try_acquire, acquire, record_usage)
  deadline_exceeded,  // acquire gave up at its timeout
  cancelled,          // acquire stopped through its stop_token
  // Appended:
  input_tpm_exceeded,   // denied by the per-minute input token limit (or never satisfiable)
  output_tpm_exceeded,  // denied by the per-minute output token limit (or never satisfiable)
  provider_cooldown,    // denied: the provider asked to wait
  provider_limit,       // denied: the provider's remaining budget is spent
  model_not_allowed,    // denied: no quota and the unknown-model policy is `deny`
  admitted_unchecked,   // granted without a check: the store failed under fail_open
};
inline constexpr std::size_t kRequestOutcomeCount = 15;

// "admitted", "recorded", "invalid_tokens", "rpd_exceeded", "rpm_exceeded", "tpm_exceeded",
// "store_unavailable", "deadline_exceeded", "cancelled", "input_tpm_exceeded",
// "output_tpm_exceeded", "provider_cooldown", "provider_limit", "model_not_allowed",
// "admitted_unchecked".
std::string_view to_string(RequestOutcome outcome);

// The metrics of one model.
//
// Counters count what went through this RateLimiter object since it was opened (this process's
// operations; with a shared store each process counts its own, as Prometheus expects from
// per-instance counters). They only grow: reset() clears usage, not counters.
// Gauges (`stats`) describe the store now, so with a shared store they include every process.
struct ModelMetrics {
  std::array<std::uint64_t, kRequestOutcomeCount> requests{};  // by RequestOutcome
  // A commit or cancel counts when it returns ok, including one whose entry had already left
  // the window (nothing changes then, but the caller's settle succeeded).
  std::uint64_t committed = 0;           // reservations settled by commit (object or id)
  std::uint64_t cancelled = 0;           // reservations refunded by cancel (object or id)
  std::uint64_t tokens_estimated = 0;    // estimates of admitted requests
  std::uint64_t tokens_committed = 0;    // actual tokens (prompt + output) given to commit
  std::uint64_t tokens_recorded = 0;     // tokens (prompt + output) given to record_usage
  std::uint64_t responses_observed = 0;  // provider responses given to observe()
  std::uint64_t cooldowns_learned = 0;   // of which set or extended a cooldown
  ModelStats stats;                      // window and today's usage with their limits, now

  std::uint64_t count(RequestOutcome outcome) const {
    return requests[static_cast<std::size_t>(outcome)];
  }
  friend bool operator==(const ModelMetrics&, const ModelMetrics&) = default;
};

// Counters of one RateLimiter that belong to no model.
struct LimiterMetrics {
  // Calls refused because the model name is not valid (see model_name.h): decision code
  // invalid_model, or an invalid_argument error. Not labelled: the name is not printable.
  std::uint64_t invalid_model = 0;
  // Model names in a state file or database that are not valid: their quotas and usage are
  // skipped (each name in a warning, Config::on_warning) instead of refusing the whole file.
  // YAML: counted at each load(); SQLite: each distinct name once per limiter.
  std::uint64_t invalid_names_skipped = 0;
  // Distinct model names this limiter found no quota for (after aliases and families), by any
  // call (decide and stats included); each is counted (and reported through
  // Config::on_warning) once. The first 10,000 such names are counted.
  std::uint64_t unknown_models = 0;
  // Provider response values observe() ignored (garbage, negative, huge, wrong units).
  std::uint64_t provider_values_ignored = 0;
  friend bool operator==(const LimiterMetrics&, const LimiterMetrics&) = default;
};

}  // namespace ratelimit
