// The example at the top of README.md, compiled so that it stays true.
#include <ratelimit/ratelimit.h>

#include <cstdint>
#include <string>

namespace {

struct Reply {
  struct {
    std::int64_t prompt_tokens, completion_tokens;
  } usage;
};
Reply call_openai(const std::string&) { return {{1200, 240}}; }  // stands in for the API call

}  // namespace

int main() {
  const std::string prompt = "Hello";
  ratelimit::Config config;
  config.backend = ratelimit::Backend::memory;  // the README's example uses the YAML default
  // ---- README example ----
  config.quotas = {{"gpt-4o", {.max_rpm = 500, .max_tpm = 30'000}}};  // or providers = {openai}
  auto limiter = std::move(*ratelimit::RateLimiter::open(config));
  limiter->load();  // usage from earlier runs counts
  auto r = limiter->acquire("gpt-4o", /*estimated_tokens=*/1'500);  // waits for the exact moment
  auto reply = call_openai(prompt);                                 // your call
  r->commit(reply.usage.prompt_tokens, reply.usage.completion_tokens);  // actual usage
  limiter->persist();
  // ---- end ----
  return limiter->stats("gpt-4o")->tpm == 1440 ? 0 : 1;
}
