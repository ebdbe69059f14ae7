// A fake LLM provider on loopback for the proxy's tests (proxy_test.cc): OpenAI (chat
// completions, responses, embeddings, models), Anthropic (messages) and Gemini
// (generateContent, streamGenerateContent?alt=sse), each with its real header set
// (x-ratelimit-*, anthropic-ratelimit-*), usage bodies and SSE streams; knobs for 429s with a
// retry-after hint, slow answers and answers that break off. Never reaches the internet.
#pragma once

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

namespace ratelimit::testing {

class FakeProvider {
 public:
  // The usage the fake reports, per API (what the proxy must commit).
  static constexpr int kOpenAiIn = 11, kOpenAiOut = 7;
  static constexpr int kAnthropicIn = 21, kAnthropicOut = 9;
  static constexpr int kGeminiIn = 13, kGeminiOut = 5;

  struct Seen {
    std::string method, path, body;
    httplib::Headers headers;
  };

  // With `cert` and `key` (PEM files): HTTPS.
  explicit FakeProvider(int threads = 32, const std::string& cert = "", const std::string& key = "")
      : owned_(cert.empty() ? std::make_unique<httplib::Server>()
                            : std::make_unique<httplib::SSLServer>(cert.c_str(), key.c_str())),
        server_(*owned_),
        tls_(!cert.empty()) {
    server_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    server_.set_tcp_nodelay(true);
    server_.Post(R"(/v1/chat/completions)", [this](const auto& q, auto& r) { openai_chat(q, r); });
    server_.Post(R"(/v1/responses)", [this](const auto& q, auto& r) {
      if (!admit(q, r)) return;
      r.set_content(R"({"id":"resp_1","object":"response","output":[],"usage":{"input_tokens":)" +
                        std::to_string(kOpenAiIn) + R"(,"output_tokens":)" +
                        std::to_string(kOpenAiOut) + "}}",
                    "application/json");
    });
    server_.Post(R"(/v1/embeddings)", [this](const auto& q, auto& r) {
      if (!admit(q, r)) return;
      r.set_content(R"({"object":"list","data":[],"usage":{"prompt_tokens":5,"total_tokens":5}})",
                    "application/json");
    });
    server_.Get(R"(/v1/models)", [this](const auto& q, auto& r) {
      record(q);
      r.set_content(R"({"object":"list","data":[{"id":"gpt-4o"}]})", "application/json");
    });
    server_.Post(R"(/v1/messages)", [this](const auto& q, auto& r) { anthropic(q, r); });
    server_.Post(R"(/v1beta/models/([^/:]+):(generateContent|streamGenerateContent))",
                 [this](const auto& q, auto& r) { gemini(q, r); });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // Until it runs, stop() would do nothing (and the destructor's join wait forever).
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~FakeProvider() {
    server_.stop();
    thread_.join();
  }

  int port() const { return port_; }
  std::string url() const {
    return (tls_ ? "https://127.0.0.1:" : "http://127.0.0.1:") + std::to_string(port_);
  }
  int hits() const { return hits_.load(); }
  std::vector<Seen> seen() const {
    std::lock_guard lock(mu_);
    return seen_;
  }

  // The next n inference calls answer 429 with `retry-after: seconds`.
  std::atomic<int> answer_429{0};
  std::atomic<int> retry_after_s{2};
  // Inference calls sleep this long before answering.
  std::atomic<int> delay_ms{0};
  // The next n inference calls break off: a streamed one after its first event, a whole one
  // after half its body.
  std::atomic<int> drop{0};
  // Streamed answers pause this long between events.
  std::atomic<int> event_gap_ms{0};
  // Streamed answers send their head, then hold their first event until release_first()
  // (at most 10 s).
  std::atomic<bool> hold_first{false};
  void release_first() {
    {
      std::lock_guard lock(mu_);
      released_ = true;
    }
    released_cv_.notify_all();
  }

 private:
  void record(const httplib::Request& q) {
    hits_.fetch_add(1);
    std::lock_guard lock(mu_);
    seen_.push_back({q.method, q.path, q.body, q.headers});
  }

  // Records the call, sleeps, answers a 429 when asked to: false when it did.
  bool admit(const httplib::Request& q, httplib::Response& r, bool anthropic_api = false,
             bool gemini_api = false) {
    record(q);
    if (int d = delay_ms.load()) std::this_thread::sleep_for(std::chrono::milliseconds(d));
    if (answer_429.load() > 0 && answer_429.fetch_sub(1) > 0) {
      r.status = 429;
      r.set_header("retry-after", std::to_string(retry_after_s.load()));
      if (anthropic_api) {
        r.set_content(
            R"({"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}})",
            "application/json");
      } else if (gemini_api) {
        r.set_content(
            R"({"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":")" +
                std::to_string(retry_after_s.load()) + R"(s"}]}})",
            "application/json");
      } else {
        r.set_header("x-ratelimit-limit-requests", "10000");
        r.set_header("x-ratelimit-remaining-requests", "0");
        r.set_header("x-ratelimit-reset-requests", std::to_string(retry_after_s.load()) + "s");
        r.set_content(
            R"({"error":{"message":"Rate limit reached for gpt-4o","type":"requests","param":null,"code":"rate_limit_exceeded"}})",
            "application/json");
      }
      return false;
    }
    return true;
  }

  static void openai_headers(httplib::Response& r) {
    r.set_header("x-ratelimit-limit-requests", "10000");
    r.set_header("x-ratelimit-remaining-requests", "9999");
    r.set_header("x-ratelimit-reset-requests", "6ms");
    r.set_header("x-ratelimit-limit-tokens", "30000000");
    r.set_header("x-ratelimit-remaining-tokens", "29999000");
    r.set_header("x-ratelimit-reset-tokens", "2ms");
    r.set_header("openai-processing-ms", "12");
  }

  // Streams `events` (each a complete "data: ...\n\n" text), breaking off after the first when
  // a drop is pending.
  void stream(httplib::Response& r, std::vector<std::string> events,
              const char* content_type = "text/event-stream") {
    const bool cut = drop.load() > 0 && drop.fetch_sub(1) > 0;
    const int gap = event_gap_ms.load();
    const bool hold = hold_first.load();
    r.set_chunked_content_provider(
        content_type, [this, events = std::move(events), cut, gap, hold, i = std::size_t{0}](
                          std::size_t, httplib::DataSink& sink) mutable {
          if (i == 0 && hold) {
            std::unique_lock lock(mu_);
            released_cv_.wait_for(lock, std::chrono::seconds(10), [this] { return released_; });
          }
          if (i > 0 && gap > 0) std::this_thread::sleep_for(std::chrono::milliseconds(gap));
          if (i == events.size()) {
            sink.done();
            return true;
          }
          if (cut && i == 1) return false;  // the connection is closed mid-stream
          const std::string& e = events[i++];
          return sink.write(e.data(), e.size());
        });
  }

  void whole(httplib::Response& r, const std::string& body) {
    if (drop.load() > 0 && drop.fetch_sub(1) > 0) {
      const std::string half = body.substr(0, body.size() / 2);
      r.set_content_provider(body.size(), "application/json",
                             [half](std::size_t offset, std::size_t, httplib::DataSink& sink) {
                               if (offset == 0) sink.write(half.data(), half.size());
                               return offset == 0;
                             });
      return;
    }
    r.set_content(body, "application/json");
  }

  void openai_chat(const httplib::Request& q, httplib::Response& r) {
    if (!admit(q, r)) return;
    openai_headers(r);
    const auto j = nlohmann::json::parse(q.body, nullptr, false);
    const std::string usage = R"({"prompt_tokens":)" + std::to_string(kOpenAiIn) +
                              R"(,"completion_tokens":)" + std::to_string(kOpenAiOut) +
                              R"(,"total_tokens":)" + std::to_string(kOpenAiIn + kOpenAiOut) + "}";
    if (j.is_object() && j.value("stream", false)) {
      std::vector<std::string> events = {
          R"(data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hel"}}]})"
          "\n\n",
          R"(data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]})"
          "\n\n"};
      if (j.contains("stream_options") && j["stream_options"].value("include_usage", false)) {
        events.push_back(
            R"(data: {"id":"c1","object":"chat.completion.chunk","choices":[],"usage":)" + usage +
            "}\n\n");
      }
      events.push_back("data: [DONE]\n\n");
      return stream(r, std::move(events));
    }
    whole(
        r,
        R"({"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":)" +
            usage + "}");
  }

  void anthropic(const httplib::Request& q, httplib::Response& r) {
    if (!admit(q, r, true)) return;
    r.set_header("anthropic-ratelimit-requests-limit", "4000");
    r.set_header("anthropic-ratelimit-requests-remaining", "3999");
    r.set_header("anthropic-ratelimit-requests-reset", "2099-01-01T00:00:00Z");
    r.set_header("anthropic-ratelimit-input-tokens-limit", "2000000");
    r.set_header("anthropic-ratelimit-input-tokens-remaining", "1999000");
    r.set_header("anthropic-ratelimit-input-tokens-reset", "2099-01-01T00:00:00Z");
    r.set_header("request-id", "req_fake");
    const auto j = nlohmann::json::parse(q.body, nullptr, false);
    const std::string in = std::to_string(kAnthropicIn), out = std::to_string(kAnthropicOut);
    if (j.is_object() && j.value("stream", false)) {
      return stream(
          r,
          {"event: message_start\ndata: "
           R"({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"usage":{"input_tokens":)" +
               in + R"(,"output_tokens":1}}})" + "\n\n",
           "event: content_block_delta\ndata: "
           R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}})"
           "\n\n",
           "event: message_delta\ndata: "
           R"({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":)" +
               out + "}}\n\n",
           "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"});
    }
    whole(
        r,
        R"({"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"Hi"}],"usage":{"input_tokens":)" +
            in + R"(,"output_tokens":)" + out + "}}");
  }

  void gemini(const httplib::Request& q, httplib::Response& r) {
    if (!admit(q, r, false, true)) return;
    const std::string usage = R"("usageMetadata":{"promptTokenCount":)" +
                              std::to_string(kGeminiIn) + R"(,"candidatesTokenCount":)" +
                              std::to_string(kGeminiOut) + "}";
    const std::string part =
        R"({"candidates":[{"content":{"parts":[{"text":"Hi"}],"role":"model"}}]})";
    if (q.matches[2] == "streamGenerateContent" && q.get_param_value("alt") != "sse") {
      // Without ?alt=sse, Gemini streams one JSON array, element by element (each element's
      // usageMetadata is the running total; a '}' in a text must not end an element).
      const std::string early =
          R"({"candidates":[{"content":{"parts":[{"text":"a } \" ]"}]}}],)"
          R"("usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":1}})";
      return stream(
          r, {"[" + early, ",\r\n" + part.substr(0, part.size() - 1) + "," + usage + "}", "]"},
          "application/json; charset=UTF-8");
    }
    if (q.matches[2] == "streamGenerateContent") {
      return stream(r, {"data: " + part + "\r\n\r\n",
                        "data: " + part.substr(0, part.size() - 1) + "," + usage + "}\r\n\r\n"});
    }
    whole(r, part.substr(0, part.size() - 1) + "," + usage + "}");
  }

  std::unique_ptr<httplib::Server> owned_;
  httplib::Server& server_;
  bool tls_ = false;
  int port_ = 0;
  std::thread thread_;
  std::atomic<int> hits_{0};
  mutable std::mutex mu_;
  bool released_ = false;  // release_first() was called (guarded by mu_)
  std::condition_variable released_cv_;
  std::vector<Seen> seen_;
};

}  // namespace ratelimit::testing
