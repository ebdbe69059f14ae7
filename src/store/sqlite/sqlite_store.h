// Internal: the SQLite store (Backend::sqlite), where many processes on one machine share one
// quota exactly: every check-and-record is one BEGIN IMMEDIATE transaction on the shared
// database (WAL, so readers never wait for the writer). <sqlite3.h> stays inside
// src/store/sqlite/.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "ratelimit/config.h"
#include "ratelimit/limiter.h"
#include "ratelimit/status.h"
#include "store/sqlite/connection.h"
#include "store/store.h"

namespace ratelimit::detail {

// Opens (creating when missing) the database at config.file_path, which must be set.
// config.clock must be set. Config quotas and profiles are written only for models that have
// no row in the database's quotas table yet.
// Errors: io_error (cannot open or create the file, missing parent directory), unavailable
// (locked for longer than the busy budget), corrupt_state (damaged, truncated or foreign file,
// or a YAML state file; with config.recover_corrupt a damaged file is moved aside instead).
Result<std::unique_ptr<Store>> make_sqlite_store(const Config& config,
                                                 const SqliteOptions& options);

// A RateLimiter on a SQLite store with `options` (tests: busy budget, fault injection).
Result<std::unique_ptr<RateLimiter>> open_sqlite_limiter(Config config,
                                                         const SqliteOptions& options);

// migrate_yaml_to_sqlite with store `options` (tests: fault injection).
Status migrate_yaml(const std::string& yaml_path, const std::string& sqlite_path,
                    std::function<void(std::string_view)> on_warning, const SqliteOptions& options);

}  // namespace ratelimit::detail
