// Internal: opening the SQLite store's database: checks on the raw file, WAL and pragmas,
// the schema, and moving a damaged file aside (Config::recover_corrupt).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "ratelimit/quota.h"
#include "ratelimit/status.h"
#include "store/sqlite/connection.h"
#include "store/sqlite/schema.h"

namespace ratelimit::detail {

struct Opened {
  std::unique_ptr<Connection> conn;
  std::uint64_t store_id = 0;
};

// Opens (creating when missing) the database at `path` in WAL mode, creates or checks the
// schema and writes `seeds` where the database has nothing yet. Errors name `op`: io_error,
// unavailable, corrupt_state (with recover_corrupt, a damaged file is moved aside first).
Result<Opened> open_database(const std::string& path, const Seeds& seeds, bool recover_corrupt,
                             const SqliteOptions& options, const char* op);

}  // namespace ratelimit::detail
