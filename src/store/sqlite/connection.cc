#include "store/sqlite/connection.h"

#include <sched.h>

#include <algorithm>
#include <cstdio>
#include <thread>

namespace ratelimit::detail {
namespace {

// Spins (yielding) for about 20 µs, then sleeps 50 µs growing by half each time to 1 ms, until
// `budget_ns` has passed since the first call for this lock event. Returns 0 to give up.
// (SQLite's default handler sleeps 1, 2, 5, 10 ms..., which costs colliding processes
// milliseconds.)
int busy_handler(void* arg, int count) {
  auto* state = static_cast<Connection::BusyState*>(arg);
  const auto now = std::chrono::steady_clock::now();
  if (count == 0) state->start = now;
  const std::int64_t elapsed =
      std::chrono::duration_cast<std::chrono::nanoseconds>(now - state->start).count();
  if (elapsed >= state->budget_ns) return 0;
  if (elapsed < 20'000) {
    sched_yield();
    return 1;
  }
  std::int64_t sleep_ns = 50'000;
  for (int i = 0; i < count && sleep_ns < 1'000'000; i += 8) sleep_ns += sleep_ns / 2;
  sleep_ns = std::min<std::int64_t>({sleep_ns, 1'000'000, state->budget_ns - elapsed});
  std::this_thread::sleep_for(std::chrono::nanoseconds(sleep_ns));
  return 1;
}

}  // namespace

bool is_damage_code(int rc) {
  const int primary = rc & 0xff;
  return primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB;
}

bool is_busy_code(int rc) {
  const int primary = rc & 0xff;
  return primary == SQLITE_BUSY || primary == SQLITE_LOCKED;
}

std::string seconds_text(std::int64_t ns) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g s", static_cast<double>(ns) / 1e9);
  return buf;
}

Connection::Connection(std::string path, const SqliteOptions& options)
    : path_(std::move(path)), fault_after_(options.fault_after) {
  busy_.budget_ns = std::max<std::int64_t>(0, options.busy_budget.count());
}

void Connection::open() {
  const int rc =
      sqlite3_open_v2(path_.c_str(), &db_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string message = db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    throw DbFailure{rc, std::move(message)};
  }
  sqlite3_extended_result_codes(db_, 1);
  sqlite3_busy_handler(db_, &busy_handler, &busy_);
}

void Connection::close() {
  for (sqlite3_stmt* s : stmts_) sqlite3_finalize(s);
  stmts_.clear();
  if (db_ != nullptr) sqlite3_close_v2(db_);
  db_ = nullptr;
}

sqlite3_stmt* Connection::prepare(std::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  const int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                                    SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
  if (rc != SQLITE_OK) fail(rc);
  stmts_.push_back(stmt);
  return stmt;
}

int Connection::step(sqlite3_stmt* stmt) {
  if (fault_after_ != nullptr) {
    std::int64_t left = fault_after_->load(std::memory_order_relaxed);
    while (left >= 0) {
      if (left == 0) return SQLITE_IOERR;
      if (fault_after_->compare_exchange_weak(left, left - 1)) break;
    }
  }
  return sqlite3_step(stmt);
}

void Connection::exec(std::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  const int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) fail(rc);
  int step_rc;
  while ((step_rc = step(stmt)) == SQLITE_ROW) {
  }
  sqlite3_finalize(stmt);
  if (step_rc != SQLITE_DONE) fail(step_rc);
}

void Connection::rollback() {
  if (db_ != nullptr && sqlite3_get_autocommit(db_) == 0) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
}

bool Connection::fault_now() const {
  return fault_after_ != nullptr && fault_after_->load(std::memory_order_relaxed) == 0;
}

void Connection::fail(int rc) const {
  std::string message;
  if (fault_now()) {
    message = std::string(sqlite3_errstr(rc)) + " (injected by a test)";
  } else if (db_ != nullptr && sqlite3_extended_errcode(db_) == rc) {
    message = sqlite3_errmsg(db_);
  } else {
    message = sqlite3_errstr(rc);
  }
  throw DbFailure{rc, std::move(message)};
}

}  // namespace ratelimit::detail
