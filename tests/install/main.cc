// Compiled against an installed ratelimit, through find_package and through pkg-config.
#include <ratelimit/ratelimit.h>

#include <cstdio>

int main() {
  ratelimit::Config config;
  config.backend = ratelimit::Backend::memory;
  config.quotas = {{"gpt-4o", {2, 0, 0}}};
  auto limiter = ratelimit::RateLimiter::open(config);
  if (!limiter) return 1;
  const bool first = (*limiter)->try_acquire("gpt-4o", 10).granted();
  const bool second = (*limiter)->try_acquire("gpt-4o", 10).granted();
  const bool third = (*limiter)->try_acquire("gpt-4o", 10).granted();
  std::printf("granted: %d %d %d\n", first, second, third);
  // Links count_tokens (libcurl) without touching the network: a bad model name fails first.
  const auto count = ratelimit::count_tokens("bad name", "hello");
  const bool counted = !count && count.error().code == ratelimit::ErrorCode::invalid_argument;
  std::printf("estimate: %lld, count_tokens refused a bad name: %d\n",
              static_cast<long long>(ratelimit::estimate_text_tokens("hello")), counted);
  return first && second && !third && counted ? 0 : 1;
}
