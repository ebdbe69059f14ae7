// Shared helpers for the tests: a fixed start time, limiters on a ManualClock, temp dirs.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>

#include "ratelimit/ratelimit.h"

namespace ratelimit::testing {

using namespace std::chrono_literals;

// 2026-02-19T10:00:00Z
inline TimePoint start_time() { return TimePoint(std::chrono::seconds(1771495200)); }

struct Fixture {
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>(start_time());
  std::unique_ptr<RateLimiter> limiter;
};

// A memory-backed limiter with exactly `quotas` (none: no quota at all), on a ManualClock at
// start_time(). If it cannot be opened, the calling test fails (it is ended by an exception).
inline Fixture memory_limiter(QuotaMap quotas) {
  Fixture f;
  Config config;
  config.backend = Backend::memory;
  config.providers = {Provider::local};  // no provider defaults: exactly `quotas`
  config.quotas = std::move(quotas);
  config.clock = f.clock;
  auto opened = RateLimiter::open(std::move(config));
  if (!opened) {
    // Report it, then end the test: every caller uses the limiter at once, and a helper that
    // returns a value cannot ASSERT. GoogleTest records the exception as this test's failure.
    ADD_FAILURE() << "memory_limiter: " << opened.error().message;
    throw std::runtime_error("memory_limiter: cannot open a memory limiter");
  }
  f.limiter = std::move(*opened);
  return f;
}

// A fresh directory under the system temp dir, removed when this object goes.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "ratelimit-test-XXXXXX");
    char* made = mkdtemp(pattern.data());
    EXPECT_NE(made, nullptr);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace ratelimit::testing
