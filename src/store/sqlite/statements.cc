#include "store/sqlite/statements.h"

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
      "t.model IS NOT NULL, t.model_no, t.next_seq, t.requests, t.tokens_hi, t.tokens_lo, "  // 7-12
      "t.output_hi, t.output_lo, t.horizon, t.head_seq, t.tail_seq, t.newest_ts, "    // 13-18
      "t.oldest_ts, t.has_day, t.day_start, t.day_count, t.day_gen, "                 // 19-23
      "l.model IS NOT NULL, l.cooldown_until, l.req_left, l.req_until, l.tok_left, "  // 24-28
      "l.tok_until, l.in_left, l.in_until, l.out_left, l.out_until, "                 // 29-33
      "(SELECT value FROM rl_meta WHERE key = 'unknown_policy'), "                    // 34
      "(SELECT value FROM rl_meta WHERE key = 'unknown_quota'), "                     // 35
      "(SELECT CAST(value AS INTEGER) FROM rl_meta WHERE key = 'config_version') "    // 36
      "FROM (SELECT ?1 AS m) AS k LEFT JOIN quotas AS q ON q.model = k.m "
      "LEFT JOIN rl_models AS t ON t.model = k.m LEFT JOIN rl_learned AS l ON l.model = k.m");
  scan_log = c.prepare(
      "SELECT seq, ts, requests, tokens, output, state FROM rl_log WHERE model_no = ?1 AND "
      "seq >= ?2 ORDER BY seq");
  delete_log = c.prepare("DELETE FROM rl_log WHERE model_no = ?1 AND seq >= ?2 AND seq < ?3");
  clamp_log = c.prepare("UPDATE rl_log SET ts = ?3 WHERE model_no = ?1 AND seq >= ?2 AND ts > ?3");
  upsert_model = c.prepare(
      "INSERT INTO rl_models (model, model_no, next_seq, requests, tokens_hi, tokens_lo, "
      "output_hi, output_lo, horizon, head_seq, tail_seq, newest_ts, oldest_ts, has_day, "
      "day_start, day_count, day_gen) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, "
      "?13, ?14, ?15, ?16, ?17) ON CONFLICT(model) DO UPDATE SET next_seq = excluded.next_seq, "
      "requests = excluded.requests, tokens_hi = excluded.tokens_hi, tokens_lo = "
      "excluded.tokens_lo, output_hi = excluded.output_hi, output_lo = excluded.output_lo, "
      "horizon = excluded.horizon, head_seq = excluded.head_seq, tail_seq = excluded.tail_seq, "
      "newest_ts = excluded.newest_ts, oldest_ts = excluded.oldest_ts, has_day = "
      "excluded.has_day, day_start = excluded.day_start, day_count = excluded.day_count, "
      "day_gen = excluded.day_gen");
  update_model = c.prepare(
      "UPDATE rl_models SET next_seq = ?3, requests = ?4, tokens_hi = ?5, tokens_lo = ?6, "
      "output_hi = ?7, output_lo = ?8, horizon = ?9, head_seq = ?10, tail_seq = ?11, newest_ts = "
      "?12, oldest_ts = ?13, has_day = ?14, day_start = ?15, day_count = ?16, day_gen = ?17 "
      "WHERE model = ?1 AND model_no = ?2");
  insert_log = c.prepare(
      "INSERT INTO rl_log (model_no, seq, ts, requests, tokens, output, state, day_gen) VALUES "
      "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
  get_log = c.prepare(
      "SELECT ts, tokens, output, state, day_gen FROM rl_log WHERE model_no = ?1 AND seq = ?2");
  set_log = c.prepare(
      "UPDATE rl_log SET tokens = ?3, output = ?4, state = ?5 WHERE model_no = ?1 AND seq = ?2");
  model_by_no = c.prepare("SELECT model FROM rl_models WHERE model_no = ?1");
  next_model_no = c.prepare("SELECT coalesce(max(model_no), 0) + 1 FROM rl_models");
  rpm_nth = c.prepare(
      "SELECT ts FROM rl_log WHERE model_no = ?1 AND seq >= ?2 AND requests = 1 AND state != 2 "
      "ORDER BY seq LIMIT 1 OFFSET ?3");
  tpm_scan = c.prepare(
      "SELECT ts, tokens, output FROM rl_log WHERE model_no = ?1 AND seq >= ?2 AND state != 2 "
      "AND tokens > 0 ORDER BY seq");
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
  reset_log = c.prepare("DELETE FROM rl_log WHERE model_no = ?1");
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
