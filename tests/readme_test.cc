// README.md's first C++ example, extracted at configure time into readme_example.cc (see
// tests/CMakeLists.txt), compiled and run here against a YAML file in a temporary home.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>

#include "readme_example.h"
#include "test_util.h"

Reply call_openai(const std::string& prompt) {
  EXPECT_EQ(prompt, "Summarise this");
  Reply reply;
  reply.usage.prompt_tokens = 1'200;
  reply.usage.completion_tokens = 240;
  return reply;
}

namespace ratelimit {
namespace {

TEST(ReadmeTest, ExampleRunsAndPersistsTheActualUsage) {
  testing::TempDir home;
  ASSERT_EQ(::setenv("CORE_HOME", home.path().c_str(), 1), 0);
  ASSERT_EQ(readme_example("Summarise this"), 0);
  // A second run (as the example's next start) counts the first one's usage.
  ASSERT_EQ(readme_example("Summarise this"), 0);
  ::unsetenv("CORE_HOME");

  const std::string state = home.file(".core/ratelimits.yaml");
  ASSERT_TRUE(std::filesystem::exists(state));
  Config config;
  config.file_path = state;
  config.providers = {Provider::local};
  auto limiter = RateLimiter::open(config);
  ASSERT_TRUE(limiter) << limiter.error().message;
  ASSERT_TRUE((*limiter)->load());
  auto stats = (*limiter)->stats("gpt-4o");
  ASSERT_TRUE(stats) << stats.error().message;
  // Unless a minute passed between the runs (then the first left the window).
  EXPECT_GE(stats->rpd, 2);
  EXPECT_EQ(stats->tpm, stats->rpm * 1'440);  // the committed usage, not the 1'500 estimate
  EXPECT_EQ(stats->max_rpm, 500);
  EXPECT_EQ(stats->max_tpm, 30'000);
}

TEST(ReadmeTest, ExampleReportsAFailureAsAValue) {
  testing::TempDir home;
  // The state file's place is a directory: load fails, and the example returns 1.
  std::filesystem::create_directories(home.path() / ".core" / "ratelimits.yaml");
  ASSERT_EQ(::setenv("CORE_HOME", home.path().c_str(), 1), 0);
  EXPECT_EQ(readme_example("Summarise this"), 1);
  ::unsetenv("CORE_HOME");
}

}  // namespace
}  // namespace ratelimit
