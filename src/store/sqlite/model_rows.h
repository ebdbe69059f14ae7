// Internal: one model's rows in the SQLite store, read and written inside a transaction.
//
// Totals are exact without COUNT/SUM over the window: each write transaction on a model moves
// its horizon to now - 60 s, subtracting the rows in (old horizon, new horizon] with an index
// range query (each row is subtracted once: amortised O(1)), then deletes at most a batch of
// expired rows per table (bounded work). A reservation whose ts <= horizon has left the window
// ("gone"); its rows are never touched by rowid again. Reads (decide, stats) prune virtually
// and ask for a write transaction only when that would mean walking many rows.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "core/rules.h"
#include "ratelimit/decision.h"
#include "store/sqlite/schema.h"
#include "store/sqlite/statements.h"
#include "store/store.h"

namespace ratelimit::detail {

// One model's state as read inside a transaction.
struct RowState {
  bool has_quota = false;
  ModelQuota quota;
  std::int64_t requests = 0;
  Int128 tokens = 0;                 // input + output
  Int128 output = 0;                 // of which output
  std::int64_t horizon = INT64_MIN;  // rows with ts > horizon are in the totals
  std::int64_t newest = INT64_MIN;
  std::int64_t oldest = kNone;  // no row with ts > horizon is older than this
  std::int64_t pending = 0;     // rows with ts <= horizon may await deletion
  std::int64_t day_gen = 0;
  std::int64_t model_no = 0;  // 0: not assigned yet (no rl_totals row)
  std::int64_t next_seq = 1;
  bool has_totals = false;
  bool has_day = false;
  std::int64_t day_start = 0;
  std::int64_t day_count = 0;
  bool day_row = false;  // a daily row exists in the database
  std::int64_t now = 0;
  Learned learned;           // in force (expired ones dropped by advance)
  bool learned_row = false;  // an rl_learned row exists in the database
  bool learned_dirty = false;
  UnknownModels unknown;  // the database's unknown-model policy

  // The quota, else what the unknown-model policy gives; and what was learned.
  Limits limits() const {
    Limits l;
    if (has_quota) {
      l.known = true;
      l.quota = quota;
    } else if (unknown.policy == UnknownModelPolicy::default_quota) {
      l.known = true;
      l.quota = unknown.quota;
    } else {
      l.deny_unknown = unknown.policy == UnknownModelPolicy::deny;
    }
    l.learned = learned;
    return l;
  }
  DayStart day_rule() const { return limits().quota.day_start; }
  Usage usage() const {
    return Usage{requests,
                 tokens,
                 tokens - output,
                 output,
                 has_day,
                 day_start,
                 has_day ? day_end_ns(day_start, day_rule()) : 0,
                 day_count};
  }
  ModelStats stats() const { return stats_of(limits(), usage()); }
  // No usage in the window or today.
  bool idle() const { return requests == 0 && tokens == 0 && (!has_day || day_count == 0); }
  // Listed by all_stats(): a quota, usage, or what a provider said.
  bool shown() const { return has_quota || !idle() || learned.any(); }
};

// Per model, the latest horizon this process has computed (a read moves it without writing).
// An entry at or below it has left the window for good here, even if the wall clock steps
// back, as in the in-process store; a write persists it.
using HorizonFloors = std::map<std::string, std::int64_t, std::less<>>;

// The rows of models. REQUIRES for every method: the database's lock held and a transaction
// open (a write transaction where it says so). Throws DbFailure / OpFailure.
class ModelRows {
 public:
  ModelRows(Connection& conn, Statements& st, HorizonFloors& floors)
      : conn_(conn), st_(st), floors_(floors) {}

  // The operation of the running transaction, for messages.
  void set_operation(const char* op) { op_ = op; }

  RowState load(std::string_view model);
  // Clamps rows after `now` to `now`, starts a new day after 24 h and moves the horizon to
  // now - 60 s. In a write (`write`) it changes the database and deletes some expired rows;
  // in a read it only adjusts `s` and returns false when that would mean walking many rows
  // (then the caller retries in a write).
  bool advance(std::string_view model, RowState& s, std::int64_t now, bool write);
  // Writes the totals and the day of `s`. REQUIRES: a write transaction.
  void save(std::string_view model, RowState& s);
  // The rules of core/rules.h on `s` (advanced to s.now), with the rows as the probe.
  Decision evaluate(std::string_view model, const RowState& s, TokenEstimate estimate);
  // Appends a request and its tokens at max(now, newest). REQUIRES: a write transaction.
  void record(std::string_view model, RowState& s, TokenEstimate tokens);
  // Appends a reserved request and its reservation row, and spends the learned ceilings.
  // REQUIRES: a write transaction.
  EntryRef reserve(std::string_view model, RowState& s, TokenEstimate tokens);
  // Settles reservation `entry.seq` of model `model_no` (loads and saves the model).
  // REQUIRES: a write transaction.
  void settle(std::string_view model, std::int64_t model_no, EntryRef entry,
              const SettleRequest& request, std::int64_t now, const std::string& id,
              bool* released);
  // Clears one model's usage. REQUIRES: a write transaction.
  void reset(std::string_view model);
  void reset_all();
  // The model's number, assigned on first use. REQUIRES: a write transaction.
  std::int64_t model_no_of(RowState& s);

 private:
  [[noreturn]] void corrupt(std::string_view model, const char* field, std::int64_t value) const;
  bool delete_expired(std::string_view model, const RowState& s, int limit);
  // Subtracts the rows in (s.horizon, h] from the totals and moves the horizon to h. A read
  // gives up (false) when that means walking many rows.
  bool move_horizon(std::string_view model, RowState& s, std::int64_t h, bool write);
  std::int64_t append(std::string_view model, RowState& s, TokenEstimate tokens);
  void set_reservation(std::int64_t model_no, std::int64_t seq, std::int64_t state,
                       std::int64_t token_rowid);

  Connection& conn_;
  Statements& st_;
  HorizonFloors& floors_;
  const char* op_ = "ratelimit";
  std::int64_t last_request_rowid_ = 0;
  std::int64_t last_token_rowid_ = 0;
};

}  // namespace ratelimit::detail
