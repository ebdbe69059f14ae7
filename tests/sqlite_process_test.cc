// Real processes on one SQLite database: exact shared quotas (RPM, TPM, commit/cancel mixes),
// a child killed mid-loop, a lock held longer than the busy budget, reservation ids settled in
// another process, and a waiter woken by another process's release.
//
// Children are forked before the parent opens any connection (SQLite connections must not
// cross fork()), open their own limiter, and leave with _exit.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "sqlite_test_util.h"

namespace ratelimit {
namespace {

using namespace std::chrono_literals;
using testing::open_db;
using testing::query_int;
using testing::query_text;
using testing::start_time;

// A limiter for a child: no gtest calls; null on failure.
std::unique_ptr<RateLimiter> child_open(const std::string& path) {
  Config config;
  config.providers = {Provider::local};
  config.clock = std::make_shared<ManualClock>(start_time());
  auto opened = RateLimiter::open_sqlite(path, std::move(config));
  return opened ? std::move(*opened) : nullptr;
}

struct Pipe {
  int read_fd = -1;
  int write_fd = -1;
  Pipe() {
    int fds[2];
    if (::pipe(fds) == 0) {
      read_fd = fds[0];
      write_fd = fds[1];
    }
  }
  ~Pipe() {
    close_read();
    close_write();
  }
  void close_read() {
    if (read_fd >= 0) ::close(read_fd);
    read_fd = -1;
  }
  void close_write() {
    if (write_fd >= 0) ::close(write_fd);
    write_fd = -1;
  }
};

bool write_all(int fd, const void* data, std::size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

// Reads until EOF; returns everything read.
std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

// Forks a child that runs `body` and exits with its result.
pid_t spawn(const std::function<int()>& body) {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(body());
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Creates the database with `quotas` and closes it again.
void create_db(const std::string& path, QuotaMap quotas) {
  auto limiter = open_db(path, std::move(quotas));
  ASSERT_TRUE(limiter);
  ASSERT_TRUE(limiter->close());
}

// Runs `children` processes that wait for a common start, then run `loop` (which returns a
// count sent to the parent). Returns the counts.
std::vector<std::int64_t> run_children(int children, const std::string& path,
                                       const std::function<std::int64_t(RateLimiter&)>& loop) {
  Pipe go;
  std::vector<std::unique_ptr<Pipe>> results;
  std::vector<pid_t> pids;
  for (int i = 0; i < children; ++i) {
    results.push_back(std::make_unique<Pipe>());
    Pipe& out = *results.back();
    pids.push_back(spawn([&]() -> int {
      go.close_write();
      char c;
      (void)::read(go.read_fd, &c, 1);  // EOF when the parent lets everyone go
      auto limiter = child_open(path);
      if (!limiter) return 2;
      const std::int64_t n = loop(*limiter);
      return write_all(out.write_fd, &n, sizeof n) ? 0 : 3;
    }));
    out.close_write();
  }
  go.close_write();
  std::vector<std::int64_t> counts;
  for (int i = 0; i < children; ++i) {
    const std::string data = read_all(results[i]->read_fd);
    std::int64_t n = -1;
    if (data.size() == sizeof n) std::memcpy(&n, data.data(), sizeof n);
    counts.push_back(n);
    EXPECT_EQ(wait_exit(pids[i]), 0) << "child " << i;
  }
  return counts;
}

std::int64_t sum(const std::vector<std::int64_t>& v) {
  std::int64_t s = 0;
  for (std::int64_t x : v) s += x;
  return s;
}

TEST(SqliteProcessTest, FourProcessesShareOneRpmQuotaExactly) {
  testing::TempDir dir;
  const std::string path = dir.file("rpm.db");
  create_db(path, {{"m", {1000, 0, 0}}});
  const auto counts = run_children(4, path, [](RateLimiter& limiter) {
    std::int64_t n = 0;
    while (limiter.try_acquire("m", 1)) ++n;
    return n;
  });
  EXPECT_EQ(sum(counts), 1000);
  EXPECT_EQ(query_int(path, "SELECT COUNT(*) FROM rl_log WHERE requests = 1 AND state = 0"), 1000);
  EXPECT_EQ(query_int(path, "SELECT max(seq) FROM rl_log WHERE seq < 9223372036854775807"),
            1000);  // one seq per grant
  auto limiter = open_db(path, {});
  EXPECT_EQ(limiter->stats("m")->rpm, 1000);
  EXPECT_EQ(limiter->stats("m")->rpd, 1000);
}

// What a provider said in one process holds in every other, to the nanosecond.
TEST(SqliteProcessTest, ACooldownLearnedInOneProcessHoldsInAnother) {
  testing::TempDir dir;
  const std::string path = dir.file("cooldown.db");
  create_db(path, {{"gpt-4o", {100, 0, 0}}});
  const pid_t child = spawn([&] {
    auto limiter = child_open(path);
    if (!limiter) return 10;
    ProviderResponse r;
    r.status = 429;
    r.headers = {{"retry-after", "45"}};
    auto o = limiter->observe("gpt-4o-2024-08-06", r);
    return o && o->resolved_model == "gpt-4o" ? 0 : 11;
  });
  ASSERT_EQ(wait_exit(child), 0);
  auto clock = std::make_shared<ManualClock>(start_time());
  auto limiter = open_db(path, {}, clock);
  Decision d = limiter->decide("gpt-4o", 0);
  EXPECT_EQ(d.code, DecisionCode::provider_cooldown);
  EXPECT_EQ(d.retry_after, 45s);
  clock->advance(45s - 1ns);
  EXPECT_FALSE(limiter->try_acquire("gpt-4o", 0));
  clock->advance(1ns);
  EXPECT_TRUE(limiter->try_acquire("gpt-4o", 0));
  EXPECT_EQ(query_int(path, "SELECT COUNT(*) FROM rl_learned"), 0);  // expired: deleted
}

TEST(SqliteProcessTest, FourProcessesShareOneTpmQuotaExactly) {
  testing::TempDir dir;
  const std::string path = dir.file("tpm.db");
  create_db(path, {{"m", {0, 10'000, 0}}});
  const auto counts = run_children(4, path, [](RateLimiter& limiter) {
    std::int64_t n = 0;
    while (limiter.try_acquire("m", 10)) ++n;
    return n;
  });
  EXPECT_EQ(sum(counts), 1000);
  EXPECT_EQ(query_int(path, "SELECT sum(tokens) FROM rl_log WHERE seq < 9223372036854775807"),
            10'000);
  auto limiter = open_db(path, {});
  EXPECT_EQ(limiter->stats("m")->tpm, 10'000);
}

TEST(SqliteProcessTest, CommitsAndCancelsAcrossProcessesStayExact) {
  testing::TempDir dir;
  const std::string path = dir.file("mix.db");
  create_db(path, {{"m", {1000, 0, 0}}});
  const auto counts = run_children(4, path, [](RateLimiter& limiter) -> std::int64_t {
    std::int64_t kept = 0;
    for (std::int64_t i = 1;; ++i) {
      Reservation r = limiter.try_acquire("m", 10);
      if (!r) break;
      if (i % 3 == 0) {
        if (!r.cancel()) return -1;
      } else {
        if (!r.commit(3, 2)) return -1;
        ++kept;
      }
    }
    return kept;
  });
  EXPECT_EQ(sum(counts), 1000);
  auto limiter = open_db(path, {});
  EXPECT_EQ(limiter->stats("m")->rpm, 1000);
  EXPECT_EQ(limiter->stats("m")->tpm, 5000);
  EXPECT_EQ(limiter->stats("m")->rpd, 1000);
  EXPECT_EQ(query_int(path, "SELECT sum(tokens) FROM rl_log WHERE state = 1"), 5000);
}

TEST(SqliteProcessTest, AChildKilledMidLoopLeavesAConsistentDatabase) {
  testing::TempDir dir;
  const std::string path = dir.file("crash.db");
  create_db(path, {{"m", {3000, 0, 0}}});
  Pipe go_first;   // the child to be killed starts first...
  Pipe go_others;  // ...the other two once it is well into its loop
  Pipe reports[3];
  pid_t pids[3];
  for (int i = 0; i < 3; ++i) {
    pids[i] = spawn([&, i]() -> int {
      go_first.close_write();
      go_others.close_write();
      char c;
      (void)::read(i == 0 ? go_first.read_fd : go_others.read_fd, &c, 1);
      auto limiter = child_open(path);
      if (!limiter) return 2;
      while (limiter->try_acquire("m", 1)) {
        if (!write_all(reports[i].write_fd, "g", 1)) return 3;  // one byte per grant, at once
      }
      return 0;
    });
    reports[i].close_write();
  }
  go_first.close_write();
  // Read the first child's reports until it has 200 grants, start the others, and kill the
  // first in the middle of its loop (it alone would take all 3,000).
  std::string first;
  char buf[256];
  while (first.size() < 200) {
    const ssize_t n = ::read(reports[0].read_fd, buf, sizeof buf);
    ASSERT_GT(n, 0);
    first.append(buf, static_cast<std::size_t>(n));
  }
  go_others.close_write();
  ASSERT_EQ(::kill(pids[0], SIGKILL), 0);
  first += read_all(reports[0].read_fd);
  EXPECT_EQ(wait_exit(pids[0]), 128 + SIGKILL);
  // The others carry on until the quota is full.
  const std::size_t second = read_all(reports[1].read_fd).size();
  const std::size_t third = read_all(reports[2].read_fd).size();
  EXPECT_EQ(wait_exit(pids[1]), 0);
  EXPECT_EQ(wait_exit(pids[2]), 0);
  EXPECT_EQ(query_text(path, "PRAGMA integrity_check"), "ok");
  const std::int64_t total =
      query_int(path, "SELECT COUNT(*) FROM rl_log WHERE seq < 9223372036854775807");
  EXPECT_EQ(total, 3000);
  const std::int64_t killed = total - static_cast<std::int64_t>(second + third);
  // The grant in flight may have committed without being reported.
  EXPECT_TRUE(killed == static_cast<std::int64_t>(first.size()) ||
              killed == static_cast<std::int64_t>(first.size()) + 1)
      << killed << " in the database, " << first.size() << " reported";
  auto limiter = open_db(path, {});
  EXPECT_EQ(limiter->stats("m")->rpm, 3000);
  EXPECT_FALSE(limiter->try_acquire("m", 0));
}

TEST(SqliteProcessTest, ALockHeldLongerThanTheBusyBudgetIsStoreUnavailable) {
  testing::TempDir dir;
  const std::string path = dir.file("busy.db");
  create_db(path, {{"m", {10, 0, 0}}});
  Pipe go;
  Pipe ready;
  Pipe release;
  const pid_t holder = spawn([&]() -> int {
    go.close_write();
    ready.close_read();
    release.close_write();
    char c;
    if (::read(go.read_fd, &c, 1) != 1) return 5;
    sqlite3* db = nullptr;
    if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) return 2;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) return 3;
    if (!write_all(ready.write_fd, "r", 1)) return 4;
    (void)::read(release.read_fd, &c, 1);  // hold the write lock until told (or EOF)
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    sqlite3_close(db);
    return 0;
  });
  go.close_read();
  ready.close_write();
  release.close_read();
  Config config;
  config.providers = {Provider::local};
  config.clock = std::make_shared<ManualClock>(start_time());
  config.file_path = path;
  detail::SqliteOptions impatient;
  impatient.busy_budget = 100ms;
  auto opened = detail::open_sqlite_limiter(config, impatient);  // no connection across fork()
  ASSERT_TRUE(opened) << opened.error().message;
  auto limiter = std::move(*opened);
  ASSERT_TRUE(limiter->try_acquire("m", 0));
  ASSERT_TRUE(write_all(go.write_fd, "g", 1));
  char c;
  ASSERT_EQ(::read(ready.read_fd, &c, 1), 1);
  // Opening needs the write lock too: it gives up after the budget.
  auto second = detail::open_sqlite_limiter(config, impatient);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, ErrorCode::unavailable);
  const auto t0 = std::chrono::steady_clock::now();
  const Reservation r = limiter->try_acquire("m", 0);
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_FALSE(r);
  EXPECT_EQ(r.decision().code, DecisionCode::store_unavailable);
  EXPECT_GE(took, 90ms);
  EXPECT_LT(took, 3s);
  auto s = limiter->record_usage("m", 1, 1);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::unavailable);
  EXPECT_NE(s.error().message.find("retry later"), std::string::npos) << s.error().message;
  EXPECT_EQ(limiter->acquire("m", 0).error().code, ErrorCode::unavailable);
  EXPECT_EQ(limiter->set_quota("m", {}).error().code, ErrorCode::unavailable);
  EXPECT_TRUE(limiter->decide("m", 0).allowed);  // WAL: readers do not wait for the writer
  EXPECT_EQ(limiter->stats("m")->rpm, 1);
  ASSERT_TRUE(write_all(release.write_fd, "x", 1));
  EXPECT_EQ(wait_exit(holder), 0);
  EXPECT_TRUE(limiter->try_acquire("m", 0));
  EXPECT_EQ(limiter->stats("m")->rpm, 2);
}

TEST(SqliteProcessTest, IdsIssuedInOneProcessSettleInAnother) {
  testing::TempDir dir;
  const std::string path = dir.file("ids.db");
  create_db(path, {{"m", {3, 1000, 0}}});
  Pipe ids;
  const pid_t child = spawn([&]() -> int {
    ids.close_write();
    const std::string text = read_all(ids.read_fd);
    const auto nl = text.find('\n');
    if (nl == std::string::npos) return 2;
    auto limiter = child_open(path);
    if (!limiter) return 3;
    if (!limiter->commit(text.substr(0, nl), 100, 0)) return 4;
    if (!limiter->cancel(text.substr(nl + 1))) return 5;
    if (limiter->cancel(text.substr(nl + 1)).error().code != ErrorCode::invalid_argument) return 6;
    return 0;
  });
  ids.close_read();
  std::string a_id, b_id;
  {
    auto limiter = open_db(path, {});
    Reservation a = limiter->try_acquire("m", 500);
    Reservation b = limiter->try_acquire("m", 500);
    a_id = a.id();
    b_id = b.id();
    ASSERT_TRUE(limiter->close());
  }
  const std::string text = a_id + "\n" + b_id;
  ASSERT_TRUE(write_all(ids.write_fd, text.data(), text.size()));
  ids.close_write();
  EXPECT_EQ(wait_exit(child), 0);
  auto limiter = open_db(path, {});
  EXPECT_EQ(limiter->stats("m")->rpm, 1);
  EXPECT_EQ(limiter->stats("m")->tpm, 100);
  EXPECT_EQ(limiter->stats("m")->rpd, 1);
}

TEST(SqliteProcessTest, AWaiterWakesWhenAnotherProcessReleases) {
  testing::TempDir dir;
  const std::string path = dir.file("wake.db");
  create_db(path, {{"m", {1, 0, 0}}});
  Pipe id_pipe;
  const pid_t child = spawn([&]() -> int {
    id_pipe.close_write();
    const std::string id = read_all(id_pipe.read_fd);
    ::usleep(100'000);  // let the parent start waiting
    Config config;
    config.providers = {Provider::local};
    auto opened = RateLimiter::open_sqlite(path, config);  // the system clock, like the parent
    if (!opened) return 2;
    return (*opened)->cancel(id) ? 0 : 3;
  });
  id_pipe.close_read();
  Config config;
  config.providers = {Provider::local};
  auto limiter = std::move(*RateLimiter::open_sqlite(path, config));
  Reservation held = limiter->try_acquire("m", 0);
  ASSERT_TRUE(held);
  const std::string id = held.id();
  ASSERT_TRUE(write_all(id_pipe.write_fd, id.data(), id.size()));
  id_pipe.close_write();
  const auto t0 = std::chrono::steady_clock::now();
  WaitOptions options;
  options.timeout = 30s;  // the window would free it only after 60 s
  auto r = limiter->acquire("m", 0, options);
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_LT(took, 10s);
  EXPECT_EQ(wait_exit(child), 0);
}

}  // namespace
}  // namespace ratelimit
