// Internal: one SQLite connection with its busy handler, statement helpers and the errors a
// transaction throws. <sqlite3.h> appears only in the SQLite store's files.
#pragma once

#include <sqlite3.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ratelimit/clock.h"
#include "ratelimit/status.h"

namespace ratelimit::detail {

// Per-store options: how long to wait for another process's lock, and fault injection for
// tests (no process-wide switches).
struct SqliteOptions {
  // The total time a transaction waits for another connection's lock before giving up with
  // `unavailable` / store_unavailable.
  Duration busy_budget = std::chrono::seconds(5);
  // Tests: while the counter is >= 0, each statement execution on this store's connection
  // takes one from it, and once it is 0 every execution fails with SQLITE_IOERR (ROLLBACK is
  // never failed). Shared, so a test can re-arm it (-1: off) while the store is open.
  std::shared_ptr<std::atomic<std::int64_t>> fault_after;
};

// A SQLite call failed (thrown inside a transaction, caught at its edge).
struct DbFailure {
  int rc;
  std::string message;
};
// A logical failure inside a transaction: roll back and return `error`.
struct OpFailure {
  Error error;
};

bool is_damage_code(int rc);
bool is_busy_code(int rc);
// "1.5 s"
std::string seconds_text(std::int64_t ns);

// One open database and the statements prepared on it. Not thread-safe (the owner locks).
class Connection {
 public:
  Connection(std::string path, const SqliteOptions& options);
  ~Connection() { close(); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Opens the file (creating it). Throws DbFailure.
  void open();
  void close();

  const std::string& path() const { return path_; }
  std::int64_t busy_budget_ns() const { return busy_.budget_ns; }
  sqlite3* db() const { return db_; }

  // A statement kept until close(). Throws DbFailure.
  sqlite3_stmt* prepare(std::string_view sql);
  // sqlite3_step through the fault hook.
  int step(sqlite3_stmt* stmt);
  // Runs one statement of `sql` to completion (not cached). Throws DbFailure.
  void exec(std::string_view sql);
  // Ends any open transaction. Never through the fault hook.
  void rollback();
  [[noreturn]] void fail(int rc) const;

  // The state of the busy handler for one lock event.
  struct BusyState {
    std::int64_t budget_ns = 5'000'000'000;
    std::chrono::steady_clock::time_point start;
  };

 private:
  bool fault_now() const;

  std::string path_;
  sqlite3* db_ = nullptr;
  BusyState busy_;
  std::shared_ptr<std::atomic<std::int64_t>> fault_after_;
  std::vector<sqlite3_stmt*> stmts_;
};

// One use of a prepared statement: bind, step, read; reset on scope exit.
class Query {
 public:
  Query(Connection& conn, sqlite3_stmt* stmt) : conn_(conn), stmt_(stmt) {}
  ~Query() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;

  Query& bind(int i, std::int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Query& bind(int i, std::string_view text) {
    // SQLITE_STATIC: `text` outlives this Query, and the destructor clears the binding.
    sqlite3_bind_text(stmt_, i, text.empty() ? "" : text.data(), static_cast<int>(text.size()),
                      SQLITE_STATIC);
    return *this;
  }
  Query& bind_null(int i) {
    sqlite3_bind_null(stmt_, i);
    return *this;
  }
  // True for a row, false when done. Throws DbFailure.
  bool row() {
    const int rc = conn_.step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    conn_.fail(rc);
  }
  void run() {
    while (row()) {
    }
  }
  std::int64_t i64(int col) const { return sqlite3_column_int64(stmt_, col); }
  bool is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  std::string text(int col) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
    return p == nullptr ? std::string() : std::string(p, sqlite3_column_bytes(stmt_, col));
  }

 private:
  Connection& conn_;
  sqlite3_stmt* stmt_;
};

}  // namespace ratelimit::detail
