// Internal: one model's rows in the SQLite store, read and written inside a transaction.
//
// The live window is rl_log: one row per request (or token record), keyed by (model_no, seq);
// per model, seq order is time order. The model's totals row in rl_log (seq = INT64_MAX, after
// its newest row, so a grant writes one leaf) holds the running totals of the rows from
// head_seq on (those with ts > horizon), the day and the counters; rl_models maps the name to
// model_no. Each write transaction on a
// model moves its horizon to now - 60 s, walking the rows from head_seq that crossed it (each
// row is walked once: amortised O(1)), and deletes expired rows in batches. A row before
// head_seq has left the window ("gone"). Reads (decide, stats) do the same walk without writing
// and never open a write transaction.
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
  std::int64_t horizon = INT64_MIN;  // rows from head_seq on have ts > horizon
  std::int64_t head_seq = 1;         // the first row in the window (and in the totals)
  std::int64_t tail_seq = 1;         // rows in [tail_seq, head_seq) await deletion
  std::int64_t newest = INT64_MIN;
  std::int64_t oldest = kNone;  // no row from head_seq on is older than this
  std::int64_t day_gen = 0;
  std::int64_t model_no = 0;  // 0: not assigned yet
  bool has_model = false;     // an rl_models row (name -> model_no) exists
  std::int64_t next_seq = 1;
  bool has_totals = false;  // its totals row in rl_log exists
  bool has_day = false;
  std::int64_t day_start = 0;
  std::int64_t day_count = 0;
  std::int64_t config_version = 0;  // rl_meta's, read with the rest
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

  // rl_meta.config_version as the last load() read it (-1: none yet).
  std::int64_t seen_config = -1;

  // The operation of the running transaction, for messages.
  void set_operation(const char* op) { op_ = op; }

  RowState load(std::string_view model);
  // Clamps rows after `now` to `now`, starts a new day after 24 h and moves the horizon to
  // now - 60 s. In a write (`write`) it changes the database and deletes some expired rows;
  // in a read it only adjusts `s`, and returns false in the two rare cases that must be
  // written so that they stay true: the clock is behind the database, or a new day starts.
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
  // Deletes up to `limit` (-1: all) rows before head_seq.
  void delete_expired(RowState& s, std::int64_t limit);
  // Subtracts the rows from head_seq with ts <= h from the totals and moves the horizon to h.
  void move_horizon(RowState& s, std::int64_t h);
  // Appends a row at max(now, newest) in `state`; returns its seq.
  std::int64_t append(RowState& s, TokenEstimate tokens, std::int64_t state);

  Connection& conn_;
  Statements& st_;
  HorizonFloors& floors_;
  const char* op_ = "ratelimit";
};

}  // namespace ratelimit::detail
