// Internal: argument checks shared by the limiter and the stores, with their error texts.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "ratelimit/quota.h"
#include "ratelimit/status.h"

namespace ratelimit::detail {

// `model "<printable name>"`, for messages.
std::string quoted(std::string_view model);

// invalid_argument "ratelimit.<operation>: model "...": <problem> (<the rule>)" for a name
// that model_name_problem() refuses; nullopt for a valid one.
std::optional<Error> check_model_name(std::string_view operation, std::string_view model);

// "invalid argument" text for a quota with a negative limit, or nullopt when it is valid.
std::optional<std::string> validate_quota(std::string_view operation, std::string_view model,
                                          const ModelQuota& quota);

}  // namespace ratelimit::detail
