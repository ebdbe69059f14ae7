// The fixtures of the `ratelimit` command's tests (cli_test.cc, cli_store_test.cc,
// cli_process_test.cc): Cli runs the built binary (RATELIMIT_CLI_BINARY) in a temporary HOME and
// captures its exit code and output; CliStore runs a test on both stores; and the checks of the
// JSON shapes every command shares.
#pragma once

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "child_env.h"
#include "gtest/gtest.h"

namespace ratelimit::testing {

namespace fs = std::filesystem;
using nlohmann::json;

struct Output {
  int code = -1;
  std::string out, err;
  json parsed() const {
    auto j = json::parse(out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << "not JSON: " << out;
    return j;
  }
};

inline std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_file(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

inline std::set<std::string> keys(const json& j) {
  std::set<std::string> out;
  for (auto it = j.begin(); it != j.end(); ++it) out.insert(it.key());
  return out;
}

inline const std::set<std::string> kStatsKeys = {
    "rpm",       "max_rpm",       "tpm",        "max_tpm",        "rpd",    "max_rpd", "day_start",
    "input_tpm", "max_input_tpm", "output_tpm", "max_output_tpm", "day_end"};
inline const std::set<std::string> kDecisionKeys = {"allowed",        "code",  "reason",
                                                    "retry_after_ms", "stats", "resolved_model"};

inline void expect_stats_shape(const json& s) {
  EXPECT_EQ(keys(s), kStatsKeys) << s.dump();
  for (const char* k : {"rpm", "max_rpm", "tpm", "max_tpm", "rpd", "max_rpd"}) {
    EXPECT_TRUE(s[k].is_number_integer()) << k;
  }
  EXPECT_TRUE(s["day_start"].is_null() || s["day_start"].is_string());
  if (s["day_start"].is_string()) {
    const std::string d = s["day_start"];
    EXPECT_EQ(d.size() >= 20 && d.back() == 'Z' && d[10] == 'T', true) << d;
  }
}

inline void expect_decision_shape(const json& d, bool with_reservation = false) {
  auto expected = kDecisionKeys;
  if (with_reservation) expected.insert("reservation_id");
  EXPECT_EQ(keys(d), expected) << d.dump();
  EXPECT_TRUE(d["allowed"].is_boolean());
  EXPECT_TRUE(d["code"].is_string());
  EXPECT_TRUE(d["reason"].is_string());
  EXPECT_TRUE(d["retry_after_ms"].is_null() || d["retry_after_ms"].is_number_integer());
  expect_stats_shape(d["stats"]);
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/ratelimit-cli-XXXXXX";
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    home_ = templ;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(home_, ec);
  }

  // The environment of every run: ours, with HOME replaced and the store variables cleared.
  std::vector<std::string> environment() const { return child_environment(home_, extra_env_); }

  // Runs `program args...` with stdin from `input`, stdout and stderr captured.
  Output spawn(const std::string& program, const std::vector<std::string>& args,
               const std::string& input = "") {
    static std::atomic<int> counter{0};
    const std::string n = std::to_string(counter++);
    const fs::path in = home_ / (".in" + n), out = home_ / (".out" + n), err = home_ / (".err" + n);
    write_file(in, input);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, in.c_str(), O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<std::string> argv_s = {program};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    auto env_s = environment();
    std::vector<char*> envp;
    for (auto& e : env_s) envp.push_back(e.data());
    envp.push_back(nullptr);
    pid_t pid = 0;
    Output r;
    const int rc = posix_spawn(&pid, program.c_str(), &fa, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
      ADD_FAILURE() << "posix_spawn " << program << ": " << std::strerror(rc);
      return r;
    }
    int status = 0;
    waitpid(pid, &status, 0);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.out = read_file(out);
    r.err = read_file(err);
    EXPECT_EQ(r.err.find("Sanitizer"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("runtime error"), std::string::npos) << r.err;
    fs::remove(in);
    fs::remove(out);
    fs::remove(err);
    return r;
  }

  Output rl(const std::vector<std::string>& args, const std::string& input = "") {
    std::vector<std::string> all = store_args_;
    all.insert(all.end(), args.begin(), args.end());
    return spawn(RATELIMIT_CLI_BINARY, all, input);
  }

  // The state as `status --json` (without the time-dependent decisions) and `quota list`.
  std::string snapshot() {
    Output s = rl({"--json", "status"});
    EXPECT_EQ(s.code, 0) << s.err;
    json j = s.parsed();
    for (auto& [name, m] : j["models"].items()) m.erase("decision");
    Output q = rl({"--json", "quota", "list"});
    EXPECT_EQ(q.code, 0) << q.err;
    return j.dump() + q.out;
  }

  json stats_of(const std::string& model) {
    Output s = rl({"--json", "status", model});
    EXPECT_EQ(s.code, 0) << s.err;
    return s.parsed()["models"][model];
  }

  fs::path home_;
  std::vector<std::string> store_args_;  // e.g. {"--state", "x.yaml"}
  std::map<std::string, std::string> extra_env_;
};

// Runs every test of a suite against both stores.
class CliStore : public Cli, public ::testing::WithParamInterface<std::string> {
 protected:
  void SetUp() override {
    Cli::SetUp();
    if (GetParam() == "yaml") store_args_ = {"--state", (home_ / "state.yaml").string()};
  }
  bool yaml() const { return GetParam() == "yaml"; }
};

}  // namespace ratelimit::testing
