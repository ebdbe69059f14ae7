// Internal: what the Redis store's handles share (the connection pool, the key names, the
// clock), the scripts' calls and the decoding of their replies. See redis_store.cc.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/calendar.h"
#include "core/rules.h"
#include "limiter/validation.h"
#include "ratelimit/config.h"
#include "ratelimit/decision.h"
#include "ratelimit/model_name.h"
#include "store/redis/connection.h"
#include "store/store.h"
#include "util/mutex.h"

namespace ratelimit::detail::redis_store {

using Type = RedisValue::Type;

// Redis numbers are doubles inside Lua: counts beyond 2^53 - 1 would not compare exactly.
constexpr std::int64_t kMaxExact = (std::int64_t{1} << 53) - 1;
constexpr std::uint64_t kByIdFlag = std::uint64_t{1} << 63;  // EntryRef.generation of an id

extern const RedisScript kCheckScript, kRecordScript, kSettleScript, kLearnScript, kResetScript,
    kConfigSetScript, kConfigRemoveScript, kProfileSetScript, kSeedScript;

std::string hex(std::uint64_t v);
// FNV-1a 64: the model's hash tag (a digest, so that no byte of the name reaches the key).
std::uint64_t digest(std::string_view name);
std::optional<std::string> quota_too_big(std::string_view op, std::string_view model,
                                         const ModelQuota& q);
// Negative counts are the rules' business (invalid_tokens), not this bound's.
bool too_big(TokenEstimate t);

// What a check script answers, turned into the rules' inputs.
struct CheckReply {
  bool allowed = false;
  std::uint64_t seq = 0;
  std::uint64_t gen = 0;
  std::uint64_t epoch = 0;
  std::int64_t no = 0;
  bool has_quota = false;
  Limits limits;
  Usage usage;
  std::int64_t now_ns = 0;
  std::int64_t probe[4] = {-1, -1, -1, -1};  // request, total, input, output (ns)
};

// The check script's reply (one packed string, see scripts.h); nullopt when malformed.
std::optional<CheckReply> parse_check(std::string_view packed);

// The probe of core/rules.h, answered by the script (it walked the entries in Redis).
struct AnsweredProbe {
  const std::int64_t* t;
  std::int64_t request_time(std::int64_t) const { return t[0]; }
  std::int64_t tokens_time(Int128, TokenDim dim) const {
    return dim == TokenDim::total ? t[1] : dim == TokenDim::input ? t[2] : t[3];
  }
};

// What a check answers while Redis fails: store_unavailable, or under fail_open
// admitted_unchecked.
Decision unchecked_decision();

// The connection and what every handle shares; a Reservation may outlive the store.
class Shared {
 public:
  Shared(const Config& config, RedisOptions options, std::string key_prefix)
      : pool(std::move(options)),
        fail_open(config.redis_failure_policy == RedisFailurePolicy::fail_open),
        clock_(config.clock),
        client_clock_(config.redis_use_client_clock),
        prefix_(std::move(key_prefix)),
        meta_(prefix_ + ":{cfg}:meta"),
        quotas_(prefix_ + ":{cfg}:quotas"),
        aliases_(prefix_ + ":{cfg}:aliases"),
        numbers_(prefix_ + ":{cfg}:models") {}

  RedisPool pool;
  const bool fail_open;  // Config::redis_failure_policy
  std::atomic<bool> closed{false};
  std::atomic<std::uint64_t> epoch{0};
  std::atomic<std::uint64_t> skipped{0};
  std::string store_id;  // set once at open, before any handle exists

  const std::string& meta() const { return meta_; }
  const std::string& quotas() const { return quotas_; }
  const std::string& aliases() const { return aliases_; }
  const std::string& numbers() const { return numbers_; }

  Error closed_error(const char* op) const {
    return Error{ErrorCode::closed, std::string(op) + ": the limiter is closed (open a new one)"};
  }

  // T Z E X of one model, then M Q N.
  std::vector<std::string> model_keys(std::string_view name) const {
    const std::string base = prefix_ + ":{m-" + hex(digest(name)) + "}:";
    return {base + "t", base + "z", base + "e", base + "x", meta_, quotas_, numbers_};
  }

  // Runs a model script: ARGV name, the time (or "" for the server's), midnights, `extra`.
  // `keys`: the model's (model_keys(name)) when the caller keeps them.
  Result<RedisValue> run_model(const RedisScript& script, std::string_view name,
                               std::vector<std::string> extra, const char* op,
                               const std::vector<std::string>* keys = nullptr) {
    auto r = run_model_reply(script, name, std::move(extra), op, keys);
    if (!r) return tl::unexpected(std::move(r.error()));
    return r->value();
  }

  // The same, the reply read in place (see RedisReply); an error reply is an Error here too.
  Result<RedisReply> run_model_reply(const RedisScript& script, std::string_view name,
                                     std::vector<std::string> extra, const char* op,
                                     const std::vector<std::string>* keys = nullptr) {
    std::vector<std::string> args;
    args.reserve(4 + extra.size());
    args.emplace_back(name);
    const std::int64_t base_ns = client_clock_ ? to_ns(clock_->now()) : system_now_ns();
    if (client_clock_) {
      const std::int64_t ns = std::max<std::int64_t>(0, base_ns);
      args.push_back(std::to_string(ns / 1000));
      args.push_back(std::to_string(ns));
    } else {
      args.emplace_back();
      args.emplace_back();
    }
    args.push_back(midnights(base_ns));
    for (auto& a : extra) args.push_back(std::move(a));
    auto v = keys != nullptr ? pool.eval_reply(script, *keys, args, op)
                             : pool.eval_reply(script, model_keys(name), args, op);
    if (v && v->is_error()) return tl::unexpected(reply_error(op, v->value()));
    return v;
  }

  Result<RedisValue> run(const RedisScript& script, std::vector<std::string> keys,
                         std::vector<std::string> args, const char* op) {
    auto v = pool.eval(script, keys, args, op);
    if (v && v->is_error()) return tl::unexpected(reply_error(op, *v));
    return v;
  }

  Result<RedisValue> command(const std::vector<std::string>& argv, const char* op) {
    auto v = pool.command(argv, op);
    if (v && v->is_error()) return tl::unexpected(reply_error(op, *v));
    return v;
  }

  Error reply_error(const char* op, const RedisValue& v) const {
    if (v.str.find("RL_COLLISION") != std::string::npos) {
      return Error{ErrorCode::corrupt_state,
                   std::string(op) + ": redis " + pool.where() +
                       ": two model names share one key digest; use another Config::key_prefix "
                       "for one of them"};
    }
    if (v.str.find("RL_VERSION") != std::string::npos) {
      return Error{ErrorCode::corrupt_state,
                   std::string(op) + ": redis " + pool.where() +
                       ": the model's state was written by another version of ratelimit; run "
                       "every client at one version, or give this one another Config::key_prefix"};
    }
    return Error{ErrorCode::unavailable,
                 std::string(op) + ": redis " + pool.where() + ": " + v.str +
                     " (the server refused the command; check its logs and memory limit)"};
  }

  void saw_epoch(std::uint64_t e) { epoch.store(e, std::memory_order_release); }

  // Names the model-name rule refuses are skipped, each counted and named once.
  bool valid_name(const std::string& model) RL_EXCLUDES(warn_mu_) {
    auto problem = model_name_problem(model);
    if (!problem) return true;
    MutexLock lock(warn_mu_);
    if (warned_.insert(model).second) skipped.fetch_add(1, std::memory_order_relaxed);
    return false;
  }

 private:
  static std::int64_t system_now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

  // The Pacific midnights (µs) from two days before `base_ns` to three after: the script takes
  // the first after a day's start. Computed once per Pacific day.
  std::string midnights(std::int64_t base_ns) RL_EXCLUDES(cal_mu_) {
    MutexLock lock(cal_mu_);
    if (!(base_ns >= cal_from_ && base_ns < cal_to_)) {
      constexpr std::int64_t kDay = 86'400'000'000'000;
      std::int64_t m = pacific_day_start_ns(base_ns - 2 * kDay);
      std::string text;
      for (int i = 0; i < 6; ++i) {
        text += std::to_string(m / 1000);
        text += ' ';
        m = next_pacific_midnight_ns(m);
      }
      cal_text_ = std::move(text);
      cal_from_ = pacific_day_start_ns(base_ns);
      cal_to_ = next_pacific_midnight_ns(base_ns);
    }
    return cal_text_;
  }

  const std::shared_ptr<Clock> clock_;
  const bool client_clock_;
  const std::string prefix_, meta_, quotas_, aliases_, numbers_;
  Mutex cal_mu_;
  std::int64_t cal_from_ RL_GUARDED_BY(cal_mu_) = 1;
  std::int64_t cal_to_ RL_GUARDED_BY(cal_mu_) = 0;
  std::string cal_text_ RL_GUARDED_BY(cal_mu_);
  Mutex warn_mu_;
  std::set<std::string, std::less<>> warned_ RL_GUARDED_BY(warn_mu_);
};

// Runs the check script for `name` and fills `d`; the reply's entry in `entry`.
std::optional<Error> check_model(Shared& s, std::string_view name, int mode, TokenEstimate estimate,
                                 const char* op, Decision& d, EntryRef* entry, std::int64_t* no,
                                 CheckReply* out = nullptr,
                                 const std::vector<std::string>* keys = nullptr);

}  // namespace ratelimit::detail::redis_store
