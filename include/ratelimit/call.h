// call_with_limits: one provider call wrapped in the limiter, for library users (what
// `ratelimit serve --upstream` does for HTTP clients): acquire → call → commit the actual usage
// → observe the response → on a 429, acquire again (the observed hint holds every caller of the
// model back until it passes) and call again, up to a bound.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ratelimit/decision.h"
#include "ratelimit/limiter.h"
#include "ratelimit/provider.h"
#include "ratelimit/status.h"

namespace ratelimit {

// What one call to a provider returned, as far as limiting needs it.
struct CallResponse {
  int status = 200;  // the HTTP status
  // As received (observe reads the rate-limit headers and retry-after).
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;  // read for Gemini's 429 details; may be left empty otherwise
  // The usage the response reported (prompt = input); nullopt when it had none.
  std::optional<TokenEstimate> usage;
};

struct CallOptions {
  WaitOptions wait;         // for each acquire (none: wait as long as it takes)
  int max_429_retries = 2;  // calls again after an upstream 429 at most this many times
  ResponseFormat format = ResponseFormat::auto_detect;  // the response headers' dialect
};

// Calls `fn` inside the limiter. Each attempt acquires `estimate` for `model` (waiting per
// options.wait), calls `fn`, observes its response, and settles the reservation:
//   - usage reported → commit it;
//   - no usage, status 2xx → the estimate stays as usage;
//   - no usage, any other status (429, 5xx) → the request counts, its tokens are refunded.
// A 429 is retried (re-acquired, so the observed retry-after is waited out) up to
// options.max_429_retries times. Returns the last response (a 429 included, when the retries
// are spent), or the acquire's error (deadline_exceeded, never_satisfiable, cancelled, ...).
// If `fn` throws, the reservation is cancelled (nothing is known to have reached the provider)
// and the exception propagates. Thread-safe as the limiter is.
Result<CallResponse> call_with_limits(RateLimiter& limiter, std::string_view model,
                                      TokenEstimate estimate,
                                      const std::function<CallResponse()>& fn,
                                      const CallOptions& options = {});

}  // namespace ratelimit
