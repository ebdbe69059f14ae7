#include "core/window.h"

#include <algorithm>

#include "core/calendar.h"

namespace ratelimit::detail {
namespace {

constexpr std::size_t kInitialCapacity = 64;

// A file's token entry as input and output (output clamped into 0..count).
TokenEstimate split(const TokenEntry& t) {
  const std::int64_t count = std::max<std::int64_t>(0, t.count);
  const std::int64_t output = std::clamp<std::int64_t>(t.output, 0, count);
  return TokenEstimate{count - output, output};
}

bool counts_request(EntryKind kind) {
  return kind == EntryKind::recorded || kind == EntryKind::reserved || kind == EntryKind::committed;
}

}  // namespace

Window::Window()
    : entries_(kInitialCapacity),
      mask_(kInitialCapacity - 1),
      blocks_(kInitialCapacity >> kBlockShift),
      block_mask_((kInitialCapacity >> kBlockShift) - 1) {}

std::int64_t day_end_ns(std::int64_t day_start_ns, DayStart rule) {
  if (rule == DayStart::pacific_midnight) return next_pacific_midnight_ns(day_start_ns);
  return saturating_add(day_start_ns, kDayNs);
}

void Window::start_day(std::int64_t t, DayStart rule) {
  day_started_ = true;
  day_start_ns_ = t;
  day_rule_ = rule;
  day_end_ns_ = detail::day_end_ns(t, rule);
}

void Window::advance(std::int64_t now_ns, DayStart rule) {
  // The wall clock stepped back: keep time order by clamping the newest entries to now.
  for (std::uint64_t seq = next_seq_; seq != head_seq_ && at(seq - 1).time_ns > now_ns; --seq) {
    at(seq - 1).time_ns = now_ns;
  }
  // An entry exactly 60 s old has left the window.
  const std::int64_t cutoff = now_ns - kWindowNs;
  while (head_seq_ != next_seq_) {
    const Entry& e = at(head_seq_);
    if (e.time_ns > cutoff) break;
    if (counts_request(e.kind)) --live_requests_;
    live_tokens_ -= Int128{e.input} + e.output;
    live_input_ -= e.input;
    ++head_seq_;
  }
  if (day_started_) {
    if (day_start_ns_ > now_ns || rule != day_rule_) {
      start_day(std::min(day_start_ns_, now_ns), rule);
    }
    if (now_ns >= day_end_ns_) {
      day_started_ = false;
      day_start_ns_ = 0;
      day_end_ns_ = 0;
      day_count_ = 0;
      ++generation_;
    }
  }
  day_rule_ = rule;
}

std::uint64_t Window::append(std::int64_t now_ns, TokenEstimate tokens, EntryKind kind) {
  std::int64_t t = now_ns;
  if (next_seq_ != head_seq_) t = std::max(t, at(next_seq_ - 1).time_ns);
  if (size() == entries_.size()) grow();
  const std::uint64_t seq = next_seq_++;
  if ((seq & ((1u << kBlockShift) - 1)) == 0) block(seq) = Sum{seq >> kBlockShift, 0, 0, 0};
  if (!supers_.empty() && (seq & ((1u << kSuperShift) - 1)) == 0) {
    supers_[(seq >> kSuperShift) & super_mask_] = Sum{seq >> kSuperShift, 0, 0, 0};
  }
  at(seq) = Entry{t, tokens.input, tokens.output, kind};
  const std::int64_t requests = counts_request(kind) ? 1 : 0;
  const Int128 total = Int128{tokens.input} + tokens.output;
  live_requests_ += requests;
  live_tokens_ += total;
  live_input_ += tokens.input;
  add_to_sums(seq, requests, total, tokens.input);
  if (requests != 0) {
    if (!day_started_) start_day(t, day_rule_);
    day_count_ = saturating_add(day_count_, 1);
  }
  return seq;
}

SettleOutcome Window::commit(std::uint64_t seq, TokenEstimate tokens, bool* lowered) {
  *lowered = false;
  if (seq >= next_seq_) return SettleOutcome::not_issued;
  if (seq < head_seq_) return SettleOutcome::gone;
  Entry& e = at(seq);
  if (e.kind == EntryKind::committed || e.kind == EntryKind::cancelled) {
    return SettleOutcome::already_settled;
  }
  if (e.kind != EntryKind::reserved) return SettleOutcome::not_issued;
  const Int128 d_input = static_cast<Int128>(tokens.input) - e.input;
  const Int128 d_output = static_cast<Int128>(tokens.output) - e.output;
  live_tokens_ += d_input + d_output;
  live_input_ += d_input;
  add_to_sums(seq, 0, d_input + d_output, d_input);
  *lowered = d_input < 0 || d_output < 0;
  e.input = tokens.input;
  e.output = tokens.output;
  e.kind = EntryKind::committed;
  return SettleOutcome::ok;
}

SettleOutcome Window::cancel(std::uint64_t seq, std::uint64_t generation, bool refund_day_if_gone) {
  if (seq >= next_seq_) return SettleOutcome::not_issued;
  const bool same_day = generation == generation_ && day_count_ > 0;
  if (seq < head_seq_) {
    if (refund_day_if_gone && same_day) --day_count_;
    return SettleOutcome::gone;
  }
  Entry& e = at(seq);
  if (e.kind == EntryKind::committed || e.kind == EntryKind::cancelled) {
    return SettleOutcome::already_settled;
  }
  if (e.kind != EntryKind::reserved) return SettleOutcome::not_issued;
  --live_requests_;
  const Int128 total = Int128{e.input} + e.output;
  live_tokens_ -= total;
  live_input_ -= e.input;
  add_to_sums(seq, -1, -total, -Int128{e.input});
  e.input = 0;
  e.output = 0;
  e.kind = EntryKind::cancelled;
  if (same_day) --day_count_;
  return SettleOutcome::ok;
}

void Window::clear() {
  head_seq_ = next_seq_;
  live_requests_ = 0;
  live_tokens_ = 0;
  live_input_ = 0;
  day_started_ = false;
  day_start_ns_ = 0;
  day_end_ns_ = 0;
  day_count_ = 0;
  ++generation_;
}

std::int64_t Window::tokens() const { return clamp_to_int64(live_tokens_); }

void Window::grow() {
  const std::size_t capacity = entries_.size() * 2;
  std::vector<Entry> bigger(capacity);
  const std::uint64_t mask = capacity - 1;
  for (std::uint64_t seq = head_seq_; seq != next_seq_; ++seq) bigger[seq & mask] = at(seq);
  entries_.swap(bigger);
  mask_ = mask;
  rebuild_sums();
}

void Window::rebuild_sums() {
  const std::size_t capacity = entries_.size();
  blocks_.assign(capacity >> kBlockShift, Sum{});
  block_mask_ = blocks_.size() - 1;
  if (capacity >= (std::size_t{1} << kSuperShift)) {
    supers_.assign(capacity >> kSuperShift, Sum{});
    super_mask_ = supers_.size() - 1;
  } else {
    supers_.clear();
    super_mask_ = 0;
  }
  for (std::uint64_t seq = head_seq_; seq != next_seq_; ++seq) {
    Sum& b = block(seq);
    if (b.id != (seq >> kBlockShift)) b = Sum{seq >> kBlockShift, 0, 0, 0};
    if (!supers_.empty()) {
      Sum& s = supers_[(seq >> kSuperShift) & super_mask_];
      if (s.id != (seq >> kSuperShift)) s = Sum{seq >> kSuperShift, 0, 0, 0};
    }
    const Entry& e = at(seq);
    add_to_sums(seq, counts_request(e.kind) ? 1 : 0, Int128{e.input} + e.output, e.input);
  }
}

void Window::add_to_sums(std::uint64_t seq, std::int64_t requests, Int128 tokens, Int128 input) {
  // A block slot is reused when the ring wraps; entries of its previous incarnation that are
  // still at the head of the window must not touch the new incarnation's sums.
  Sum& b = block(seq);
  if (b.id == (seq >> kBlockShift)) {
    b.requests += requests;
    b.tokens += tokens;
    b.input += input;
  }
  if (!supers_.empty()) {
    Sum& s = supers_[(seq >> kSuperShift) & super_mask_];
    if (s.id == (seq >> kSuperShift)) {
      s.requests += requests;
      s.tokens += tokens;
      s.input += input;
    }
  }
}

std::uint64_t Window::find_prefix(Int128 need, Dim dim) const {
  constexpr std::uint64_t kBlock = std::uint64_t{1} << kBlockShift;
  constexpr std::uint64_t kSuper = std::uint64_t{1} << kSuperShift;
  auto value = [&](std::uint64_t seq) -> Int128 {
    const Entry& e = at(seq);
    switch (dim) {
      case Dim::requests:
        return counts_request(e.kind) ? 1 : 0;
      case Dim::tokens:
        return Int128{e.input} + e.output;
      case Dim::input:
        return e.input;
      case Dim::output:
        break;
    }
    return e.output;
  };
  auto sum_value = [&](const Sum& s) -> Int128 {
    switch (dim) {
      case Dim::requests:
        return s.requests;
      case Dim::tokens:
        return s.tokens;
      case Dim::input:
        return s.input;
      case Dim::output:
        break;
    }
    return s.tokens - s.input;
  };
  Int128 acc = 0;
  std::uint64_t seq = head_seq_;
  // The head block may be partly expired (and its slot reused): walk it entry by entry.
  for (; seq != next_seq_ && (seq & (kBlock - 1)) != 0; ++seq) {
    acc += value(seq);
    if (acc >= need) return seq;
  }
  while (seq != next_seq_) {
    if (!supers_.empty() && (seq & (kSuper - 1)) == 0 && next_seq_ - seq >= kSuper) {
      const Int128 v = sum_value(supers_[(seq >> kSuperShift) & super_mask_]);
      if (acc + v < need) {
        acc += v;
        seq += kSuper;
        continue;
      }
    }
    if (next_seq_ - seq >= kBlock) {
      const Int128 v = sum_value(blocks_[(seq >> kBlockShift) & block_mask_]);
      if (acc + v < need) {
        acc += v;
        seq += kBlock;
        continue;
      }
    }
    const std::uint64_t end = std::min(seq + kBlock, next_seq_);
    for (; seq != end; ++seq) {
      acc += value(seq);
      if (acc >= need) return seq;
    }
  }
  // Unreachable while the totals agree with the entries; the newest entry is the safe answer.
  return next_seq_ - 1;
}

ModelState Window::export_state() const {
  ModelState s;
  for (std::uint64_t seq = head_seq_; seq != next_seq_; ++seq) {
    const Entry& e = at(seq);
    if (counts_request(e.kind)) s.requests.push_back(e.time_ns);
    if (e.kind != EntryKind::cancelled && e.tokens() > 0) {
      s.tokens.push_back({e.time_ns, e.tokens(), e.output});
    }
  }
  s.day_start_ns = day_started_ ? day_start_ns_ : 0;
  s.day_count = day_started_ ? day_count_ : 0;
  return s;
}

void Window::import_state(const ModelState& state, std::int64_t now_ns, DayStart rule) {
  clear();
  day_rule_ = rule;
  // Merge the request and token lists by time: a request and a token entry with the same time
  // are one recorded call (go-ratelimit writes both with the same timestamp).
  std::size_t r = 0, k = 0;
  while (r < state.requests.size() || k < state.tokens.size()) {
    const bool take_request =
        r < state.requests.size() &&
        (k >= state.tokens.size() || state.requests[r] <= state.tokens[k].time_ns);
    if (take_request) {
      TokenEstimate tokens;
      if (k < state.tokens.size() && state.tokens[k].time_ns == state.requests[r]) {
        tokens = split(state.tokens[k++]);
      }
      append(std::min(state.requests[r++], now_ns), tokens, EntryKind::recorded);
    } else {
      append(std::min(state.tokens[k].time_ns, now_ns), split(state.tokens[k]),
             EntryKind::tokens_only);
      ++k;
    }
  }
  // The day is the file's, not the one the appends above started.
  if (state.day_start_ns != 0) {
    start_day(std::min(state.day_start_ns, now_ns), rule);
    day_count_ = std::max<std::int64_t>(0, state.day_count);
  } else {
    day_started_ = false;
    day_start_ns_ = 0;
    day_end_ns_ = 0;
    day_count_ = 0;
  }
  ++generation_;
  advance(now_ns, rule);
}

}  // namespace ratelimit::detail
