#include "store/sqlite/model_rows.h"

#include <algorithm>

#include "limiter/validation.h"

namespace ratelimit::detail {
namespace {

constexpr int kDeleteBatch = 64;  // expired rows deleted per table per pass (when that many wait)
constexpr int kReadScanCap = 64;  // rows a read may subtract virtually before it writes

}  // namespace

void ModelRows::corrupt(std::string_view model, const char* field, std::int64_t value) const {
  throw OpFailure{{ErrorCode::corrupt_state,
                   std::string(op_) + ": sqlite " + conn_.path() + ": " + quoted(model) + ": " +
                       field + " is negative (" + std::to_string(value) +
                       "); the database was changed by something else: reset the model or "
                       "restore a backup"}};
}

RowState ModelRows::load(std::string_view model) {
  RowState s;
  Query u(conn_, st_.load_state);
  u.bind(1, model);
  if (!u.row()) return s;  // cannot happen: the query always yields one row
  if (u.i64(3) != 0) {
    s.has_quota = true;
    s.quota = ModelQuota{
        u.i64(0),  u.i64(1),
        u.i64(2),  u.i64(18),
        u.i64(19), u.i64(20) == 1 ? DayStart::pacific_midnight : DayStart::first_request};
    if (s.quota.max_rpm < 0) corrupt(model, "quotas.max_rpm", s.quota.max_rpm);
    if (s.quota.max_tpm < 0) corrupt(model, "quotas.max_tpm", s.quota.max_tpm);
    if (s.quota.max_rpd < 0) corrupt(model, "quotas.max_rpd", s.quota.max_rpd);
    if (s.quota.max_input_tpm < 0) corrupt(model, "quotas.max_input_tpm", s.quota.max_input_tpm);
    if (s.quota.max_output_tpm < 0) {
      corrupt(model, "quotas.max_output_tpm", s.quota.max_output_tpm);
    }
  }
  if (!u.is_null(33)) {
    const std::string policy = u.text(33);
    if (auto p = unknown_model_policy_from_string(policy)) {
      s.unknown.policy = *p;
      if (*p == UnknownModelPolicy::default_quota) {
        auto q = decode_quota(u.text(34));
        if (!q) {
          throw OpFailure{{ErrorCode::corrupt_state,
                           std::string(op_) + ": sqlite " + conn_.path() +
                               ": rl_meta.unknown_quota is malformed; set the unknown-model "
                               "policy again"}};
        }
        s.unknown.quota = *q;
      }
    }
  }
  if (u.i64(23) != 0) {
    s.learned_row = true;
    s.learned.cooldown_until_ns = u.i64(24);
    s.learned.requests = {u.i64(25), u.i64(26)};
    s.learned.tokens = {u.i64(27), u.i64(28)};
    s.learned.input = {u.i64(29), u.i64(30)};
    s.learned.output = {u.i64(31), u.i64(32)};
  }
  if (u.i64(12) != 0) {
    s.has_totals = true;
    s.requests = u.i64(4);
    s.tokens = join_hi_lo(u.i64(5), u.i64(6));
    s.output = join_hi_lo(u.i64(21), u.i64(22));
    s.horizon = u.i64(7);
    s.newest = u.i64(8);
    s.oldest = u.i64(9);
    s.pending = u.i64(10);
    s.day_gen = u.i64(11);
    s.model_no = u.i64(16);
    s.next_seq = u.i64(17);
    if (s.requests < 0) corrupt(model, "rl_totals.requests", s.requests);
    if (s.tokens < 0) corrupt(model, "rl_totals.tokens", u.i64(5));
    if (s.output < 0 || s.output > s.tokens) corrupt(model, "rl_totals.output", u.i64(21));
  }
  if (u.i64(15) != 0) {
    s.day_row = true;
    s.has_day = true;
    s.day_start = u.i64(13);
    s.day_count = u.i64(14);
    if (s.day_count < 0) corrupt(model, "daily.day_count", s.day_count);
  }
  return s;
}

bool ModelRows::advance(std::string_view model, RowState& s, std::int64_t now, bool write) {
  const std::int64_t h = now >= INT64_MIN + kWindowNs ? now - kWindowNs : INT64_MIN;
  // A read of this process moved the horizon further without writing, and the clock has
  // since stepped back below it: what left then stays gone (as in the in-process store), so
  // the write makes that pruning real first.
  auto floor = floors_.find(model);
  if (floor != floors_.end() && floor->second > s.horizon && h < floor->second) {
    if (!write) return false;
    move_horizon(model, s, floor->second, true);
  }
  if (s.newest > now || h < s.horizon || (s.has_day && s.day_start > now)) {
    // The clock is behind the database (it stepped back, or another process's clock is
    // ahead): rows and the day are clamped to `now`, as the in-process store does, and that
    // is a write. (`now` is read after the snapshot, so a commit of this machine's clock is
    // never ahead of it.)
    if (!write) return false;
    if (h < s.horizon) {
      // Rows at or below the old horizon are not in the totals: delete them all (rare),
      // then lower the horizon so that rows clamped to `now` still count.
      delete_expired(model, s, -1);
      s.pending = 0;
      s.horizon = h;
    }
    if (s.newest > now) {
      for (sqlite3_stmt* stmt : {st_.clamp_requests, st_.clamp_tokens}) {
        Query u(conn_, stmt);
        u.bind(1, model).bind(2, now).run();
      }
      Query u(conn_, st_.clamp_reservations);
      u.bind(1, s.model_no).bind(2, now).run();
      s.newest = now;
      s.oldest = std::min(s.oldest, now);
    }
  }
  s.now = now;
  if (s.learned.any() && s.learned.expire(now)) s.learned_dirty = true;  // written by a write
  if (s.has_day && s.day_start > now) s.day_start = now;
  if (s.has_day && now >= day_end_ns(s.day_start, s.day_rule())) {
    if (!write) return false;  // a new day is written once, so that it stays new
    s.has_day = false;
    s.day_start = 0;
    s.day_count = 0;
    ++s.day_gen;
  }
  if (h > s.horizon && !move_horizon(model, s, h, write)) return false;
  // A write persists the horizon; a read remembers how far it moved it.
  if (write || floor == floors_.end() || s.horizon > floor->second) {
    if (floor != floors_.end()) {
      floor->second = s.horizon;
    } else {
      floors_.emplace(std::string(model), s.horizon);
    }
  }
  // Deleting in batches: a page is rewritten once per kDeleteBatch expired rows, not per row.
  if (write && s.pending >= kDeleteBatch) {
    s.pending = delete_expired(model, s, kDeleteBatch) ? s.pending - kDeleteBatch : 0;
    if (s.pending > 0 && s.pending < kDeleteBatch) s.pending = kDeleteBatch;
  }
  return true;
}

bool ModelRows::move_horizon(std::string_view model, RowState& s, std::int64_t h, bool write) {
  if (s.oldest <= h) {
    const std::int64_t cap = write ? -1 : kReadScanCap + 1;
    std::int64_t n = 0;
    {
      Query u(conn_, st_.count_requests_range);
      u.bind(1, model).bind(2, s.horizon).bind(3, h).bind(4, cap);
      if (u.row()) n = u.i64(0);
    }
    if (!write && n > kReadScanCap) return false;
    Int128 sum = 0, out = 0;
    std::int64_t rows = 0;
    {
      Query u(conn_, st_.tokens_range);
      u.bind(1, model).bind(2, s.horizon).bind(3, h).bind(4, cap);
      while (u.row()) {
        const std::int64_t count = std::max<std::int64_t>(0, u.i64(0));
        sum += count;
        out += std::clamp<std::int64_t>(u.i64(1), 0, count);
        ++rows;
      }
    }
    if (!write && rows > kReadScanCap) return false;
    s.requests = std::max<std::int64_t>(0, s.requests - n);
    s.tokens = std::max<Int128>(0, s.tokens - sum);
    s.output = std::clamp<Int128>(s.output - out, 0, s.tokens);
    if (write) {
      Query u(conn_, st_.oldest_after);
      u.bind(1, model).bind(2, h).bind(3, kNone);
      s.oldest = u.row() && !u.is_null(0) ? u.i64(0) : kNone;
      s.pending = saturating_add(s.pending, saturating_add(n, rows) + 1);
    }
  }
  s.horizon = h;
  return true;
}

// Deletes up to `limit` (-1: all) rows at or below the horizon from each table. Returns
// whether a table may hold more.
bool ModelRows::delete_expired(std::string_view model, const RowState& s, int limit) {
  bool more = false;
  for (sqlite3_stmt* stmt : {st_.delete_requests, st_.delete_tokens}) {
    Query u(conn_, stmt);
    u.bind(1, model).bind(2, s.horizon).bind(3, limit).run();
    if (limit >= 0 && sqlite3_changes(conn_.db()) >= limit) more = true;
  }
  if (s.model_no != 0) {
    Query u(conn_, st_.delete_reservations);
    u.bind(1, s.model_no).bind(2, s.horizon).bind(3, limit).run();
    if (limit >= 0 && sqlite3_changes(conn_.db()) >= limit) more = true;
  }
  return more;
}

std::int64_t ModelRows::model_no_of(RowState& s) {
  if (s.model_no == 0) {
    Query u(conn_, st_.next_model_no);
    s.model_no = u.row() ? u.i64(0) : 1;
  }
  return s.model_no;
}

void ModelRows::save(std::string_view model, RowState& s) {
  {
    Query u(conn_, st_.upsert_totals);
    u.bind(1, model).bind(2, s.requests).bind(3, hi_of(s.tokens)).bind(4, lo_of(s.tokens));
    u.bind(5, s.horizon).bind(6, s.newest).bind(7, s.oldest).bind(8, s.pending);
    u.bind(9, s.day_gen).bind(10, model_no_of(s)).bind(11, s.next_seq);
    u.bind(12, hi_of(s.output)).bind(13, lo_of(s.output)).run();
    s.has_totals = true;
  }
  if (s.learned_dirty) {
    if (s.learned.any()) {
      const Learned& l = s.learned;
      Query u(conn_, st_.upsert_learned);
      u.bind(1, model).bind(2, l.cooldown_until_ns);
      u.bind(3, l.requests.left).bind(4, l.requests.until_ns);
      u.bind(5, l.tokens.left).bind(6, l.tokens.until_ns);
      u.bind(7, l.input.left).bind(8, l.input.until_ns);
      u.bind(9, l.output.left).bind(10, l.output.until_ns).run();
      s.learned_row = true;
    } else if (s.learned_row) {
      Query u(conn_, st_.delete_learned);
      u.bind(1, model).run();
      s.learned_row = false;
    }
    s.learned_dirty = false;
  }
  if (s.has_day) {
    Query u(conn_, st_.upsert_day);
    u.bind(1, model).bind(2, s.day_start).bind(3, s.day_count).run();
  } else if (s.day_row) {
    Query u(conn_, st_.delete_day);
    u.bind(1, model).run();
  }
  s.day_row = s.has_day;
}

// Appends a request (and its tokens) at max(now, newest). Returns its time; the new rowids
// are in last_request_rowid_/last_token_rowid_ (0: no token row).
std::int64_t ModelRows::append(std::string_view model, RowState& s, TokenEstimate estimate) {
  const std::int64_t tokens = saturating_add(estimate.input, estimate.output);
  const std::int64_t ts = std::max(s.now, s.newest);
  {
    Query u(conn_, st_.insert_request);
    u.bind(1, model).bind(2, ts).run();
    last_request_rowid_ = sqlite3_last_insert_rowid(conn_.db());
  }
  last_token_rowid_ = 0;
  if (tokens > 0) {
    Query u(conn_, st_.insert_token);
    u.bind(1, model).bind(2, ts).bind(3, tokens).bind(4, std::min(estimate.output, tokens)).run();
    last_token_rowid_ = sqlite3_last_insert_rowid(conn_.db());
  }
  ++s.requests;
  s.tokens += tokens;
  s.output += std::min(estimate.output, tokens);
  s.newest = ts;
  s.oldest = std::min(s.oldest, ts);
  if (!s.has_day) {
    s.has_day = true;
    s.day_start = ts;
    s.day_count = 0;
  }
  s.day_count = saturating_add(s.day_count, 1);
  return ts;
}

void ModelRows::settle(std::string_view model, std::int64_t model_no, EntryRef entry,
                       const SettleRequest& request, std::int64_t now, const std::string& id,
                       bool* released) {
  const bool from_reservation = request.from_reservation;
  const bool is_commit = request.kind == SettleKind::commit;
  const auto seq = static_cast<std::int64_t>(entry.seq);
  RowState s = load(model);
  if (!from_reservation && (model_no == 0 || s.model_no != model_no || seq >= s.next_seq)) {
    throw OpFailure{{ErrorCode::not_found, std::string(request.operation) + ": no reservation " +
                                               id + " was issued by this database"}};
  }
  std::int64_t ts = 0, est = 0, state = 0, request_rowid = 0, token_rowid = 0, day_gen = 0;
  std::int64_t est_output = 0;
  bool found = false;
  {
    Query u(conn_, st_.get_reservation);
    u.bind(1, model_no).bind(2, seq);
    if (u.row()) {
      found = true;
      ts = u.i64(0);
      est = u.i64(1);
      state = u.i64(2);
      request_rowid = u.i64(3);
      token_rowid = u.is_null(4) ? 0 : u.i64(4);
      day_gen = u.i64(5);
      est_output = std::clamp<std::int64_t>(u.i64(6), 0, est);
    }
  }
  advance(model, s, now, true);
  if (!found) {
    // Issued, and its rows have left the window (and were deleted): by id nothing changes;
    // a Reservation that was never settled still refunds its day.
    if (!is_commit && from_reservation &&
        s.day_gen == static_cast<std::int64_t>(entry.generation) && s.has_day && s.day_count > 0) {
      --s.day_count;
    }
    save(model, s);
    return;
  }
  const bool gone = ts <= s.horizon;
  if (gone) {
    if (!is_commit && from_reservation && state == kReserved && day_gen == s.day_gen && s.has_day &&
        s.day_count > 0) {
      --s.day_count;
      set_reservation(model_no, seq, kCancelled, token_rowid);
    }
    save(model, s);
    return;
  }
  if (state != kReserved) {
    save(model, s);
    throw OpFailure{{ErrorCode::invalid_argument,
                     std::string(request.operation) +
                         ": the reservation is already settled (commit or cancel it once)"}};
  }
  if (is_commit) {
    const std::int64_t total = saturating_add(request.tokens.input, request.tokens.output);
    const std::int64_t output = std::min(request.tokens.output, total);
    const Int128 delta = static_cast<Int128>(total) - est;
    const Int128 delta_output = static_cast<Int128>(output) - est_output;
    if (token_rowid != 0) {
      Query u(conn_, st_.set_token_count);
      u.bind(1, token_rowid).bind(2, total).bind(3, output).run();
    } else if (total > 0) {
      Query u(conn_, st_.insert_token);
      u.bind(1, model).bind(2, ts).bind(3, total).bind(4, output).run();
      token_rowid = sqlite3_last_insert_rowid(conn_.db());
      s.oldest = std::min(s.oldest, ts);
    }
    s.tokens += delta;
    s.output = std::clamp<Int128>(s.output + delta_output, 0, s.tokens);
    set_reservation(model_no, seq, kCommitted, token_rowid);
    // Capacity grew in some dimension: input or output went down.
    *released = delta_output < 0 || (delta - delta_output) < 0;
  } else {
    {
      Query u(conn_, st_.delete_request_rowid);
      u.bind(1, request_rowid).run();
    }
    if (token_rowid != 0) {
      Query u(conn_, st_.delete_token_rowid);
      u.bind(1, token_rowid).run();
    }
    s.requests = std::max<std::int64_t>(0, s.requests - 1);
    s.tokens = std::max<Int128>(0, s.tokens - est);
    s.output = std::clamp<Int128>(s.output - est_output, 0, s.tokens);
    if (day_gen == s.day_gen && s.has_day && s.day_count > 0) --s.day_count;
    // Its reservation row stays until it expires: make sure a deletion pass comes then.
    s.oldest = std::min(s.oldest, ts);
    s.pending = saturating_add(s.pending, 1);
    set_reservation(model_no, seq, kCancelled, token_rowid);
    *released = true;
  }
  save(model, s);
}

void ModelRows::set_reservation(std::int64_t model_no, std::int64_t seq, std::int64_t state,
                                std::int64_t token_rowid) {
  Query u(conn_, st_.set_reservation);
  u.bind(1, model_no).bind(2, seq).bind(3, state);
  if (token_rowid != 0) {
    u.bind(4, token_rowid);
  } else {
    u.bind_null(4);
  }
  u.run();
}

Decision ModelRows::evaluate(std::string_view model, const RowState& s, TokenEstimate estimate) {
  // The probe: the k-th request and the entry where the tokens reach `need`, from the rows in
  // the window in time order. Without such a row (a damaged total), the newest time.
  struct Probe {
    ModelRows& rows;
    std::string_view model;
    const RowState& s;
    std::int64_t request_time(std::int64_t k) {
      Query u(rows.conn_, rows.st_.rpm_nth);
      u.bind(1, model).bind(2, s.horizon).bind(3, k - 1);
      return u.row() ? u.i64(0) : s.newest;
    }
    std::int64_t tokens_time(Int128 need, TokenDim dim) {
      Int128 acc = 0;
      Query u(rows.conn_, rows.st_.tpm_scan);
      u.bind(1, model).bind(2, s.horizon);
      while (u.row()) {
        const std::int64_t count = std::max<std::int64_t>(0, u.i64(1));
        const std::int64_t output = std::clamp<std::int64_t>(u.i64(2), 0, count);
        acc += dim == TokenDim::total ? count : dim == TokenDim::input ? count - output : output;
        if (acc >= need) return u.i64(0);
      }
      return s.newest;
    }
  };
  return detail::evaluate(s.limits(), s.usage(), estimate, s.now, Probe{*this, model, s});
}

void ModelRows::record(std::string_view model, RowState& s, TokenEstimate tokens) {
  append(model, s, tokens);
}

EntryRef ModelRows::reserve(std::string_view model, RowState& s, TokenEstimate estimate) {
  const std::int64_t ts = append(model, s, estimate);
  const std::int64_t tokens = saturating_add(estimate.input, estimate.output);
  if (s.learned.any() && s.learned.spend(estimate.input, estimate.output)) s.learned_dirty = true;
  const std::int64_t seq = s.next_seq++;
  Query u(conn_, st_.insert_reservation);
  u.bind(1, model_no_of(s)).bind(2, seq).bind(3, ts).bind(4, tokens);
  u.bind(8, std::min(estimate.output, tokens));
  u.bind(5, last_request_rowid_);
  if (last_token_rowid_ != 0) {
    u.bind(6, last_token_rowid_);
  } else {
    u.bind_null(6);
  }
  u.bind(7, s.day_gen).run();
  return EntryRef{static_cast<std::uint64_t>(seq), static_cast<std::uint64_t>(s.day_gen)};
}

void ModelRows::reset(std::string_view model) {
  RowState s = load(model);
  if (s.learned_row) {
    Query u(conn_, st_.delete_learned);
    u.bind(1, model).run();
    s.learned_row = false;
    s.learned = Learned{};
  }
  if (!s.has_totals && !s.day_row) return;  // an unknown model: a no-op
  for (sqlite3_stmt* stmt : {st_.reset_requests, st_.reset_tokens}) {
    Query u(conn_, stmt);
    u.bind(1, model).run();
  }
  {
    Query u(conn_, st_.reset_reservations);
    u.bind(1, s.model_no).run();
  }
  s.requests = 0;
  s.tokens = 0;
  s.output = 0;
  s.newest = INT64_MIN;
  s.oldest = kNone;
  s.pending = 0;
  s.has_day = false;
  s.day_start = 0;
  s.day_count = 0;
  ++s.day_gen;
  s.has_totals = true;
  save(model, s);
}

void ModelRows::reset_all() {
  for (const char* sql :
       {"DELETE FROM requests", "DELETE FROM tokens", "DELETE FROM daily",
        "DELETE FROM rl_reservations", "DELETE FROM rl_learned",
        "UPDATE rl_totals SET requests = 0, tokens_hi = 0, tokens_lo = 0, output_hi = 0, "
        "output_lo = 0, newest_ts = "
        "-9223372036854775807 - 1, oldest_ts = 9223372036854775807, pending = 0, "
        "day_gen = day_gen + 1"}) {
    conn_.exec(sql);
  }
}

}  // namespace ratelimit::detail
