// Internal: the Redis store (Backend::redis), where the machines of a fleet share one quota
// exactly: every store operation is one Lua script on one Redis server (see scripts.h for the
// key layout and docs/design.md for the bounds and the clock). <hiredis/hiredis.h> stays inside
// src/store/redis/connection.cc.
#pragma once

#include <memory>

#include "ratelimit/config.h"
#include "ratelimit/status.h"
#include "store/store.h"

namespace ratelimit::detail {

// Connects to config.redis_url (which must be set; config.clock too) and writes the config's
// quotas, aliases and unknown-model policy where Redis has none yet. Errors: invalid_argument
// (a malformed URL or key prefix), unavailable (cannot connect, a wrong password or db).
Result<std::unique_ptr<Store>> make_redis_store(const Config& config);

}  // namespace ratelimit::detail
