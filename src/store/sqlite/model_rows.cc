#include "store/sqlite/model_rows.h"

#include <algorithm>

#include "limiter/validation.h"

namespace ratelimit::detail {
namespace {

// Expired rows are deleted once this many wait, up to four batches at a time: a page is
// rewritten once per batch, not per row, and a backlog (after an idle spell) drains quickly.
constexpr std::int64_t kDeleteBatch = 64;

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
  s.config_version = u.is_null(36) ? 0 : u.i64(36);
  seen_config = s.config_version;
  if (u.i64(3) != 0) {
    s.has_quota = true;
    s.quota = ModelQuota{
        u.i64(0), u.i64(1), u.i64(2),
        u.i64(4), u.i64(5), u.i64(6) == 1 ? DayStart::pacific_midnight : DayStart::first_request};
    if (s.quota.max_rpm < 0) corrupt(model, "quotas.max_rpm", s.quota.max_rpm);
    if (s.quota.max_tpm < 0) corrupt(model, "quotas.max_tpm", s.quota.max_tpm);
    if (s.quota.max_rpd < 0) corrupt(model, "quotas.max_rpd", s.quota.max_rpd);
    if (s.quota.max_input_tpm < 0) corrupt(model, "quotas.max_input_tpm", s.quota.max_input_tpm);
    if (s.quota.max_output_tpm < 0) {
      corrupt(model, "quotas.max_output_tpm", s.quota.max_output_tpm);
    }
  }
  if (!u.is_null(34)) {
    const std::string policy = u.text(34);
    if (auto p = unknown_model_policy_from_string(policy)) {
      s.unknown.policy = *p;
      if (*p == UnknownModelPolicy::default_quota) {
        auto q = decode_quota(u.text(35));
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
  if (u.i64(24) != 0) {
    s.learned_row = true;
    s.learned.cooldown_until_ns = u.i64(25);
    s.learned.requests = {u.i64(26), u.i64(27)};
    s.learned.tokens = {u.i64(28), u.i64(29)};
    s.learned.input = {u.i64(30), u.i64(31)};
    s.learned.output = {u.i64(32), u.i64(33)};
  }
  s.has_model = !u.is_null(8);
  s.model_no = u.i64(8);
  if (u.i64(7) != 0) {
    s.has_totals = true;
    s.next_seq = u.i64(9);
    s.requests = u.i64(10);
    s.tokens = join_hi_lo(u.i64(11), u.i64(12));
    s.output = join_hi_lo(u.i64(13), u.i64(14));
    s.horizon = u.i64(15);
    s.head_seq = u.i64(16);
    s.tail_seq = u.i64(17);
    s.newest = u.i64(18);
    s.oldest = u.i64(19);
    s.has_day = u.i64(20) != 0;
    s.day_start = u.i64(21);
    s.day_count = u.i64(22);
    s.day_gen = u.i64(23);
    if (s.requests < 0) corrupt(model, "rl_log.requests (totals row)", s.requests);
    if (s.tokens < 0) corrupt(model, "rl_log.tokens (totals row)", u.i64(11));
    if (s.output < 0 || s.output > s.tokens) {
      corrupt(model, "rl_log.output (totals row)", u.i64(13));
    }
    if (s.day_count < 0) corrupt(model, "rl_log.day_count (totals row)", s.day_count);
    if (s.head_seq < s.tail_seq || s.next_seq < s.head_seq) {
      corrupt(model, "rl_log.head_seq (totals row)", -1);
    }
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
    move_horizon(s, floor->second);
  }
  if (s.newest > now || h < s.horizon || (s.has_day && s.day_start > now)) {
    // The clock is behind the database (it stepped back, or another process's clock is
    // ahead): rows and the day are clamped to `now`, as the in-process store does, and that
    // is a write (rare), so that what a read saw stays true. (`now` is read after the
    // snapshot, so a commit of this machine's clock is never ahead of it.)
    if (!write) return false;
    if (h < s.horizon) {
      // Rows before head_seq are not in the totals: delete them all (rare), then lower the
      // horizon so that rows clamped to `now` still count.
      delete_expired(s, -1);
      s.horizon = h;
    }
    if (s.newest > now) {
      Query u(conn_, st_.clamp_log);
      u.bind(1, s.model_no).bind(2, s.head_seq).bind(3, now).run();
      s.newest = now;
      s.oldest = std::min(s.oldest, now);
    }
  }
  s.now = now;
  if (s.learned.any() && s.learned.expire(now)) s.learned_dirty = true;  // written by a write
  if (s.has_day && s.day_start > now) s.day_start = now;
  if (s.has_day && now >= day_end_ns(s.day_start, s.day_rule())) {
    if (!write) return false;  // a new day is written once (once a day), so that it stays new
    s.has_day = false;
    s.day_start = 0;
    s.day_count = 0;
    ++s.day_gen;
  }
  // Expired rows: a read subtracts them without writing, however many (each write walks
  // only what expired since the last one).
  if (h > s.horizon) move_horizon(s, h);
  // A write persists the horizon; a read remembers how far it moved it.
  if (write || floor == floors_.end() || s.horizon > floor->second) {
    if (floor != floors_.end()) {
      floor->second = s.horizon;
    } else {
      floors_.emplace(std::string(model), s.horizon);
    }
  }
  // Deleting in batches: a page is rewritten once per kDeleteBatch expired rows, not per row.
  if (write && s.head_seq - s.tail_seq >= kDeleteBatch) delete_expired(s, 4 * kDeleteBatch);
  return true;
}

void ModelRows::move_horizon(RowState& s, std::int64_t h) {
  if (s.oldest <= h && s.model_no != 0) {
    std::int64_t head = s.next_seq;
    std::int64_t oldest = kNone;
    std::int64_t n = 0;
    Int128 sum = 0, out = 0;
    Query u(conn_, st_.scan_log);
    u.bind(1, s.model_no).bind(2, s.head_seq);
    while (u.row()) {
      if (u.i64(1) > h) {
        head = u.i64(0);
        oldest = u.i64(1);
        break;
      }
      if (u.i64(5) == kCancelled) continue;  // refunded when cancelled
      n += u.i64(2) != 0 ? 1 : 0;
      const std::int64_t count = std::max<std::int64_t>(0, u.i64(3));
      sum += count;
      out += std::clamp<std::int64_t>(u.i64(4), 0, count);
    }
    s.requests = std::max<std::int64_t>(0, s.requests - n);
    s.tokens = std::max<Int128>(0, s.tokens - sum);
    s.output = std::clamp<Int128>(s.output - out, 0, s.tokens);
    s.head_seq = head;
    s.oldest = oldest;
  }
  s.horizon = h;
}

void ModelRows::delete_expired(RowState& s, std::int64_t limit) {
  if (s.model_no == 0 || s.tail_seq >= s.head_seq) return;
  const std::int64_t end = limit < 0 ? s.head_seq : std::min(s.head_seq, s.tail_seq + limit);
  Query u(conn_, st_.delete_log);
  u.bind(1, s.model_no).bind(2, s.tail_seq).bind(3, end).run();
  s.tail_seq = end;
}

std::int64_t ModelRows::model_no_of(RowState& s) {
  if (s.model_no == 0) {
    Query u(conn_, st_.next_model_no);
    s.model_no = u.row() ? u.i64(0) : 1;
  }
  return s.model_no;
}

void ModelRows::save(std::string_view model, RowState& s) {
  if (!s.has_model) {
    Query u(conn_, st_.insert_model);
    u.bind(1, model).bind(2, model_no_of(s)).run();
    s.has_model = true;
  }
  {
    Query u(conn_, s.has_totals ? st_.update_totals : st_.upsert_totals);
    u.bind(1, model_no_of(s)).bind(2, s.next_seq).bind(3, s.requests);
    u.bind(4, hi_of(s.tokens)).bind(5, lo_of(s.tokens));
    u.bind(6, hi_of(s.output)).bind(7, lo_of(s.output));
    u.bind(8, s.horizon).bind(9, s.head_seq).bind(10, s.tail_seq);
    u.bind(11, s.newest).bind(12, s.oldest).bind(13, s.has_day ? 1 : 0);
    u.bind(14, s.day_start).bind(15, s.day_count).bind(16, s.day_gen).run();
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
}

std::int64_t ModelRows::append(RowState& s, TokenEstimate estimate, std::int64_t state) {
  const std::int64_t tokens = saturating_add(estimate.input, estimate.output);
  const std::int64_t output = std::min(estimate.output, tokens);
  const std::int64_t ts = std::max(s.now, s.newest);
  if (!s.has_day) {
    s.has_day = true;
    s.day_start = ts;
    s.day_count = 0;
  }
  const std::int64_t seq = s.next_seq++;
  {
    Query u(conn_, st_.insert_log);
    u.bind(1, model_no_of(s)).bind(2, seq).bind(3, ts).bind(4, 1).bind(5, tokens);
    u.bind(6, output).bind(7, state).bind(8, s.day_gen).run();
  }
  ++s.requests;
  s.tokens += tokens;
  s.output += output;
  s.newest = ts;
  s.oldest = std::min(s.oldest, ts);
  s.day_count = saturating_add(s.day_count, 1);
  return seq;
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
  std::int64_t est = 0, est_output = 0, state = 0, day_gen = 0;
  bool found = false;
  if (model_no != 0 && model_no == s.model_no) {
    Query u(conn_, st_.get_log);
    u.bind(1, model_no).bind(2, seq);
    if (u.row()) {
      found = true;
      est = std::max<std::int64_t>(0, u.i64(1));
      est_output = std::clamp<std::int64_t>(u.i64(2), 0, est);
      state = u.i64(3);
      day_gen = u.i64(4);
    }
  }
  advance(model, s, now, true);
  const bool gone = !found || seq < s.head_seq;
  if (gone) {
    // Issued, and it has left the window (its row may be deleted): by id nothing changes; a
    // Reservation that was never settled still refunds its day.
    const bool unsettled = found ? state == kReserved : true;
    const std::int64_t gen = found ? day_gen : static_cast<std::int64_t>(entry.generation);
    if (!is_commit && from_reservation && unsettled && gen == s.day_gen && s.has_day &&
        s.day_count > 0) {
      --s.day_count;
      if (found) {
        Query u(conn_, st_.set_log);
        u.bind(1, model_no).bind(2, seq).bind(3, est).bind(4, est_output);
        u.bind(5, kCancelled).run();
      }
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
  Query u(conn_, st_.set_log);
  u.bind(1, model_no).bind(2, seq);
  if (is_commit) {
    const std::int64_t total = saturating_add(request.tokens.input, request.tokens.output);
    const std::int64_t output = std::min(request.tokens.output, total);
    const Int128 delta = static_cast<Int128>(total) - est;
    const Int128 delta_output = static_cast<Int128>(output) - est_output;
    u.bind(3, total).bind(4, output).bind(5, kCommitted).run();
    s.tokens = std::max<Int128>(0, s.tokens + delta);
    s.output = std::clamp<Int128>(s.output + delta_output, 0, s.tokens);
    // Capacity grew in some dimension: input or output went down.
    *released = delta_output < 0 || (delta - delta_output) < 0;
  } else {
    u.bind(3, est).bind(4, est_output).bind(5, kCancelled).run();
    s.requests = std::max<std::int64_t>(0, s.requests - 1);
    s.tokens = std::max<Int128>(0, s.tokens - est);
    s.output = std::clamp<Int128>(s.output - est_output, 0, s.tokens);
    if (day_gen == s.day_gen && s.has_day && s.day_count > 0) --s.day_count;
    *released = true;
  }
  save(model, s);
}

Decision ModelRows::evaluate(std::string_view model, const RowState& s, TokenEstimate estimate) {
  // The probe: the k-th request and the entry where the tokens reach `need`, from the rows in
  // the window in time order. Without such a row (a damaged total), the newest time.
  struct Probe {
    ModelRows& rows;
    std::string_view model;
    const RowState& s;
    // (A read may see rows after now when the clock is behind the database: taken as now.)
    std::int64_t request_time(std::int64_t k) {
      Query u(rows.conn_, rows.st_.rpm_nth);
      u.bind(1, s.model_no).bind(2, s.head_seq).bind(3, k - 1);
      return std::min(u.row() ? u.i64(0) : s.newest, s.now);
    }
    std::int64_t tokens_time(Int128 need, TokenDim dim) {
      Int128 acc = 0;
      Query u(rows.conn_, rows.st_.tpm_scan);
      u.bind(1, s.model_no).bind(2, s.head_seq);
      while (u.row()) {
        const std::int64_t count = std::max<std::int64_t>(0, u.i64(1));
        const std::int64_t output = std::clamp<std::int64_t>(u.i64(2), 0, count);
        acc += dim == TokenDim::total ? count : dim == TokenDim::input ? count - output : output;
        if (acc >= need) return std::min(u.i64(0), s.now);
      }
      return std::min(s.newest, s.now);
    }
  };
  return detail::evaluate(s.limits(), s.usage(), estimate, s.now, Probe{*this, model, s});
}

void ModelRows::record(std::string_view, RowState& s, TokenEstimate tokens) {
  append(s, tokens, kCommitted);
}

EntryRef ModelRows::reserve(std::string_view, RowState& s, TokenEstimate estimate) {
  if (s.learned.any() && s.learned.spend(estimate.input, estimate.output)) s.learned_dirty = true;
  const std::int64_t seq = append(s, estimate, kReserved);
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
  if (!s.has_totals) return;  // an unknown model: a no-op
  {
    Query u(conn_, st_.reset_log);
    u.bind(1, s.model_no).run();
  }
  s.requests = 0;
  s.tokens = 0;
  s.output = 0;
  s.newest = INT64_MIN;
  s.oldest = kNone;
  s.head_seq = s.tail_seq = s.next_seq;
  s.has_day = false;
  s.day_start = 0;
  s.day_count = 0;
  ++s.day_gen;
  save(model, s);
}

void ModelRows::reset_all() {
  for (const char* sql :
       {"DELETE FROM rl_log WHERE seq < 9223372036854775807", "DELETE FROM rl_learned",
        "UPDATE rl_log SET requests = 0, tokens_hi = 0, tokens = 0, output_hi = 0, output = 0, "
        "ts = -9223372036854775807 - 1, oldest_ts = 9223372036854775807, head_seq = next_seq, "
        "tail_seq = next_seq, has_day = 0, day_start = 0, day_count = 0, day_gen = day_gen + 1 "
        "WHERE seq = 9223372036854775807"}) {
    conn_.exec(sql);
  }
}

}  // namespace ratelimit::detail
