// Quick start: keep gpt-4o within OpenAI's 500 RPM / 30,000 TPM, with state that survives
// restarts in ~/.core/ratelimits.yaml (or $CORE_HOME/.core/ratelimits.yaml).
//
// Each "call" reserves its estimated tokens first (waiting if the minute is full), makes the
// call (a stand-in here), then commits the tokens the provider actually reported.
#include <ratelimit/ratelimit.h>

#include <cstdio>

namespace {

// Stands in for an LLM API call; returns the usage the provider reported.
struct Usage {
  std::int64_t prompt_tokens, output_tokens;
};
Usage call_model(int i) { return {900 + 10 * i, 250 + 5 * i}; }

}  // namespace

int main() {
  ratelimit::Config config;
  config.providers = {ratelimit::Provider::openai};  // gpt-4o: 500 RPM, 30,000 TPM
  auto opened = ratelimit::RateLimiter::open(config);
  if (!opened) {
    std::fprintf(stderr, "%s\n", opened.error().message.c_str());
    return 3;
  }
  auto& limiter = **opened;
  if (auto loaded = limiter.load(); !loaded) {  // earlier runs' usage counts too
    std::fprintf(stderr, "%s\n", loaded.error().message.c_str());
    return 3;
  }
  std::printf("state: %s\n", limiter.config().file_path.c_str());

  for (int i = 0; i < 5; ++i) {
    ratelimit::WaitOptions wait;
    wait.timeout = std::chrono::seconds(5);
    auto reservation = limiter.acquire("gpt-4o", /*estimated_tokens=*/1500, wait);
    if (!reservation) {
      std::printf("call %d: not sent: %s\n", i, reservation.error().message.c_str());
      continue;
    }
    const Usage usage = call_model(i);
    if (auto committed = reservation->commit(usage.prompt_tokens, usage.output_tokens);
        !committed) {
      std::fprintf(stderr, "%s\n", committed.error().message.c_str());
      return 3;
    }
    std::printf("call %d: sent, %lld tokens\n", i,
                static_cast<long long>(usage.prompt_tokens + usage.output_tokens));
  }

  const ratelimit::ModelStats s = *limiter.stats("gpt-4o");
  std::printf("gpt-4o: %lld/%lld requests and %lld/%lld tokens this minute, %lld today\n",
              static_cast<long long>(s.rpm), static_cast<long long>(s.max_rpm),
              static_cast<long long>(s.tpm), static_cast<long long>(s.max_tpm),
              static_cast<long long>(s.rpd));
  const ratelimit::Decision next = limiter.decide("gpt-4o", 28'000);
  std::printf("a 28,000-token request now: %s (%s)\n",
              std::string(ratelimit::to_string(next.code)).c_str(),
              std::string(next.reason()).c_str());
  if (auto saved = limiter.persist(); !saved) {
    std::fprintf(stderr, "%s\n", saved.error().message.c_str());
    return 3;
  }
  return 0;
}
