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

}  // namespace ratelimit::testing
