#include "store/sqlite/statements.h"

#include <string>

#include "store/sqlite/schema.h"

namespace ratelimit::detail {

void Statements::prepare(Connection& c) {
  begin_write = c.prepare("BEGIN IMMEDIATE");
  begin_read = c.prepare("BEGIN");
  commit = c.prepare("COMMIT");
  // One row whatever exists: the quota, the live totals, what was learned, the unknown-model
  // policy and the config version (so config_epoch() costs nothing more).
  load_state = c.prepare(
      "SELECT q.max_rpm, q.max_tpm, q.max_rpd, q.model IS NOT NULL, q.max_input_tpm, "
      "q.max_output_tpm, q.day_start, "                                                      // 0-6
      "g.model_no IS NOT NULL, t.model_no, g.next_seq, g.requests, g.tokens_hi, g.tokens, "  // 7-12
      "g.output_hi, g.output, g.horizon, g.head_seq, g.tail_seq, g.ts, "              // 13-18
      "g.oldest_ts, g.has_day, g.day_start, g.day_count, g.day_gen, "                 // 19-23
      "l.model IS NOT NULL, l.cooldown_until, l.req_left, l.req_until, l.tok_left, "  // 24-28
      "l.tok_until, l.in_left, l.in_until, l.out_left, l.out_until, "                 // 29-33
      "(SELECT value FROM rl_meta WHERE key = 'unknown_policy'), "                    // 34
      "(SELECT value FROM rl_meta WHERE key = 'unknown_quota'), "                     // 35
      "(SELECT CAST(value AS INTEGER) FROM rl_meta WHERE key = 'config_version') "    // 36
      "FROM (SELECT ?1 AS m) AS k LEFT JOIN quotas AS q ON q.model = k.m "
      "LEFT JOIN rl_models AS t ON t.model = k.m LEFT JOIN rl_log AS g ON g.model_no = "
      "t.model_no AND g.seq = 9223372036854775807 LEFT JOIN rl_learned AS l ON l.model = k.m");
  scan_log = c.prepare(
      "SELECT seq, ts, requests, tokens, output, state FROM rl_log WHERE model_no = ?1 AND "
      "seq >= ?2 AND seq < 9223372036854775807 ORDER BY seq");
  delete_log = c.prepare(
      "DELETE FROM rl_log WHERE model_no = ?1 AND seq >= ?2 AND seq < ?3 AND seq < "
      "9223372036854775807");
  clamp_log = c.prepare(
      "UPDATE rl_log SET ts = ?3 WHERE model_no = ?1 AND seq >= ?2 AND seq < 9223372036854775807 "
      "AND ts > ?3");
  insert_model = c.prepare(
      "INSERT INTO rl_models (model, model_no) VALUES (?1, ?2) ON CONFLICT(model) DO NOTHING");
  // ?1 model_no, ?2 next_seq, ?3 requests, ?4/?5 tokens hi/lo, ?6/?7 output hi/lo, ?8 horizon,
  // ?9 head_seq, ?10 tail_seq, ?11 newest, ?12 oldest, ?13 has_day, ?14 day_start,
  // ?15 day_count, ?16 day_gen.
  upsert_totals = c.prepare("INSERT OR REPLACE INTO " + std::string(kTotalsRowColumns) +
                            " VALUES (?1, 9223372036854775807, ?11, ?3, ?5, ?7, 3, ?16, ?2, ?4, "
                            "?6, ?8, ?9, ?10, ?12, ?13, ?14, ?15)");
  update_totals = c.prepare(
      "UPDATE rl_log SET ts = ?11, requests = ?3, tokens = ?5, output = ?7, day_gen = ?16, "
      "next_seq = ?2, tokens_hi = ?4, output_hi = ?6, horizon = ?8, head_seq = ?9, tail_seq = "
      "?10, oldest_ts = ?12, has_day = ?13, day_start = ?14, day_count = ?15 WHERE model_no = ?1 "
      "AND seq = 9223372036854775807");
  insert_log = c.prepare(
      "INSERT INTO rl_log (model_no, seq, ts, requests, tokens, output, state, day_gen) VALUES "
      "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
  get_log = c.prepare(
      "SELECT ts, tokens, output, state, day_gen FROM rl_log WHERE model_no = ?1 AND seq = ?2 "
      "AND seq < 9223372036854775807");
  set_log = c.prepare(
      "UPDATE rl_log SET tokens = ?3, output = ?4, state = ?5 WHERE model_no = ?1 AND seq = ?2 "
      "AND seq < 9223372036854775807");
  model_by_no = c.prepare("SELECT model FROM rl_models WHERE model_no = ?1");
  next_model_no = c.prepare("SELECT coalesce(max(model_no), 0) + 1 FROM rl_models");
  rpm_nth = c.prepare(
      "SELECT ts FROM rl_log WHERE model_no = ?1 AND seq >= ?2 AND seq < 9223372036854775807 AND "
      "requests = 1 AND state != 2 ORDER BY seq LIMIT 1 OFFSET ?3");
  tpm_scan = c.prepare(
      "SELECT ts, tokens, output FROM rl_log WHERE model_no = ?1 AND seq >= ?2 AND seq < "
      "9223372036854775807 AND state != 2 AND tokens > 0 ORDER BY seq");
  all_quotas = c.prepare(
      "SELECT model, max_rpm, max_tpm, max_rpd, max_input_tpm, max_output_tpm, day_start FROM "
      "quotas");
  upsert_quota = c.prepare(
      "INSERT INTO quotas (model, max_rpm, max_tpm, max_rpd, max_input_tpm, max_output_tpm, "
      "day_start) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
      "ON CONFLICT(model) DO UPDATE SET max_rpm = excluded.max_rpm, max_tpm = "
      "excluded.max_tpm, max_rpd = excluded.max_rpd, max_input_tpm = excluded.max_input_tpm, "
      "max_output_tpm = excluded.max_output_tpm, day_start = excluded.day_start");
  delete_quota = c.prepare("DELETE FROM quotas WHERE model = ?1");
  all_models = c.prepare(
      "SELECT model FROM quotas UNION SELECT model FROM rl_models UNION SELECT model FROM "
      "rl_learned");
  data_version = c.prepare("PRAGMA data_version");
  reset_log = c.prepare("DELETE FROM rl_log WHERE model_no = ?1 AND seq < 9223372036854775807");
  upsert_learned = c.prepare(
      "INSERT OR REPLACE INTO rl_learned (model, cooldown_until, req_left, req_until, tok_left, "
      "tok_until, in_left, in_until, out_left, out_until) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, "
      "?8, ?9, ?10)");
  delete_learned = c.prepare("DELETE FROM rl_learned WHERE model = ?1");
  all_aliases = c.prepare("SELECT name, target FROM rl_aliases");
  get_alias = c.prepare("SELECT target FROM rl_aliases WHERE name = ?1");
  upsert_alias = c.prepare("INSERT OR REPLACE INTO rl_aliases (name, target) VALUES (?1, ?2)");
  delete_alias = c.prepare("DELETE FROM rl_aliases WHERE name = ?1");
  get_meta = c.prepare("SELECT value FROM rl_meta WHERE key = ?1");
  set_meta = c.prepare("INSERT OR REPLACE INTO rl_meta (key, value) VALUES (?1, ?2)");
  bump_config = c.prepare(
      "UPDATE rl_meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = "
      "'config_version' RETURNING CAST(value AS INTEGER)");
}

}  // namespace ratelimit::detail
