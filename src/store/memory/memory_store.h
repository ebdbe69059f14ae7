// Internal: the in-process store, for Backend::memory and (with YAML snapshots) Backend::yaml.
#pragma once

#include <memory>

#include "ratelimit/config.h"
#include "store/snapshot.h"
#include "store/store.h"

namespace ratelimit::detail {

// Windows in this process; persist()/load() save and read `snapshots` (null: Backend::memory,
// where both do nothing). config.clock must be set; config.quotas and providers seed the
// quota table; config.on_warning receives the names load() skips.
std::unique_ptr<Store> make_memory_store(const Config& config,
                                         std::unique_ptr<SnapshotStore> snapshots);

}  // namespace ratelimit::detail
