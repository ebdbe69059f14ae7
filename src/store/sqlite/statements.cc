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
      "t.next_seq "
      "FROM (SELECT ?1 AS m) AS k LEFT JOIN quotas AS q ON q.model = k.m "
      "LEFT JOIN rl_totals AS t ON t.model = k.m LEFT JOIN daily AS d ON d.model = k.m");
  count_requests_range = c.prepare(
      "SELECT COUNT(*) FROM (SELECT 1 FROM requests WHERE model = ?1 AND ts > ?2 AND "
      "ts <= ?3 LIMIT ?4)");
  tokens_range =
      c.prepare("SELECT count FROM tokens WHERE model = ?1 AND ts > ?2 AND ts <= ?3 LIMIT ?4");
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
      "oldest_ts, pending, day_gen, model_no, next_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, "
      "?8, ?9, ?10, ?11) ON CONFLICT(model) DO UPDATE SET next_seq = excluded.next_seq, "
      "requests = excluded.requests, tokens_hi = "
      "excluded.tokens_hi, tokens_lo = excluded.tokens_lo, horizon = excluded.horizon, "
      "newest_ts = excluded.newest_ts, oldest_ts = excluded.oldest_ts, pending = "
      "excluded.pending, day_gen = excluded.day_gen");
  insert_request = c.prepare("INSERT INTO requests (model, ts) VALUES (?1, ?2)");
  insert_token = c.prepare("INSERT INTO tokens (model, ts, count) VALUES (?1, ?2, ?3)");
  insert_reservation = c.prepare(
      "INSERT INTO rl_reservations (model_no, seq, ts, est_tokens, state, request_rowid, "
      "token_rowid, day_gen) VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7)");
  get_reservation = c.prepare(
      "SELECT ts, est_tokens, state, request_rowid, token_rowid, day_gen FROM "
      "rl_reservations WHERE model_no = ?1 AND seq = ?2");
  set_reservation = c.prepare(
      "UPDATE rl_reservations SET state = ?3, token_rowid = ?4 WHERE model_no = ?1 AND "
      "seq = ?2");
  set_token_count = c.prepare("UPDATE tokens SET count = ?2 WHERE rowid = ?1");
  delete_request_rowid = c.prepare("DELETE FROM requests WHERE rowid = ?1");
  delete_token_rowid = c.prepare("DELETE FROM tokens WHERE rowid = ?1");
  model_by_no = c.prepare("SELECT model FROM rl_totals WHERE model_no = ?1");
  next_model_no = c.prepare("SELECT coalesce(max(model_no), 0) + 1 FROM rl_totals");
  rpm_nth = c.prepare(
      "SELECT ts FROM requests WHERE model = ?1 AND ts > ?2 ORDER BY ts LIMIT 1 OFFSET ?3");
  tpm_scan = c.prepare("SELECT ts, count FROM tokens WHERE model = ?1 AND ts > ?2 ORDER BY ts");
  all_quotas = c.prepare("SELECT model, max_rpm, max_tpm, max_rpd FROM quotas");
  upsert_quota = c.prepare(
      "INSERT INTO quotas (model, max_rpm, max_tpm, max_rpd) VALUES (?1, ?2, ?3, ?4) "
      "ON CONFLICT(model) DO UPDATE SET max_rpm = excluded.max_rpm, max_tpm = "
      "excluded.max_tpm, max_rpd = excluded.max_rpd");
  delete_quota = c.prepare("DELETE FROM quotas WHERE model = ?1");
  all_models = c.prepare(
      "SELECT model FROM quotas UNION SELECT model FROM rl_totals UNION SELECT model FROM "
      "daily");
  data_version = c.prepare("PRAGMA data_version");
  reset_requests = c.prepare("DELETE FROM requests WHERE model = ?1");
  reset_tokens = c.prepare("DELETE FROM tokens WHERE model = ?1");
  reset_reservations = c.prepare("DELETE FROM rl_reservations WHERE model_no = ?1");
}

}  // namespace ratelimit::detail
