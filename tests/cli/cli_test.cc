// Tests of the `ratelimit` command: each runs the built binary in a temporary HOME and checks
// its exit code and its output (JSON parsed with nlohmann): the argument helpers, the commands
// that need no store, every command's happy path and JSON shape on both stores, and provider
// tiers. Bad input and the stores are in cli_store_test.cc; waiting, concurrency and the
// terminal in cli_process_test.cc; the fixtures in cli_fixture.h.
#include <chrono>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "args.h"
#include "cli_fixture.h"
#include "gtest/gtest.h"
#include "ratelimit/model_name.h"
#include "ratelimit/quota.h"

namespace {

using namespace ratelimit::testing;

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
