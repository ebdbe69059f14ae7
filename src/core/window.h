// Internal: one model's sliding 60 s window and day counter.
//
// A ring buffer of entries in time order with running totals. Pruning pops expired entries
// from the front, so decide/record/try-acquire are O(1) amortised whatever the window holds,
// and nothing allocates once the buffer has grown. Per-block sums (64 entries, and 4096
// entries) over the ring let the denied path find the exact retry-after by walking at most
// n/4096 + 3·63 steps, even though commits and cancels change entries in mid-window.
//
// Not thread-safe: the limiter guards each Window with its model's mutex.
#pragma once

#include <cstdint>
#include <vector>

#include "core/rules.h"
#include "core/time_util.h"
#include "ratelimit/decision.h"
#include "ratelimit/quota.h"
#include "store/snapshot.h"

namespace ratelimit::detail {

enum class EntryKind : std::uint8_t {
  recorded,     // record_usage: a request and its tokens
  reserved,     // try_acquire, not yet settled: a request and its estimate
  committed,    // a reservation whose actual tokens replaced the estimate
  cancelled,    // a refunded reservation: counts nothing
  tokens_only,  // tokens without a request (a go-ratelimit file may hold these)
};

struct Entry {
  std::int64_t time_ns;
  std::int64_t input;   // input tokens
  std::int64_t output;  // output tokens
  EntryKind kind;
  std::int64_t tokens() const { return saturating_add(input, output); }
};

enum class SettleOutcome {
  ok,               // settled
  gone,             // issued, but the entry has left the window: nothing changes
  already_settled,  // committed or cancelled before
  not_issued,       // no such reservation
};

class Window {
 public:
  Window();

  // Drops entries that are 60 s old or older, clamps entries and the day start that lie after
  // `now` (the wall clock stepped back) to `now`, and starts a new day once the day `rule`
  // gives has ended (24 h, or the next Pacific midnight).
  void advance(std::int64_t now_ns, DayStart rule = DayStart::first_request);

  // The usage now (call advance(now) first).
  Usage usage() const {
    return Usage{live_requests_, live_tokens_,  live_input_, live_tokens_ - live_input_,
                 day_started_,   day_start_ns_, day_end_ns_, day_count_};
  }
  // The decision rules (core/rules.h) on this window, with this window as the probe: `limits`
  // unknown or unlimited, or the day, the minute's requests and tokens. Call advance(now) first.
  Decision evaluate(const Limits& limits, TokenEstimate estimate, std::int64_t now_ns) const {
    return detail::evaluate(limits, usage(), estimate, now_ns, *this);
  }
  void evaluate_into(const Limits& limits, TokenEstimate estimate, std::int64_t now_ns,
                     Decision& d) const {
    detail::evaluate_into(limits, usage(), estimate, now_ns, *this, d);
  }
  Decision evaluate(const ModelQuota& quota, std::int64_t estimated_tokens,
                    std::int64_t now_ns) const {
    Limits limits;
    limits.known = true;
    limits.quota = quota;
    return evaluate(limits, TokenEstimate{estimated_tokens, 0}, now_ns);
  }
  // The probe of core/rules.h: the time of the k-th live request from the oldest, and of the
  // entry at which the tokens of `dim` from the oldest reach `need`.
  std::int64_t request_time(std::int64_t k) const {
    return at(find_prefix(k, Dim::requests)).time_ns;
  }
  std::int64_t tokens_time(Int128 need, TokenDim dim) const {
    return at(find_prefix(need, dim == TokenDim::total   ? Dim::tokens
                                : dim == TokenDim::input ? Dim::input
                                                         : Dim::output))
        .time_ns;
  }

  // Appends an entry at max(now, newest entry) and counts the request for the day (unless
  // kind is tokens_only). Returns its sequence number.
  std::uint64_t append(std::int64_t now_ns, TokenEstimate tokens, EntryKind kind);
  std::uint64_t append(std::int64_t now_ns, std::int64_t tokens, EntryKind kind) {
    return append(now_ns, TokenEstimate{tokens, 0}, kind);
  }

  // Replaces a reserved entry's tokens. `lowered` tells whether usage went down (in any
  // dimension).
  SettleOutcome commit(std::uint64_t seq, TokenEstimate tokens, bool* lowered);
  SettleOutcome commit(std::uint64_t seq, std::int64_t tokens, bool* lowered) {
    return commit(seq, TokenEstimate{tokens, 0}, lowered);
  }
  // Refunds a reserved entry (request, tokens, and the day count if `generation` is still the
  // current day's). When the entry has already left the window, refunds the day count only
  // if `refund_day_if_gone` (the caller knows the reservation was never settled).
  SettleOutcome cancel(std::uint64_t seq, std::uint64_t generation, bool refund_day_if_gone);

  // Clears all usage (entries and day); reservations issued before settle as `gone`.
  void clear();

  ModelStats stats(const ModelQuota& quota) const {
    Limits limits;
    limits.known = true;
    limits.quota = quota;
    return stats_of(limits, usage());
  }
  std::int64_t requests() const { return live_requests_; }
  std::int64_t tokens() const;  // saturating
  std::int64_t day_count() const { return day_count_; }
  bool day_started() const { return day_started_; }
  std::int64_t day_start_ns() const { return day_start_ns_; }
  std::int64_t day_end_ns() const { return day_end_ns_; }
  // Changes whenever the day counter starts over (new day, clear, import).
  std::uint64_t generation() const { return generation_; }
  std::uint64_t next_seq() const { return next_seq_; }
  std::size_t size() const { return static_cast<std::size_t>(next_seq_ - head_seq_); }
  std::size_t capacity() const { return entries_.size(); }
  // No usage left: no entry and no request today.
  bool idle() const { return next_seq_ == head_seq_ && day_count_ == 0; }

  // The snapshot form (go-ratelimit's file shape).
  ModelState export_state() const;
  // Replaces everything with `state`; entries after `now` are clamped to `now`.
  void import_state(const ModelState& state, std::int64_t now_ns,
                    DayStart rule = DayStart::first_request);

 private:
  static constexpr unsigned kBlockShift = 6;   // 64 entries per block
  static constexpr unsigned kSuperShift = 12;  // 4096 entries per super block
  struct Sum {
    std::uint64_t id = ~std::uint64_t{0};  // which block (seq >> shift) the sums belong to
    std::int64_t requests = 0;
    Int128 tokens = 0;  // input + output
    Int128 input = 0;
  };
  enum class Dim { requests, tokens, input, output };

  Entry& at(std::uint64_t seq) { return entries_[seq & mask_]; }
  const Entry& at(std::uint64_t seq) const { return entries_[seq & mask_]; }
  Sum& block(std::uint64_t seq) { return blocks_[(seq >> kBlockShift) & block_mask_]; }
  void grow();
  void rebuild_sums();
  void add_to_sums(std::uint64_t seq, std::int64_t requests, Int128 tokens, Int128 input);
  // The first sequence number whose cumulative value of `dim` from the front reaches `need`
  // (> 0).
  std::uint64_t find_prefix(Int128 need, Dim dim) const;
  void start_day(std::int64_t t, DayStart rule);

  std::vector<Entry> entries_;  // power-of-two ring
  std::uint64_t mask_ = 0;
  std::vector<Sum> blocks_;  // per 64 entries of the ring
  std::uint64_t block_mask_ = 0;
  std::vector<Sum> supers_;  // per 4096 entries; empty while the ring is smaller
  std::uint64_t super_mask_ = 0;
  std::uint64_t head_seq_ = 0;  // oldest entry
  std::uint64_t next_seq_ = 0;  // one past the newest
  std::int64_t live_requests_ = 0;
  Int128 live_tokens_ = 0;
  Int128 live_input_ = 0;
  bool day_started_ = false;
  std::int64_t day_start_ns_ = 0;
  std::int64_t day_end_ns_ = 0;
  DayStart day_rule_ = DayStart::first_request;
  std::int64_t day_count_ = 0;
  std::uint64_t generation_ = 0;
};

}  // namespace ratelimit::detail
