// The model-name rule on every path in from storage, and recovery of a damaged state file by
// the library (Config::recover_corrupt) for YAML as for SQLite.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "sqlite_test_util.h"
#include "store_kinds.h"

namespace ratelimit {
namespace {

namespace fs = std::filesystem;
using testing::StoreFixture;
using testing::StoreKind;

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

bool contains(const std::vector<std::string>& lines, const std::string& needle) {
  for (const auto& line : lines) {
    if (line.find(needle) != std::string::npos) return true;
  }
  return false;
}

TEST(StateNames, AYamlFileWithInvalidNamesOpensAndSkipsThem) {
  StoreFixture f(StoreKind::yaml);
  // One good model, one with a control character, one of 300 bytes, written by some other
  // tool: the file still loads, the bad ones are named and counted.
  write_text(f.dir.file("state.yaml"),
             "quotas:\n  good: {max_rpm: 2, max_tpm: 0, max_rpd: 0}\n"
             "  \"ctl\\x01\": {max_rpm: 1, max_tpm: 0, max_rpd: 0}\n"
             "  " +
                 std::string(300, 'x') +
                 ": {max_rpm: 1, max_tpm: 0, max_rpd: 0}\n"
                 "state: {}\n");
  ASSERT_TRUE(f.limiter->load());
  EXPECT_EQ(*f.limiter->quota("good"), (ModelQuota{2, 0, 0}));
  EXPECT_EQ(f.limiter->quotas()->size(), 1u);
  EXPECT_EQ(f.limiter->limiter_metrics().invalid_names_skipped, 2u);
  EXPECT_TRUE(contains(*f.warnings, "ratelimit.load: skipped the quota of model \"ctl\\x01\""))
      << (f.warnings->empty() ? "" : f.warnings->front());
  // And the next persist writes a file without them (it used to fail on every persist).
  ASSERT_TRUE(f.limiter->persist());
  auto again = f.open(QuotaMap{});
  ASSERT_TRUE(again->load());
  EXPECT_EQ(again->quotas()->size(), 1u);
}

TEST(StateNames, ASqliteDatabaseWithInvalidNamesOpensAndSkipsThem) {
  StoreFixture f(StoreKind::sqlite, {{"good", {2, 0, 0}}});
  const std::string db = f.dir.file("state.db");
  ASSERT_TRUE(testing::exec_sql(
      db,
      "INSERT INTO quotas (model, max_rpm, max_tpm, max_rpd) VALUES "
      "(CAST(X'626164FF' AS TEXT), 1, 0, 0), ('', 3, 0, 0);"
      "INSERT INTO rl_learned VALUES (CAST(X'6301' AS TEXT), 9, -1, 0, -1, 0, -1, 0, -1, 0)"));
  auto quotas = f.limiter->quotas();
  ASSERT_TRUE(quotas) << quotas.error().message;
  EXPECT_EQ(quotas->size(), 2u);  // "good" and "" (valid for the library)
  auto stats = f.limiter->all_stats();
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->count("good"), 1u);
  for (const auto& [name, s] : *stats) EXPECT_FALSE(model_name_problem(name)) << name;
  EXPECT_EQ(f.limiter->limiter_metrics().invalid_names_skipped, 2u);
  EXPECT_TRUE(contains(*f.warnings, "skipped the rows of model \"bad\\xff\""));
  // A migration skips them too, with a warning.
  const std::string yaml = f.dir.file("old.yaml");
  write_text(yaml,
             "quotas:\n  \"x\\x7F\": {max_rpm: 1, max_tpm: 0, max_rpd: 0}\n"
             "  fine: {max_rpm: 1, max_tpm: 0, max_rpd: 0}\nstate: {}\n");
  std::vector<std::string> said;
  ASSERT_TRUE(migrate_yaml_to_sqlite(yaml, f.dir.file("new.db"),
                                     [&](std::string_view m) { said.emplace_back(m); }));
  EXPECT_TRUE(contains(said, "ratelimit.migrate: "));
  EXPECT_EQ(testing::query_int(f.dir.file("new.db"), "SELECT COUNT(*) FROM quotas"), 1);
}

TEST(StateNames, TheLibraryMovesADamagedYamlFileAsideWhenAskedTo) {
  testing::TempDir dir;
  const std::string path = dir.file("state.yaml");
  const std::string garbage = "quotas: [1, 2\nstate: {{{\n";
  write_text(path, garbage);
  Config config;
  config.backend = Backend::yaml;
  config.file_path = path;
  config.providers = {Provider::local};
  std::vector<std::string> said;
  config.on_warning = [&](std::string_view m) { said.emplace_back(m); };
  auto plain = std::move(*RateLimiter::open(config));
  EXPECT_EQ(plain->load().error().code, ErrorCode::corrupt_state);  // left alone
  config.recover_corrupt = true;
  auto recovering = std::move(*RateLimiter::open(config));
  ASSERT_TRUE(recovering->load());
  EXPECT_TRUE(contains(said, "moved the damaged state file aside to " + path + ".corrupt-"));
  EXPECT_FALSE(fs::exists(path));
  int kept = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) {
    kept += e.path().filename().string().rfind("state.yaml.corrupt-", 0) == 0;
  }
  EXPECT_EQ(kept, 1);
  ASSERT_TRUE(recovering->record_usage("m", 1, 1));
  ASSERT_TRUE(recovering->persist());
  // A SQLite database at a YAML path is never moved aside.
  const std::string db = dir.file("real.db");
  ASSERT_TRUE(testing::exec_sql(db, "CREATE TABLE t (x)"));
  config.file_path = db;
  auto wrong = std::move(*RateLimiter::open(config));
  auto failed = wrong->load();
  ASSERT_FALSE(failed);
  EXPECT_NE(failed.error().message.find("is a SQLite database"), std::string::npos);
  EXPECT_TRUE(fs::exists(db));
}

TEST(StateNames, SqliteErrorsNameTheOperationThatFailed) {
  auto f = testing::sqlite_limiter({{"m", {1, 0, 0}}});
  ASSERT_TRUE(f->limiter->try_acquire("m", 0));
  f->faults.arm(0);
  auto acquired = f->limiter->acquire("m", 0);
  auto waited = f->limiter->wait_for_capacity("m", 0);
  auto quota = f->limiter->quota("m");
  f->faults.off();
  ASSERT_FALSE(acquired);
  EXPECT_EQ(acquired.error().message.rfind("ratelimit.acquire: sqlite ", 0), 0u)
      << acquired.error().message;
  ASSERT_FALSE(waited);
  EXPECT_EQ(waited.error().message.rfind("ratelimit.wait_for_capacity: sqlite ", 0), 0u)
      << waited.error().message;
  ASSERT_FALSE(quota);
  EXPECT_EQ(quota.error().message.rfind("ratelimit.quota: sqlite ", 0), 0u);
}

}  // namespace
}  // namespace ratelimit

namespace ratelimit {
namespace {

// A clock of the caller's that tells real time (e.g. one that logs): the change signal of a
// shared store must not depend on which clock is used (it once did: only system_clock() itself
// polled other processes' commits).
class WrappedSystemClock final : public Clock {
 public:
  TimePoint now() const override { return system_clock()->now(); }
  bool sleep_until(TimePoint until, std::stop_token stop) override {
    ++sleeping;
    const bool slept = system_clock()->sleep_until(until, stop);
    --sleeping;
    return slept;
  }
  std::atomic<int> sleeping{0};
};

TEST(SharedStoreWake, AnotherConnectionsReleaseWakesAWaiterWhateverTheClock) {
  testing::TempDir dir;
  Config config;
  config.backend = Backend::sqlite;
  config.file_path = dir.file("shared.db");
  config.providers = {Provider::local};
  config.quotas = {{"m", {1, 0, 0}}};
  auto clock = std::make_shared<WrappedSystemClock>();
  config.clock = clock;
  auto waiter = std::move(*RateLimiter::open(config));
  auto other = std::move(*RateLimiter::open(config));  // another connection, as another process
  Reservation r = other->try_acquire("m", 0);
  ASSERT_TRUE(r);
  const std::string id = r.id();
  auto started = std::chrono::steady_clock::now();
  auto got = std::async(std::launch::async, [&] {
    WaitOptions options;
    options.timeout = std::chrono::seconds(30);  // the window frees only after 60 s
    return waiter->acquire("m", 0, options);
  });
  // Once the waiter sleeps until the window frees (60 s away), the other connection releases.
  while (clock->sleeping.load() == 0 &&
         std::chrono::steady_clock::now() - started < std::chrono::seconds(10)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(clock->sleeping.load(), 1);
  ASSERT_TRUE(other->cancel(id));
  auto result = got.get();
  ASSERT_TRUE(result) << result.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(20));
}

}  // namespace
}  // namespace ratelimit
