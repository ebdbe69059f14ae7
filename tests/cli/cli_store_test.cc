// Tests of the `ratelimit` command's state (cli_fixture.h runs the built binary): bad input
// that leaves it as it was, unreadable and corrupt files, reservation ids across invocations,
// selecting and migrating stores, and the Redis store (a redis-server this program starts).
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "args.h"
#include "cli_fixture.h"
#include "gtest/gtest.h"
#include "ratelimit/model_name.h"
#include "redis_server.h"

namespace {

using namespace ratelimit::testing;

INSTANTIATE_TEST_SUITE_P(Stores, CliStore, ::testing::Values("sqlite", "yaml"),
                         [](const auto& info) { return info.param; });

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
