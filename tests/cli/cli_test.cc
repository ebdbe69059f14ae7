// Tests of the `ratelimit` command: each runs the built binary in a temporary HOME and checks
// its exit code, its output (JSON parsed with nlohmann) and that bad input leaves the state
// as it was. Terminal behaviour (bars, countdown, confirmation) runs under a pseudo-terminal.
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "args.h"
#include "child_env.h"
#include "gtest/gtest.h"
#include "ratelimit/model_name.h"
#include "ratelimit/quota.h"
#include "redis_server.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Output {
  int code = -1;
  std::string out, err;
  json parsed() const {
    auto j = json::parse(out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << "not JSON: " << out;
    return j;
  }
};

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

std::set<std::string> keys(const json& j) {
  std::set<std::string> out;
  for (auto it = j.begin(); it != j.end(); ++it) out.insert(it.key());
  return out;
}

const std::set<std::string> kStatsKeys = {
    "rpm",       "max_rpm",       "tpm",        "max_tpm",        "rpd",    "max_rpd", "day_start",
    "input_tpm", "max_input_tpm", "output_tpm", "max_output_tpm", "day_end"};
const std::set<std::string> kDecisionKeys = {"allowed",        "code",  "reason",
                                             "retry_after_ms", "stats", "resolved_model"};

void expect_stats_shape(const json& s) {
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

void expect_decision_shape(const json& d, bool with_reservation = false) {
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
  std::vector<std::string> environment() const {
    return ratelimit::testing::child_environment(home_, extra_env_);
  }

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

INSTANTIATE_TEST_SUITE_P(Stores, CliStore, ::testing::Values("sqlite", "yaml"),
                         [](const auto& info) { return info.param; });

// --- argument helpers (unit) ------------------------------------------------------------------

TEST(CliArgs, Durations) {
  using ratelimit::cli::parse_duration;
  using namespace std::chrono_literals;
  EXPECT_EQ(parse_duration("500ms"), std::optional<ratelimit::Duration>(500ms));
  EXPECT_EQ(parse_duration("30s"), std::optional<ratelimit::Duration>(30s));
  EXPECT_EQ(parse_duration("2m"), std::optional<ratelimit::Duration>(2min));
  EXPECT_EQ(parse_duration("1h"), std::optional<ratelimit::Duration>(1h));
  EXPECT_EQ(parse_duration("0s"), std::optional<ratelimit::Duration>(0s));
  for (const char* bad : {"", "5", "-1s", "1.5s", "1d", "s", "1 s", "10sec", "99999999999999h"}) {
    EXPECT_FALSE(parse_duration(bad)) << bad;
  }
}

TEST(CliArgs, CountsAndNames) {
  using ratelimit::cli::model_problem;
  using ratelimit::cli::parse_count;
  EXPECT_EQ(parse_count("0"), 0);
  EXPECT_EQ(parse_count("1500"), 1500);
  for (const char* bad : {"", "-1", "+1", "1e3", " 5", "12abc", "99999999999999999999"}) {
    EXPECT_FALSE(parse_count(bad)) << bad;
  }
  EXPECT_FALSE(model_problem("gpt-4o"));
  EXPECT_FALSE(model_problem("org/model name ünïcode"));
  EXPECT_FALSE(model_problem(std::string(256, 'x')));
  EXPECT_TRUE(model_problem(""));
  EXPECT_TRUE(model_problem(std::string(257, 'x')));
  EXPECT_TRUE(model_problem("a\tb"));
  EXPECT_TRUE(model_problem("a\x7f"));
  EXPECT_TRUE(model_problem("a\xc2\x85"));     // NEL, a C1 control
  EXPECT_TRUE(model_problem("gpt\xff"));       // not UTF-8
  EXPECT_TRUE(model_problem("gpt\xc3"));       // a truncated sequence
  EXPECT_TRUE(model_problem("\xed\xa0\x80"));  // a surrogate
  // The one rule: the library's, plus "" (which the library accepts).
  for (const std::string& name :
       std::vector<std::string>{"", "m", "gpt\xff", "a\x01z", "a\xc2\x85", "\xc0\xaf", "é",
                                std::string(256, 'x'), std::string(257, 'x')}) {
    EXPECT_EQ(model_problem(name).has_value(),
              name.empty() || ratelimit::model_name_problem(name).has_value())
        << ratelimit::printable_model_name(name);
  }
  // The text names the model printably and ends with the fix.
  EXPECT_EQ(*model_problem("gpt\xff"),
            "model \"gpt\\xff\" is not valid UTF-8 (byte 3); give a model name of 1 to 256 bytes "
            "of UTF-8 text without control characters");
  EXPECT_EQ(*model_problem(""),
            "the model name is empty; give a model name of 1 to 256 bytes of UTF-8 text without "
            "control characters");
}

TEST(CliArgs, PrintableEscapesWhatIsNotPrintableUtf8) {
  using ratelimit::cli::printable;
  EXPECT_EQ(printable("gpt-4o ünïcode/\"x\""), "gpt-4o ünïcode/\"x\"");
  EXPECT_EQ(printable("a\tb\x7f"), "a\\x09b\\x7F");
  EXPECT_EQ(printable("gpt\xff\xfe"), "gpt\\xFF\\xFE");
  EXPECT_EQ(printable("a\xc2\x85z"), "a\\xC2\\x85z");      // C1 control
  EXPECT_EQ(printable("\xe2\x82"), "\\xE2\\x82");          // truncated
  EXPECT_EQ(printable("\xe2\x82\xac!"), "\xe2\x82\xac!");  // €
}

TEST(CliArgs, FormatDuration) {
  using ratelimit::cli::format_duration;
  using namespace std::chrono_literals;
  EXPECT_EQ(format_duration(0ns), "0s");
  EXPECT_EQ(format_duration(250ms), "250ms");
  EXPECT_EQ(format_duration(59'500ms), "59.5s");
  EXPECT_EQ(format_duration(125s), "2m05s");
  EXPECT_EQ(format_duration(3720s), "1h02m");
  EXPECT_EQ(format_duration(ratelimit::Duration::max()), "never");
}

// --- commands that need no store -------------------------------------------------------------

TEST_F(Cli, VersionAndHelp) {
  Output v = rl({"version"});
  EXPECT_EQ(v.code, 0);
  EXPECT_EQ(v.out.rfind("ratelimit ", 0), 0u) << v.out;
  Output j = rl({"--json", "version"});
  EXPECT_EQ(j.code, 0);
  EXPECT_TRUE(j.parsed()["version"].is_string());
  EXPECT_EQ(rl({"--help"}).code, 0);
  for (std::vector<std::string> cmd : {std::vector<std::string>{"status"},
                                       {"check"},
                                       {"acquire"},
                                       {"record"},
                                       {"commit"},
                                       {"cancel"},
                                       {"reset"},
                                       {"quota"},
                                       {"quota", "set"},
                                       {"quota", "rm"},
                                       {"quota", "list"},
                                       {"quota", "apply"},
                                       {"profiles"},
                                       {"count-tokens"},
                                       {"migrate"},
                                       {"version"}}) {
    cmd.push_back("--help");
    Output h = rl(cmd);
    EXPECT_EQ(h.code, 0) << cmd[0];
    EXPECT_NE(h.out.find("Example"), std::string::npos) << cmd[0] << ": " << h.out;
  }
  EXPECT_FALSE(fs::exists(home_ / ".core")) << "help and version touch no store";
}

TEST_F(Cli, Profiles) {
  Output all = rl({"--json", "profiles"});
  ASSERT_EQ(all.code, 0) << all.err;
  json p = all.parsed()["profiles"];
  std::set<std::string> names;
  for (const auto& profile : ratelimit::all_profiles()) names.insert(profile.name());
  EXPECT_EQ(keys(p), names);
  EXPECT_TRUE(names.contains("openai:tier5"));
  EXPECT_EQ(p["openai"]["provider"], "openai");
  EXPECT_EQ(p["openai"]["tier"], "");
  EXPECT_EQ(p["openai"]["models"]["gpt-4o"], (json{{"max_rpm", 500},
                                                   {"max_tpm", 30000},
                                                   {"max_rpd", 0},
                                                   {"max_input_tpm", 0},
                                                   {"max_output_tpm", 0},
                                                   {"day_start", "first_request"}}));
  EXPECT_EQ(p["anthropic"]["aliases"]["claude-3-5-haiku-20241022"], "claude-haiku-3.5");
  EXPECT_EQ(p["anthropic:tier1"]["models"]["claude-sonnet-4"]["max_output_tpm"], 8000);
  EXPECT_EQ(p["gemini:free"]["models"]["gemini-2.5-flash"]["day_start"], "pacific_midnight");
  EXPECT_EQ(p["local"]["models"], json::object());
  Output one = rl({"profiles", "anthropic"});
  EXPECT_EQ(one.code, 0);
  EXPECT_NE(one.out.find("claude-sonnet-4"), std::string::npos);
  EXPECT_NE(one.out.find("anthropic:tier4"), std::string::npos);
  EXPECT_NE(one.out.find("claude-3-5-haiku-20241022"), std::string::npos);  // the alias table
  EXPECT_EQ(one.out.find("gpt-4o"), std::string::npos);
  Output tier = rl({"--json", "profiles", "gemini:tier2"});
  ASSERT_EQ(tier.code, 0) << tier.err;
  EXPECT_EQ(keys(tier.parsed()["profiles"]), (std::set<std::string>{"gemini:tier2"}));
  Output text = rl({"profiles", "gemini:free"});
  EXPECT_NE(text.out.find("midnight Pacific"), std::string::npos) << text.out;
  Output local = rl({"profiles", "local"});
  EXPECT_NE(local.out.find("(no models)"), std::string::npos) << local.out;
  for (const char* bad : {"nope", "openai:tier9"}) {
    Output b = rl({"profiles", bad});
    EXPECT_EQ(b.code, 2);
    EXPECT_NE(b.err.find("unknown provider"), std::string::npos) << b.err;
  }
}

TEST_F(Cli, CountTokens) {
  // Never the real API: no key from the environment, and a closed loopback port.
  extra_env_["GEMINI_API_KEY"] = "";
  extra_env_["GOOGLE_API_KEY"] = "";
  Output est = rl({"count-tokens", "gpt-4o", "--text", "Why is the sky blue?", "--estimate"});
  ASSERT_EQ(est.code, 0) << est.err;
  EXPECT_EQ(est.out, "gpt-4o: 5 tokens (estimated: 1 per 4 bytes, rounded up)\n");
  Output j = rl({"--json", "count-tokens", "gpt-4o", "--file", "-", "--estimate"}, "abcdefgh");
  ASSERT_EQ(j.code, 0) << j.err;
  EXPECT_EQ(j.parsed(), (json{{"model", "gpt-4o"}, {"tokens", 2}, {"source", "estimate"}}));
  write_file(home_ / "prompt.txt", "abcde");
  Output f =
      rl({"--json", "count-tokens", "m", "--file", (home_ / "prompt.txt").string(), "--estimate"});
  EXPECT_EQ(f.parsed()["tokens"], 2);
  Output no_key = rl({"count-tokens", "gemini-2.0-flash", "--text", "hi"});
  EXPECT_EQ(no_key.code, 2);
  EXPECT_NE(no_key.err.find("GEMINI_API_KEY"), std::string::npos) << no_key.err;
  extra_env_["GEMINI_API_KEY"] = "test-key";
  Output down = rl({"--json", "count-tokens", "gemini-2.0-flash", "--text", "hi", "--base-url",
                    "http://127.0.0.1:1"});
  EXPECT_EQ(down.code, 3) << down.err;
  EXPECT_NE(down.err.find("cannot reach http://127.0.0.1:1"), std::string::npos) << down.err;
  EXPECT_EQ(down.err.find("test-key"), std::string::npos);
  for (std::vector<std::string> args :
       {std::vector<std::string>{"count-tokens", "m"},
        {"count-tokens", "m", "--text", "a", "--file", "b"},
        {"count-tokens", "m", "--file", (home_ / "missing.txt").string(), "--estimate"},
        {"count-tokens", "bad/model", "--text", "a"}}) {
    Output bad = rl(args);
    EXPECT_EQ(bad.code, 2) << testing::PrintToString(args) << bad.err;
    EXPECT_EQ(bad.err.rfind("ratelimit count-tokens: ", 0), 0u) << bad.err;
  }
  EXPECT_FALSE(fs::exists(home_ / ".core")) << "count-tokens touches no store";
}

TEST_F(Cli, UsageErrorsFromTheCommandLine) {
  for (std::vector<std::string> args : {std::vector<std::string>{},
                                        {"frobnicate"},
                                        {"check"},
                                        {"quota"},
                                        {"commit", "x"},
                                        {"status", "--bogus"},
                                        {"--backend", "redis", "status"},
                                        {"--backend", "sqlite", "--state", "x.yaml", "status"}}) {
    Output r = rl(args);
    EXPECT_EQ(r.code, 2) << testing::PrintToString(args) << r.err;
    // One line on stderr.
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.err.rfind("ratelimit", 0), 0u) << r.err;
  }
  Output j = rl({"--json", "frobnicate"});
  EXPECT_EQ(j.code, 2);
  EXPECT_EQ(j.parsed()["error"]["exit_code"], 2);
}

// --- every command's happy path and JSON shape, on both stores ------------------------------

TEST_P(CliStore, EmptyStoreSeedsNothing) {
  Output s = rl({"--json", "status"});
  ASSERT_EQ(s.code, 0) << s.err;
  EXPECT_EQ(s.parsed(), (json{{"models", json::object()}}));
  Output h = rl({"status"});
  EXPECT_EQ(h.code, 0);
  EXPECT_NE(h.out.find("no models yet"), std::string::npos) << h.out;
}

TEST_P(CliStore, ProviderStatusAndShapes) {
  Output s = rl({"--provider", "openai", "--json", "status"});
  ASSERT_EQ(s.code, 0) << s.err;
  json models = s.parsed()["models"];
  EXPECT_EQ(models.size(), 6u) << models.dump();
  json m = models["gpt-4o"];
  auto expected = kStatsKeys;
  expected.insert("decision");
  EXPECT_EQ(keys(m), expected);
  expect_decision_shape(m["decision"]);
  EXPECT_EQ(m["max_rpm"], 500);
  EXPECT_EQ(m["max_tpm"], 30000);
  EXPECT_TRUE(m["day_start"].is_null());
  EXPECT_EQ(m["decision"]["code"], "ok");
  EXPECT_EQ(m["decision"]["retry_after_ms"], 0);

  // The profile is in the store now; plain output (not a terminal) has no bars.
  Output plain = rl({"status"});
  EXPECT_EQ(plain.code, 0);
  EXPECT_NE(plain.out.find("gpt-4o"), std::string::npos);
  EXPECT_NE(plain.out.find("0/30000"), std::string::npos) << plain.out;
  EXPECT_EQ(plain.out.find("\u2588"), std::string::npos);
  EXPECT_EQ(plain.out.find("\u2591"), std::string::npos);
  EXPECT_EQ(plain.out.find('\x1b'), std::string::npos);
}

TEST_P(CliStore, ProviderNeverOverwritesQuotaSet) {
  ASSERT_EQ(rl({"quota", "set", "gpt-4o", "--rpm", "7"}).code, 0);
  Output s = rl({"--provider", "openai", "--provider", "anthropic", "--json", "status"});
  ASSERT_EQ(s.code, 0) << s.err;
  json models = s.parsed()["models"];
  EXPECT_EQ(models["gpt-4o"]["max_rpm"], 7);
  EXPECT_EQ(models["gpt-4o"]["max_tpm"], 0);
  EXPECT_EQ(models["claude-opus-4"]["max_rpm"], 50);
  // quota apply does overwrite.
  Output a = rl({"--json", "quota", "apply", "openai"});
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_EQ(a.parsed()["provider"], "openai");
  EXPECT_EQ(a.parsed()["quotas"]["gpt-4o"]["max_rpm"], 500);
  EXPECT_EQ(stats_of("gpt-4o")["max_rpm"], 500);
}

TEST_P(CliStore, CheckAllowedAndDenied) {
  ASSERT_EQ(rl({"quota", "set", "m", "--rpm", "1", "--tpm", "1000"}).code, 0);
  Output ok = rl({"--json", "check", "m", "--tokens", "100"});
  EXPECT_EQ(ok.code, 0) << ok.err;
  expect_decision_shape(ok.parsed());
  EXPECT_EQ(ok.parsed()["allowed"], true);
  EXPECT_EQ(ok.parsed()["stats"]["rpm"], 0) << "check records nothing";
  Output human = rl({"check", "m"});
  EXPECT_EQ(human.code, 0);
  EXPECT_NE(human.out.find("allowed (ok"), std::string::npos) << human.out;

  ASSERT_EQ(rl({"record", "m", "--prompt", "1"}).code, 0);
  Output denied = rl({"--json", "check", "m"});
  EXPECT_EQ(denied.code, 1);
  json d = denied.parsed();
  expect_decision_shape(d);
  EXPECT_EQ(d["allowed"], false);
  EXPECT_EQ(d["code"], "rpm_exceeded");
  EXPECT_EQ(d["reason"], "per-minute request limit reached");
  EXPECT_GT(d["retry_after_ms"].get<long long>(), 50'000);
  EXPECT_LE(d["retry_after_ms"].get<long long>(), 60'000);
  Output h = rl({"check", "m"});
  EXPECT_EQ(h.code, 1);
  EXPECT_NE(h.out.find("denied (rpm_exceeded"), std::string::npos) << h.out;
  EXPECT_NE(h.out.find("retry in"), std::string::npos) << h.out;

  // More tokens than max_tpm can never pass: retry_after_ms is null.
  ASSERT_EQ(rl({"quota", "set", "big", "--tpm", "10"}).code, 0);
  Output never = rl({"--json", "check", "big", "--tokens", "11"});
  EXPECT_EQ(never.code, 1);
  EXPECT_TRUE(never.parsed()["retry_after_ms"].is_null()) << never.out;
  // A model without a quota is allowed as unknown_model.
  Output unknown = rl({"--json", "check", "no-such-model"});
  EXPECT_EQ(unknown.code, 0);
  EXPECT_EQ(unknown.parsed()["code"], "unknown_model");
}

TEST_P(CliStore, RecordAndStatus) {
  Output r = rl({"--json", "record", "gpt-4o", "--prompt", "120", "--output", "30"});
  ASSERT_EQ(r.code, 0) << r.err;
  json j = r.parsed();
  EXPECT_EQ(keys(j), (std::set<std::string>{"model", "stats"}));
  EXPECT_EQ(j["model"], "gpt-4o");
  expect_stats_shape(j["stats"]);
  EXPECT_EQ(j["stats"]["rpm"], 1);
  EXPECT_EQ(j["stats"]["tpm"], 150);
  EXPECT_TRUE(j["stats"]["day_start"].is_string());
  Output h = rl({"record", "gpt-4o", "--prompt", "1", "--output", "2"});
  EXPECT_EQ(h.code, 0);
  EXPECT_NE(h.out.find("recorded gpt-4o"), std::string::npos) << h.out;
  json s = stats_of("gpt-4o");
  EXPECT_EQ(s["rpm"], 2);
  EXPECT_EQ(s["tpm"], 153);
  EXPECT_EQ(s["decision"]["code"], "unknown_model");
}

TEST_P(CliStore, AcquireGrantedAndDenied) {
  ASSERT_EQ(rl({"quota", "set", "m", "--rpm", "1"}).code, 0);
  Output granted = rl({"--json", "acquire", "m", "--tokens", "10"});
  ASSERT_EQ(granted.code, 0) << granted.err;
  json g = granted.parsed();
  expect_decision_shape(g, /*with_reservation=*/true);
  EXPECT_EQ(g["allowed"], true);
  if (yaml()) {
    EXPECT_TRUE(g["reservation_id"].is_null());
    EXPECT_NE(granted.err.find("SQLite"), std::string::npos) << granted.err;
  } else {
    EXPECT_TRUE(g["reservation_id"].is_string());
    EXPECT_FALSE(g["reservation_id"].get<std::string>().empty());
  }
  EXPECT_EQ(stats_of("m")["rpm"], 1) << "the estimate stays recorded";
  Output denied = rl({"--json", "acquire", "m"});
  EXPECT_EQ(denied.code, 1);
  expect_decision_shape(denied.parsed());
  EXPECT_EQ(denied.parsed()["code"], "rpm_exceeded");
  Output human = rl({"acquire", "m"});
  EXPECT_EQ(human.code, 1);
  EXPECT_NE(human.out.find("denied"), std::string::npos);
  EXPECT_EQ(stats_of("m")["rpm"], 1);
}

TEST_P(CliStore, QuotaCommands) {
  Output set = rl({"--json", "quota", "set", "m", "--rpm", "5", "--tpm", "100", "--rpd", "9"});
  ASSERT_EQ(set.code, 0) << set.err;
  EXPECT_EQ(set.parsed(), (json{{"model", "m"},
                                {"quota",
                                 {{"max_rpm", 5},
                                  {"max_tpm", 100},
                                  {"max_rpd", 9},
                                  {"max_input_tpm", 0},
                                  {"max_output_tpm", 0},
                                  {"day_start", "first_request"}}}}));
  // Omitted limits keep their value.
  ASSERT_EQ(rl({"quota", "set", "m", "--tpm", "200"}).code, 0);
  Output list = rl({"--json", "quota", "list"});
  ASSERT_EQ(list.code, 0);
  EXPECT_EQ(list.parsed()["quotas"]["m"], (json{{"max_rpm", 5},
                                                {"max_tpm", 200},
                                                {"max_rpd", 9},
                                                {"max_input_tpm", 0},
                                                {"max_output_tpm", 0},
                                                {"day_start", "first_request"}}));
  Output table = rl({"quota", "list"});
  EXPECT_NE(table.out.find("MODEL"), std::string::npos);
  EXPECT_NE(table.out.find("200"), std::string::npos);
  Output rm = rl({"--json", "quota", "rm", "m"});
  EXPECT_EQ(rm.code, 0) << rm.err;
  EXPECT_EQ(rm.parsed(), (json{{"quotas", json::object()}}));
  Output again = rl({"quota", "rm", "m"});
  EXPECT_EQ(again.code, 2);
  EXPECT_NE(again.err.find("has no quota"), std::string::npos) << again.err;
  EXPECT_EQ(rl({"quota", "apply", "local"}).code, 0);
}

TEST_P(CliStore, Reset) {
  ASSERT_EQ(rl({"record", "a", "--prompt", "5"}).code, 0);
  ASSERT_EQ(rl({"record", "b", "--prompt", "5"}).code, 0);
  const std::string before = snapshot();
  // stdin is not a terminal: no --yes, no reset.
  Output refused = rl({"reset", "a"}, "y\n");
  EXPECT_EQ(refused.code, 2);
  EXPECT_NE(refused.err.find("--yes"), std::string::npos) << refused.err;
  EXPECT_EQ(snapshot(), before);
  EXPECT_EQ(rl({"reset", "a", "--all", "--yes"}).code, 2);
  EXPECT_EQ(rl({"reset", "--yes"}).code, 2);
  EXPECT_EQ(snapshot(), before);

  Output one = rl({"--json", "reset", "a", "--yes"});
  ASSERT_EQ(one.code, 0) << one.err;
  EXPECT_EQ(one.parsed(), (json{{"reset", {"a"}}}));
  EXPECT_EQ(stats_of("a")["rpm"], 0);
  EXPECT_EQ(stats_of("b")["rpm"], 1);
  Output again = rl({"reset", "a", "--yes"});  // nothing left to clear: it says so
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_NE(again.out.find("nothing to clear"), std::string::npos) << again.out;
  Output some = rl({"reset", "b", "--yes"});
  ASSERT_EQ(some.code, 0) << some.err;
  EXPECT_NE(some.out.find("usage cleared"), std::string::npos) << some.out;
  ASSERT_EQ(rl({"record", "b", "--prompt", "5"}).code, 0);
  Output all = rl({"reset", "--all", "-y"});
  ASSERT_EQ(all.code, 0) << all.err;
  EXPECT_NE(all.out.find("reset all models"), std::string::npos) << all.out;
  EXPECT_EQ(stats_of("b")["rpm"], 0);
}

// --- bad input: usage errors (2) that leave the state as it was ------------------------------

TEST_P(CliStore, BadInputLeavesStateUnchanged) {
  ASSERT_EQ(rl({"quota", "set", "m", "--rpm", "10", "--tpm", "1000"}).code, 0);
  ASSERT_EQ(rl({"record", "m", "--prompt", "7", "--output", "3"}).code, 0);
  const std::string before = snapshot();
  const std::string long_name(257, 'x');
  const std::vector<std::vector<std::string>> bad = {
      {"check", "m", "--tokens", "-5"},
      {"check", "m", "--tokens=-5"},
      {"check", "m", "--tokens", "abc"},
      {"check", "m", "--tokens", "1e3"},
      {"check", "m", "--tokens", "9007199254740992"},  // over 2^53 - 1, like the server
      {"record", "m", "--prompt", "9007199254740992"},
      {"acquire", "m", "--tokens", "-1"},
      {"acquire", "m", "--tokens", "ten"},
      {"acquire", "m", "--wait", "5"},
      {"acquire", "m", "--wait", "-1s"},
      {"acquire", "m", "--wait", "1d"},
      {"record", "m", "--prompt", "-1"},
      {"record", "m", "--output", "x"},
      {"record", ""},
      {"acquire", ""},
      {"check", ""},
      {"record", "a\nb"},
      {"record", "a\tb"},
      {"record", "a\x7f"},
      {"record", long_name},
      {"status", ""},
      {"reset", "", "--yes"},
      {"quota", "set", "", "--rpm", "1"},
      {"quota", "set", "m", "--rpm", "-1"},
      {"quota", "set", "m", "--tpm", "lots"},
      {"quota", "set", "m"},
      {"quota", "apply", "nope"},
      {"quota", "rm", "never-had-one"},
      {"--provider", "nope", "record", "m"},
      {"--provider", "nope", "status"},
      {"commit", "", "--prompt", "1", "--output", "1"},
      {"cancel", ""},
  };
  for (const auto& args : bad) {
    Output r = rl(args);
    EXPECT_EQ(r.code, 2) << testing::PrintToString(args) << " stderr: " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  if (!yaml()) {
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"commit", "no-such-id", "--prompt", "1", "--output", "1"},
             {"cancel", "no-such-id"},
             {"commit", "1-2-3", "--prompt", "1", "--output", "1"},
             {"commit", "x", "--prompt", "-1", "--output", "1"}}) {
      Output r = rl(args);
      EXPECT_EQ(r.code, 2) << testing::PrintToString(args) << " stderr: " << r.err;
    }
  }
  EXPECT_EQ(snapshot(), before);
  // 256 bytes is fine.
  EXPECT_EQ(rl({"check", std::string(256, 'y')}).code, 0);
}

// The server's rule and message (args.h model_problem), for every command that takes a model:
// exit code 2, one line naming the command and the fix, no raw invalid bytes, state unchanged.
TEST_P(CliStore, InvalidModelNamesAreRefusedLikeTheServer) {
  ASSERT_EQ(rl({"quota", "set", "m", "--rpm", "10"}).code, 0);
  ASSERT_EQ(rl({"record", "m"}).code, 0);
  const std::string before = snapshot();
  const std::vector<std::string> names = {"gpt\xff", "gpt\xfe", "a\x01z", "a\xc2\x85z",
                                          std::string(257, 'x')};
  const std::vector<std::vector<std::string>> commands = {
      {"check"}, {"acquire"}, {"record"}, {"status"}, {"reset"}, {"quota", "rm"}, {"quota", "set"}};
  for (const auto& name : names) {
    const std::string why = *ratelimit::cli::model_problem(name);
    EXPECT_NE(why.find(ratelimit::printable_model_name(name)), std::string::npos) << why;
    for (const auto& command : commands) {
      std::vector<std::string> args = command;
      args.push_back(name);
      if (command[0] == "reset") args.push_back("--yes");
      if (command.size() == 2 && command[1] == "set") args.insert(args.end(), {"--rpm", "1"});
      std::string label = command[0] + (command.size() == 2 ? " " + command[1] : "");
      Output r = rl(args);
      EXPECT_EQ(r.code, 2) << label << " stderr: " << r.err;
      EXPECT_EQ(r.err, "ratelimit " + label + ": " + why + "\n");
      EXPECT_EQ(r.out, "");
      args.insert(args.begin(), "--json");
      Output j = rl(args);
      EXPECT_EQ(j.code, 2) << label;
      const json e = j.parsed();
      EXPECT_EQ(e["error"]["code"], "usage_error") << j.out;
      EXPECT_EQ(e["error"]["message"], why) << j.out;
      for (std::string text : {r.err, j.out, j.err}) {
        EXPECT_EQ(text.find(name), std::string::npos) << label;
        std::erase(text, '\n');  // otherwise only printable UTF-8
        EXPECT_EQ(ratelimit::cli::printable(text), text) << label;
      }
    }
  }
  // Nothing was created: two names that differ only in invalid bytes never share a JSON key.
  EXPECT_EQ(snapshot(), before);
  Output status = rl({"--json", "status"});
  EXPECT_EQ(keys(status.parsed()["models"]), std::set<std::string>{"m"});
}

TEST_P(CliStore, UnreadableStatePathIsAStoreError) {
  const std::string ext = yaml() ? ".yaml" : ".db";
  store_args_ = {"--state", (home_ / "missing-dir" / ("x" + ext)).string()};
  Output r = rl({"record", "m"});
  EXPECT_EQ(r.code, 3) << r.err;
  EXPECT_NE(r.err.find("does not exist"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(home_ / "missing-dir"));
  fs::create_directory(home_ / ("dir" + ext));
  store_args_ = {"--state", (home_ / ("dir" + ext)).string()};
  Output d = rl({"record", "m"});
  EXPECT_EQ(d.code, 3) << d.err;
  EXPECT_EQ(std::count(d.err.begin(), d.err.end(), '\n'), 1) << d.err;
  Output j = rl({"--json", "status"});
  EXPECT_EQ(j.code, 3);
  EXPECT_EQ(j.parsed()["error"]["code"], "state_error");
}

TEST_P(CliStore, CorruptStateAndRecover) {
  const fs::path path = yaml() ? home_ / "state.yaml" : home_ / ".core" / "ratelimits.db";
  fs::create_directories(path.parent_path());
  const std::string garbage = yaml() ? "quotas: [1, 2\nstate: {{{\n" : std::string(8192, 'z');
  write_file(path, garbage);
  Output r = rl({"status"});
  EXPECT_EQ(r.code, 3) << r.err;
  EXPECT_NE(r.err.find("--recover"), std::string::npos) << r.err;
  EXPECT_EQ(read_file(path), garbage) << "a failed open leaves the file alone";
  Output rec = rl({"--recover", "record", "m"});
  EXPECT_EQ(rec.code, 0) << rec.err;
  EXPECT_EQ(stats_of("m")["rpm"], 1);
  bool moved = false;
  for (const auto& e : fs::directory_iterator(path.parent_path())) {
    if (e.path().filename().string().find("corrupt") != std::string::npos &&
        read_file(e.path()) == garbage) {
      moved = true;
    }
  }
  EXPECT_TRUE(moved) << "the damaged file was kept aside";
}

TEST_F(Cli, YamlPathHoldingADatabaseIsNotRecovered) {
  ASSERT_EQ(rl({"--state", (home_ / "real.db").string(), "record", "m"}).code, 0);
  fs::copy_file(home_ / "real.db", home_ / "x.yaml");
  const std::string bytes = read_file(home_ / "x.yaml");
  Output r = rl({"--state", (home_ / "x.yaml").string(), "--recover", "status"});
  EXPECT_EQ(r.code, 3) << r.err;
  EXPECT_NE(r.err.find("SQLite database"), std::string::npos) << r.err;
  EXPECT_EQ(read_file(home_ / "x.yaml"), bytes);
}

// --- reservation ids across invocations ------------------------------------------------------

TEST_F(Cli, ReservationRoundTripAcrossInvocations) {
  ASSERT_EQ(rl({"quota", "set", "m", "--rpm", "3", "--tpm", "1000"}).code, 0);
  Output a = rl({"acquire", "m", "--tokens", "500"});
  ASSERT_EQ(a.code, 0) << a.err;
  const std::string id = a.out.substr(0, a.out.find('\n'));
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(stats_of("m")["tpm"], 500);
  Output c = rl({"--json", "commit", id, "--prompt", "100", "--output", "20"});
  ASSERT_EQ(c.code, 0) << c.err;
  EXPECT_EQ(c.parsed(), (json{{"reservation_id", id}, {"result", "committed"}}));
  EXPECT_EQ(stats_of("m")["tpm"], 120);
  EXPECT_EQ(stats_of("m")["rpm"], 1);
  Output twice = rl({"commit", id, "--prompt", "1", "--output", "1"});
  EXPECT_EQ(twice.code, 2) << twice.err;
  EXPECT_NE(twice.err.find("already settled"), std::string::npos) << twice.err;

  Output b = rl({"--json", "acquire", "m", "--tokens", "300"});
  ASSERT_EQ(b.code, 0) << b.err;
  const std::string id2 = b.parsed()["reservation_id"];
  EXPECT_EQ(stats_of("m")["rpm"], 2);
  Output x = rl({"--json", "cancel", id2});
  ASSERT_EQ(x.code, 0) << x.err;
  EXPECT_EQ(x.parsed(), (json{{"reservation_id", id2}, {"result", "cancelled"}}));
  EXPECT_EQ(stats_of("m")["rpm"], 1);
  EXPECT_EQ(stats_of("m")["tpm"], 120);
  EXPECT_EQ(rl({"cancel", id2}).code, 2);
}

TEST_F(Cli, YamlStoreRefusesReservationIds) {
  store_args_ = {"--state", (home_ / "s.yaml").string()};
  ASSERT_EQ(rl({"record", "m"}).code, 0);
  const std::string before = read_file(home_ / "s.yaml");
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"commit", "abc-1-1", "--prompt", "1", "--output", "1"}, {"cancel", "abc-1-1"}}) {
    Output r = rl(args);
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("need the SQLite store"), std::string::npos) << r.err;
  }
  store_args_ = {"--backend", "yaml"};
  EXPECT_EQ(rl({"cancel", "abc-1-1"}).code, 2);
  EXPECT_EQ(read_file(home_ / "s.yaml"), before);
}

// --- store selection ---------------------------------------------------------------------------

TEST_F(Cli, StoreSelection) {
  // Default: SQLite under HOME.
  ASSERT_EQ(rl({"record", "m"}).code, 0);
  EXPECT_TRUE(fs::exists(home_ / ".core" / "ratelimits.db"));
  // --backend yaml: the default YAML file.
  ASSERT_EQ(rl({"--backend", "yaml", "record", "y"}).code, 0);
  EXPECT_TRUE(fs::exists(home_ / ".core" / "ratelimits.yaml"));
  // RATELIMIT_STATE and CORE_HOME.
  extra_env_["RATELIMIT_STATE"] = (home_ / "env.yaml").string();
  ASSERT_EQ(rl({"record", "e"}).code, 0);
  EXPECT_TRUE(fs::exists(home_ / "env.yaml"));
  extra_env_.clear();
  fs::create_directory(home_ / "core");
  extra_env_["CORE_HOME"] = (home_ / "core").string();
  ASSERT_EQ(rl({"record", "c"}).code, 0);
  EXPECT_TRUE(fs::exists(home_ / "core" / ".core" / "ratelimits.db"));
  // A .db path with --backend yaml is a YAML file by that name.
  ASSERT_EQ(rl({"--backend", "yaml", "--state", (home_ / "odd.db").string(), "record", "o"}).code,
            0);
  EXPECT_NE(read_file(home_ / "odd.db").find("state:"), std::string::npos);
}

TEST_F(Cli, Migrate) {
  const fs::path yaml = home_ / "go.yaml";
  write_file(yaml,
             "quotas:\n  gpt-4o: {max_rpm: 500, max_tpm: 30000, max_rpd: 0}\n"
             "state:\n  gpt-4o:\n    requests: []\n    tokens: []\n"
             "    day_start: 2026-01-01T00:00:00Z\n    day_count: 4\n");
  const fs::path db = home_ / "migrated.db";
  Output m = rl({"--json", "migrate", yaml.string(), db.string()});
  ASSERT_EQ(m.code, 0) << m.err;
  EXPECT_EQ(m.parsed(), (json{{"migrated", {{"from", yaml.string()}, {"to", db.string()}}}}));
  store_args_ = {"--state", db.string()};
  Output q = rl({"--json", "quota", "list"});
  EXPECT_EQ(q.parsed()["quotas"]["gpt-4o"]["max_rpm"], 500);
  store_args_.clear();
  // Default database.
  Output d = rl({"migrate", yaml.string()});
  ASSERT_EQ(d.code, 0) << d.err;
  EXPECT_NE(d.out.find("migrated"), std::string::npos);
  EXPECT_EQ(rl({"--json", "quota", "list"}).parsed()["quotas"]["gpt-4o"]["max_tpm"], 30000);
  Output missing = rl({"migrate", (home_ / "none.yaml").string(), db.string()});
  EXPECT_EQ(missing.code, 3);
  EXPECT_NE(missing.err.find("does not exist"), std::string::npos) << missing.err;
}

// --- waiting ------------------------------------------------------------------------------------

// No test here waits for a real window to free: a window is a minute long. A wait ends at its
// deadline (well inside the window), or early because another process frees capacity (the SQLite
// store wakes waiters across processes); WaitIsWokenWhenAnotherProcessCancels below proves that
// the wake happens while the waiting process sleeps in the library.

TEST_P(CliStore, WaitGivesUpAtTheDeadline) {
  ASSERT_EQ(rl({"quota", "set", "m", "--rpm", "1"}).code, 0);
  ASSERT_EQ(rl({"acquire", "m"}).code, 0);  // fills the window for the next minute
  const auto start = Clock::now();
  Output r = rl({"--json", "acquire", "m", "--wait", "200ms"});
  const auto took = Clock::now() - start;
  EXPECT_EQ(r.code, 1) << r.err;
  const json d = r.parsed();
  expect_decision_shape(d);
  EXPECT_EQ(d["allowed"], false);
  EXPECT_EQ(d["code"], "rpm_exceeded");
  EXPECT_GT(d["retry_after_ms"].get<std::int64_t>(), 0);
  EXPECT_GE(took, std::chrono::milliseconds(200));  // it did wait for the whole duration
  EXPECT_EQ(stats_of("m")["rpm"], 1);
  // The same in text.
  Output text = rl({"acquire", "m", "--wait", "1ms"});
  EXPECT_EQ(text.code, 1);
  EXPECT_NE(text.out.find("m: denied (rpm_exceeded"), std::string::npos) << text.out;
}

TEST_F(Cli, WaitIsAdmittedWhenAnotherProcessCancels) {
  ASSERT_EQ(rl({"quota", "set", "m", "--rpm", "1"}).code, 0);
  Output held = rl({"acquire", "m"});
  ASSERT_EQ(held.code, 0) << held.err;
  const std::string id = held.out.substr(0, held.out.find('\n'));
  // The window frees in a minute, the wait gives up after 30 s: only the cancel can admit it
  // (whether it lands before the wait starts or wakes it; the terminal test below proves the
  // wake).
  auto waiter = std::async(std::launch::async, [&] {
    return rl({"--json", "acquire", "m", "--wait", "30s"});
  });
  ASSERT_EQ(rl({"cancel", id}).code, 0);
  Output r = waiter.get();
  EXPECT_EQ(r.code, 0) << r.err;
  const json d = r.parsed();
  expect_decision_shape(d, /*with_reservation=*/true);
  EXPECT_EQ(d["allowed"], true);
  EXPECT_TRUE(d["reservation_id"].is_string());
  EXPECT_NE(d["reservation_id"], id);
  EXPECT_EQ(stats_of("m")["rpm"], 1);
}

TEST_F(Cli, WaitGivesUpAtOnceWhenItCanNeverPass) {
  ASSERT_EQ(rl({"quota", "set", "m", "--tpm", "10"}).code, 0);
  const auto start = Clock::now();
  Output r = rl({"--json", "acquire", "m", "--tokens", "11", "--wait", "1h"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(r.parsed()["retry_after_ms"].is_null());
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(10));
}

// --- concurrency -------------------------------------------------------------------------------

TEST_F(Cli, ConcurrentYamlInvocationsLoseNoUpdate) {
  const std::string state = (home_ / "shared.yaml").string();
  const std::string script =
      "i=0; while [ $i -lt 10 ]; do \"$0\" --state \"$1\" record m "
      "--prompt 1 || exit 1; i=$((i+1)); done";
  std::vector<std::thread> threads;
  std::vector<Output> runs(4);
  for (int s = 0; s < 4; ++s) {
    threads.emplace_back([&, s] {
      runs[s] = spawn("/bin/sh", {"-c", script, RATELIMIT_CLI_BINARY, state});
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& r : runs) EXPECT_EQ(r.code, 0) << r.err;
  store_args_ = {"--state", state};
  json s = stats_of("m");
  EXPECT_EQ(s["rpm"], 40);
  EXPECT_EQ(s["tpm"], 40);
}

TEST_F(Cli, FourShellsAcquireExactlyTheLimit) {
  ASSERT_EQ(rl({"quota", "set", "m", "--rpm", "50"}).code, 0);
  // Each shell tries 20 times and prints one exit code per line.
  const std::string script =
      "i=0; while [ $i -lt 20 ]; do \"$0\" acquire m >/dev/null 2>&1; echo $?; i=$((i+1)); done";
  std::vector<std::thread> threads;
  std::vector<Output> runs(4);
  for (int s = 0; s < 4; ++s) {
    threads.emplace_back([&, s] {
      runs[s] = spawn("/bin/sh", {"-c", script, RATELIMIT_CLI_BINARY});
    });
  }
  for (auto& t : threads) t.join();
  int granted = 0, denied = 0, other = 0;
  for (const auto& r : runs) {
    EXPECT_EQ(r.code, 0);
    std::istringstream lines(r.out);
    for (std::string line; std::getline(lines, line);) {
      if (line == "0") {
        ++granted;
      } else if (line == "1") {
        ++denied;
      } else {
        ++other;
      }
    }
  }
  EXPECT_EQ(granted, 50);
  EXPECT_EQ(denied, 30);
  EXPECT_EQ(other, 0);
  EXPECT_EQ(stats_of("m")["rpm"], 50);
}

// --- terminal behaviour (pseudo-terminal) ---------------------------------------------------

// Runs the binary on a pseudo-terminal (stdin, stdout and stderr), calls `on_prompt` and writes
// `input` once `prompt` appears (or writes it at once when `prompt` is empty), and returns
// everything it printed.
class CliTerminal : public Cli {
 protected:
  Output tty(const std::vector<std::string>& args, const std::string& prompt = "",
             const std::string& input = "", const std::function<void()>& on_prompt = {}) {
    std::vector<std::string> argv_s = {RATELIMIT_CLI_BINARY};
    argv_s.insert(argv_s.end(), store_args_.begin(), store_args_.end());
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    auto env_s = environment();
    env_s.push_back("TERM=xterm");
    std::vector<char*> envp;
    for (auto& e : env_s) envp.push_back(e.data());
    envp.push_back(nullptr);
    Output r;
    int master = -1;
    const pid_t pid = forkpty(&master, nullptr, nullptr, nullptr);
    if (pid < 0) {
      ADD_FAILURE() << "forkpty: " << std::strerror(errno);
      return r;
    }
    if (pid == 0) {
      execve(argv[0], argv.data(), envp.data());
      _exit(127);
    }
    bool sent = false;
    if (prompt.empty() && !input.empty()) {
      (void)!write(master, input.data(), input.size());
      sent = true;
    }
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    char buf[4096];
    while (Clock::now() < deadline) {
      pollfd p{master, POLLIN, 0};
      if (poll(&p, 1, 100) > 0) {
        const ssize_t n = read(master, buf, sizeof buf);
        if (n <= 0) break;  // EIO: the child closed the terminal
        r.out.append(buf, static_cast<std::size_t>(n));
        if (!sent && !prompt.empty() && r.out.find(prompt) != std::string::npos) {
          if (on_prompt) on_prompt();
          (void)!write(master, input.data(), input.size());
          sent = true;
        }
      }
    }
    int status = 0;
    waitpid(pid, &status, 0);
    close(master);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return r;
  }
};

TEST_F(CliTerminal, StatusShowsBars) {
  ASSERT_EQ(rl({"quota", "set", "m", "--rpm", "4", "--tpm", "100"}).code, 0);
  ASSERT_EQ(rl({"record", "m", "--prompt", "50"}).code, 0);
  Output r = tty({"status"});
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("1/4"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[\u2588\u2588\u2588\u2591"), std::string::npos) << r.out;  // 1/4
  EXPECT_NE(r.out.find("[\u2588\u2588\u2588\u2588\u2588\u2591"), std::string::npos)
      << r.out;  // 50/100
}

TEST_F(CliTerminal, ResetAsksForConfirmation) {
  ASSERT_EQ(rl({"record", "m"}).code, 0);
  Output no = tty({"reset", "m"}, "[y/N]", "n\n");
  EXPECT_EQ(no.code, 1) << no.out;
  EXPECT_NE(no.out.find("nothing was reset"), std::string::npos) << no.out;
  EXPECT_EQ(stats_of("m")["rpm"], 1);
  Output yes = tty({"reset", "m"}, "[y/N]", "y\n");
  EXPECT_EQ(yes.code, 0) << yes.out;
  EXPECT_EQ(stats_of("m")["rpm"], 0);
}

TEST_F(CliTerminal, WaitShowsACountdown) {
  ASSERT_EQ(rl({"quota", "set", "m", "--rpm", "1"}).code, 0);
  ASSERT_EQ(rl({"acquire", "m"}).code, 0);
  Output r = tty({"acquire", "m", "--wait", "300ms"});
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("waiting for m: next try in"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(", giving up in "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("m: denied (rpm_exceeded"), std::string::npos) << r.out;
}

// The waiting process sleeps in the library (its countdown is on the terminal) when another
// process cancels the reservation that fills the window: the SQLite store wakes it, long before
// the window would free (a minute) or its wait would end (30 s).
TEST_F(CliTerminal, WaitIsWokenWhenAnotherProcessCancels) {
  ASSERT_EQ(rl({"quota", "set", "m", "--rpm", "1"}).code, 0);
  Output held = rl({"acquire", "m"});
  ASSERT_EQ(held.code, 0) << held.err;
  const std::string id = held.out.substr(0, held.out.find('\n'));
  Output cancelled;
  Output r = tty({"acquire", "m", "--wait", "30s"}, "waiting for m: next try in", "", [&] {
    cancelled = rl({"cancel", id});
  });
  EXPECT_EQ(cancelled.code, 0) << cancelled.err;
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out.find("denied"), std::string::npos) << r.out;
  EXPECT_EQ(stats_of("m")["rpm"], 1);
}

// --- the Redis store (a redis-server this test program starts) ---

class CliRedis : public Cli {
 protected:
  void SetUp() override {
    Cli::SetUp();
    url_ = ratelimit::testing::shared_redis().url();
    store_args_ = {"--redis", url_};
  }
  std::string url_;
};

// Two "machines" (two HOMEs) on one Redis: one window, one quota, ids valid on both.
TEST_F(CliRedis, TwoMachinesShareOneQuotaAndSettleEachOthersIds) {
  ASSERT_EQ(rl({"quota", "set", "m", "--rpm", "2", "--tpm", "100"}).code, 0);
  Output a = rl({"--json", "acquire", "m", "--tokens", "50"});
  ASSERT_EQ(a.code, 0) << a.err;
  const std::string id = a.parsed()["reservation_id"];
  const fs::path first_home = home_;
  home_ = first_home / "other-machine";
  fs::create_directories(home_);
  store_args_.clear();
  extra_env_["RATELIMIT_REDIS_URL"] = url_;  // the environment selects it too
  Output b = rl({"--json", "acquire", "m", "--tokens", "10"});
  ASSERT_EQ(b.code, 0) << b.err;
  EXPECT_EQ(rl({"--json", "acquire", "m"}).code, 1);  // 2 of 2 requests
  ASSERT_EQ(rl({"commit", id, "--prompt", "5", "--output", "5"}).code, 0);
  const json there = stats_of("m");
  home_ = first_home;
  extra_env_.clear();
  store_args_ = {"--redis", url_};
  const json here = stats_of("m");
  EXPECT_EQ(here["rpm"], 2);
  EXPECT_EQ(here["tpm"], 20);
  EXPECT_EQ(here["rpm"], there["rpm"]);
  EXPECT_EQ(here["tpm"], there["tpm"]);
}

TEST_F(CliRedis, FlagsThatConflictAreUsageErrorsAndThePasswordIsNeverShown) {
  Output both = rl({"--state", (home_ / "x.db").string(), "status"});
  EXPECT_EQ(both.code, 2);
  EXPECT_NE(both.err.find("conflicts with --state"), std::string::npos) << both.err;
  store_args_.clear();
  Output no_url = rl({"--backend", "redis", "status"});
  EXPECT_EQ(no_url.code, 2);
  EXPECT_NE(no_url.err.find("--redis URL"), std::string::npos) << no_url.err;
  Output other = rl({"--backend", "yaml", "--redis", url_, "status"});
  EXPECT_EQ(other.code, 2);
  Output refused = rl({"--redis", "redis://:hunter2@127.0.0.1:1/0", "status"});
  EXPECT_EQ(refused.code, 3);
  EXPECT_EQ(refused.err.find("hunter2"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("redis://:***@127.0.0.1:1/0"), std::string::npos) << refused.err;
}

}  // namespace

namespace {

// Issue 11 from the command line: tiers, input/output limits, dated names, aliases, the
// unknown-model policy and observe, on the default SQLite store.
TEST_F(Cli, ProviderTiersNamesAndObserve) {
  Output o = rl({"--provider", "anthropic:tier1", "--json", "quota", "list"});
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_GT(o.parsed()["quotas"]["claude-sonnet-4"]["max_output_tpm"].get<std::int64_t>(), 0);
  o = rl({"--provider", "openai:tier9", "status"});
  EXPECT_EQ(o.code, 2);
  EXPECT_NE(o.err.find("openai:tier9"), std::string::npos) << o.err;

  o = rl({"quota", "set", "m", "--rpm", "10", "--input-tpm", "100", "--output-tpm", "50",
          "--day-start", "pacific_midnight"});
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_NE(o.out.find("input tpm 100, output tpm 50, day starts at pacific_midnight"),
            std::string::npos)
      << o.out;
  EXPECT_EQ(rl({"quota", "set", "m", "--day-start", "tuesday"}).code, 2);
  EXPECT_EQ(rl({"quota", "set", "m", "--input-tpm", "-1"}).code, 2);

  // A dated name resolves to its family; the decision says so.
  o = rl({"--json", "check", "m-2024-08-06", "--tokens", "101"});
  EXPECT_EQ(o.code, 1) << o.err;
  EXPECT_EQ(o.parsed()["resolved_model"], "m");
  EXPECT_EQ(o.parsed()["code"], "input_tpm_exceeded");
  EXPECT_TRUE(o.parsed()["retry_after_ms"].is_null());

  // Aliases.
  ASSERT_EQ(rl({"quota", "alias", "my-model", "m"}).code, 0);
  o = rl({"--json", "quota", "aliases"});
  ASSERT_EQ(o.code, 0);
  EXPECT_EQ(o.parsed()["aliases"]["my-model"], "m");
  o = rl({"--json", "check", "my-model"});
  EXPECT_EQ(o.parsed()["resolved_model"], "m");
  EXPECT_EQ(rl({"quota", "alias", "x", "x"}).code, 2);
  ASSERT_EQ(rl({"quota", "unalias", "my-model"}).code, 0);
  EXPECT_EQ(rl({"quota", "unalias", "my-model"}).code, 2);

  // The unknown-model policy.
  ASSERT_EQ(rl({"quota", "unknown", "deny"}).code, 0);
  o = rl({"--json", "check", "stranger"});
  EXPECT_EQ(o.code, 1);
  EXPECT_EQ(o.parsed()["code"], "model_not_allowed");
  EXPECT_EQ(rl({"quota", "unknown", "default_quota"}).code, 2);  // needs limits
  ASSERT_EQ(rl({"quota", "unknown", "default_quota", "--rpm", "1"}).code, 0);
  o = rl({"--json", "quota", "unknown"});
  EXPECT_EQ(o.parsed()["unknown_models"]["policy"], "default_quota");
  EXPECT_EQ(o.parsed()["unknown_models"]["quota"]["max_rpm"], 1);
  ASSERT_EQ(rl({"acquire", "stranger"}).code, 0);
  EXPECT_EQ(rl({"acquire", "stranger"}).code, 1);
  ASSERT_EQ(rl({"quota", "unknown", "allow"}).code, 0);

  // observe: a 429 cools the model down for every process on the store.
  o = rl({"observe", "m-latest", "--status", "429", "--header", "retry-after: 20"});
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_NE(o.out.find("m ("), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("blocked for"), std::string::npos) << o.out;
  o = rl({"--json", "check", "m"});
  EXPECT_EQ(o.code, 1);
  EXPECT_EQ(o.parsed()["code"], "provider_cooldown");
  EXPECT_FALSE(o.parsed()["stats"]["learned"]["cooldown_until"].is_null());
  o = rl({"--json", "observe", "m", "--header", "x-ratelimit-remaining-requests: lots", "--format",
          "openai"});
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_FALSE(o.parsed()["ignored"].empty());
  EXPECT_EQ(rl({"observe", "m", "--status", "42"}).code, 2);
  EXPECT_EQ(rl({"observe", "m", "--header", "no colon"}).code, 2);
  EXPECT_EQ(rl({"observe", "m", "--format", "aol"}).code, 2);
  EXPECT_EQ(rl({"observe", "m", "--body-file", (home_ / "missing").string()}).code, 2);
  write_file(home_ / "body.json",
             R"({"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":)"
             R"("type.googleapis.com/google.rpc.RetryInfo","retryDelay":"7s"}]}})");
  o = rl({"--json", "observe", "gemini-x", "--status", "429", "--body-file",
          (home_ / "body.json").string()});
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(o.parsed()["format"], "gemini");
  EXPECT_FALSE(o.parsed()["learned"]["cooldown_until"].is_null());
}

}  // namespace
