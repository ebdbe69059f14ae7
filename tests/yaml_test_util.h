// Helpers for the YAML store's tests (yaml_store_test.cc, yaml_files_test.cc): temp dirs, files
// written and read whole, loads that must succeed, and sample snapshots.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "store/snapshot.h"
#include "store/yaml/yaml_file.h"

namespace ratelimit::detail::yaml_test {

namespace fs = std::filesystem;

inline constexpr std::int64_t kNs = 1'000'000'000;
// 2026-02-19T10:00:00Z
inline constexpr std::int64_t kFeb19 = 1'771'495'200 * kNs;
inline constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
inline constexpr std::int64_t kMin = std::numeric_limits<std::int64_t>::min();

// A fresh directory under /tmp, removed with everything in it at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string pattern = "/tmp/ratelimit-yaml-test-XXXXXX";
    const char* made = ::mkdtemp(pattern.data());
    if (made == nullptr) std::abort();
    path_ = made;
  }
  ~TempDir() {
    std::error_code ec;
    // Restore permissions a test may have taken away, then remove everything.
    for (auto it = fs::recursive_directory_iterator(path_, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      fs::permissions(it->path(), fs::perms::owner_all, fs::perm_options::add, ec);
    }
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const fs::path& path() const { return path_; }
  std::string file(std::string_view name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

// Writes a new file (removing any old one first: ext4 flushes a file truncated and rewritten in
// place on close, which makes loops of rewrites slow).
inline void write_text(const std::string& path, std::string_view text) {
  std::error_code ec;
  fs::remove(path, ec);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Files in `dir` whose name contains ".tmp-".
inline std::vector<std::string> temp_files(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.find(".tmp-") != std::string::npos) names.push_back(name);
  }
  return names;
}

inline bool starts_with(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

// Loads `path`, expecting success with a snapshot.
inline Snapshot load_ok(const std::string& path) {
  const Result<std::optional<Snapshot>> loaded = make_yaml_store(path)->load();
  EXPECT_TRUE(loaded.has_value()) << loaded.error().to_string();
  if (!loaded.has_value()) return {};
  EXPECT_TRUE(loaded->has_value()) << path;
  return loaded->value_or(Snapshot{});
}

inline Snapshot sample_snapshot() {
  Snapshot s;
  s.quotas["gemini-2.5-pro"] = {150, 1'000'000, 1000};
  s.quotas["gpt-4o"] = {500, 30'000, 0};
  s.quotas["unlimited"] = {0, 0, 0};
  s.quotas["huge"] = {kMax, kMax, kMax};

  ModelState& gemini = s.state["gemini-2.5-pro"];
  gemini.requests = {kFeb19 + 123'456'789, kFeb19 + kNs, kFeb19 + kNs + 1, kFeb19 + 59 * kNs};
  gemini.tokens = {{kFeb19 + 123'456'789, 150}, {kFeb19 + kNs, 0}, {kFeb19 + kNs, 60}};
  gemini.day_start_ns = kFeb19 - 3600 * kNs;
  gemini.day_count = 5;

  ModelState& gpt = s.state["gpt-4o"];  // nothing recorded, day not started
  (void)gpt;

  ModelState& odd = s.state["extremes"];  // no quota; instants at the ends of the int64 range
  odd.requests = {kMin, -1, 0, 1, kMax};
  odd.tokens = {{kMin, kMax}, {-kNs / 2, 1}, {kMax, 0}};
  odd.day_start_ns = -1;
  odd.day_count = kMax;
  return s;
}

// A snapshot of about `requests` entries spread over four models; `seed` makes it distinct.
inline Snapshot big_snapshot(std::int64_t seed, int requests) {
  Snapshot s;
  for (int m = 0; m < 4; ++m) {
    const std::string model = "model-" + std::to_string(m);
    s.quotas[model] = {seed, seed * 1000, seed * 10};
    ModelState& state = s.state[model];
    for (int i = 0; i < requests / 4; ++i) {
      const std::int64_t t = kFeb19 + seed * 7 + std::int64_t{i} * 1'000'003;
      state.requests.push_back(t);
      state.tokens.push_back({t, seed + i});
    }
    state.day_start_ns = kFeb19 + seed;
    state.day_count = seed + m;
  }
  return s;
}

}  // namespace ratelimit::detail::yaml_test
