// Internal: go-ratelimit's usage tables (requests, tokens, daily) and the SQLite store's live
// tables (rl_models, rl_log).
//
// The live window is in rl_log/rl_models only. The seed's tables are written by persist() and
// migrate (export_seed_usage: the rows in the window at that moment, as go-ratelimit's
// saveState wrote them) and read once, when a database without our live tables is adopted
// (go-ratelimit's), migrated from schema version 1 or 2 (whose live rows they were), or filled by
// migrate_yaml_to_sqlite (import_seed_usage).
#pragma once

#include <cstdint>
#include <optional>

#include "store/sqlite/connection.h"

namespace ratelimit::detail {

// Replaces the live usage of every model with the seed tables' rows. Keeps each model's number
// and next reservation seq, so that no reservation id is ever issued twice (ids issued before
// settle as "left the window"). With `keep_horizon`, rows at or below a model's rl_models.horizon
// are left out (a version 2 database: they had left its totals). With `day_gen`, every model's
// day generation becomes it (a cancel of an older reservation then refunds no day).
// REQUIRES: a write transaction. Throws DbFailure / OpFailure.
void import_seed_usage(Connection& c, bool keep_horizon, std::optional<std::int64_t> day_gen,
                       const char* op);

// Rewrites requests, tokens and daily with the live rows in the window at `now_ns` (not
// cancelled), and each model's day. REQUIRES: a write transaction. Throws DbFailure.
void export_seed_usage(Connection& c, std::int64_t now_ns);

}  // namespace ratelimit::detail
