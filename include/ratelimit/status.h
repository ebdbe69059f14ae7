// Errors as values: Status and Result<T> over tl::expected.
//
// No exception crosses the public API. Every Error message starts with the operation that
// failed, e.g. "ratelimit.load: yaml: bad indentation at line 3".
#pragma once

#include <string>
#include <string_view>
#include <tl/expected.hpp>
#include <utility>

namespace ratelimit {

enum class ErrorCode {
  invalid_argument,
  not_found,
  io_error,
  corrupt_state,
  unavailable,
  deadline_exceeded,
  cancelled,
  never_satisfiable,
  closed,
  internal,
};

// "invalid_argument", "not_found", ... (the enumerator's name).
std::string_view to_string(ErrorCode code);

struct Error {
  ErrorCode code = ErrorCode::internal;
  std::string message;

  // "<code>: <message>", for logs.
  std::string to_string() const;
  friend bool operator==(const Error&, const Error&) = default;
};

template <class T>
using Result = tl::expected<T, Error>;
using Status = Result<void>;

// Builds the unexpected value returned by a failing Status/Result.
inline tl::unexpected<Error> make_error(ErrorCode code, std::string message) {
  return tl::unexpected<Error>(Error{code, std::move(message)});
}

}  // namespace ratelimit
