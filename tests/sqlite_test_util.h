// Helpers for the SQLite store's tests: limiters on a database in a temp dir, raw SQL access.
#pragma once

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <string>

#include "store/sqlite/sqlite_store.h"
#include "test_util.h"

namespace ratelimit::testing {

// Fault injection for the stores opened with its options(): after arm(n), n more statement
// executions succeed and every later one fails with SQLITE_IOERR, until off().
struct SqliteFaults {
  std::shared_ptr<std::atomic<std::int64_t>> after =
      std::make_shared<std::atomic<std::int64_t>>(-1);
  void arm(std::int64_t n) { after->store(n); }
  void off() { after->store(-1); }
  detail::SqliteOptions options() const {
    detail::SqliteOptions o;
    o.fault_after = after;
    return o;
  }
};

// A limiter on the database at `path` with exactly `quotas` (written only for models without a
// row), on `clock` (null: a ManualClock at start_time()), with store `options`.
inline std::unique_ptr<RateLimiter> open_db(const std::string& path, QuotaMap quotas,
                                            std::shared_ptr<Clock> clock = nullptr,
                                            const detail::SqliteOptions& options = {}) {
  Config config;
  config.providers = {Provider::local};  // no provider defaults: exactly `quotas`
  config.quotas = std::move(quotas);
  config.clock = clock ? std::move(clock) : std::make_shared<ManualClock>(start_time());
  config.file_path = path;
  auto opened = detail::open_sqlite_limiter(std::move(config), options);
  EXPECT_TRUE(opened.has_value()) << (opened ? "" : opened.error().message);
  return opened ? std::move(*opened) : nullptr;
}

struct SqliteFixture {
  TempDir dir;
  std::string path = dir.file("state.db");
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>(start_time());
  SqliteFaults faults;
  std::unique_ptr<RateLimiter> limiter;
};

inline std::unique_ptr<SqliteFixture> sqlite_limiter(QuotaMap quotas) {
  auto f = std::make_unique<SqliteFixture>();
  f->limiter = open_db(f->path, std::move(quotas), f->clock, f->faults.options());
  return f;
}

// The first column of the first row of `sql` as an integer (-1 when there is no row or the
// query fails). Opens its own connection.
inline std::int64_t query_int(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  std::int64_t out = -1;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK) {
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
      out = sqlite3_column_int64(stmt, 0);
    }
    sqlite3_finalize(stmt);
  }
  sqlite3_close(db);
  return out;
}

inline std::string query_text(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  std::string out;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK) {
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_text(stmt, 0) != nullptr) {
      out = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    }
    sqlite3_finalize(stmt);
  }
  sqlite3_close(db);
  return out;
}

// Runs `sql` (several statements allowed); true on success.
inline bool exec_sql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  bool ok = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                            nullptr) == SQLITE_OK;
  if (ok) {
    sqlite3_busy_timeout(db, 5000);
    ok = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK;
  }
  sqlite3_close(db);
  return ok;
}

// A database as the release with schema version 2 (or 1) wrote it: the live window in the
// seed's tables, totals in rl_totals, reservations in rl_reservations. Model "m" (quota
// {5, 100, 10}, model_no 1) at `t_ns` holds a recorded request with 40 tokens, a reserved one
// (seq 1, estimate 7, not settled) and a day count of 2; plus one request row at t - 100 s that
// had already left the totals (horizon t - 90 s). Store id 00000000000000ab.
inline bool write_old_database(const std::string& path, std::int64_t t_ns, int version) {
  const std::string t = std::to_string(t_ns);
  const bool v2 = version >= 2;
  std::string sql =
      "PRAGMA journal_mode=WAL; PRAGMA application_id = 1380732244;"
      "CREATE TABLE quotas (model TEXT PRIMARY KEY, max_rpm INTEGER NOT NULL DEFAULT 0, max_tpm "
      "INTEGER NOT NULL DEFAULT 0, max_rpd INTEGER NOT NULL DEFAULT 0" +
      std::string(v2 ? ", max_input_tpm INTEGER NOT NULL DEFAULT 0, max_output_tpm INTEGER NOT "
                       "NULL DEFAULT 0, day_start INTEGER NOT NULL DEFAULT 0"
                     : "") +
      ");"
      "CREATE TABLE requests (model TEXT NOT NULL, ts INTEGER NOT NULL);"
      "CREATE TABLE tokens (model TEXT NOT NULL, ts INTEGER NOT NULL, count INTEGER NOT NULL" +
      std::string(v2 ? ", output INTEGER NOT NULL DEFAULT 0" : "") +
      ");"
      "CREATE TABLE daily (model TEXT PRIMARY KEY, day_start INTEGER NOT NULL, day_count INTEGER "
      "NOT NULL DEFAULT 0);"
      "CREATE INDEX idx_requests_model_ts ON requests(model, ts);"
      "CREATE INDEX idx_tokens_model_ts ON tokens(model, ts);"
      "CREATE TABLE rl_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
      "CREATE TABLE rl_reservations (model_no INTEGER NOT NULL, seq INTEGER NOT NULL, ts INTEGER "
      "NOT NULL, est_tokens INTEGER NOT NULL, state INTEGER NOT NULL, request_rowid INTEGER NOT "
      "NULL, token_rowid INTEGER, day_gen INTEGER NOT NULL" +
      std::string(v2 ? ", est_output INTEGER NOT NULL DEFAULT 0" : "") +
      ", PRIMARY KEY (model_no, seq)) WITHOUT ROWID;"
      "CREATE TABLE rl_totals (model TEXT PRIMARY KEY, model_no INTEGER NOT NULL UNIQUE, "
      "next_seq INTEGER NOT NULL, requests INTEGER NOT NULL, tokens_hi INTEGER NOT NULL, "
      "tokens_lo INTEGER NOT NULL, horizon INTEGER NOT NULL, newest_ts INTEGER NOT NULL, "
      "oldest_ts INTEGER NOT NULL, pending INTEGER NOT NULL, day_gen INTEGER NOT NULL" +
      std::string(v2 ? ", output_hi INTEGER NOT NULL DEFAULT 0, output_lo INTEGER NOT NULL "
                       "DEFAULT 0"
                     : "") +
      ") WITHOUT ROWID;" +
      std::string(v2 ? "CREATE TABLE rl_aliases (name TEXT PRIMARY KEY, target TEXT NOT NULL) "
                       "WITHOUT ROWID;"
                       "CREATE TABLE rl_learned (model TEXT PRIMARY KEY, cooldown_until INTEGER "
                       "NOT NULL, req_left INTEGER NOT NULL, req_until INTEGER NOT NULL, "
                       "tok_left INTEGER NOT NULL, tok_until INTEGER NOT NULL, in_left INTEGER "
                       "NOT NULL, in_until INTEGER NOT NULL, out_left INTEGER NOT NULL, "
                       "out_until INTEGER NOT NULL) WITHOUT ROWID;"
                       "INSERT INTO rl_meta VALUES ('config_version', '0');"
                     : "") +
      "INSERT INTO rl_meta VALUES ('schema_version', '" + std::to_string(version) +
      "'), ('store_id', '00000000000000ab');"
      "INSERT INTO quotas (model, max_rpm, max_tpm, max_rpd) VALUES ('m', 5, 100, 10);"
      "INSERT INTO requests (rowid, model, ts) VALUES (1, 'm', " +
      std::to_string(t_ns - 100'000'000'000) + "), (2, 'm', " + t + "), (3, 'm', " + t +
      ");"
      "INSERT INTO tokens (rowid, model, ts, count) VALUES (1, 'm', " +
      t + ", 40), (2, 'm', " + t +
      ", 7);"
      "INSERT INTO daily VALUES ('m', " +
      t +
      ", 2);"
      "INSERT INTO rl_reservations (model_no, seq, ts, est_tokens, state, request_rowid, "
      "token_rowid, day_gen) VALUES (1, 1, " +
      t +
      ", 7, 0, 3, 2, 0);"
      "INSERT INTO rl_totals (model, model_no, next_seq, requests, tokens_hi, tokens_lo, horizon, "
      "newest_ts, oldest_ts, pending, day_gen) VALUES ('m', 1, 2, 2, 0, 47, " +
      std::to_string(t_ns - 90'000'000'000) + ", " + t + ", " + t + ", 2, 0);";
  return exec_sql(path, sql);
}

// A database as the release with schema version 3 wrote it (its DDL): the live window in
// rl_log, each model's totals in its rl_models row. Model "m" (quota {5, 100, 10}, model_no 1,
// day started at t - 100 s) holds seq 1 at t - 100 s (left the window: before head_seq, the
// horizon is t - 90 s), seq 2 recorded at t with 40 tokens of which 10 output, seq 3 reserved
// at t with an estimate of 7 (not settled); day count 3, day generation 5. Model "n" (model_no
// 2) holds one cancelled reservation at t (not in its totals) and a day count of 0. Store id
// 00000000000000ab.
inline bool write_version_3_database(const std::string& path, std::int64_t t_ns) {
  const std::string t = std::to_string(t_ns);
  const std::string t100 = std::to_string(t_ns - 100'000'000'000);
  const std::string t90 = std::to_string(t_ns - 90'000'000'000);
  const std::string sql =
      "PRAGMA journal_mode=WAL; PRAGMA application_id = 1380732244;"
      "CREATE TABLE quotas (model TEXT PRIMARY KEY, max_rpm INTEGER NOT NULL DEFAULT 0, max_tpm "
      "INTEGER NOT NULL DEFAULT 0, max_rpd INTEGER NOT NULL DEFAULT 0, max_input_tpm INTEGER NOT "
      "NULL DEFAULT 0, max_output_tpm INTEGER NOT NULL DEFAULT 0, day_start INTEGER NOT NULL "
      "DEFAULT 0);"
      "CREATE TABLE requests (model TEXT NOT NULL, ts INTEGER NOT NULL);"
      "CREATE TABLE tokens (model TEXT NOT NULL, ts INTEGER NOT NULL, count INTEGER NOT NULL, "
      "output INTEGER NOT NULL DEFAULT 0);"
      "CREATE TABLE daily (model TEXT PRIMARY KEY, day_start INTEGER NOT NULL, day_count INTEGER "
      "NOT NULL DEFAULT 0);"
      "CREATE INDEX idx_requests_model_ts ON requests(model, ts);"
      "CREATE INDEX idx_tokens_model_ts ON tokens(model, ts);"
      "CREATE TABLE rl_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
      "CREATE TABLE rl_models (model TEXT PRIMARY KEY, model_no INTEGER NOT NULL UNIQUE, "
      "next_seq INTEGER NOT NULL, requests INTEGER NOT NULL, tokens_hi INTEGER NOT NULL, "
      "tokens_lo INTEGER NOT NULL, output_hi INTEGER NOT NULL, output_lo INTEGER NOT NULL, "
      "horizon INTEGER NOT NULL, head_seq INTEGER NOT NULL, tail_seq INTEGER NOT NULL, "
      "newest_ts INTEGER NOT NULL, oldest_ts INTEGER NOT NULL, has_day INTEGER NOT NULL, "
      "day_start INTEGER NOT NULL, day_count INTEGER NOT NULL, day_gen INTEGER NOT NULL) "
      "WITHOUT ROWID;"
      "CREATE TABLE rl_log (model_no INTEGER NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT "
      "NULL, requests INTEGER NOT NULL, tokens INTEGER NOT NULL, output INTEGER NOT NULL, state "
      "INTEGER NOT NULL, day_gen INTEGER NOT NULL, PRIMARY KEY (model_no, seq)) WITHOUT ROWID;"
      "CREATE TABLE rl_aliases (name TEXT PRIMARY KEY, target TEXT NOT NULL) WITHOUT ROWID;"
      "CREATE TABLE rl_learned (model TEXT PRIMARY KEY, cooldown_until INTEGER NOT NULL, "
      "req_left INTEGER NOT NULL, req_until INTEGER NOT NULL, tok_left INTEGER NOT NULL, "
      "tok_until INTEGER NOT NULL, in_left INTEGER NOT NULL, in_until INTEGER NOT NULL, "
      "out_left INTEGER NOT NULL, out_until INTEGER NOT NULL) WITHOUT ROWID;"
      "INSERT INTO rl_meta VALUES ('schema_version', '3'), ('store_id', '00000000000000ab'), "
      "('config_version', '0');"
      "INSERT INTO quotas (model, max_rpm, max_tpm, max_rpd) VALUES ('m', 5, 100, 10);"
      "INSERT INTO rl_aliases VALUES ('m-alias', 'm');"
      "INSERT INTO rl_log VALUES (1, 1, " +
      t100 + ", 1, 0, 0, 1, 5), (1, 2, " + t + ", 1, 40, 10, 1, 5), (1, 3, " + t +
      ", 1, 7, 0, 0, 5), (2, 1, " + t +
      ", 1, 9, 0, 2, 0);"
      "INSERT INTO rl_models VALUES ('m', 1, 4, 2, 0, 47, 0, 10, " +
      t90 + ", 2, 1, " + t + ", " + t + ", 1, " + t100 + ", 3, 5), ('n', 2, 2, 0, 0, 0, 0, 0, " +
      t90 + ", 1, 1, " + t + ", " + t + ", 1, " + t + ", 0, 0);";
  return exec_sql(path, sql);
}

}  // namespace ratelimit::testing
