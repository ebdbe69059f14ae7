#include "ratelimit/status.h"

namespace ratelimit {

std::string_view to_string(ErrorCode code) {
  switch (code) {
    case ErrorCode::invalid_argument:
      return "invalid_argument";
    case ErrorCode::not_found:
      return "not_found";
    case ErrorCode::io_error:
      return "io_error";
    case ErrorCode::corrupt_state:
      return "corrupt_state";
    case ErrorCode::unavailable:
      return "unavailable";
    case ErrorCode::deadline_exceeded:
      return "deadline_exceeded";
    case ErrorCode::cancelled:
      return "cancelled";
    case ErrorCode::never_satisfiable:
      return "never_satisfiable";
    case ErrorCode::closed:
      return "closed";
    case ErrorCode::internal:
      return "internal";
  }
  return "unknown";
}

std::string Error::to_string() const {
  std::string out(ratelimit::to_string(code));
  out += ": ";
  out += message;
  return out;
}

}  // namespace ratelimit
