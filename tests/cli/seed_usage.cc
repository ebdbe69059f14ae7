// Test helper for the CLI suite: records usage into a state store as if it happened `ago_ms`
// milliseconds in the past (a ManualClock set back), so that a test can wait for the window to
// free in well under a second instead of a minute.
//
//   seed_usage STATE_PATH MODEL MAX_RPM REQUESTS AGO_MS
//
// A .yaml/.yml path is the YAML store, anything else the SQLite store. Sets MODEL's quota to
// max_rpm=MAX_RPM (tpm and rpd unlimited) and records REQUESTS requests of 1 token each.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "ratelimit/ratelimit.h"

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: seed_usage STATE_PATH MODEL MAX_RPM REQUESTS AGO_MS\n");
    return 2;
  }
  const std::string path = argv[1];
  const std::string model = argv[2];
  const std::int64_t max_rpm = std::atoll(argv[3]);
  const int requests = std::atoi(argv[4]);
  const auto ago = std::chrono::milliseconds(std::atoll(argv[5]));
  const bool yaml = path.ends_with(".yaml") || path.ends_with(".yml");

  ratelimit::Config config;
  config.backend = yaml ? ratelimit::Backend::yaml : ratelimit::Backend::sqlite;
  config.file_path = path;
  config.providers = {ratelimit::Provider::local};  // seed nothing
  config.clock = std::make_shared<ratelimit::ManualClock>(std::chrono::system_clock::now() - ago);
  auto limiter = ratelimit::RateLimiter::open(config);
  if (!limiter) {
    std::fprintf(stderr, "seed_usage: %s\n", limiter.error().to_string().c_str());
    return 3;
  }
  auto& l = **limiter;
  if (auto s = l.load(); !s) {
    std::fprintf(stderr, "seed_usage: %s\n", s.error().to_string().c_str());
    return 3;
  }
  if (auto s = l.set_quota(model, {.max_rpm = max_rpm}); !s) return 3;
  for (int i = 0; i < requests; ++i) {
    if (auto s = l.record_usage(model, 1, 0); !s) return 3;
  }
  if (auto s = l.persist(); !s) {
    std::fprintf(stderr, "seed_usage: %s\n", s.error().to_string().c_str());
    return 3;
  }
  return l.close() ? 0 : 3;
}
