// The YAML store's file format: snapshots saved and loaded back (nanoseconds, odd model names,
// values it could not read back refused), and files written by go-ratelimit. The files
// themselves (missing, corrupt, unreadable, links, a full disk, atomicity) are in
// yaml_files_test.cc.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "store/snapshot.h"
#include "store/yaml/yaml_file.h"
#include "time_format.h"
#include "yaml_test_util.h"

namespace ratelimit::detail {
namespace {

using namespace yaml_test;

// ---------------------------------------------------------------------------------------------
// Saving and loading

TEST(YamlStore, RoundTripsAMultiModelSnapshotWithNanoseconds) {
  TempDir dir;
  const std::string path = dir.file("state.yaml");
  auto store = make_yaml_store(path);
  const Snapshot saved = sample_snapshot();
  ASSERT_TRUE(store->save(saved)) << store->save(saved).error().to_string();
  EXPECT_EQ(load_ok(path), saved);
  EXPECT_TRUE(temp_files(dir.path()).empty());
}

TEST(YamlStore, WritesGoRatelimitsFormat) {
  TempDir dir;
  const std::string path = dir.file("state.yaml");
  Snapshot s;
  s.quotas["gemini-2.5-pro"] = {150, 1'000'000, 1000};
  ModelState& state = s.state["gemini-2.5-pro"];
  state.requests = {kFeb19 + 123'456'789, kFeb19 + kNs};
  state.tokens = {{kFeb19 + 123'456'789, 150}};
  state.day_start_ns = kFeb19 - 3600 * kNs;
  state.day_count = 5;
  s.state["model with spaces"] = {};
  ASSERT_TRUE(make_yaml_store(path)->save(s));
  EXPECT_EQ(read_text(path),
            "quotas:\n"
            "  gemini-2.5-pro: {max_rpm: 150, max_tpm: 1000000, max_rpd: 1000}\n"
            "state:\n"
            "  gemini-2.5-pro:\n"
            "    requests: [2026-02-19T10:00:00.123456789Z, 2026-02-19T10:00:01Z]\n"
            "    tokens: [{time: 2026-02-19T10:00:00.123456789Z, count: 150}]\n"
            "    day_start: 2026-02-19T09:00:00Z\n"
            "    day_count: 5\n"
            "  \"model with spaces\":\n"
            "    requests: []\n"
            "    tokens: []\n"
            "    day_start: 0001-01-01T00:00:00Z\n"
            "    day_count: 0\n");
}

TEST(YamlStore, EmptySnapshotWritesBothKeys) {
  TempDir dir;
  const std::string path = dir.file("state.yaml");
  ASSERT_TRUE(make_yaml_store(path)->save(Snapshot{}));
  EXPECT_EQ(read_text(path), "quotas: {}\nstate: {}\n");
  EXPECT_EQ(load_ok(path), Snapshot{});
}

TEST(YamlStore, SaveOverwritesAndKeepsPermissions) {
  TempDir dir;
  const std::string path = dir.file("state.yaml");
  auto store = make_yaml_store(path);
  ASSERT_TRUE(store->save(sample_snapshot()));
  ASSERT_EQ(::chmod(path.c_str(), 0640), 0);
  const Snapshot second = big_snapshot(3, 40);
  ASSERT_TRUE(store->save(second));
  EXPECT_EQ(load_ok(path), second);
  struct stat info {};
  ASSERT_EQ(::stat(path.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 07777, 0640u);
  EXPECT_TRUE(temp_files(dir.path()).empty());
}

TEST(YamlStore, CreatesNestedParentDirectories) {
  TempDir dir;
  const std::string path = dir.file("a/b/c/state.yaml");
  ASSERT_TRUE(make_yaml_store(path)->save(sample_snapshot()));
  EXPECT_TRUE(fs::is_directory(dir.path() / "a/b/c"));
  EXPECT_EQ(load_ok(path), sample_snapshot());
}

TEST(YamlStore, RelativePathInCurrentDirectory) {
  TempDir dir;
  const fs::path previous = fs::current_path();
  fs::current_path(dir.path());
  auto store = make_yaml_store("state.yaml");
  const auto saved = store->save(sample_snapshot());
  const auto loaded = store->load();
  fs::current_path(previous);
  ASSERT_TRUE(saved) << saved.error().to_string();
  ASSERT_TRUE(loaded && loaded->has_value());
  EXPECT_EQ(**loaded, sample_snapshot());
}

TEST(YamlStore, StrangeModelNamesRoundTrip) {
  const std::vector<std::string> names = {
      "",
      "model/with/slash",
      "model with spaces",
      "gemini-2.5-pro",
      "models/gemini-2.5-pro:generateContent",
      "a: b",
      "a:b",
      "key:",
      "a #comment",
      "#hash",
      "a#b",
      "\"quoted\"",
      "it's",
      "'single'",
      "back\\slash",
      "ünïcødé",
      "模型",
      "emoji 😀",
      "  leading spaces",
      "trailing spaces  ",
      " ",
      "null",
      "Null",
      "~",
      "true",
      "False",
      "yes",
      "no",
      "on",
      "y",
      "123",
      "-1",
      "1e3",
      "0x1F",
      ".inf",
      ".nan",
      "2026-02-19",
      "2026-02-19T10:00:00Z",
      "-",
      "- item",
      "? key",
      "[x]",
      "{x: 1}",
      ",",
      "&anchor",
      "*alias",
      "!tag",
      "!!str",
      "%YAML",
      "@at",
      "`tick",
      "|",
      ">",
      "---",
      "...",
      "tab\tname",
      "new\nline",
      "carriage\rreturn",
      "crlf\r\n",
      std::string("nul\0byte", 8),
      "\x01\x1f\x7f",
      "del\x7f",
      "ü\x7f\xe2\x80\xa9 😀",
      "\xc2\x85 next line",
      "\xe2\x80\xa8 line separator",
      "\xef\xbb\xbf bom",
      std::string(3000, 'x'),
  };
  Snapshot s;
  std::int64_t i = 1;
  for (const std::string& name : names) {
    s.quotas[name] = {i, i * 100, i * 1000};
    ModelState& state = s.state[name];
    state.requests = {kFeb19 + i};
    state.tokens = {{kFeb19 + i, i}};
    state.day_start_ns = kFeb19;
    state.day_count = i;
    ++i;
  }
  ASSERT_EQ(s.quotas.size(), names.size());
  TempDir dir;
  const std::string path = dir.file("state.yaml");
  const auto saved = make_yaml_store(path)->save(s);
  ASSERT_TRUE(saved) << saved.error().to_string();
  // Only characters every YAML reader accepts as they are: no raw control characters, DEL or
  // the Unicode line separators (libyaml-based readers such as Go's would fold them).
  const std::string text = read_text(path);
  for (const char c : text) {
    EXPECT_TRUE(c == '\n' || static_cast<unsigned char>(c) >= 0x20) << static_cast<int>(c);
    EXPECT_NE(c, '\x7f');
  }
  EXPECT_EQ(text.find("\xe2\x80\xa8"), std::string::npos);
  EXPECT_EQ(text.find("\xe2\x80\xa9"), std::string::npos);

  const Snapshot loaded = load_ok(path);
  EXPECT_EQ(loaded, s);
  for (const std::string& name : names) {
    EXPECT_EQ(loaded.quotas.count(name), 1u) << "missing quota for \"" << name << "\"";
    EXPECT_EQ(loaded.state.count(name), 1u) << "missing state for \"" << name << "\"";
  }
}

TEST(YamlStore, SaveRejectsNamesThatAreNotUtf8AndKeepsTheOldFile) {
  TempDir dir;
  const std::string path = dir.file("state.yaml");
  auto store = make_yaml_store(path);
  ASSERT_TRUE(store->save(sample_snapshot()));
  for (const std::string bad : {"\xff", "a\xc3", "\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80"}) {
    Snapshot s;
    s.quotas[bad] = {1, 1, 1};
    const Status status = store->save(s);
    ASSERT_FALSE(status);
    EXPECT_EQ(status.error().code, ErrorCode::invalid_argument);
    EXPECT_TRUE(starts_with(status.error().message, "ratelimit.persist: "))
        << status.error().message;
  }
  EXPECT_EQ(load_ok(path), sample_snapshot());
  EXPECT_TRUE(temp_files(dir.path()).empty());
}

TEST(YamlStore, SaveRejectsNegativeValuesItCouldNotReadBack) {
  TempDir dir;
  const std::string path = dir.file("state.yaml");
  auto store = make_yaml_store(path);
  Snapshot negative_quota;
  negative_quota.quotas["gpt-4o"] = {-5, 0, 0};
  Snapshot negative_count;
  negative_count.state["gpt-4o"].day_count = -1;
  Snapshot negative_tokens;
  negative_tokens.state["gpt-4o"].tokens = {{kFeb19, -3}};
  for (const Snapshot& s : {negative_quota, negative_count, negative_tokens}) {
    const Status status = store->save(s);
    ASSERT_FALSE(status);
    EXPECT_EQ(status.error().code, ErrorCode::invalid_argument);
    EXPECT_NE(status.error().message.find("\"gpt-4o\""), std::string::npos);
  }
  EXPECT_FALSE(fs::exists(path));
}

// ---------------------------------------------------------------------------------------------
// Files written by go-ratelimit

TEST(YamlStore, LoadsAGoRatelimitFileInFlowStyle) {
  TempDir dir;
  const std::string path = dir.file("ratelimits.yaml");
  write_text(path,
             "# written by go-ratelimit\n"
             "quotas:\n"
             "  gemini-2.5-pro: {max_rpm: 150, max_tpm: 1000000, max_rpd: 1000}\n"
             "  gpt-4o: {max_rpm: 500, max_tpm: 30000}\n"
             "  local-model: {}\n"
             "state:\n"
             "  gemini-2.5-pro:\n"
             "    requests: [2026-02-19T10:00:00.123456789Z, 2026-02-19T12:00:00.5+02:00, "
             "2026-02-19T10:00:01Z]\n"
             "    tokens: [{time: 2026-02-19T10:00:00.123456789Z, count: 150}, "
             "{time: 2026-02-19T05:00:00.5-05:00, count: 60}]\n"
             "    day_start: 2026-02-19T09:00:00Z\n"
             "    day_count: 5\n"
             "  gpt-4o:\n"
             "    requests: []\n"
             "    tokens: []\n"
             "    day_start: 0001-01-01T00:00:00Z\n"
             "    day_count: 0\n"
             "extra: ignored\n");
  Snapshot expected;
  expected.quotas["gemini-2.5-pro"] = {150, 1'000'000, 1000};
  expected.quotas["gpt-4o"] = {500, 30'000, 0};
  expected.quotas["local-model"] = {0, 0, 0};
  ModelState& gemini = expected.state["gemini-2.5-pro"];
  gemini.requests = {kFeb19 + 123'456'789, kFeb19 + kNs / 2, kFeb19 + kNs};
  gemini.tokens = {{kFeb19 + 123'456'789, 150}, {kFeb19 + kNs / 2, 60}};
  gemini.day_start_ns = kFeb19 - 3600 * kNs;
  gemini.day_count = 5;
  expected.state["gpt-4o"] = {};
  EXPECT_EQ(load_ok(path), expected);
}

TEST(YamlStore, LoadsAGoRatelimitFileInYamlV3BlockStyle) {
  TempDir dir;
  const std::string path = dir.file("ratelimits.yaml");
  // What Go's yaml.v3 Marshal writes: block style, four-space indentation.
  write_text(path,
             "quotas:\n"
             "    gemini-2.5-pro:\n"
             "        max_rpm: 150\n"
             "        max_tpm: 1000000\n"
             "        max_rpd: 1000\n"
             "    gemini-2.0-flash-lite:\n"
             "        max_rpm: 0\n"
             "        max_tpm: 0\n"
             "        max_rpd: 0\n"
             "state:\n"
             "    gemini-2.5-pro:\n"
             "        requests:\n"
             "            - 2026-02-19T10:00:00.123456789Z\n"
             "            - 2026-02-19T12:00:00.5+02:00\n"
             "        tokens:\n"
             "            - time: 2026-02-19T10:00:00.123456789Z\n"
             "              count: 150\n"
             "            - time: 2026-02-19T10:00:00.5Z\n"
             "              count: 60\n"
             "        day_start: 2026-02-19T09:00:00Z\n"
             "        day_count: 5\n"
             "    \"\":\n"
             "        requests: []\n"
             "        tokens: []\n"
             "        day_start: 0001-01-01T00:00:00Z\n"
             "        day_count: 0\n"
             "    model with spaces:\n"
             "        requests:\n"
             "            - 2026-02-19T10:00:02Z\n"
             "        tokens: []\n"
             "        day_start: 2026-02-19T11:00:00+01:00\n"
             "        day_count: 1\n");
  Snapshot expected;
  expected.quotas["gemini-2.5-pro"] = {150, 1'000'000, 1000};
  expected.quotas["gemini-2.0-flash-lite"] = {0, 0, 0};
  ModelState& gemini = expected.state["gemini-2.5-pro"];
  gemini.requests = {kFeb19 + 123'456'789, kFeb19 + kNs / 2};
  gemini.tokens = {{kFeb19 + 123'456'789, 150}, {kFeb19 + kNs / 2, 60}};
  gemini.day_start_ns = kFeb19 - 3600 * kNs;
  gemini.day_count = 5;
  expected.state[""] = {};
  ModelState& spaces = expected.state["model with spaces"];
  spaces.requests = {kFeb19 + 2 * kNs};
  spaces.day_start_ns = kFeb19;
  spaces.day_count = 1;
  EXPECT_EQ(load_ok(path), expected);
}

TEST(YamlStore, MissingFieldsDefaultAndUnknownKeysAreIgnored) {
  TempDir dir;
  const std::string path = dir.file("state.yaml");
  write_text(path,
             "version: 7\n"
             "quotas:\n"
             "  a: {max_rpm: 10, burst: 3}\n"
             "  b: ~\n"
             "  c:\n"
             "state:\n"
             "  a: {}\n"
             "  b: ~\n"
             "  c: {day_count: 2, note: hi}\n"
             "  d: {requests: ~, tokens: ~, day_start: ~, day_count: ~}\n"
             "  e: {tokens: [{time: 2026-02-19T10:00:00Z, source: x}]}\n");
  Snapshot expected;
  expected.quotas["a"] = {10, 0, 0};
  expected.quotas["b"] = {};
  expected.quotas["c"] = {};
  expected.state["a"] = {};
  expected.state["b"] = {};
  expected.state["c"].day_count = 2;
  expected.state["d"] = {};
  expected.state["e"].tokens = {{kFeb19, 0}};
  EXPECT_EQ(load_ok(path), expected);
}

TEST(YamlStore, IntegersMayHaveASignLeadingZerosOrQuotes) {
  TempDir dir;
  const std::string path = dir.file("state.yaml");
  write_text(path,
             "quotas:\n"
             "  m: {max_rpm: +5, max_tpm: 007, max_rpd: -0}\n"
             "  n: {max_rpm: \"150\", max_tpm: 9223372036854775807}\n");
  Snapshot expected;
  expected.quotas["m"] = {5, 7, 0};
  expected.quotas["n"] = {150, kMax, 0};
  EXPECT_EQ(load_ok(path), expected);
}

TEST(YamlStore, OnlyQuotasOrOnlyState) {
  TempDir dir;
  const std::string path = dir.file("state.yaml");
  write_text(path, "quotas:\n  m: {max_rpm: 1}\n");
  Snapshot quotas_only;
  quotas_only.quotas["m"] = {1, 0, 0};
  EXPECT_EQ(load_ok(path), quotas_only);
  write_text(path, "state:\n  m: {day_count: 1}\n");
  Snapshot state_only;
  state_only.state["m"].day_count = 1;
  EXPECT_EQ(load_ok(path), state_only);
}

TEST(YamlStore, SortsEntriesByTimeKeepingTheOrderOfEqualTimes) {
  TempDir dir;
  const std::string path = dir.file("state.yaml");
  write_text(
      path,
      "state:\n"
      "  m:\n"
      "    requests: [2026-02-19T10:00:02Z, 2026-02-19T10:00:00Z, 2026-02-19T12:00:01+02:00]\n"
      "    tokens: [{time: 2026-02-19T10:00:02Z, count: 1}, {time: 2026-02-19T10:00:00Z, "
      "count: 2}, {time: 2026-02-19T10:00:02Z, count: 3}, {time: 2026-02-19T10:00:00Z, "
      "count: 4}]\n");
  const Snapshot loaded = load_ok(path);
  const ModelState& m = loaded.state.at("m");
  EXPECT_EQ(m.requests, (std::vector<std::int64_t>{kFeb19, kFeb19 + kNs, kFeb19 + 2 * kNs}));
  EXPECT_EQ(m.tokens, (std::vector<TokenEntry>{
                          {kFeb19, 2}, {kFeb19, 4}, {kFeb19 + 2 * kNs, 1}, {kFeb19 + 2 * kNs, 3}}));
}

TEST(YamlStore, KeepsFutureTimestamps) {
  TempDir dir;
  const std::string path = dir.file("state.yaml");
  write_text(path,
             "state:\n  m: {requests: [2262-01-01T00:00:00Z], day_start: 2200-01-01T00:00:00Z}\n");
  const Snapshot loaded = load_ok(path);
  EXPECT_EQ(loaded.state.at("m").requests,
            std::vector<std::int64_t>{*parse_rfc3339("2262-01-01T00:00:00Z")});
  EXPECT_EQ(loaded.state.at("m").day_start_ns, *parse_rfc3339("2200-01-01T00:00:00Z"));
}

TEST(YamlStore, GoZeroDayStartMeansNotStarted) {
  TempDir dir;
  const std::string path = dir.file("state.yaml");
  for (const std::string_view zero : {"0001-01-01T00:00:00Z", "0001-01-01T01:00:00+01:00",
                                      "\"0001-01-01T00:00:00Z\"", "0001-01-01 00:00:00Z"}) {
    write_text(path, "state:\n  m: {day_start: " + std::string(zero) + ", day_count: 0}\n");
    const Snapshot loaded = load_ok(path);
    EXPECT_EQ(loaded.state.at("m").day_start_ns, 0) << zero;
  }
}

TEST(YamlStore, EmptyOrCommentOnlyFileIsAnEmptySnapshot) {
  TempDir dir;
  const std::string path = dir.file("state.yaml");
  for (const std::string_view text : {"", "\n", "# nothing yet\n", "---\n", "~\n", "null\n",
                                      "quotas:\nstate:\n", "quotas: {}\nstate: {}\n"}) {
    write_text(path, text);
    const Result<std::optional<Snapshot>> loaded = make_yaml_store(path)->load();
    ASSERT_TRUE(loaded) << loaded.error().to_string();
    ASSERT_TRUE(loaded->has_value()) << "\"" << text << "\"";
    EXPECT_EQ(**loaded, Snapshot{}) << "\"" << text << "\"";
  }
}

}  // namespace
}  // namespace ratelimit::detail
