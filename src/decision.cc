#include "ratelimit/decision.h"

namespace ratelimit {

std::string_view to_string(DecisionCode code) {
  switch (code) {
    case DecisionCode::ok:
      return "ok";
    case DecisionCode::unknown_model:
      return "unknown_model";
    case DecisionCode::unlimited:
      return "unlimited";
    case DecisionCode::invalid_tokens:
      return "invalid_tokens";
    case DecisionCode::rpd_exceeded:
      return "rpd_exceeded";
    case DecisionCode::rpm_exceeded:
      return "rpm_exceeded";
    case DecisionCode::tpm_exceeded:
      return "tpm_exceeded";
    case DecisionCode::store_unavailable:
      return "store_unavailable";
    case DecisionCode::invalid_model:
      return "invalid_model";
    case DecisionCode::input_tpm_exceeded:
      return "input_tpm_exceeded";
    case DecisionCode::output_tpm_exceeded:
      return "output_tpm_exceeded";
    case DecisionCode::provider_cooldown:
      return "provider_cooldown";
    case DecisionCode::provider_limit:
      return "provider_limit";
    case DecisionCode::model_not_allowed:
      return "model_not_allowed";
    case DecisionCode::admitted_unchecked:
      return "admitted_unchecked";
  }
  return "unknown";
}

std::string_view reason(DecisionCode code) {
  switch (code) {
    case DecisionCode::ok:
      return "within quota";
    case DecisionCode::unknown_model:
      return "model has no configured quota";
    case DecisionCode::unlimited:
      return "all limits are unlimited";
    case DecisionCode::invalid_tokens:
      return "estimated tokens must be non-negative";
    case DecisionCode::rpd_exceeded:
      return "daily request limit reached";
    case DecisionCode::rpm_exceeded:
      return "per-minute request limit reached";
    case DecisionCode::tpm_exceeded:
      return "per-minute token limit reached";
    case DecisionCode::store_unavailable:
      return "state store unavailable";
    case DecisionCode::invalid_model:
      return "model name is not valid (UTF-8, no control characters, at most 256 bytes)";
    case DecisionCode::input_tpm_exceeded:
      return "per-minute input token limit reached";
    case DecisionCode::output_tpm_exceeded:
      return "per-minute output token limit reached";
    case DecisionCode::provider_cooldown:
      return "the provider asked to wait (rate limited upstream)";
    case DecisionCode::provider_limit:
      return "the provider's remaining budget is spent until its reset";
    case DecisionCode::model_not_allowed:
      return "model has no quota and unknown models are denied";
    case DecisionCode::admitted_unchecked:
      return "admitted without a check: the state store is unavailable (fail_open)";
  }
  return "unknown";
}

}  // namespace ratelimit
