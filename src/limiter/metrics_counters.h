// Internal: one model's counters behind RateLimiter::metrics(), bumped on the hot path.
//
// Every write to one ModelCounters object happens under one lock its engine already holds (the
// local engine: the model's mutex; the SQLite engine: its counters mutex), so an increment is a
// relaxed load and a relaxed store, not a fetch_add: no locked instruction on the hot path (a
// fetch_add costs about 6 ns, and try_acquire + commit makes four). The fields are atomics all
// the same, so snapshot() may read them without that lock (each field then on its own).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "ratelimit/decision.h"
#include "ratelimit/metrics.h"

namespace ratelimit::detail {

// How a try_acquire (or an acquire's final grant) that got `decision` ended.
inline RequestOutcome outcome_of(const Decision& decision) {
  if (decision.allowed) {
    return decision.code == DecisionCode::admitted_unchecked ? RequestOutcome::admitted_unchecked
                                                             : RequestOutcome::admitted;
  }
  switch (decision.code) {
    case DecisionCode::invalid_tokens:
      return RequestOutcome::invalid_tokens;
    case DecisionCode::rpd_exceeded:
      return RequestOutcome::rpd_exceeded;
    case DecisionCode::rpm_exceeded:
      return RequestOutcome::rpm_exceeded;
    case DecisionCode::tpm_exceeded:
      return RequestOutcome::tpm_exceeded;
    case DecisionCode::input_tpm_exceeded:
      return RequestOutcome::input_tpm_exceeded;
    case DecisionCode::output_tpm_exceeded:
      return RequestOutcome::output_tpm_exceeded;
    case DecisionCode::provider_cooldown:
      return RequestOutcome::provider_cooldown;
    case DecisionCode::provider_limit:
      return RequestOutcome::provider_limit;
    case DecisionCode::model_not_allowed:
      return RequestOutcome::model_not_allowed;
    case DecisionCode::ok:
    case DecisionCode::unknown_model:
    case DecisionCode::unlimited:
    case DecisionCode::store_unavailable:
    case DecisionCode::invalid_model:  // never reaches a model's counters
    case DecisionCode::admitted_unchecked:
      break;
  }
  return RequestOutcome::store_unavailable;  // the only denial left
}

// REQUIRES for every method but any() and snapshot(): the owner's lock held (see above).
class ModelCounters {
 public:
  ModelCounters() = default;
  ModelCounters(const ModelCounters&) = delete;
  ModelCounters& operator=(const ModelCounters&) = delete;

  // A try_acquire, or an acquire that ends with `decision`, for `estimated_tokens`.
  void decided(const Decision& decision, std::int64_t estimated_tokens) {
    const RequestOutcome outcome = outcome_of(decision);
    request(outcome);
    if (outcome == RequestOutcome::admitted) bump(tokens_estimated_, tokens(estimated_tokens));
  }
  // A call that ended without a decision (store failure, acquire's timeout, ...).
  void request(RequestOutcome outcome) { bump(requests_[static_cast<std::size_t>(outcome)], 1); }
  // record_usage of prompt + output tokens (already clamped and summed by the caller).
  void recorded(std::int64_t usage_tokens) {
    request(RequestOutcome::recorded);
    bump(tokens_recorded_, tokens(usage_tokens));
  }
  // A commit or cancel that settled (including one whose entry had left the window).
  void committed(std::int64_t usage_tokens) {
    bump(committed_, 1);
    bump(tokens_committed_, tokens(usage_tokens));
  }
  void cancelled() { bump(cancelled_, 1); }
  // observe(): off the hot path and under no store lock, so a real read-modify-write.
  void observed(bool cooldown) {
    observed_.fetch_add(1, std::memory_order_relaxed);
    if (cooldown) cooldowns_.fetch_add(1, std::memory_order_relaxed);
  }

  // Whether anything has been counted.
  bool any() const {
    if (committed_.load(std::memory_order_relaxed) != 0 ||
        cancelled_.load(std::memory_order_relaxed) != 0 ||
        observed_.load(std::memory_order_relaxed) != 0) {
      return true;
    }
    for (const auto& n : requests_) {
      if (n.load(std::memory_order_relaxed) != 0) return true;
    }
    // Tokens are only ever added together with a request or a settle: nothing else to check.
    return false;
  }

  // The counters, with `stats` left empty (the engine fills it in).
  ModelMetrics snapshot() const {
    ModelMetrics m;
    for (std::size_t i = 0; i < kRequestOutcomeCount; ++i) {
      m.requests[i] = requests_[i].load(std::memory_order_relaxed);
    }
    m.committed = committed_.load(std::memory_order_relaxed);
    m.cancelled = cancelled_.load(std::memory_order_relaxed);
    m.tokens_estimated = tokens_estimated_.load(std::memory_order_relaxed);
    m.tokens_committed = tokens_committed_.load(std::memory_order_relaxed);
    m.tokens_recorded = tokens_recorded_.load(std::memory_order_relaxed);
    m.responses_observed = observed_.load(std::memory_order_relaxed);
    m.cooldowns_learned = cooldowns_.load(std::memory_order_relaxed);
    return m;
  }

 private:
  // Not a read-modify-write: the owner's lock makes this thread the only writer.
  static void bump(std::atomic<std::uint64_t>& counter, std::uint64_t n) {
    counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  // Token counts are never negative here (engines clamp usage; estimates are checked), but a
  // negative value must not wrap to a huge sum.
  static std::uint64_t tokens(std::int64_t n) { return n > 0 ? static_cast<std::uint64_t>(n) : 0; }

  // The fields try_acquire + commit write come first, so they share one cache line.
  std::atomic<std::uint64_t> tokens_estimated_{0};
  std::atomic<std::uint64_t> tokens_committed_{0};
  std::atomic<std::uint64_t> committed_{0};
  std::array<std::atomic<std::uint64_t>, kRequestOutcomeCount> requests_{};
  std::atomic<std::uint64_t> cancelled_{0};
  std::atomic<std::uint64_t> tokens_recorded_{0};
  std::atomic<std::uint64_t> observed_{0};
  std::atomic<std::uint64_t> cooldowns_{0};
};

}  // namespace ratelimit::detail
