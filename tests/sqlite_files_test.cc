// The SQLite store's files: corrupt, truncated and foreign files, recovery, a YAML file given by
// mistake, adopting a go-ratelimit database, migration from YAML, and failures injected into
// every statement (each operation fails cleanly and leaves the database as it was).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "sqlite_test_util.h"

namespace ratelimit {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::exec_sql;
using testing::open_db;
using testing::query_int;
using testing::query_text;
using testing::start_time;

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> corrupt_copies(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.find(".corrupt-") != std::string::npos) out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

Result<std::unique_ptr<RateLimiter>> open_with(const std::string& path, bool recover,
                                               const detail::SqliteOptions& options = {}) {
  Config config;
  config.providers = {Provider::local};
  config.quotas = {{"m", {5, 0, 0}}};
  config.clock = std::make_shared<ManualClock>(start_time());
  config.recover_corrupt = recover;
  config.file_path = path;
  return detail::open_sqlite_limiter(config, options);
}

// A healthy ratelimit database of some size, closed.
std::string make_database(const testing::TempDir& dir, const std::string& name) {
  const std::string path = dir.file(name);
  auto limiter = open_db(path, {{"m", {0, 0, 0}}});
  for (int i = 0; i < 2000; ++i)
    EXPECT_TRUE(limiter->record_usage("m" + std::to_string(i % 50), 1, 1));
  EXPECT_TRUE(limiter->persist());
  limiter.reset();
  return path;
}

TEST(SqliteFileTest, GarbageIsCorruptAndRecoverMovesItAside) {
  testing::TempDir dir;
  const std::string path = dir.file("state.db");
  std::string garbage(5000, '\0');
  for (std::size_t i = 0; i < garbage.size(); ++i) garbage[i] = static_cast<char>((i * 7919) % 251);
  write_file(path, garbage);
  write_file(path + "-wal", "wal bytes");
  write_file(path + "-shm", "shm bytes");
  auto failed = open_with(path, false);
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().code, ErrorCode::corrupt_state);
  EXPECT_NE(failed.error().message.find(path), std::string::npos);
  EXPECT_NE(failed.error().message.find("recover_corrupt"), std::string::npos);
  EXPECT_EQ(failed.error().message.rfind("ratelimit.open: ", 0), 0u);
  EXPECT_EQ(read_file(path), garbage);  // untouched
  auto recovered = open_with(path, true);
  ASSERT_TRUE(recovered) << recovered.error().message;
  EXPECT_TRUE((*recovered)->try_acquire("m", 1));
  const auto copies = corrupt_copies(dir.path());
  ASSERT_EQ(copies.size(), 3u);  // the file, its -wal and its -shm: nothing deleted
  EXPECT_EQ(read_file(dir.file(copies[0])), garbage);
  EXPECT_NE(copies[0].find("state.db.corrupt-"), std::string::npos);
  EXPECT_EQ(copies[1], copies[0] + "-shm");
  EXPECT_EQ(copies[2], copies[0] + "-wal");
  // Recovering again within the same second picks a free name.
  recovered->reset();
  write_file(path, garbage);
  ASSERT_TRUE(open_with(path, true));
  EXPECT_EQ(corrupt_copies(dir.path()).size(), 4u);
}

TEST(SqliteFileTest, BadHeadersAndUnreadablePaths) {
  testing::TempDir dir;
  std::string header(100, '\0');
  header.replace(0, 16, std::string("SQLite format 3\0", 16));
  header[16] = 0;
  header[17] = 3;  // page size 3
  write_file(dir.file("page.db"), header + std::string(4000, '\0'));
  auto bad = open_with(dir.file("page.db"), false);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("page size 3"), std::string::npos);
  write_file(dir.file("short.db"), header.substr(0, 60));
  EXPECT_NE(open_with(dir.file("short.db"), false).error().message.find("truncated"),
            std::string::npos);
  auto long_name = open_with(dir.file(std::string(300, 'x')), false);
  ASSERT_FALSE(long_name);
  EXPECT_EQ(long_name.error().code, ErrorCode::io_error);
}

TEST(SqliteFileTest, TruncatedDatabasesAreCorrupt) {
  testing::TempDir dir;
  const std::string path = make_database(dir, "full.db");
  const std::string bytes = read_file(path);
  ASSERT_GT(bytes.size(), 8192u);
  for (std::size_t keep : {std::size_t{50}, std::size_t{4096}, bytes.size() / 2}) {
    const std::string cut = dir.file("cut-" + std::to_string(keep) + ".db");
    write_file(cut, bytes.substr(0, keep));
    auto failed = open_with(cut, false);
    ASSERT_FALSE(failed) << keep;
    EXPECT_EQ(failed.error().code, ErrorCode::corrupt_state) << keep;
    EXPECT_NE(failed.error().message.find(cut), std::string::npos) << failed.error().message;
  }
  const std::string cut = dir.file("cut-4096.db");
  ASSERT_TRUE(open_with(cut, true));
  EXPECT_EQ(corrupt_copies(dir.path()).size(), 1u);
}

TEST(SqliteFileTest, DamagedPagesAreCorrupt) {
  testing::TempDir dir;
  const std::string path = make_database(dir, "full.db");
  std::string bytes = read_file(path);
  // Overwrite the schema page's b-tree header (page 1, after the 100-byte file header).
  for (std::size_t i = 100; i < 4096; ++i) bytes[i] = '\xff';
  write_file(path, bytes);
  auto failed = open_with(path, false);
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().code, ErrorCode::corrupt_state) << failed.error().message;
  EXPECT_TRUE(open_with(path, true));
  EXPECT_EQ(corrupt_copies(dir.path()).size(), 1u);
}

TEST(SqliteFileTest, AnotherApplicationsDatabaseIsNeverMoved) {
  testing::TempDir dir;
  const std::string path = dir.file("app.db");
  ASSERT_TRUE(exec_sql(path,
                       "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);"
                       "INSERT INTO users (name) VALUES ('ada');"));
  for (bool recover : {false, true}) {
    auto failed = open_with(path, recover);
    ASSERT_FALSE(failed);
    EXPECT_EQ(failed.error().code, ErrorCode::corrupt_state);
    EXPECT_NE(failed.error().message.find("not a ratelimit database"), std::string::npos)
        << failed.error().message;
  }
  EXPECT_TRUE(corrupt_copies(dir.path()).empty());
  EXPECT_EQ(query_text(path, "SELECT name FROM users"), "ada");
  EXPECT_EQ(query_int(path, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'quotas'"), 0);
  // Same table names as the seed's, other columns: also foreign.
  const std::string same_names = dir.file("same.db");
  ASSERT_TRUE(exec_sql(same_names, "CREATE TABLE quotas (x TEXT);"));
  EXPECT_EQ(open_with(same_names, true).error().code, ErrorCode::corrupt_state);
  // Another application id.
  const std::string app_id = dir.file("appid.db");
  ASSERT_TRUE(exec_sql(app_id, "PRAGMA application_id = 42; CREATE TABLE quotas (model TEXT);"));
  EXPECT_NE(open_with(app_id, true).error().message.find("application id 42"), std::string::npos);
  // A newer schema of ours.
  const std::string newer = dir.file("newer.db");
  ASSERT_TRUE(open_with(newer, false));
  ASSERT_TRUE(exec_sql(newer, "UPDATE rl_meta SET value = '9' WHERE key = 'schema_version'"));
  auto refused = open_with(newer, true);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("schema version \"9\""), std::string::npos);
  ASSERT_TRUE(exec_sql(newer,
                       "UPDATE rl_meta SET value = '4' WHERE key = 'schema_version';"
                       "UPDATE rl_meta SET value = 'xyz' WHERE key = 'store_id'"));
  EXPECT_EQ(open_with(newer, false).error().code, ErrorCode::corrupt_state);
  // Version 2 without its live tables: damaged, not migrated.
  ASSERT_TRUE(exec_sql(newer,
                       "UPDATE rl_meta SET value = '2' WHERE key = 'schema_version';"
                       "UPDATE rl_meta SET value = '00000000000000ab' WHERE key = 'store_id'"));
  auto half = open_with(newer, false);
  ASSERT_FALSE(half);
  EXPECT_EQ(half.error().code, ErrorCode::corrupt_state);
  EXPECT_NE(half.error().message.find("rl_totals"), std::string::npos) << half.error().message;
  EXPECT_TRUE(corrupt_copies(dir.path()).empty());
}

TEST(SqliteFileTest, AYamlStateFileGivenByMistakePointsToMigrate) {
  testing::TempDir dir;
  const std::string path = dir.file("ratelimits.yaml");
  const std::string yaml = "quotas:\n  m: {max_rpm: 1, max_tpm: 2, max_rpd: 3}\nstate: {}\n";
  write_file(path, yaml);
  for (bool recover : {false, true}) {
    auto failed = open_with(path, recover);
    ASSERT_FALSE(failed);
    EXPECT_EQ(failed.error().code, ErrorCode::corrupt_state);
    EXPECT_NE(failed.error().message.find("YAML state file"), std::string::npos);
    EXPECT_NE(failed.error().message.find("migrate"), std::string::npos);
  }
  EXPECT_EQ(read_file(path), yaml);
  EXPECT_TRUE(corrupt_copies(dir.path()).empty());
}

TEST(SqliteFileTest, AGoRatelimitDatabaseIsAdopted) {
  testing::TempDir dir;
  const std::string path = dir.file("go.db");
  const std::int64_t t = start_time().time_since_epoch().count();
  const std::string ts = std::to_string(t - 10'000'000'000);
  ASSERT_TRUE(exec_sql(
      path,
      "CREATE TABLE quotas (model TEXT PRIMARY KEY, max_rpm INTEGER NOT NULL DEFAULT 0, max_tpm "
      "INTEGER NOT NULL DEFAULT 0, max_rpd INTEGER NOT NULL DEFAULT 0);"
      "CREATE TABLE requests (model TEXT NOT NULL, ts INTEGER NOT NULL);"
      "CREATE TABLE tokens (model TEXT NOT NULL, ts INTEGER NOT NULL, count INTEGER NOT NULL);"
      "CREATE TABLE daily (model TEXT PRIMARY KEY, day_start INTEGER NOT NULL, day_count INTEGER "
      "NOT NULL DEFAULT 0);"
      "CREATE INDEX idx_requests_model_ts ON requests(model, ts);"
      "CREATE INDEX idx_tokens_model_ts ON tokens(model, ts);"
      "INSERT INTO quotas VALUES ('m', 2, 100, 10);"
      "INSERT INTO requests VALUES ('m', " +
          ts + "), ('m', " + ts +
          ");"
          "INSERT INTO tokens VALUES ('m', " +
          ts + ", 30), ('m', " + ts +
          ", 40);"
          "INSERT INTO daily VALUES ('m', " +
          ts + ", 7);"));
  auto limiter = open_db(path, {{"m", {9, 9, 9}}});
  ASSERT_TRUE(limiter);
  const ModelStats s = *limiter->stats("m");
  EXPECT_EQ(s.rpm, 2);
  EXPECT_EQ(s.tpm, 70);
  EXPECT_EQ(s.rpd, 7);
  EXPECT_EQ(s.max_rpm, 2);  // the database's quota wins over the config's
  EXPECT_EQ(limiter->decide("m", 0).retry_after, 50s);
  // Imported once, when adopted: a reopen keeps the live usage (and never imports again).
  ASSERT_TRUE(limiter->set_quota("m", {3, 100, 10}));
  ASSERT_TRUE(limiter->record_usage("m", 5, 0));
  limiter.reset();
  limiter = open_db(path, {});
  EXPECT_EQ(limiter->stats("m")->rpm, 3);
  EXPECT_EQ(limiter->stats("m")->tpm, 75);
  EXPECT_EQ(limiter->stats("m")->rpd, 8);
  EXPECT_EQ(query_int(path, "SELECT COUNT(*) FROM requests"), 2);  // until persist()
  limiter.reset();
  // A negative token count in a go-ratelimit database: corrupt_state, nothing changed.
  const std::string bad = dir.file("bad.db");
  ASSERT_TRUE(exec_sql(bad,
                       "CREATE TABLE tokens (model TEXT NOT NULL, ts INTEGER NOT NULL, count "
                       "INTEGER NOT NULL); INSERT INTO tokens VALUES ('m', 1, -5);"));
  auto refused = open_with(bad, true);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::corrupt_state);
  EXPECT_NE(refused.error().message.find("tokens.count is negative"), std::string::npos);
  EXPECT_EQ(query_int(bad, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'rl_meta'"), 0);
}

// persist() writes go-ratelimit's four tables from the live window; a reader that knows only
// those tables and columns (go-ratelimit's Load) sees the quotas, the requests and tokens in the
// window (not the cancelled one) and the day. Between persists they keep the last snapshot.
TEST(SqliteFileTest, PersistWritesTheSeedsFourTablesForGoRatelimitReaders) {
  testing::TempDir dir;
  const std::string path = dir.file("persist.db");
  auto clock = std::make_shared<ManualClock>(start_time());
  auto limiter = open_db(path, {{"m", {10, 1000, 100}}, {"idle", {1, 2, 3}}}, clock);
  const std::int64_t t = start_time().time_since_epoch().count();
  ASSERT_TRUE(limiter->record_usage("m", 30, 10));
  clock->advance(1s);
  Reservation kept = limiter->try_acquire("m", 50);
  ASSERT_TRUE(kept.commit(20, 5));
  Reservation dropped = limiter->try_acquire("m", 50);
  ASSERT_TRUE(dropped.cancel());
  Reservation open = limiter->try_acquire("m", 0);  // a request without tokens
  ASSERT_TRUE(open);
  EXPECT_EQ(query_int(path, "SELECT COUNT(*) FROM requests"), 0);  // nothing before persist
  ASSERT_TRUE(limiter->persist());
  // go-ratelimit's reader: its own statements, its own columns.
  EXPECT_EQ(query_text(path,
                       "SELECT group_concat(model || ':' || max_rpm || '/' || max_tpm || '/' || "
                       "max_rpd, ' ') FROM (SELECT * FROM quotas ORDER BY model)"),
            "idle:1/2/3 m:10/1000/100");
  EXPECT_EQ(query_text(path, "SELECT group_concat(ts - " + std::to_string(t) +
                                 ", ',') FROM (SELECT model, ts FROM requests WHERE model = 'm' "
                                 "ORDER BY ts)"),
            "0,1000000000,1000000000");
  EXPECT_EQ(query_text(path, "SELECT group_concat((ts - " + std::to_string(t) +
                                 ") || ':' || count, ',') FROM (SELECT model, ts, count FROM "
                                 "tokens WHERE model = 'm' ORDER BY ts)"),
            "0:40,1000000000:25");
  EXPECT_EQ(query_int(path, "SELECT day_start FROM daily WHERE model = 'm'"), t);
  EXPECT_EQ(query_int(path, "SELECT day_count FROM daily WHERE model = 'm'"), 3);
  EXPECT_EQ(query_int(path, "SELECT COUNT(*) FROM daily"), 1);
  // A go-ratelimit database made of that snapshot is adopted with the same usage.
  const std::string copy = dir.file("copy.db");
  ASSERT_TRUE(exec_sql(path, "VACUUM INTO '" + copy + "'"));
  ASSERT_TRUE(exec_sql(copy,
                       "DROP TABLE rl_meta; DROP TABLE rl_models; DROP TABLE rl_log; DROP TABLE "
                       "rl_aliases; DROP TABLE rl_learned; PRAGMA application_id = 0"));
  auto adopted = open_db(copy, {}, clock);
  ASSERT_NE(adopted, nullptr);
  EXPECT_EQ(*adopted->stats("m"), *limiter->stats("m"));
  // The window moves on: the next persist() leaves out what left it.
  clock->advance(59500ms);
  ASSERT_TRUE(limiter->persist());
  EXPECT_EQ(query_int(path, "SELECT COUNT(*) FROM requests"), 2);
  EXPECT_EQ(query_int(path, "SELECT COUNT(*) FROM tokens"), 1);
}

TEST(SqliteFileTest, NegativeValuesInTheDatabaseAreCorruptState) {
  testing::TempDir dir;
  const std::string path = dir.file("neg.db");
  auto limiter = open_db(path, {{"m", {5, 0, 0}}});
  ASSERT_TRUE(limiter->record_usage("m", 1, 0));
  ASSERT_TRUE(exec_sql(path, "UPDATE rl_log SET day_count = -4 WHERE seq = 9223372036854775807"));
  auto s = limiter->stats("m");
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::corrupt_state);
  EXPECT_NE(s.error().message.find("rl_log.day_count (totals row)"), std::string::npos);
  EXPECT_EQ(limiter->decide("m", 0).code, DecisionCode::store_unavailable);
  ASSERT_TRUE(exec_sql(path,
                       "UPDATE rl_log SET day_count = 1 WHERE seq = 9223372036854775807; "
                       "UPDATE quotas SET max_tpm = -1"));
  EXPECT_EQ(limiter->record_usage("m", 1, 0).error().code, ErrorCode::corrupt_state);
  EXPECT_EQ(limiter->load().error().code, ErrorCode::corrupt_state);
  ASSERT_TRUE(exec_sql(path,
                       "UPDATE quotas SET max_tpm = 0; UPDATE rl_log SET requests = -1 "
                       "WHERE seq = 9223372036854775807"));
  EXPECT_EQ(limiter->stats("m").error().code, ErrorCode::corrupt_state);
  ASSERT_TRUE(exec_sql(path,
                       "UPDATE rl_log SET requests = 1, tokens_hi = -1 WHERE seq = "
                       "9223372036854775807"));
  EXPECT_EQ(limiter->stats("m").error().code, ErrorCode::corrupt_state);
}

// --- migration ---

constexpr const char* kGoYaml =
    "quotas:\n"
    "  gemini-2.5-pro:\n    max_rpm: 150\n    max_tpm: 1000000\n    max_rpd: 1000\n"
    "  \"model with spaces\": {max_rpm: 2, max_tpm: 0, max_rpd: 0}\n"
    "state:\n"
    "  gemini-2.5-pro:\n"
    "    requests:\n"
    "      - 2026-02-19T09:59:30.123456789Z\n"
    "      - 2026-02-19T09:59:40Z\n"
    "    tokens:\n"
    "      - time: 2026-02-19T09:59:30.123456789Z\n        count: 150\n"
    "      - time: 2026-02-19T09:59:40Z\n        count: 50\n"
    "    day_start: 2026-02-19T09:00:00Z\n"
    "    day_count: 5\n"
    "  idle-model:\n"
    "    requests: []\n    tokens: []\n"
    "    day_start: 0001-01-01T00:00:00Z\n    day_count: 0\n";

TEST(SqliteMigrateTest, AGoRatelimitYamlFileMigratesWithNanosecondPrecision) {
  testing::TempDir dir;
  const std::string yaml = dir.file("ratelimits.yaml");
  const std::string db = dir.file("ratelimits.db");
  write_file(yaml, kGoYaml);
  ASSERT_TRUE(migrate_yaml_to_sqlite(yaml, db));
  EXPECT_EQ(query_int(db, "SELECT min(ts) FROM requests"),
            start_time().time_since_epoch().count() - 29'876'543'211);
  EXPECT_EQ(query_int(db, "SELECT COUNT(*) FROM daily"), 1);
  auto limiter = open_db(db, {});
  EXPECT_EQ(limiter->quota("model with spaces"), (ModelQuota{2, 0, 0}));
  const ModelStats s = *limiter->stats("gemini-2.5-pro");
  EXPECT_EQ(s.rpm, 2);
  EXPECT_EQ(s.tpm, 200);
  EXPECT_EQ(s.rpd, 6 - 1);
  EXPECT_EQ(s.day_start, start_time() - 1h);
  // 30.123456789 s later the first entry has left.
  auto clock = std::make_shared<ManualClock>(start_time() + 30s + 123456789ns);
  auto later = open_db(db, {}, clock);
  EXPECT_EQ(later->stats("gemini-2.5-pro")->tpm, 50);
}

TEST(SqliteMigrateTest, ReRunOverwritesAndFailuresLeaveTheDatabase) {
  testing::TempDir dir;
  const std::string yaml = dir.file("a.yaml");
  const std::string db = dir.file("a.db");
  write_file(yaml, kGoYaml);
  ASSERT_TRUE(migrate_yaml_to_sqlite(yaml, db));
  {
    auto limiter = open_db(db, {});
    ASSERT_TRUE(limiter->record_usage("gemini-2.5-pro", 1000, 0));
    ASSERT_TRUE(limiter->record_usage("other", 1, 0));
  }
  ASSERT_TRUE(migrate_yaml_to_sqlite(yaml, db));  // overwrites: the file's state again
  {
    auto limiter = open_db(db, {});
    EXPECT_EQ(limiter->stats("gemini-2.5-pro")->tpm, 200);
    EXPECT_EQ(limiter->stats("other")->rpm, 0);
  }
  const std::int64_t rows = query_int(db, "SELECT COUNT(*) FROM requests");
  // Missing, corrupt and invalid YAML files: errors, the database as it was.
  auto missing = migrate_yaml_to_sqlite(dir.file("none.yaml"), db);
  EXPECT_EQ(missing.error().code, ErrorCode::not_found);
  EXPECT_EQ(missing.error().message.rfind("ratelimit.migrate: ", 0), 0u);
  write_file(dir.file("bad.yaml"), "quotas: [unclosed\n");
  auto bad = migrate_yaml_to_sqlite(dir.file("bad.yaml"), db);
  EXPECT_EQ(bad.error().code, ErrorCode::corrupt_state);
  EXPECT_EQ(bad.error().message.rfind("ratelimit.migrate: ", 0), 0u) << bad.error().message;
  write_file(dir.file("neg.yaml"), "quotas:\n  m: {max_rpm: -1, max_tpm: 0, max_rpd: 0}\n");
  EXPECT_FALSE(migrate_yaml_to_sqlite(dir.file("neg.yaml"), db));
  EXPECT_EQ(migrate_yaml_to_sqlite(yaml, dir.file("no/such/dir.db")).error().code,
            ErrorCode::io_error);
  // A failure inside the transaction (injected) rolls everything back.
  testing::SqliteFaults faults;
  for (std::int64_t n = 0; n < 40; ++n) {
    faults.arm(n);
    auto s = detail::migrate_yaml(yaml, db, nullptr, faults.options());
    faults.off();
    if (s) break;
    EXPECT_EQ(query_int(db, "SELECT COUNT(*) FROM requests"), rows) << n;
  }
  EXPECT_EQ(query_text(db, "PRAGMA integrity_check"), "ok");
}

// --- injected failures: every operation fails cleanly and atomically ---

struct Snap {
  ModelStats a;
  ModelStats b;
  QuotaMap quotas;
  friend bool operator==(const Snap&, const Snap&) = default;
};

Snap snap(const std::string& path, std::shared_ptr<ManualClock> clock) {
  auto limiter = open_db(path, {}, clock);
  return Snap{*limiter->stats("a"), *limiter->stats("b"), *limiter->quotas()};
}

TEST(SqliteFaultTest, EveryOperationFailsCleanlyAtEveryStatement) {
  testing::TempDir dir;
  const std::string path = dir.file("f.db");
  auto clock = std::make_shared<ManualClock>(start_time());
  testing::SqliteFaults faults;
  auto limiter =
      open_db(path, {{"a", {100, 100000, 1000}}, {"b", {1, 0, 0}}}, clock, faults.options());
  ASSERT_TRUE(limiter->record_usage("a", 5, 5));
  ASSERT_TRUE(limiter->record_usage("b", 5, 5));
  std::vector<std::string> ids;
  for (int i = 0; i < 10; ++i) ids.push_back(limiter->try_acquire("a", 7).id());
  std::size_t next_id = 0;
  struct Op {
    const char* name;
    std::function<bool()> run;  // true: succeeded
  };
  const std::vector<Op> ops = {
      {"try_acquire",
       [&] {
         Reservation r = limiter->try_acquire("a", 3);
         if (!r) {
           EXPECT_EQ(r.decision().code, DecisionCode::store_unavailable);
         }
         return r.granted();
       }},
      {"try_acquire denied",
       [&] {
         Decision d = limiter->try_acquire("b", 0).decision();
         return d.code == DecisionCode::rpm_exceeded;
       }},
      {"decide", [&] { return limiter->decide("b", 0).code != DecisionCode::store_unavailable; }},
      {"record_usage", [&] { return limiter->record_usage("a", 1, 1).has_value(); }},
      {"commit", [&] { return limiter->commit(ids[next_id], 1, 1).has_value(); }},
      {"cancel", [&] { return limiter->cancel(ids[next_id]).has_value(); }},
      {"stats", [&] { return limiter->stats("a").has_value(); }},
      {"all_stats", [&] { return limiter->all_stats().has_value(); }},
      {"models", [&] { return limiter->models().has_value(); }},
      {"set_quota",
       [&] {
         return limiter->set_quota("c", {1, 2, 3}).has_value();
       }},
      {"add_provider", [&] { return limiter->add_provider(Provider::anthropic).has_value(); }},
      {"remove_quota", [&] { return limiter->remove_quota("c").has_value(); }},
      {"reset", [&] { return limiter->reset("b").has_value(); }},
      {"reset all", [&] { return limiter->reset("").has_value(); }},
      {"load", [&] { return limiter->load().has_value(); }},
      {"wait_for_capacity", [&] { return limiter->wait_for_capacity("a", 1).has_value(); }},
      {"acquire", [&] { return limiter->acquire("a", 1).has_value(); }},
  };
  for (const Op& op : ops) {
    bool succeeded = false;
    for (std::int64_t n = 0; n < 60 && !succeeded; ++n) {
      const Snap before = snap(path, clock);
      faults.arm(n);
      succeeded = op.run();
      faults.off();
      if (!succeeded) {
        EXPECT_EQ(snap(path, clock), before) << op.name << " failing at " << n;
      }
    }
    EXPECT_TRUE(succeeded) << op.name;
    if (std::string(op.name) == "commit" || std::string(op.name) == "cancel") ++next_id;
  }
  // A quota read is a read like the others: a failure is an error naming the operation (no
  // stale copy), and another process's change is seen at once.
  ASSERT_TRUE(open_db(path, {})->set_quota("d", {1, 1, 1}));
  faults.arm(0);
  auto failed = limiter->quota("a");
  faults.off();
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().message.rfind("ratelimit.quota: sqlite " + path, 0), 0u)
      << failed.error().message;
  EXPECT_EQ(*limiter->quota("d"), (ModelQuota{1, 1, 1}));
  // Errors carry the operation and the path.
  faults.arm(0);
  auto s = limiter->record_usage("a", 1, 1);
  faults.off();
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::io_error);
  EXPECT_EQ(s.error().message.rfind("ratelimit.record_usage: sqlite " + path, 0), 0u)
      << s.error().message;
  // Opening fails cleanly too.
  for (std::int64_t n = 0; n < 40; ++n) {
    faults.arm(n);
    auto opened = open_with(dir.file("o.db"), false, faults.options());
    faults.off();
    if (opened) break;
    EXPECT_EQ(opened.error().code, ErrorCode::io_error) << n;
  }
  EXPECT_EQ(query_text(path, "PRAGMA integrity_check"), "ok");
}

}  // namespace
}  // namespace ratelimit

namespace ratelimit {
namespace {

// Databases written by the releases with schema versions 1 (before input/output limits) and 2
// (the live window in the seed's tables) are migrated when opened: usage, quotas, the day, the
// store id and the reservation numbers are kept; every token of version 1 counts as input. The
// old live tables are dropped, so a process of the old release still running fails loudly.
TEST(SqliteOpenTest, VersionOneAndTwoDatabasesAreMigratedKeepingTheirUsage) {
  for (int version : {1, 2}) {
    SCOPED_TRACE(version);
    testing::TempDir dir;
    const std::string path = dir.file("old.db");
    const std::int64_t t = testing::start_time().time_since_epoch().count();
    ASSERT_TRUE(testing::write_old_database(path, t, version));
    auto clock = std::make_shared<ManualClock>(testing::start_time() + 1s);
    auto again = testing::open_db(path, {}, clock);
    ASSERT_NE(again, nullptr);
    EXPECT_EQ(testing::query_text(path, "SELECT value FROM rl_meta WHERE key = 'schema_version'"),
              "4");
    const ModelStats s = *again->stats("m");
    EXPECT_EQ(s.rpm, 2);  // the row below the old horizon had left
    EXPECT_EQ(s.tpm, 47);
    EXPECT_EQ(s.input_tpm, 47);
    EXPECT_EQ(s.output_tpm, 0);
    EXPECT_EQ(s.rpd, 2);
    EXPECT_EQ(again->quota("m")->value(), (ModelQuota{5, 100, 10}));
    // The reservation issued before the upgrade settles as one that left the window.
    ASSERT_TRUE(again->commit("00000000000000ab-1-1", 3, 2));
    EXPECT_EQ(again->stats("m")->tpm, 47);
    // New ids never reuse an old one; the store id is kept.
    Reservation r = again->try_acquire("m", 1);
    ASSERT_TRUE(r);
    EXPECT_EQ(r.id(), "00000000000000ab-1-6");  // seqs 2 to 5 went to the migrated rows
    ASSERT_TRUE(r.commit(1, 2));
    EXPECT_EQ(again->stats("m")->output_tpm, 2);
    // The old live tables are gone: the old release's statements fail.
    EXPECT_FALSE(testing::exec_sql(path, "UPDATE rl_totals SET requests = 0"));
    EXPECT_FALSE(testing::exec_sql(path, "DELETE FROM rl_reservations"));
    ASSERT_TRUE(again->set_alias("m-alias", "m"));
    EXPECT_EQ(again->decide("m-alias", 0).resolved_model, "m");
    // A second open does not migrate again.
    again.reset();
    again = testing::open_db(path, {}, clock);
    EXPECT_EQ(again->stats("m")->rpm, 3);
    clock->advance(60s);
    EXPECT_EQ(again->stats("m")->rpm, 0);
    EXPECT_EQ(again->stats("m")->rpd, 3);
  }
}

// A database of schema version 3 (the totals in rl_models) is migrated when opened: each
// model's totals row moves into rl_log at (model_no, INT64_MAX), usage, the day, the day
// generation, the reservation numbers and the store id are kept exactly. The old rl_models is
// replaced by name -> number, so a process of the old release still running fails loudly.
TEST(SqliteOpenTest, VersionThreeDatabasesAreMigratedKeepingTheirUsageExactly) {
  testing::TempDir dir;
  const std::string path = dir.file("v3.db");
  const std::int64_t t = testing::start_time().time_since_epoch().count();
  ASSERT_TRUE(testing::write_version_3_database(path, t));
  auto clock = std::make_shared<ManualClock>(testing::start_time() + 1s);
  auto again = testing::open_db(path, {}, clock);
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(testing::query_text(path, "SELECT value FROM rl_meta WHERE key = 'schema_version'"),
            "4");
  // Every entry is kept as it was; one totals row per model is added.
  EXPECT_EQ(testing::query_int(path,
                               "SELECT COUNT(*) FROM rl_log WHERE seq < "
                               "9223372036854775807"),
            4);
  EXPECT_EQ(testing::query_int(path,
                               "SELECT COUNT(*) FROM rl_log WHERE seq = "
                               "9223372036854775807 AND state = 3"),
            2);
  EXPECT_EQ(testing::query_text(path,
                                "SELECT group_concat(model || '=' || model_no) FROM "
                                "(SELECT * FROM rl_models ORDER BY model)"),
            "m=1,n=2");
  EXPECT_EQ(testing::query_text(path,
                                "SELECT group_concat(x) FROM (SELECT next_seq || '/' || "
                                "head_seq || '/' || tail_seq || '/' || day_gen AS x FROM "
                                "rl_log WHERE seq = 9223372036854775807 ORDER BY model_no)"),
            "4/2/1/5,2/1/1/0");
  const ModelStats s = *again->stats("m");
  EXPECT_EQ(s.rpm, 2);  // seq 1 had left the window
  EXPECT_EQ(s.tpm, 47);
  EXPECT_EQ(s.input_tpm, 37);
  EXPECT_EQ(s.output_tpm, 10);
  EXPECT_EQ(s.rpd, 3);
  EXPECT_EQ(s.day_start, testing::start_time() - 100s);
  EXPECT_EQ(again->stats("n")->rpm, 0);  // its only entry was cancelled
  EXPECT_EQ(again->stats("n")->tpm, 0);
  EXPECT_EQ(again->quota("m")->value(), (ModelQuota{5, 100, 10}));
  EXPECT_EQ(again->decide("m-alias", 0).resolved_model, "m");
  // The reservation issued before the upgrade settles as it would have (same day generation).
  ASSERT_TRUE(again->commit("00000000000000ab-1-3", 3, 2));
  EXPECT_EQ(again->stats("m")->tpm, 45);
  EXPECT_EQ(again->stats("m")->output_tpm, 12);
  EXPECT_FALSE(again->commit("00000000000000ab-1-3", 3, 2));  // settled once
  // New ids continue the old numbering; the store id is kept.
  Reservation r = again->try_acquire("m", 1);
  ASSERT_TRUE(r);
  EXPECT_EQ(r.id(), "00000000000000ab-1-4");
  ASSERT_TRUE(r.cancel());
  EXPECT_EQ(again->stats("m")->rpd, 3);
  // The old rl_models is gone: the old release's statements fail.
  EXPECT_FALSE(testing::exec_sql(path, "UPDATE rl_models SET requests = 0"));
  EXPECT_FALSE(testing::exec_sql(path, "SELECT * FROM rl_models_v3"));
  // A second open does not migrate again.
  again.reset();
  again = testing::open_db(path, {}, clock);
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->stats("m")->rpm, 2);
  EXPECT_EQ(again->stats("m")->tpm, 45);
  clock->advance(60s);
  EXPECT_EQ(again->stats("m")->rpm, 0);
  EXPECT_EQ(again->stats("m")->rpd, 3);
  EXPECT_EQ(testing::query_text(path, "PRAGMA integrity_check"), "ok");
}

// A new database gets 1 KiB pages (a quarter of the WAL bytes per call); a file that already has
// another page size (written by an older release, or created by another tool) keeps it and
// works as before.
TEST(SqliteOpenTest, ANewDatabaseHasOneKibPagesAndAnExistingFileKeepsItsPageSize) {
  testing::TempDir dir;
  const std::string fresh = dir.file("fresh.db");
  {
    auto limiter = testing::open_db(fresh, {{"m", {5, 0, 0}}});
    ASSERT_NE(limiter, nullptr);
    ASSERT_TRUE(limiter->try_acquire("m", 1).commit(1, 0));
  }
  EXPECT_EQ(testing::query_int(fresh, "PRAGMA page_size"), 1024);
  const std::string old = dir.file("old.db");
  ASSERT_TRUE(testing::exec_sql(old, "PRAGMA page_size=4096; CREATE TABLE t (a); DROP TABLE t"));
  ASSERT_EQ(testing::query_int(old, "PRAGMA page_size"), 4096);
  auto clock = std::make_shared<ManualClock>(testing::start_time());
  {
    auto limiter = testing::open_db(old, {{"m", {5, 0, 0}}}, clock);
    ASSERT_NE(limiter, nullptr);
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(limiter->try_acquire("m", 1).commit(1, 0));
    EXPECT_FALSE(limiter->try_acquire("m", 1));
  }
  EXPECT_EQ(testing::query_int(old, "PRAGMA page_size"), 4096);
  auto again = testing::open_db(old, {}, clock);
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->stats("m")->rpm, 5);
}

}  // namespace
}  // namespace ratelimit
