// Token counts before a request: a local estimate for any provider, and an exact count from
// Gemini's countTokens endpoint (go-ratelimit's CountTokens).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ratelimit/decision.h"
#include "ratelimit/status.h"

namespace ratelimit {

// TokenEstimate (decision.h): what one request is expected to use, prompt (input) and
// completion (output) tokens.

// The local rule: one token per 4 bytes of UTF-8 text, rounded up (OpenAI's and Google's rule of
// thumb for English; code and non-Latin scripts use more tokens per byte, so prefer a
// provider's count when one is available).
inline constexpr std::int64_t kEstimateBytesPerToken = 4;
// The output estimate of a request that gives no max_tokens.
inline constexpr std::int64_t kDefaultOutputEstimate = 1024;

// ceil(text.size() / 4): "" → 0, "abcd" → 1, "abcde" → 2.
std::int64_t estimate_text_tokens(std::string_view text);

// input = estimate_text_tokens(prompt); output = max_tokens when given (the most the provider
// may produce, which Anthropic also counts against OTPM when a request starts; a negative value
// counts as 0), else kDefaultOutputEstimate.
TokenEstimate estimate_request(std::string_view prompt,
                               std::optional<std::int64_t> max_tokens = std::nullopt);

struct CountTokensOptions {
  // Sent as the x-goog-api-key header, never in a URL or a message. Empty: $GEMINI_API_KEY,
  // then $GOOGLE_API_KEY.
  std::string api_key;
  // The API root; the request goes to {base_url}/models/{model}:countTokens. http or https
  // (HTTPS verifies the server with the system CA store).
  std::string base_url = "https://generativelanguage.googleapis.com/v1beta";
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds timeout{30'000};  // the whole exchange
  std::size_t max_response_bytes = 1 << 20;   // longer replies are refused
};

// The number of tokens Gemini counts for `text` as one user turn (its "totalTokens") with
// model `model` ("gemini-2.0-flash" or "models/gemini-2.0-flash"). Empty text is 0 without a
// request. Errors ("ratelimit.count_tokens: ..."): invalid_argument for a bad model name,
// base URL, timeout or missing API key, and for HTTP 400/401/403; not_found for HTTP 404 (no
// such model); deadline_exceeded on a timeout; unavailable when the server cannot be reached,
// answers 429 or 5xx, or replies with something other than a count (or too much of it).
// Thread-safe; blocks for at most about connect_timeout + timeout.
Result<std::int64_t> count_tokens(std::string_view model, std::string_view text,
                                  const CountTokensOptions& options = {});

}  // namespace ratelimit
