#include "ratelimit/call.h"

#include <algorithm>

namespace ratelimit {

Result<CallResponse> call_with_limits(RateLimiter& limiter, std::string_view model,
                                      TokenEstimate estimate,
                                      const std::function<CallResponse()>& fn,
                                      const CallOptions& options) {
  for (int attempt = 0;; ++attempt) {
    auto reservation = limiter.acquire(model, estimate, options.wait);
    if (!reservation) return tl::unexpected(reservation.error());
    CallResponse response;
    try {
      response = fn();
    } catch (...) {
      (void)reservation->cancel();
      throw;
    }
    ProviderResponse seen{options.format, response.status, response.headers, response.body};
    (void)limiter.observe(model, seen);  // unusable values are counted, never an error
    TokenEstimate used{0, 0};
    if (response.usage) {
      used = *response.usage;
    } else if (response.status / 100 == 2) {
      used = estimate;
    }
    if (auto s = reservation->commit(std::max<std::int64_t>(used.input, 0),
                                     std::max<std::int64_t>(used.output, 0));
        !s && s.error().code != ErrorCode::closed) {
      return tl::unexpected(s.error());
    }
    if (response.status != 429 || attempt >= options.max_429_retries) return response;
  }
}

}  // namespace ratelimit
