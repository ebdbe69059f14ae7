#include "ratelimit/provider.h"

namespace ratelimit {

std::string_view to_string(ResponseFormat format) {
  switch (format) {
    case ResponseFormat::auto_detect:
      return "auto";
    case ResponseFormat::openai:
      return "openai";
    case ResponseFormat::azure_openai:
      return "azure_openai";
    case ResponseFormat::groq:
      return "groq";
    case ResponseFormat::anthropic:
      return "anthropic";
    case ResponseFormat::mistral:
      return "mistral";
    case ResponseFormat::gemini:
      return "gemini";
  }
  return "unknown";
}

std::optional<ResponseFormat> response_format_from_string(std::string_view name) {
  if (name == "azure") return ResponseFormat::azure_openai;
  for (ResponseFormat f :
       {ResponseFormat::auto_detect, ResponseFormat::openai, ResponseFormat::azure_openai,
        ResponseFormat::groq, ResponseFormat::anthropic, ResponseFormat::mistral,
        ResponseFormat::gemini}) {
    if (to_string(f) == name) return f;
  }
  return std::nullopt;
}

}  // namespace ratelimit
