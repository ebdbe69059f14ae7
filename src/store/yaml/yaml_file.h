// Internal: the pieces of the YAML snapshot store's writer that tests reach directly (the store
// itself is make_yaml_store in store/snapshot.h).
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "ratelimit/status.h"

namespace ratelimit::detail {

// A temporary file older than this is stale even when its writer may still run.
inline constexpr std::chrono::hours kStaleTempAge{1};

// "ratelimit.persist: cannot write <path>: <strerror(error)> (<step>[; what to do])".
Error persist_io_error(const std::string& path, std::string_view step, int error);

// Writes all of `data` to `fd`: 0, or the errno of the write that failed.
int write_all(int fd, std::string_view data);

// The file a save at `path` replaces: `path`, or the final target of the symbolic link(s) at
// `path` (a relative link is resolved against the directory holding it). It need not exist.
Result<std::string> resolve_state_target(const std::string& path);

// Removes the temporary files `<target>.tmp-<pid>-XXXXXX` left by writers that are gone (no
// process `pid`) and any `<target>.tmp-*` older than kStaleTempAge at `now`; returns how many.
// REQUIRES: the caller holds the state's lock (`<path>.lock`), so no writer that follows it is
// between creating and renaming its temporary file.
int sweep_stale_temp_files(const std::string& target, std::chrono::system_clock::time_point now);

}  // namespace ratelimit::detail
