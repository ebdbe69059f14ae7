// Child processes for the process-level server tests: start a program with its stdout and
// stderr in files, watch its output, signal it, wait for it with a timeout, and check that a
// sanitized child reported nothing. Header-only; POSIX.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "child_env.h"
#include "gtest/gtest.h"

extern char** environ;

namespace ratelimit::testing {

using Millis = std::chrono::milliseconds;

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The first line of `err` that is a sanitizer report (ThreadSanitizer, AddressSanitizer,
// LeakSanitizer, UndefinedBehaviorSanitizer), or "" when there is none.
inline std::string sanitizer_report(const std::string& err) {
  for (const char* marker :
       {"WARNING: ThreadSanitizer", "ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
        "runtime error:", "ERROR: ThreadSanitizer", "SUMMARY: UndefinedBehaviorSanitizer"}) {
    const auto at = err.find(marker);
    if (at == std::string::npos) continue;
    const auto begin = err.rfind('\n', at);
    const auto end = err.find('\n', at);
    return err.substr(begin == std::string::npos ? 0 : begin + 1,
                      end == std::string::npos ? std::string::npos : end - begin);
  }
  return "";
}

// One child process. Its stdout and stderr go to files in `dir`; it gets its own process
// group, so that a program that starts helpers (chromium) can be ended as a whole. The
// destructor kills (SIGKILL) and reaps a child that is still running.
class Process {
 public:
  struct Options {
    std::filesystem::path dir;               // where the output files go
    std::filesystem::path home;              // the child's HOME
    std::map<std::string, std::string> env;  // extra environment
    bool check_sanitizers = true;            // fail on a sanitizer report in stderr
  };

  Process(std::vector<std::string> argv, Options options) : options_(std::move(options)) {
    static std::atomic<int> counter{0};
    const std::string n = std::to_string(counter++) + "-" + std::to_string(::getpid());
    out_path_ = options_.dir / (".out" + n);
    err_path_ = options_.dir / (".err" + n);
    name_ = argv.empty() ? "?" : argv.front();
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    // Own process group; default signal dispositions and an empty mask (the test runner's
    // threads may block signals, and a child inherits the mask).
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(
        &attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    auto env_s = child_environment(options_.home, options_.env);
    std::vector<char*> envp;
    for (auto& e : env_s) envp.push_back(e.data());
    envp.push_back(nullptr);
    const int rc = posix_spawn(&pid_, args.front(), &fa, &attr, args.data(), envp.data());
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
      ADD_FAILURE() << "posix_spawn " << name_ << ": " << std::strerror(rc);
      pid_ = -1;
    }
  }

  ~Process() {
    if (pid_ > 0 && !status_) {
      ::kill(-pid_, SIGKILL);  // the child's own group: it and whatever it started
      int status = 0;
      ::waitpid(pid_, &status, 0);
      status_ = status;
    }
    std::error_code ec;
    std::filesystem::remove(out_path_, ec);
    std::filesystem::remove(err_path_, ec);
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  bool started() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  std::string out() const { return slurp(out_path_); }
  std::string err() const { return slurp(err_path_); }

  void signal(int sig) {
    if (pid_ > 0 && !status_) ::kill(pid_, sig);
  }
  // Kills the whole process group (SIGKILL) and reaps the child.
  void kill_group() {
    if (pid_ > 0 && !status_) ::kill(-pid_, SIGKILL);
    wait_for(Millis(10'000));
  }

  // True (and the exit code set) once the child has exited; never blocks.
  bool exited() {
    if (status_) return true;
    if (pid_ <= 0) return true;
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      status_ = status;
      if (options_.check_sanitizers) {
        const std::string report = sanitizer_report(err());
        EXPECT_EQ(report, "") << name_ << " reported:\n" << err();
      }
      return true;
    }
    return false;
  }

  // Waits up to `timeout` for the child to exit; its exit code (128 + N for signal N), or
  // nullopt when it is still running.
  std::optional<int> wait_for(Millis timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!exited()) {
      if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(Millis(5));
    }
    return code();
  }

  // The exit code once exited (-1 before, or when the child never started).
  int code() const {
    if (!status_) return -1;
    return WIFEXITED(*status_) ? WEXITSTATUS(*status_) : 128 + WTERMSIG(*status_);
  }

  // Waits until stdout contains `needle` (looking every `poll`); false when the child exits
  // first or `timeout` passes.
  bool wait_output(std::string_view needle, Millis timeout, Millis poll = Millis(5)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (out().find(needle) != std::string::npos) return true;
      if (exited()) return out().find(needle) != std::string::npos;
      if (std::chrono::steady_clock::now() >= deadline) return false;
      if (poll.count() > 0) {
        std::this_thread::sleep_for(poll);
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  Options options_;
  std::string name_;
  std::filesystem::path out_path_, err_path_;
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// The result of a program run to completion.
struct Finished {
  int code = -1;  // 128 + N when killed by signal N; -2 when it timed out (and was killed)
  std::string out, err;
};

// Runs `argv` to completion (killed after `timeout`).
inline Finished run(std::vector<std::string> argv, const Process::Options& options,
                    Millis timeout = Millis(60'000)) {
  Process p(std::move(argv), options);
  Finished r;
  if (!p.started()) return r;
  auto code = p.wait_for(timeout);
  if (!code) {
    ADD_FAILURE() << "timed out after " << timeout.count() << " ms; killed";
    p.kill_group();
  }
  r.code = code ? *code : -2;
  r.out = p.out();
  r.err = p.err();
  return r;
}

// Percent-encodes everything but unreserved characters (RFC 3986): a model name in a path, a
// query in a URL.
inline std::string percent_encode(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

}  // namespace ratelimit::testing
