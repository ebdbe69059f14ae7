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
  invalid_model,  // the model name is not valid (see model_name.h); checked after
                  // invalid_tokens and before unknown_model
};

// "ok", "unknown_model", "unlimited", "invalid_tokens", "rpd_exceeded", "rpm_exceeded",
// "tpm_exceeded", "store_unavailable", "invalid_model".
std::string_view to_string(DecisionCode code);

// The fixed English reason for a code, e.g. "per-minute request limit reached".
std::string_view reason(DecisionCode code);

struct ModelStats {
  std::int64_t rpm = 0, max_rpm = 0;  // requests in the window, limit
  std::int64_t tpm = 0, max_tpm = 0;  // tokens in the window, limit
  std::int64_t rpd = 0, max_rpd = 0;  // requests today, limit
  TimePoint day_start{};              // epoch (zero) when the day has not started
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
  std::string_view reason() const { return ratelimit::reason(code); }
};

}  // namespace ratelimit
