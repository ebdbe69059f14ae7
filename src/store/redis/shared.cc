// The Redis store's shared part: scripts, key names, the check script's call and its reply.
#include "store/redis/shared.h"

#include <bit>
#include <charconv>
#include <cstring>

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

// Little-endian, as `struct.pack('<...')` writes them.
template <class T>
T load_le(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  if constexpr (std::endian::native == std::endian::big) {
    T r = 0;
    for (std::size_t i = 0; i < sizeof v; ++i) r = r << 8 | ((v >> (8 * i)) & 0xff);
    v = r;
  }
  return v;
}

}  // namespace

// The check script's reply: format 1 (a byte), flags (a byte), 15 doubles and 4 more when not
// allowed, then two strings each after its length (a 4-byte int): now_ns, and the learned
// limits as 9 space-separated fields (see scripts.h). Read in place: no allocation.
std::optional<CheckReply> parse_check(std::string_view p) {
  constexpr char kVersion = 1;
  constexpr std::size_t kNumbers = 15, kProbes = 4;
  if (p.size() < 2 || p[0] != kVersion) return std::nullopt;
  const unsigned flags = static_cast<unsigned char>(p[1]);
  const bool allowed = (flags & 1) != 0;
  const std::size_t count = allowed ? kNumbers : kNumbers + kProbes;
  const std::size_t head = 2 + 8 * count;
  if (flags > 63 || p.size() < head) return std::nullopt;
  std::int64_t n[kNumbers + kProbes] = {};
  for (std::size_t i = 0; i < count; ++i) {
    const double d = std::bit_cast<double>(load_le<std::uint64_t>(p.data() + 2 + 8 * i));
    // Truncated, as Redis turns a Lua number into an integer reply; NaN and beyond ±2^63 are
    // malformed.
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0)) return std::nullopt;
    n[i] = static_cast<std::int64_t>(d);
  }
  std::size_t at = head;
  auto text = [&](std::string_view& out) {
    if (p.size() - at < 4) return false;
    const std::size_t len = load_le<std::uint32_t>(p.data() + at);
    at += 4;
    if (p.size() - at < len) return false;
    out = p.substr(at, len);
    at += len;
    return true;
  };
  std::string_view now, learned_text;
  if (!text(now) || !text(learned_text) || at != p.size()) return std::nullopt;
  CheckReply r;
  r.allowed = allowed;
  r.limits.known = (flags & 2) != 0;
  r.limits.deny_unknown = (flags & 4) != 0;
  r.has_quota = (flags & 8) != 0;
  r.seq = static_cast<std::uint64_t>(n[0]);
  r.gen = static_cast<std::uint64_t>(n[1]);
  r.epoch = static_cast<std::uint64_t>(n[2]);
  r.no = n[3];
  r.limits.quota = ModelQuota{
      n[4], n[5], n[6],
      n[7], n[8], (flags & 16) != 0 ? DayStart::pacific_midnight : DayStart::first_request};
  r.usage.requests = n[9];
  r.usage.tokens = n[10];
  r.usage.input = n[11];
  r.usage.output = r.usage.tokens - r.usage.input;
  r.usage.day_started = (flags & 32) != 0;
  if (r.usage.day_started) {
    r.usage.day_start_ns = n[12] * 1000;
    r.usage.day_end_ns = n[13] * 1000;
  }
  r.usage.day_count = n[14];
  if (std::from_chars(now.data(), now.data() + now.size(), r.now_ns).ec != std::errc()) {
    return std::nullopt;
  }
  for (std::size_t k = 0; k < kProbes; ++k) {
    const std::int64_t us = allowed ? -1 : n[kNumbers + k];
    r.probe[k] = us < 0 ? -1 : us * 1000;
  }
  // The learned limits: "<cooldown until ns or -> <left> <until ns or ->" x 4.
  if (learned_text == "- -1 - -1 - -1 - -1 -") return r;  // none (the common case)
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
