#include "store/sqlite/statements.h"

namespace ratelimit::detail {

void Statements::prepare(Connection& c) {
  begin_write = c.prepare("BEGIN IMMEDIATE");
  begin_read = c.prepare("BEGIN");
  commit = c.prepare("COMMIT");
  load_state = c.prepare(
      "SELECT q.max_rpm, q.max_tpm, q.max_rpd, q.model IS NOT NULL, t.requests, t.tokens_hi, "
      "t.tokens_lo, t.horizon, t.newest_ts, t.oldest_ts, t.pending, t.day_gen, "
      "t.model IS NOT NULL, d.day_start, d.day_count, d.model IS NOT NULL, t.model_no, "
      "t.next_seq, q.max_input_tpm, q.max_output_tpm, q.day_start, t.output_hi, t.output_lo, "
      "l.model IS NOT NULL, l.cooldown_until, l.req_left, l.req_until, l.tok_left, l.tok_until, "
      "l.in_left, l.in_until, l.out_left, l.out_until, "
      "(SELECT value FROM rl_meta WHERE key = 'unknown_policy'), "
      "(SELECT value FROM rl_meta WHERE key = 'unknown_quota') "
      "FROM (SELECT ?1 AS m) AS k LEFT JOIN quotas AS q ON q.model = k.m "
      "LEFT JOIN rl_totals AS t ON t.model = k.m LEFT JOIN daily AS d ON d.model = k.m "
      "LEFT JOIN rl_learned AS l ON l.model = k.m");
  count_requests_range = c.prepare(
      "SELECT COUNT(*) FROM (SELECT 1 FROM requests WHERE model = ?1 AND ts > ?2 AND "
      "ts <= ?3 LIMIT ?4)");
  tokens_range = c.prepare(
      "SELECT count, output FROM tokens WHERE model = ?1 AND ts > ?2 AND ts <= ?3 "
      "LIMIT ?4");
  oldest_after = c.prepare(
      "SELECT min(coalesce((SELECT ts FROM requests WHERE model = ?1 AND ts > ?2 ORDER BY ts "
      "LIMIT 1), ?3), coalesce((SELECT ts FROM tokens WHERE model = ?1 AND ts > ?2 ORDER BY "
      "ts LIMIT 1), ?3))");
  delete_requests = c.prepare(
      "DELETE FROM requests WHERE rowid IN (SELECT rowid FROM requests WHERE model = ?1 AND "
      "ts <= ?2 LIMIT ?3)");
  delete_tokens = c.prepare(
      "DELETE FROM tokens WHERE rowid IN (SELECT rowid FROM tokens WHERE model = ?1 AND "
      "ts <= ?2 LIMIT ?3)");
  delete_reservations = c.prepare(
      // Per model, seq order is time order: the expired rows are a prefix.
      "DELETE FROM rl_reservations WHERE model_no = ?1 AND seq <= (SELECT max(seq) FROM "
      "(SELECT seq, ts FROM rl_reservations WHERE model_no = ?1 ORDER BY seq LIMIT ?3) "
      "WHERE ts <= ?2)");
  clamp_requests = c.prepare("UPDATE requests SET ts = ?2 WHERE model = ?1 AND ts > ?2");
  clamp_tokens = c.prepare("UPDATE tokens SET ts = ?2 WHERE model = ?1 AND ts > ?2");
  clamp_reservations =
      c.prepare("UPDATE rl_reservations SET ts = ?2 WHERE model_no = ?1 AND ts > ?2");
  upsert_day = c.prepare(
      "INSERT INTO daily (model, day_start, day_count) VALUES (?1, ?2, ?3) ON CONFLICT(model) "
      "DO UPDATE SET day_start = excluded.day_start, day_count = excluded.day_count");
  delete_day = c.prepare("DELETE FROM daily WHERE model = ?1");
  upsert_totals = c.prepare(
      "INSERT INTO rl_totals (model, requests, tokens_hi, tokens_lo, horizon, newest_ts, "
      "oldest_ts, pending, day_gen, model_no, next_seq, output_hi, output_lo) VALUES (?1, ?2, "
      "?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) ON CONFLICT(model) DO UPDATE SET "
      "next_seq = excluded.next_seq, output_hi = excluded.output_hi, output_lo = "
      "excluded.output_lo, "
      "requests = excluded.requests, tokens_hi = "
      "excluded.tokens_hi, tokens_lo = excluded.tokens_lo, horizon = excluded.horizon, "
      "newest_ts = excluded.newest_ts, oldest_ts = excluded.oldest_ts, pending = "
      "excluded.pending, day_gen = excluded.day_gen");
  insert_request = c.prepare("INSERT INTO requests (model, ts) VALUES (?1, ?2)");
  insert_token = c.prepare("INSERT INTO tokens (model, ts, count, output) VALUES (?1, ?2, ?3, ?4)");
  insert_reservation = c.prepare(
      "INSERT INTO rl_reservations (model_no, seq, ts, est_tokens, state, request_rowid, "
      "token_rowid, day_gen, est_output) VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, ?8)");
  get_reservation = c.prepare(
      "SELECT ts, est_tokens, state, request_rowid, token_rowid, day_gen, est_output FROM "
      "rl_reservations WHERE model_no = ?1 AND seq = ?2");
  set_reservation = c.prepare(
      "UPDATE rl_reservations SET state = ?3, token_rowid = ?4 WHERE model_no = ?1 AND "
      "seq = ?2");
  set_token_count = c.prepare("UPDATE tokens SET count = ?2, output = ?3 WHERE rowid = ?1");
  delete_request_rowid = c.prepare("DELETE FROM requests WHERE rowid = ?1");
  delete_token_rowid = c.prepare("DELETE FROM tokens WHERE rowid = ?1");
  model_by_no = c.prepare("SELECT model FROM rl_totals WHERE model_no = ?1");
  next_model_no = c.prepare("SELECT coalesce(max(model_no), 0) + 1 FROM rl_totals");
  rpm_nth = c.prepare(
      "SELECT ts FROM requests WHERE model = ?1 AND ts > ?2 ORDER BY ts LIMIT 1 OFFSET ?3");
  tpm_scan =
      c.prepare("SELECT ts, count, output FROM tokens WHERE model = ?1 AND ts > ?2 ORDER BY ts");
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
      "SELECT model FROM quotas UNION SELECT model FROM rl_totals UNION SELECT model FROM "
      "daily UNION SELECT model FROM rl_learned");
  data_version = c.prepare("PRAGMA data_version");
  reset_requests = c.prepare("DELETE FROM requests WHERE model = ?1");
  reset_tokens = c.prepare("DELETE FROM tokens WHERE model = ?1");
  reset_reservations = c.prepare("DELETE FROM rl_reservations WHERE model_no = ?1");
  upsert_learned = c.prepare(
      "INSERT OR REPLACE INTO rl_learned (model, cooldown_until, req_left, req_until, tok_left, "
      "tok_until, in_left, in_until, out_left, out_until) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, "
      "?8, ?9, ?10)");
  delete_learned = c.prepare("DELETE FROM rl_learned WHERE model = ?1");
  reset_learned = c.prepare("DELETE FROM rl_learned");
  all_aliases = c.prepare("SELECT name, target FROM rl_aliases");
  get_alias = c.prepare("SELECT target FROM rl_aliases WHERE name = ?1");
  upsert_alias = c.prepare("INSERT OR REPLACE INTO rl_aliases (name, target) VALUES (?1, ?2)");
  delete_alias = c.prepare("DELETE FROM rl_aliases WHERE name = ?1");
  get_meta = c.prepare("SELECT value FROM rl_meta WHERE key = ?1");
  set_meta = c.prepare("INSERT OR REPLACE INTO rl_meta (key, value) VALUES (?1, ?2)");
  bump_config = c.prepare(
      "UPDATE rl_meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = "
      "'config_version'");
}

}  // namespace ratelimit::detail
