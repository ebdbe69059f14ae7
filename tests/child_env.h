// The environment of a child process in the tests that run the built programs (tests/cli,
// tests/server): ours, with HOME replaced, the store variables cleared, the sanitizers told to
// exit 86 on a report (no command exits 86; ASan's default, 1, is "denied") and extras added.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

extern char** environ;

namespace ratelimit::testing {

// `extra` replaces variables of the same name.
inline std::vector<std::string> child_environment(
    const std::filesystem::path& home, const std::map<std::string, std::string>& extra = {}) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view v(*e);
    if (v.starts_with("HOME=") || v.starts_with("CORE_HOME=") ||
        v.starts_with("RATELIMIT_STATE=") || v.starts_with("RATELIMIT_REDIS_URL=") ||
        v.starts_with("ASAN_OPTIONS=") || v.starts_with("UBSAN_OPTIONS=") ||
        v.starts_with("TSAN_OPTIONS=")) {
      continue;
    }
    bool replaced = false;
    for (const auto& [k, value] : extra) replaced = replaced || v.starts_with(k + "=");
    if (!replaced) env.emplace_back(v);
  }
  env.push_back("HOME=" + home.string());
  for (const char* name : {"ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS"}) {
    const char* value = std::getenv(name);
    std::string opts = value != nullptr ? value : "";
    env.push_back(std::string(name) + "=" + opts + (opts.empty() ? "" : ":") + "exitcode=86");
  }
  for (const auto& [k, v] : extra) env.push_back(k + "=" + v);
  return env;
}

}  // namespace ratelimit::testing
