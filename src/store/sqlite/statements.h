// Internal: the SQLite store's prepared statements.
#pragma once

#include "store/sqlite/connection.h"

namespace ratelimit::detail {

// The prepared statements of an open store.
struct Statements {
  sqlite3_stmt* begin_write;
  sqlite3_stmt* begin_read;
  sqlite3_stmt* commit;
  sqlite3_stmt* load_state;
  sqlite3_stmt* scan_log;
  sqlite3_stmt* delete_log;
  sqlite3_stmt* clamp_log;
  sqlite3_stmt* insert_model;   // rl_models: name -> number
  sqlite3_stmt* upsert_totals;  // the model's totals row in rl_log
  sqlite3_stmt* update_totals;  // the same, for a model with the row (cheaper than the upsert)
  sqlite3_stmt* insert_log;
  sqlite3_stmt* get_log;
  sqlite3_stmt* set_log;
  sqlite3_stmt* model_by_no;
  sqlite3_stmt* next_model_no;
  sqlite3_stmt* rpm_nth;
  sqlite3_stmt* tpm_scan;
  sqlite3_stmt* all_quotas;
  sqlite3_stmt* upsert_quota;
  sqlite3_stmt* delete_quota;
  sqlite3_stmt* all_models;
  sqlite3_stmt* data_version;
  sqlite3_stmt* reset_log;
  sqlite3_stmt* upsert_learned;
  sqlite3_stmt* delete_learned;
  sqlite3_stmt* all_aliases;
  sqlite3_stmt* get_alias;
  sqlite3_stmt* upsert_alias;
  sqlite3_stmt* delete_alias;
  sqlite3_stmt* get_meta;
  sqlite3_stmt* set_meta;
  sqlite3_stmt* bump_config;

  // Prepares every statement on `c` (kept until it closes). Throws DbFailure.
  void prepare(Connection& c);
};

}  // namespace ratelimit::detail
