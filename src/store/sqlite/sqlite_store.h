// Internal: the SQLite store (Backend::sqlite), where many processes on one machine share one
// quota exactly: every check-and-record is one BEGIN IMMEDIATE transaction on the shared
// database. <sqlite3.h> stays inside sqlite_store.cc.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "limiter/engine.h"

namespace ratelimit::detail {

// Opens (creating when missing) the database at config.file_path, which must be set, and
// returns its engine. config.clock must be set. Config quotas and profiles are written only
// for models that have no row in the database's quotas table yet.
// Errors: io_error (cannot open or create the file, missing parent directory), unavailable
// (locked for longer than the busy budget), corrupt_state (damaged, truncated or foreign file,
// or a YAML state file; with config.recover_corrupt a damaged file is moved aside instead).
Result<std::unique_ptr<Engine>> make_sqlite_engine(Config config);

// Test hooks (process-wide; tests only).
// The total time a transaction waits for another connection's lock before giving up with
// `unavailable`/store_unavailable (default 5 s). Read when an engine opens.
void set_sqlite_busy_budget_for_testing(Duration budget);
// After `steps` more statement executions (by any connection of this process), every
// statement execution fails with SQLITE_IOERR until the hook is reset with -1 (the default).
// ROLLBACK is never failed. Lets tests reach every error path.
void set_sqlite_fault_after_for_testing(std::int64_t steps);

}  // namespace ratelimit::detail
