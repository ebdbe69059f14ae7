// The Redis store's shared part: scripts, key names, the check script's call and its reply.
#include "store/redis/shared.h"

#include <bit>
#include <charconv>

#include "core/calendar.h"
#include "store/redis/scripts.h"

namespace ratelimit::detail::redis_store {

const RedisScript kCheckScript{"check", std::string(redis_lua::kPrelude) + redis_lua::kCheck};
const RedisScript kRecordScript{"record", std::string(redis_lua::kPrelude) + redis_lua::kRecord};
const RedisScript kSettleScript{"settle", std::string(redis_lua::kPrelude) + redis_lua::kSettle};
const RedisScript kLearnScript{"learn", std::string(redis_lua::kPrelude) + redis_lua::kLearn};
const RedisScript kResetScript{"reset", redis_lua::kReset};
const RedisScript kConfigSetScript{"config", redis_lua::kConfigSet};
const RedisScript kConfigRemoveScript{"config", redis_lua::kConfigRemove};
const RedisScript kProfileSetScript{"profile", redis_lua::kProfileSet};
const RedisScript kSeedScript{"seed", redis_lua::kSeed};

std::string hex(std::uint64_t v) {
  char buf[16];
  auto r = std::to_chars(buf, buf + sizeof buf, v, 16);
  return std::string(buf, r.ptr);
}

// FNV-1a 64: the model's hash tag (a digest, so that no byte of the name reaches the key).
std::uint64_t digest(std::string_view name) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (const char c : name) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

std::optional<std::string> quota_too_big(std::string_view op, std::string_view model,
                                         const ModelQuota& q) {
  for (std::int64_t v : {q.max_rpm, q.max_tpm, q.max_rpd, q.max_input_tpm, q.max_output_tpm}) {
    if (v > kMaxExact) {
      return std::string(op) + ": " + quoted(model) +
             ": a limit above 2^53-1 cannot be kept exactly in Redis (use 0 for unlimited)";
    }
  }
  return std::nullopt;
}

// Negative counts are the rules' business (invalid_tokens), not this bound's.
bool too_big(TokenEstimate t) {
  return t.input > kMaxExact || t.output > kMaxExact ||
         (t.input > 0 && t.output > 0 && t.input + t.output > kMaxExact);
}

namespace {

// Little-endian, as `struct.pack('<...')` writes them (the host's order does not matter).
std::uint64_t load_le(const char* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = v << 8 | static_cast<unsigned char>(p[i]);
  return v;
}

}  // namespace

// The check script's reply: format 1 (a byte), 25 doubles, then two strings each after its
// length (a 4-byte int): now_ns, and the learned limits as 9 space-separated fields (see
// scripts.h). Read in place: no allocation.
std::optional<CheckReply> parse_check(std::string_view p) {
  constexpr char kVersion = 1;
  constexpr std::size_t kNumbers = 25;
  constexpr std::size_t kHead = 1 + 8 * kNumbers;
  if (p.size() < kHead || p[0] != kVersion) return std::nullopt;
  std::int64_t n[kNumbers];
  for (std::size_t i = 0; i < kNumbers; ++i) {
    const double d = std::bit_cast<double>(load_le(p.data() + 1 + 8 * i, 8));
    // Truncated, as Redis turns a Lua number into an integer reply; NaN and beyond ±2^63 are
    // malformed.
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0)) return std::nullopt;
    n[i] = static_cast<std::int64_t>(d);
  }
  std::size_t at = kHead;
  auto text = [&](std::string_view& out) {
    if (p.size() - at < 4) return false;
    const std::size_t len = load_le(p.data() + at, 4);
    at += 4;
    if (p.size() - at < len) return false;
    out = p.substr(at, len);
    at += len;
    return true;
  };
  std::string_view now, learned_text;
  if (!text(now) || !text(learned_text) || at != p.size()) return std::nullopt;
  auto i64 = [&](int i) { return n[i]; };
  CheckReply r;
  r.allowed = i64(0) == 1;
  r.seq = static_cast<std::uint64_t>(i64(1));
  r.gen = static_cast<std::uint64_t>(i64(2));
  r.epoch = static_cast<std::uint64_t>(i64(3));
  r.no = i64(4);
  r.limits.known = i64(5) == 1;
  r.limits.deny_unknown = i64(6) == 1;
  r.has_quota = i64(7) == 1;
  r.limits.quota = ModelQuota{
      i64(8),  i64(9),  i64(10),
      i64(11), i64(12), i64(13) == 1 ? DayStart::pacific_midnight : DayStart::first_request};
  r.usage.requests = i64(14);
  r.usage.tokens = i64(15);
  r.usage.input = i64(16);
  r.usage.output = r.usage.tokens - r.usage.input;
  r.usage.day_started = i64(17) == 1;
  if (r.usage.day_started) {
    r.usage.day_start_ns = i64(18) * 1000;
    r.usage.day_end_ns = i64(19) * 1000;
  }
  r.usage.day_count = i64(20);
  if (std::from_chars(now.data(), now.data() + now.size(), r.now_ns).ec != std::errc()) {
    return std::nullopt;
  }
  for (int k = 0; k < 4; ++k) {
    const std::int64_t us = i64(21 + k);
    r.probe[k] = us < 0 ? -1 : us * 1000;
  }
  // The learned limits: "<cooldown until ns or -> <left> <until ns or ->" x 4.
  constexpr int kLearned = 9;
  std::string_view f[kLearned];
  std::string_view rest = learned_text;
  for (int i = 0; i < kLearned; ++i) {
    const std::size_t sp = rest.find(' ');
    if ((sp == std::string_view::npos) != (i == kLearned - 1)) return std::nullopt;
    f[i] = rest.substr(0, sp);
    rest = sp == std::string_view::npos ? std::string_view() : rest.substr(sp + 1);
  }
  auto learned = [&](int i) {
    std::int64_t x = 0;
    std::from_chars(f[i].data(), f[i].data() + f[i].size(), x);
    return x;
  };
  Learned& l = r.limits.learned;
  l.cooldown_until_ns = f[0] == "-" ? 0 : learned(0);
  Learned::Ceiling* ceilings[4] = {&l.requests, &l.tokens, &l.input, &l.output};
  for (int k = 0; k < 4; ++k) {
    const std::int64_t left = learned(1 + 2 * k);
    if (left >= 0) *ceilings[k] = Learned::Ceiling{left, learned(2 + 2 * k)};
  }
  return r;
}

Decision unchecked_decision() {
  Decision d;
  d.code = DecisionCode::admitted_unchecked;
  d.allowed = true;
  return d;
}

// Runs the check script for `name` and fills `d`; the reply's entry in `entry`.
std::optional<Error> check_model(Shared& s, std::string_view name, int mode, TokenEstimate estimate,
                                 const char* op, Decision& d, EntryRef* entry, std::int64_t* no,
                                 CheckReply* out, const std::vector<std::string>* keys) {
  auto v = s.run_model_reply(
      kCheckScript, name,
      {std::to_string(mode), std::to_string(estimate.input), std::to_string(estimate.output)}, op,
      keys);
  if (!v) return v.error();
  const auto packed = v->string();
  auto r = packed ? parse_check(*packed) : std::nullopt;
  if (!r) {
    return Error{ErrorCode::internal,
                 std::string(op) + ": redis " + s.pool.where() +
                     ": unexpected reply from the check script (another version of ratelimit "
                     "with the same key prefix?)"};
  }
  s.saw_epoch(r->epoch);
  if (mode == 0) {
    d = Decision{};
    d.stats = stats_of(r->limits, r->usage);
  } else {
    evaluate_into(r->limits, r->usage, estimate, r->now_ns, AnsweredProbe{r->probe}, d);
    if (d.allowed != r->allowed) {
      return Error{ErrorCode::internal, std::string(op) +
                                            ": redis: the script and the rules disagree (code " +
                                            std::string(to_string(d.code)) + "); this is a bug"};
    }
  }
  if (entry != nullptr) *entry = EntryRef{r->seq, r->gen};
  if (no != nullptr) *no = r->no;
  if (out != nullptr) *out = std::move(*r);
  return std::nullopt;
}

}  // namespace ratelimit::detail::redis_store
