// Internal to the proxy: a reader of request and response JSON for the common case that builds
// no tree (proxy_api.cc's classify() and usage_of() try it first). It checks the text as
// strictly as nlohmann/json and declines (nullopt) whenever its answer could differ from the
// full parser's; the caller then uses nlohmann, which also words every error.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "proxy_api.h"

namespace ratelimit::server::proxy {

// What classify() reads from a request body, by the fast reader; nullopt: decline.
struct RequestFields {
  std::string_view model;  // openai/anthropic: as written (no escapes)
  bool has_model = false;
  std::int64_t input = 0;
  std::optional<std::int64_t> max_out;
  bool stream = false;
};

// What classify() reads from a request body; nullopt: decline.
std::optional<RequestFields> fast_request(UpstreamApi api, std::string_view body);

// usage_of() by the fast reader; the outer nullopt: decline.
std::optional<std::optional<Usage>> fast_usage(UpstreamApi api, std::string_view body);

}  // namespace ratelimit::server::proxy
