// Internal: argument checks shared by the limiter and the stores, with their error texts.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "ratelimit/quota.h"
#include "ratelimit/status.h"

namespace ratelimit::detail {

// Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF (control characters
// and length are the model-name rule's business, not this one's).
bool is_valid_utf8(std::string_view text);

// `model "<printable name>"`, for messages.
std::string quoted(std::string_view model);

// invalid_argument "ratelimit.<operation>: model "...": <problem> (<the rule>)" for a name
// that model_name_problem() refuses; nullopt for a valid one.
std::optional<Error> check_model_name(std::string_view operation, std::string_view model);

// not_found "<operation>: unknown reservation id "<id>" (ids come from Reservation::id() of
// <issuer>)", for an id a store never issued.
Error unknown_reservation_id(const char* operation, std::string_view id, std::string_view issuer);

// "invalid argument" text for a quota with a negative limit, or nullopt when it is valid.
std::optional<std::string> validate_quota(std::string_view operation, std::string_view model,
                                          const ModelQuota& quota);

}  // namespace ratelimit::detail
