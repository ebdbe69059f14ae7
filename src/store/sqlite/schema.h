// Internal: the SQLite store's schema (version 4): go-ratelimit's four tables (quotas,
// requests, tokens, daily, and their two indexes) plus ours:
//   rl_meta     schema version, a random store id (the prefix of reservation ids, so an id from
//               another database is not_found), config_version (bumped by every change to
//               quotas, aliases or the unknown-model policy), unknown_policy, unknown_quota.
//   rl_models   per model, its number (model_no): name -> number, written once per model.
//               WITHOUT ROWID.
//   rl_log      the live window: one row per request, keyed by (model_no, seq); seq only grows
//               and per model seq order is time order. ts, requests (1; 0 for a tokens-only row
//               imported from go-ratelimit), tokens, output, state (reserved, committed or
//               recorded, cancelled), day_gen. The reservation id is
//               "<store id>-<model_no>-<seq>". Plus, per model, its totals row at seq =
//               INT64_MAX (state 3), after its newest entry so that it shares the tail leaf
//               and a grant rewrites one page: ts = the newest entry's time, requests, tokens
//               and output = the running totals (low 64 bits; tokens_hi, output_hi the high
//               ones) of the entries from head_seq on (those with ts > horizon), day_gen = the
//               day generation (bumped when the day starts over, so a cancel refunds the day
//               count only within its own day), and the columns only it fills (NULL on an
//               entry): next_seq, horizon, head_seq, tail_seq (entries before head_seq from
//               there on await deletion), oldest_ts (a lower bound of the oldest entry's time),
//               has_day, day_start, day_count. Every range query over entries stops below
//               INT64_MAX. WITHOUT ROWID: a grant writes into one leaf.
//   rl_aliases  model-name aliases (name -> target), owned by the database.
//   rl_learned  per model, what providers said (observe): a cooldown and ceilings.
// Columns of ours on the seed's tables (go-ratelimit names the columns it reads, so it still
// reads them): quotas.max_input_tpm / max_output_tpm / day_start (0: first request, 1: Pacific
// midnight), tokens.output (of count, the output tokens). The seed's requests, tokens and daily
// tables are written only by persist() and migrate (seed_tables.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/time_util.h"
#include "ratelimit/config.h"
#include "ratelimit/quota.h"
#include "store/quota_text.h"
#include "store/sqlite/connection.h"

namespace ratelimit::detail {

inline constexpr std::int64_t kNone = INT64_MAX;  // "no row" for oldest_ts

// rl_log.state; kTotalsRow marks the model's totals row (seq = kTotalsSeq).
enum ReservationState : std::int64_t {
  kReserved = 0,
  kCommitted = 1,
  kCancelled = 2,
  kTotalsRow = 3
};
inline constexpr std::int64_t kTotalsSeq = INT64_MAX;
// rl_log and the columns of a totals row, for INSERT.
inline constexpr std::string_view kTotalsRowColumns =
    "rl_log (model_no, seq, ts, requests, tokens, output, state, day_gen, next_seq, tokens_hi, "
    "output_hi, horizon, head_seq, tail_seq, oldest_ts, has_day, day_start, day_count)";

// The tokens total is an exact non-negative Int128 kept as two int64 columns.
std::int64_t hi_of(Int128 v);
std::int64_t lo_of(Int128 v);
Int128 join_hi_lo(std::int64_t hi, std::int64_t lo);
// "; to start fresh, open with Config::recover_corrupt ...", for messages about a damaged file.
std::string recover_hint(const std::string& path);
// 16 lower-case hex digits.
std::string hex16(std::uint64_t v);

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
