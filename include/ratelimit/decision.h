// The answer to "may I send this request now?".
#pragma once

#include <cstdint>
#include <string_view>

#include "ratelimit/clock.h"

namespace ratelimit {

enum class DecisionCode {
  ok,
  unknown_model,
  unlimited,
  invalid_tokens,
  rpd_exceeded,
  rpm_exceeded,
  tpm_exceeded,
  store_unavailable,
  // Appended (the values above keep their numbers):
  invalid_model,        // the model name is not valid (see model_name.h); checked after
                        // invalid_tokens and before unknown_model
  input_tpm_exceeded,   // the per-minute input token limit (max_input_tpm)
  output_tpm_exceeded,  // the per-minute output token limit (max_output_tpm)
  provider_cooldown,    // the provider said to come back later (a 429, an exhausted budget)
  provider_limit,       // the provider's remaining budget (learned from its headers) is spent
  model_not_allowed,    // no quota, and the unknown-model policy is `deny`
  admitted_unchecked,   // allowed without a check: the store failed and its failure policy is
                        // fail_open (Config::redis_failure_policy); nothing was recorded
};

// "ok", "unknown_model", "unlimited", "invalid_tokens", "rpd_exceeded", "rpm_exceeded",
// "tpm_exceeded", "store_unavailable", "invalid_model", "input_tpm_exceeded",
// "output_tpm_exceeded", "provider_cooldown", "provider_limit", "model_not_allowed",
// "admitted_unchecked".
std::string_view to_string(DecisionCode code);

// The fixed English reason for a code, e.g. "per-minute request limit reached".
std::string_view reason(DecisionCode code);

// Tokens a request will use: its prompt (input) and its completion (output). A single number
// given to decide/try_acquire/acquire is counted as input.
struct TokenEstimate {
  std::int64_t input = 0;
  std::int64_t output = 0;
  // input + output, saturating at INT64_MAX (negative parts count as given).
  std::int64_t total() const {
    if (input > 0 && output > INT64_MAX - input) return INT64_MAX;
    return input + output;
  }
  friend bool operator==(const TokenEstimate&, const TokenEstimate&) = default;
};

// What the limiter learned from a provider's responses (RateLimiter::observe) for one model,
// shared through the store like usage. A ceiling admits at most `left` more requests (tokens)
// until `until`; `left` is -1 when there is none.
struct LearnedLimits {
  TimePoint cooldown_until{};  // blocked until then; epoch (zero) when not blocked
  struct Ceiling {
    std::int64_t left = -1;
    TimePoint until{};
    friend bool operator==(const Ceiling&, const Ceiling&) = default;
  };
  Ceiling requests, tokens, input_tokens, output_tokens;
  // (`left` is -1 or >= 0: the AND of four is negative only when all four are -1.)
  bool any() const {
    return cooldown_until != TimePoint{} ||
           (requests.left & tokens.left & input_tokens.left & output_tokens.left) >= 0;
  }
  friend bool operator==(const LearnedLimits&, const LearnedLimits&) = default;
};

struct ModelStats {
  std::int64_t rpm = 0, max_rpm = 0;                // requests in the window, limit
  std::int64_t tpm = 0, max_tpm = 0;                // tokens (input + output) in the window, limit
  std::int64_t rpd = 0, max_rpd = 0;                // requests today, limit
  TimePoint day_start{};                            // epoch (zero) when the day has not started
  std::int64_t input_tpm = 0, max_input_tpm = 0;    // input tokens in the window, limit
  std::int64_t output_tpm = 0, max_output_tpm = 0;  // output tokens in the window, limit
  TimePoint day_end{};      // when today's count starts over; epoch when the day has not started
  LearnedLimits learned{};  // in force now (expired ones are not shown)
  friend bool operator==(const ModelStats&, const ModelStats&) = default;
};

struct Decision {
  bool allowed = false;
  DecisionCode code = DecisionCode::ok;
  // When denied by a limit: the earliest moment a retry could pass (the latest over every
  // exhausted limit); Duration::max() when it can never pass (the estimate alone exceeds
  // max_tpm); 0 for every other code.
  Duration retry_after{0};
  ModelStats stats;  // snapshot at decision time
  // The name whose quota and usage decided (the model asked about, or what it resolved to
  // through an alias or its family, e.g. "gpt-4o" for "gpt-4o-2024-08-06"). Valid for the
  // limiter's lifetime; empty when no name was resolved (invalid_model).
  std::string_view resolved_model;
  std::string_view reason() const { return ratelimit::reason(code); }
};

}  // namespace ratelimit
