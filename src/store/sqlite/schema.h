// Internal: the SQLite store's schema: go-ratelimit's four tables (quotas, requests, tokens,
// daily, and their two indexes) plus three of ours:
//   rl_meta          schema version and a random store id (the prefix of reservation ids, so an
//                    id from another database is not_found).
//   rl_reservations  one row per granted reservation, keyed by (model_no, seq): the id is
//                    "<store id>-<model_no>-<seq>" (rowids of the seed's tables are reused after
//                    deletes, so they are never ids; seq only grows). WITHOUT ROWID: one page
//                    written per grant, no AUTOINCREMENT bookkeeping.
//   rl_totals        per model: its number (model_no) and next seq, requests and tokens of the
//                    rows with ts > horizon, the newest and a lower bound of the oldest such
//                    row, whether rows at or below the horizon await deletion, and the day
//                    generation (bumped when the day starts over, so a cancel refunds the day
//                    count only within its own day).
//   rl_aliases       model-name aliases (name → target), owned by the database.
//   rl_learned       per model, what providers said (observe): a cooldown and ceilings.
// and columns of ours on the seed's tables (go-ratelimit names the columns it reads, so it
// still reads them): quotas.max_input_tpm / max_output_tpm / day_start (0: first request,
// 1: Pacific midnight), tokens.output (of count, the output tokens), plus
// rl_totals.output_hi/lo and rl_reservations.est_output. rl_meta also holds
// config_version (bumped by every change to quotas, aliases or the unknown-model policy),
// unknown_policy and unknown_quota.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/time_util.h"
#include "ratelimit/config.h"
#include "ratelimit/quota.h"
#include "store/quota_text.h"
#include "store/sqlite/connection.h"

namespace ratelimit::detail {

inline constexpr std::int64_t kNone = INT64_MAX;  // "no row" for oldest_ts

enum ReservationState : std::int64_t { kReserved = 0, kCommitted = 1, kCancelled = 2 };

// The tokens total is an exact non-negative Int128 kept as two int64 columns.
std::int64_t hi_of(Int128 v);
std::int64_t lo_of(Int128 v);
Int128 join_hi_lo(std::int64_t hi, std::int64_t lo);
// "; to start fresh, open with Config::recover_corrupt ...", for messages about a damaged file.
std::string recover_hint(const std::string& path);
// 16 lower-case hex digits.
std::string hex16(std::uint64_t v);

// Recomputes rl_totals from the rows of the seed's tables (a go-ratelimit database being
// adopted, or a migration), keeping each model's number and next reservation seq so that no
// reservation id is ever issued twice. REQUIRES: a write transaction. Throws DbFailure /
// OpFailure.
void rebuild_totals(Connection& c, std::int64_t day_gen, const char* op);

// What a Config writes into a database where it finds nothing yet.
struct Seeds {
  QuotaMap quotas;                       // for models without a quota row
  AliasMap aliases;                      // for names without an alias
  std::optional<UnknownModels> unknown;  // when the database has no policy
};

// Creates or checks (and upgrades) the schema, writes `seeds`, and returns the store id.
// REQUIRES: a write transaction. Throws DbFailure / OpFailure.
std::uint64_t prepare_schema(Connection& c, const Seeds& seeds, const char* op);

}  // namespace ratelimit::detail
