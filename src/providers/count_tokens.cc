// Token estimates and Gemini's countTokens over libcurl.
#include <curl/curl.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>

#include "ratelimit/tokens.h"

namespace ratelimit {

std::int64_t estimate_text_tokens(std::string_view text) {
  const auto bytes = static_cast<std::int64_t>(text.size());
  return (bytes + kEstimateBytesPerToken - 1) / kEstimateBytesPerToken;
}

TokenEstimate estimate_request(std::string_view prompt, std::optional<std::int64_t> max_tokens) {
  TokenEstimate e;
  e.input = estimate_text_tokens(prompt);
  e.output = max_tokens ? std::max<std::int64_t>(*max_tokens, 0) : kDefaultOutputEstimate;
  return e;
}

namespace {

using nlohmann::json;

constexpr std::string_view kOp = "ratelimit.count_tokens: ";

tl::unexpected<Error> fail(ErrorCode code, const std::string& message) {
  return make_error(code, std::string(kOp) + message);
}

bool model_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_';
}

// Printable ASCII only, at most `max` bytes, every occurrence of `secret` replaced: for error
// messages built from what a server sent.
std::string summarise(std::string_view text, const std::string& secret, std::size_t max = 200) {
  std::string s(text);
  if (!secret.empty()) {
    for (auto pos = s.find(secret); pos != std::string::npos; pos = s.find(secret, pos)) {
      s.replace(pos, secret.size(), "<api key>");
    }
  }
  std::string out;
  for (char c : s) {
    if (out.size() >= max) {
      out += "...";
      break;
    }
    const auto u = static_cast<unsigned char>(c);
    out += (u < 0x20 || u >= 0x7f) ? ' ' : c;
  }
  return out;
}

// "HTTP 404 NOT_FOUND: models/x is not found" from Google's error JSON, else the body's start.
std::string http_error_text(long status, const std::string& body, const std::string& key) {
  std::string detail;
  const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_discarded() && j.is_object()) {
    const auto error = j.find("error");
    if (error != j.end() && error->is_object()) {
      const auto st = error->find("status");
      const auto msg = error->find("message");
      if (st != error->end() && st->is_string()) detail += st->get<std::string>();
      if (msg != error->end() && msg->is_string()) {
        detail += (detail.empty() ? "" : ": ") + msg->get<std::string>();
      }
    }
  }
  if (detail.empty()) detail = body.empty() ? "(empty body)" : body;
  return "HTTP " + std::to_string(status) + " " + summarise(detail, key);
}

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct Sink {
  std::string data;
  std::size_t cap = 0;
  bool overflow = false;
};

std::size_t on_data(char* ptr, std::size_t size, std::size_t nmemb, void* user) {
  auto* sink = static_cast<Sink*>(user);
  const std::size_t n = size * nmemb;
  if (sink->data.size() + n > sink->cap) {
    sink->overflow = true;
    return 0;  // stops the transfer: CURLE_WRITE_ERROR
  }
  sink->data.append(ptr, n);
  return n;
}

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

std::string env_key() {
  for (const char* name : {"GEMINI_API_KEY", "GOOGLE_API_KEY"}) {
    const char* v = std::getenv(name);  // NOLINT(concurrency-mt-unsafe): read-only use
    if (v != nullptr && *v != '\0') return v;
  }
  return {};
}

}  // namespace

Result<std::int64_t> count_tokens(std::string_view model, std::string_view text,
                                  const CountTokensOptions& options) {
  if (model.starts_with("models/")) model.remove_prefix(7);
  if (model.empty() || model.size() > 200 || !std::all_of(model.begin(), model.end(), model_char)) {
    return fail(ErrorCode::invalid_argument,
                "the model name must be letters, digits, '-', '.' or '_' (e.g. gemini-2.0-flash), "
                "optionally after \"models/\"");
  }
  std::string base = options.base_url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  if (!(base.starts_with("https://") || base.starts_with("http://")) || base.size() <= 8 ||
      base.find_first_of(" \t\r\n") != std::string::npos) {
    return fail(ErrorCode::invalid_argument,
                "base URL \"" + summarise(options.base_url, "") +
                    "\" is not an http:// or https:// URL; the default is "
                    "https://generativelanguage.googleapis.com/v1beta");
  }
  if (options.connect_timeout.count() <= 0 || options.timeout.count() <= 0 ||
      options.max_response_bytes == 0) {
    return fail(ErrorCode::invalid_argument,
                "the timeouts and the response size cap must be positive");
  }
  if (text.empty()) return 0;
  const std::string key = options.api_key.empty() ? env_key() : options.api_key;
  if (key.empty()) {
    return fail(ErrorCode::invalid_argument,
                "no API key; pass one (CountTokensOptions::api_key) or set GEMINI_API_KEY or "
                "GOOGLE_API_KEY");
  }
  if (key.find_first_of("\r\n") != std::string::npos || key.size() > 512) {
    return fail(ErrorCode::invalid_argument,
                "the API key contains a line break or is longer than 512 bytes; copy it again "
                "from Google AI Studio");
  }

  global_init();
  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  if (!curl) return fail(ErrorCode::internal, "libcurl could not create a handle");
  std::unique_ptr<curl_slist, SlistDeleter> headers;
  // "Expect:" turns off curl's 100-continue round trip for larger bodies.
  for (const std::string& h : {std::string("Content-Type: application/json"),
                               std::string("Expect:"), std::string("x-goog-api-key: ") + key}) {
    curl_slist* next = curl_slist_append(headers.get(), h.c_str());
    if (next == nullptr) return fail(ErrorCode::internal, "out of memory building the request");
    (void)headers.release();
    headers.reset(next);
  }

  const std::string url = base + "/models/" + std::string(model) + ":countTokens";
  const std::string body =
      json{{"contents",
            json::array({json{{"role", "user"}, {"parts", json::array({json{{"text", text}}})}}})}}
          .dump(-1, ' ', false, json::error_handler_t::replace);
  Sink sink;
  sink.cap = options.max_response_bytes;
  char errbuf[CURL_ERROR_SIZE] = {0};
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(options.connect_timeout.count()));
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(options.timeout.count()));
  curl_easy_setopt(c, CURLOPT_USERAGENT, "ratelimit");

  const CURLcode rc = curl_easy_perform(c);
  if (sink.overflow) {
    return fail(ErrorCode::unavailable, "the reply from " + base + " is larger than " +
                                            std::to_string(options.max_response_bytes) +
                                            " bytes; check the base URL");
  }
  if (rc == CURLE_OPERATION_TIMEDOUT) {
    return fail(ErrorCode::deadline_exceeded, "no reply from " + base + " within the timeout (" +
                                                  std::to_string(options.timeout.count()) +
                                                  " ms, connect " +
                                                  std::to_string(options.connect_timeout.count()) +
                                                  " ms); check the network or raise the timeout");
  }
  if (rc != CURLE_OK) {
    const std::string why = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc);
    return fail(ErrorCode::unavailable, "cannot reach " + base + ": " + summarise(why, key) +
                                            "; check the network and the base URL");
  }
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  if (status != 200) {
    const std::string what = http_error_text(status, sink.data, key);
    if (status == 400) return fail(ErrorCode::invalid_argument, what);
    if (status == 401 || status == 403) {
      return fail(ErrorCode::invalid_argument, what + " (check the API key)");
    }
    if (status == 404) {
      return fail(ErrorCode::not_found, what + " (check the model name and the base URL)");
    }
    return fail(ErrorCode::unavailable,
                what + (status == 429 ? " (quota exceeded; retry later)" : " (retry later)"));
  }
  const json reply = json::parse(sink.data, nullptr, /*allow_exceptions=*/false);
  if (!reply.is_discarded() && reply.is_object()) {
    const auto total = reply.find("totalTokens");
    // proto3 JSON omits a zero totalTokens: {} or only the details fields.
    const bool only_details =
        std::all_of(reply.items().begin(), reply.items().end(), [](const auto& item) {
          return item.key() == "promptTokensDetails" || item.key() == "cachedContentTokenCount" ||
                 item.key() == "cacheTokensDetails";
        });
    if (total == reply.end() && only_details) return 0;
    if (total != reply.end() && total->is_number_unsigned()) {
      return static_cast<std::int64_t>(
          std::min<std::uint64_t>(total->get<std::uint64_t>(), INT64_MAX));
    }
  }
  return fail(ErrorCode::unavailable,
              "the reply from " + base + " has no totalTokens count: " + summarise(sink.data, key));
}

}  // namespace ratelimit
