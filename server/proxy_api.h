// What the limiting proxy knows about each provider API, without sockets: which requests are
// inference calls, their model and token estimate, where the usage is in a response (JSON or
// server-sent events) and the provider's own error shape. Pure functions and one incremental
// SSE reader, testable on strings (tests/server/proxy_test.cc). docs/proxy.md describes them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "http.h"
#include "proxy.h"
#include "ratelimit/decision.h"
#include "server.h"

namespace ratelimit::server::proxy {

struct Usage {
  std::int64_t input = 0, output = 0;
};

// A request to an upstream, classified.
struct Call {
  enum class Kind { other, inference, unparseable } kind = Kind::other;
  std::string model;       // inference: as the client named it
  TokenEstimate estimate;  // inference: the estimate rule of tokens.h
  bool stream = false;     // the answer is expected as server-sent events
  // OpenAI chat/completions streamed without stream_options.include_usage: the proxy asks for
  // the usage chunk (splice_include_usage) and strips it from what the client sees.
  bool add_include_usage = false;
  std::string error;  // unparseable: why, for the 400
};

// `path` is the request's path below the upstream's prefix ("/v1/chat/completions").
Call classify(UpstreamApi api, std::string_view method, std::string_view path,
              std::string_view body);

// classify() and usage_of() read the common shapes without building a JSON tree and fall back
// to a full JSON parser for the rest (escaped keys, duplicates, huge integers, invalid JSON).
// These two always use the full parser: the reference that tests compare the fast reader with.
Call classify_with_full_parser(UpstreamApi api, std::string_view method, std::string_view path,
                               std::string_view body);

// The body with "stream_options":{"include_usage":true} inserted after its opening '{' (the
// rest of the JSON text as sent). Call only for a body that classify() parsed as an object.
std::string splice_include_usage(std::string_view body);

// The usage in a whole JSON response body (nullopt: none, or not JSON).
std::optional<Usage> usage_of(UpstreamApi api, std::string_view body);
std::optional<Usage> usage_of_with_full_parser(UpstreamApi api, std::string_view body);

// Reads a server-sent-event stream as it passes: events are given back whole (so that one can
// be dropped) and the usage they carry is kept. Not thread-safe.
class EventReader {
 public:
  // `json_array`: the stream is not server-sent events but one JSON array sent element by
  // element (Gemini's streamGenerateContent without ?alt=sse): the bytes go to `out` as they
  // come, and usage is read from the last element that carries it.
  EventReader(UpstreamApi api, bool strip_usage_chunk, bool json_array = false)
      : api_(api), strip_(strip_usage_chunk), array_(json_array) {}
  // Appends `data` and moves to `out` every complete event (those to forward).
  void feed(std::string_view data, std::string& out);
  // The end of the stream: what is left (an unterminated event) goes to `out`.
  void finish(std::string& out);
  std::optional<Usage> usage() const;

 private:
  void event(std::string_view text, std::string& out);
  void array_bytes(std::string_view data);
  UpstreamApi api_;
  bool strip_;
  // json_array: where the scan of the array stands (nesting depth, inside a string, after a
  // backslash); pending_ holds the element being read (from its '{'), up to the size bound.
  bool array_;
  int depth_ = 0;
  bool in_string_ = false, escaped_ = false;
  std::string pending_;
  bool overflow_ = false;  // an event beyond the size bound: forwarded unread from then on
  std::optional<std::int64_t> input_, output_;
};

// Why a proxied request is refused from its head alone, as (status, message): 401 when the
// server has a token and X-Ratelimit-Token does not carry it (Authorization belongs to the
// provider), 403 for a non-loopback Host or a foreign Origin without a token. nullopt: go on.
std::optional<std::pair<int, std::string>> access_problem(const Request& head,
                                                          const std::string& token);

// The proxy's series in the Prometheus text format (appended to GET /metrics).
std::string prometheus_text(const ProxyCounters& c);

// The provider's error JSON for the proxy's own answers. `kind`: "rate_limit", "invalid" or
// "unavailable".
std::string error_body(UpstreamApi api, int status, std::string_view kind,
                       const std::string& message);

}  // namespace ratelimit::server::proxy
