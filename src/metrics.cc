#include "ratelimit/metrics.h"

namespace ratelimit {

std::string_view to_string(RequestOutcome outcome) {
  switch (outcome) {
    case RequestOutcome::admitted:
      return "admitted";
    case RequestOutcome::recorded:
      return "recorded";
    case RequestOutcome::invalid_tokens:
      return "invalid_tokens";
    case RequestOutcome::rpd_exceeded:
      return "rpd_exceeded";
    case RequestOutcome::rpm_exceeded:
      return "rpm_exceeded";
    case RequestOutcome::tpm_exceeded:
      return "tpm_exceeded";
    case RequestOutcome::store_unavailable:
      return "store_unavailable";
    case RequestOutcome::deadline_exceeded:
      return "deadline_exceeded";
    case RequestOutcome::cancelled:
      return "cancelled";
    case RequestOutcome::input_tpm_exceeded:
      return "input_tpm_exceeded";
    case RequestOutcome::output_tpm_exceeded:
      return "output_tpm_exceeded";
    case RequestOutcome::provider_cooldown:
      return "provider_cooldown";
    case RequestOutcome::provider_limit:
      return "provider_limit";
    case RequestOutcome::model_not_allowed:
      return "model_not_allowed";
    case RequestOutcome::admitted_unchecked:
      return "admitted_unchecked";
  }
  return "unknown";
}

// The array in ModelMetrics is indexed by RequestOutcome: a new outcome must grow it.
static_assert(static_cast<std::size_t>(RequestOutcome::admitted_unchecked) + 1 ==
              kRequestOutcomeCount);

}  // namespace ratelimit
