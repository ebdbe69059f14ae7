// Internal: reading go-ratelimit's YAML state file (already parsed by yaml-cpp) into a
// Snapshot. <yaml-cpp/yaml.h> stays inside src/store/yaml/.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>

#include "ratelimit/status.h"
#include "store/snapshot.h"

namespace ratelimit::detail {

// The snapshot in `root`; every problem is a corrupt_state error naming `path` and where in
// the file (line and column).
Result<Snapshot> read_snapshot(const YAML::Node& root, const std::string& path);

}  // namespace ratelimit::detail
