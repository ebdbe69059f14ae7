// Tests of the `ratelimit` command across processes (cli_fixture.h runs the built binary):
// waits that end at their deadline or are woken by another process, concurrent invocations,
// and terminal behaviour (bars, countdown, confirmation) under a pseudo-terminal.
#include <poll.h>
#include <pty.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "cli_fixture.h"
#include "gtest/gtest.h"

namespace {

using namespace ratelimit::testing;
using Clock = std::chrono::steady_clock;

INSTANTIATE_TEST_SUITE_P(Stores, CliStore, ::testing::Values("sqlite", "yaml"),
                         [](const auto& info) { return info.param; });

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

}  // namespace
