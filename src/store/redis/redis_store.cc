// The Redis store: one Lua script per operation on one Redis server shared by a fleet. The
// decision rules run twice over the same numbers: the script compares counts to decide whether
// to record (all or nothing, atomically), then core/rules.h turns the script's usage and probe
// answers into the Decision (code, exact retry-after, stats); the two must agree.
#include "store/redis/redis_store.h"

#include <algorithm>
#include <charconv>
#include <condition_variable>
#include <random>
#include <set>
#include <thread>

#include "core/calendar.h"
#include "core/model_table.h"
#include "limiter/validation.h"
#include "ratelimit/model_name.h"
#include "store/quota_text.h"
#include "store/redis/connection.h"
#include "store/redis/redis_url.h"
#include "store/redis/scripts.h"
#include "util/mutex.h"

namespace ratelimit::detail {
namespace {

using Type = RedisValue::Type;

// Redis numbers are doubles inside Lua: counts beyond 2^53 - 1 would not compare exactly.
constexpr std::int64_t kMaxExact = (std::int64_t{1} << 53) - 1;
constexpr auto kPollInterval = std::chrono::milliseconds(25);  // change-signal polling
constexpr std::uint64_t kByIdFlag = std::uint64_t{1} << 63;    // EntryRef.generation of an id

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

std::int64_t parse_i64(const std::string& s) {
  std::int64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

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

std::optional<CheckReply> parse_check(const RedisValue& v) {
  if (v.type != Type::array || v.elements.size() != 35) return std::nullopt;
  const auto& e = v.elements;
  auto i64 = [&](int i) { return static_cast<std::int64_t>(e[i].as_int(0)); };
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
  r.now_ns = parse_i64(e[21].as_string());
  for (int k = 0; k < 4; ++k) {
    const std::int64_t us = i64(22 + k);
    r.probe[k] = us < 0 ? -1 : us * 1000;
  }
  Learned& l = r.limits.learned;
  const std::string cool = e[26].as_string();
  l.cooldown_until_ns = cool.empty() ? 0 : parse_i64(cool);
  Learned::Ceiling* ceilings[4] = {&l.requests, &l.tokens, &l.input, &l.output};
  for (int k = 0; k < 4; ++k) {
    const std::int64_t left = i64(27 + 2 * k);
    if (left >= 0) *ceilings[k] = Learned::Ceiling{left, parse_i64(e[28 + 2 * k].as_string())};
  }
  return r;
}

// The probe of core/rules.h, answered by the script (it walked the entries in Redis).
struct AnsweredProbe {
  const std::int64_t* t;
  std::int64_t request_time(std::int64_t) const { return t[0]; }
  std::int64_t tokens_time(Int128, TokenDim dim) const {
    return dim == TokenDim::total ? t[1] : dim == TokenDim::input ? t[2] : t[3];
  }
};

Decision unavailable_decision() {
  Decision d;
  d.code = DecisionCode::store_unavailable;
  return d;
}

// The connection and what every handle shares; a Reservation may outlive the store.
class Shared {
 public:
  Shared(const Config& config, RedisOptions options, std::string key_prefix)
      : pool(std::move(options)),
        clock_(config.clock),
        client_clock_(config.redis_use_client_clock),
        prefix_(std::move(key_prefix)),
        meta_(prefix_ + ":{cfg}:meta"),
        quotas_(prefix_ + ":{cfg}:quotas"),
        aliases_(prefix_ + ":{cfg}:aliases"),
        numbers_(prefix_ + ":{cfg}:models") {}

  RedisPool pool;
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

  // S Z E X of one model, then M Q N.
  std::vector<std::string> model_keys(std::string_view name) const {
    const std::string base = prefix_ + ":{m-" + hex(digest(name)) + "}:";
    return {base + "s", base + "z", base + "e", base + "x", meta_, quotas_, numbers_};
  }

  // Runs a model script: ARGV name, the time (or "" for the server's), midnights, `extra`.
  Result<RedisValue> run_model(const RedisScript& script, std::string_view name,
                               std::vector<std::string> extra, const char* op) {
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
    auto v = pool.eval(script, model_keys(name), args, op);
    if (v && v->is_error()) return tl::unexpected(reply_error(op, *v));
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
                                 CheckReply* out = nullptr) {
  auto v = s.run_model(
      kCheckScript, name,
      {std::to_string(mode), std::to_string(estimate.input), std::to_string(estimate.output)}, op);
  if (!v) return v.error();
  auto r = parse_check(*v);
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

class RedisModel final : public StoreModel {
 public:
  RedisModel(std::string model_name, std::size_t model_hash, std::uint32_t model_index,
             std::shared_ptr<Shared> shared)
      : StoreModel(std::move(model_name), model_hash, model_index), s_(std::move(shared)) {}

  CheckOutcome check_into(const CheckRequest& request, Decision& decision) override
      RL_EXCLUDES(count_mu_) {
    CheckOutcome r;
    if (s_->closed.load(std::memory_order_acquire)) {
      decision = unavailable_decision();
      r.error = s_->closed_error(request.operation);
    } else if (too_big(request.estimate)) {
      decision = Decision{};
      decision.code = DecisionCode::invalid_tokens;
    } else {
      std::int64_t no = 0;
      const int mode =
          request.record && request.estimate.input >= 0 && request.estimate.output >= 0 ? 2 : 1;
      if (auto e = check_model(*s_, name, mode, request.estimate, request.operation, decision,
                               &r.entry, &no)) {
        decision = unavailable_decision();
        r.error = std::move(*e);
        r.entry = {};
      } else if (no > 0) {
        no_.store(no, std::memory_order_release);
      }
      if (!decision.allowed || !request.record) r.entry = {};
    }
    if (request.count && (decision.allowed || request.count_denials || r.error)) {
      MutexLock lock(count_mu_);
      counters.decided(decision, saturating_add(request.estimate.input, request.estimate.output));
    }
    return r;
  }

  Status record(TokenEstimate tokens, const char* operation) override RL_EXCLUDES(count_mu_) {
    auto fail = [&](Error e) -> Status {
      MutexLock lock(count_mu_);
      counters.request(RequestOutcome::store_unavailable);
      return tl::unexpected(std::move(e));
    };
    if (s_->closed.load(std::memory_order_acquire)) return fail(s_->closed_error(operation));
    if (too_big(tokens)) {
      return make_error(ErrorCode::invalid_argument,
                        std::string(operation) +
                            ": token counts above 2^53-1 cannot be kept exactly in Redis "
                            "(record them in parts)");
    }
    auto v =
        s_->run_model(kRecordScript, name,
                      {std::to_string(tokens.input), std::to_string(tokens.output)}, operation);
    if (!v) return fail(v.error());
    if (v->type == Type::array && v->elements.size() == 2) {
      s_->saw_epoch(static_cast<std::uint64_t>(v->elements[0].as_int(0)));
      if (const auto no = v->elements[1].as_int(0); no > 0) no_.store(no);
    }
    MutexLock lock(count_mu_);
    counters.recorded(saturating_add(tokens.input, tokens.output));
    return {};
  }

  Status settle(EntryRef entry, const SettleRequest& request, bool* released) override
      RL_EXCLUDES(count_mu_) {
    *released = false;
    if (s_->closed.load(std::memory_order_acquire)) {
      return make_error(ErrorCode::closed,
                        std::string(request.operation) +
                            ": the limiter that granted this reservation is closed or gone; "
                            "nothing was changed");
    }
    const bool commit = request.kind == SettleKind::commit;
    if (commit && too_big(request.tokens)) {
      return make_error(ErrorCode::invalid_argument,
                        std::string(request.operation) +
                            ": token counts above 2^53-1 cannot be kept exactly in Redis");
    }
    const bool by_id = (entry.generation & kByIdFlag) != 0;
    const std::string gen =
        by_id ? "-1" : std::to_string(static_cast<std::int64_t>(entry.generation));
    const std::string id_no = by_id ? std::to_string(entry.generation & ~kByIdFlag) : "";
    auto v = s_->run_model(
        kSettleScript, name,
        {commit ? "commit" : "cancel", std::to_string(entry.seq), gen,
         request.from_reservation ? "1" : "0", std::to_string(commit ? request.tokens.input : 0),
         std::to_string(commit ? request.tokens.output : 0), id_no},
        request.operation);
    if (!v) return tl::unexpected(v.error());
    if (v->type != Type::array || v->elements.size() != 3) {
      return make_error(
          ErrorCode::internal,
          std::string(request.operation) + ": redis: unexpected reply from the settle script");
    }
    s_->saw_epoch(static_cast<std::uint64_t>(v->elements[2].as_int(0)));
    const std::string status = v->elements[0].as_string();
    if (status == "settled") {
      return make_error(ErrorCode::invalid_argument,
                        std::string(request.operation) +
                            ": the reservation is already settled (commit or cancel it once)");
    }
    if (status == "not_found") {
      return make_error(ErrorCode::not_found, std::string(request.operation) +
                                                  ": no such reservation in this Redis store");
    }
    *released = v->elements[1].as_int(0) == 1;
    MutexLock lock(count_mu_);
    if (commit) {
      counters.committed(saturating_add(request.tokens.input, request.tokens.output));
    } else {
      counters.cancelled();
    }
    return {};
  }

  std::string format_id(EntryRef entry) const override {
    return s_->store_id + "-" + hex(static_cast<std::uint64_t>(no_.load())) + "-" + hex(entry.seq);
  }

  void count(RequestOutcome outcome) override RL_EXCLUDES(count_mu_) {
    MutexLock lock(count_mu_);
    counters.request(outcome);
  }

  Status learn(const Learned& learned, const char* operation, bool* changed) override {
    *changed = false;
    if (s_->closed.load(std::memory_order_acquire)) {
      return tl::unexpected(s_->closed_error(operation));
    }
    std::vector<std::string> args;
    args.push_back(std::to_string(learned.cooldown_until_ns > 0 ? learned.cooldown_until_ns : 0));
    for (const Learned::Ceiling* c :
         {&learned.requests, &learned.tokens, &learned.input, &learned.output}) {
      args.push_back(std::to_string(c->left >= 0 ? std::min(c->left, kMaxExact) : -1));
      args.push_back(std::to_string(std::max<std::int64_t>(0, c->until_ns)));
    }
    auto v = s_->run_model(kLearnScript, name, std::move(args), operation);
    if (!v) return tl::unexpected(v.error());
    if (v->type == Type::array && v->elements.size() == 2) {
      *changed = v->elements[0].as_int(0) == 1;
      s_->saw_epoch(static_cast<std::uint64_t>(v->elements[1].as_int(0)));
    }
    return {};
  }

  // The model number an id names (find_entry learns it from Redis).
  std::int64_t number() const { return no_.load(std::memory_order_acquire); }

 private:
  std::shared_ptr<Shared> s_;
  std::atomic<std::int64_t> no_{0};
  Mutex count_mu_;  // serialises the counters' writes (the counting contract)
};

class RedisStore final : public Store {
 public:
  explicit RedisStore(std::shared_ptr<Shared> shared) : s_(std::move(shared)) {}
  ~RedisStore() override { (void)close(); }

  std::shared_ptr<StoreModel> model(std::string_view name) override {
    return handle(name)->shared_from_this();
  }
  StoreModel* find(std::string_view name) override { return table_.find(name); }

  Decision decide_unseen(std::string_view name, TokenEstimate estimate) override {
    if (s_->closed.load(std::memory_order_acquire)) return unavailable_decision();
    Decision d;
    if (too_big(estimate)) {
      d.code = DecisionCode::invalid_tokens;
      return d;
    }
    if (check_model(*s_, name, 1, estimate, "ratelimit.decide", d, nullptr, nullptr)) {
      return unavailable_decision();
    }
    return d;
  }
  StoreModel* at_index(std::uint32_t index) override { return table_.at_index(index); }
  std::vector<std::shared_ptr<StoreModel>> handles() override {
    auto all = table_.all();
    return {all.begin(), all.end()};
  }

  Result<Found> find_entry(std::string_view id, const char* operation) override {
    auto not_found = [&] {
      return tl::unexpected(unknown_reservation_id(operation, id, "a limiter on this Redis store"));
    };
    if (s_->closed.load(std::memory_order_acquire)) {
      return tl::unexpected(s_->closed_error(operation));
    }
    const std::string prefix = s_->store_id + "-";
    if (!id.starts_with(prefix)) return not_found();
    std::string_view rest = id.substr(prefix.size());
    std::uint64_t fields[2];
    for (int i = 0; i < 2; ++i) {
      const std::size_t end = i == 0 ? rest.find('-') : rest.size();
      if (end == std::string_view::npos || end == 0 || end > 15) return not_found();
      const std::string_view digits = rest.substr(0, end);
      if (digits.front() == '0') return not_found();
      for (char ch : digits) {
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return not_found();
      }
      std::from_chars(digits.data(), digits.data() + digits.size(), fields[i], 16);
      rest = i == 0 ? rest.substr(end + 1) : std::string_view();
    }
    auto v = s_->command({"HGET", s_->numbers(), std::to_string(fields[0])}, operation);
    if (!v) return tl::unexpected(v.error());
    if (v->type != Type::string || model_name_problem(v->str)) return not_found();
    RedisModel* m = handle(v->str);
    return Found{m->shared_from_this(), EntryRef{fields[1], kByIdFlag | fields[0]}};
  }

  std::uint64_t config_epoch() override { return s_->epoch.load(std::memory_order_acquire); }

  Result<AliasMap> aliases() override {
    auto v = read_hash(s_->aliases(), "ratelimit.aliases");
    if (!v) return tl::unexpected(v.error());
    AliasMap out;
    for (auto& [name, target] : *v) {
      if (s_->valid_name(name) && s_->valid_name(target)) out.emplace(name, target);
    }
    return out;
  }
  Result<std::optional<std::string>> alias(std::string_view name) override {
    if (auto e = closed("ratelimit.alias")) return tl::unexpected(std::move(*e));
    auto v = s_->command({"HGET", s_->aliases(), std::string(name)}, "ratelimit.alias");
    if (!v) return tl::unexpected(v.error());
    if (v->type != Type::string || !s_->valid_name(v->str)) return std::optional<std::string>();
    return std::optional<std::string>(v->str);
  }
  Status set_aliases(const AliasMap& aliases, const char* operation) override {
    std::vector<std::string> args;
    for (const auto& [name, target] : aliases) {
      args.push_back(name);
      args.push_back(target);
    }
    return config_set(s_->aliases(), std::move(args), operation);
  }
  Status remove_alias(std::string_view name) override {
    return config_remove(s_->aliases(), name, "ratelimit.remove_alias", "has no alias");
  }
  Result<UnknownModels> unknown_models() override {
    if (auto e = closed("ratelimit.unknown_models")) return tl::unexpected(std::move(*e));
    auto v = s_->command({"HMGET", s_->meta(), "up", "uq"}, "ratelimit.unknown_models");
    if (!v) return tl::unexpected(v.error());
    UnknownModels out;
    if (v->type == Type::array && v->elements.size() == 2 && v->elements[0].type == Type::string) {
      if (auto p = unknown_model_policy_from_string(v->elements[0].str)) out.policy = *p;
      if (auto q = decode_quota(v->elements[1].as_string())) out.quota = *q;
    }
    return out;
  }
  Status set_unknown_models(const UnknownModels& policy) override {
    const char* op = "ratelimit.set_unknown_models";
    if (auto why = quota_too_big(op, "(unknown models)", policy.quota)) {
      return make_error(ErrorCode::invalid_argument, *why);
    }
    return config_set(
        s_->meta(), {"up", std::string(to_string(policy.policy)), "uq", encode_quota(policy.quota)},
        op);
  }

  Result<ModelStats> stats(std::string_view name) override {
    if (auto e = closed("ratelimit.stats")) return tl::unexpected(std::move(*e));
    Decision d;
    if (auto e = check_model(*s_, name, 0, {}, "ratelimit.stats", d, nullptr, nullptr)) {
      return tl::unexpected(std::move(*e));
    }
    return d.stats;
  }

  Result<std::map<std::string, ModelStats, std::less<>>> all_stats() override {
    const char* op = "ratelimit.all_stats";
    if (auto e = closed(op)) return tl::unexpected(std::move(*e));
    std::set<std::string> names;
    // Models with a quota (its field names) and models with state (the numbers' values).
    const std::pair<const char*, const std::string*> sources[] = {{"HKEYS", &s_->quotas()},
                                                                  {"HVALS", &s_->numbers()}};
    for (const auto& [cmd, key] : sources) {
      auto v = s_->command({cmd, *key}, op);
      if (!v) return tl::unexpected(v.error());
      for (const auto& e : v->elements) {
        if (s_->valid_name(e.str)) names.insert(e.str);
      }
    }
    std::map<std::string, ModelStats, std::less<>> out;
    for (const auto& name : names) {
      Decision d;
      CheckReply r;
      if (auto e = check_model(*s_, name, 0, {}, op, d, nullptr, nullptr, &r)) {
        return tl::unexpected(std::move(*e));
      }
      const bool idle = r.usage.requests == 0 && r.usage.tokens == 0 &&
                        (!r.usage.day_started || r.usage.day_count == 0);
      if (r.has_quota || !idle || r.limits.learned.any()) out.emplace(name, d.stats);
    }
    return out;
  }

  Result<std::optional<ModelQuota>> quota(std::string_view name) override {
    if (auto e = closed("ratelimit.quota")) return tl::unexpected(std::move(*e));
    auto v = s_->command({"HGET", s_->quotas(), std::string(name)}, "ratelimit.quota");
    if (!v) return tl::unexpected(v.error());
    if (v->type != Type::string) return std::optional<ModelQuota>();
    auto q = decode_quota(v->str);
    if (!q) return tl::unexpected(malformed_quota("ratelimit.quota", name));
    return std::optional<ModelQuota>(*q);
  }
  Result<QuotaMap> quotas() override {
    auto v = read_hash(s_->quotas(), "ratelimit.quotas");
    if (!v) return tl::unexpected(v.error());
    QuotaMap out;
    for (auto& [name, text] : *v) {
      if (!s_->valid_name(name)) continue;
      auto q = decode_quota(text);
      if (!q) return tl::unexpected(malformed_quota("ratelimit.quotas", name));
      out.emplace(name, *q);
    }
    return out;
  }
  Status set_quotas(const QuotaMap& quotas, const char* operation) override {
    std::vector<std::string> args;
    for (const auto& [name, q] : quotas) {
      if (auto why = quota_too_big(operation, name, q)) {
        return make_error(ErrorCode::invalid_argument, *why);
      }
      args.push_back(name);
      args.push_back(encode_quota(q));
    }
    return config_set(s_->quotas(), std::move(args), operation);
  }
  Status remove_quota(std::string_view name) override {
    return config_remove(s_->quotas(), name, "ratelimit.remove_quota", "has no quota");
  }
  Status set_profile(const QuotaMap& quotas, const AliasMap& aliases,
                     const char* operation) override {
    if (auto e = closed(operation)) return tl::unexpected(std::move(*e));
    std::vector<std::string> args{std::to_string(quotas.size() * 2)};
    for (const auto& [name, q] : quotas) {
      if (auto why = quota_too_big(operation, name, q)) {
        return make_error(ErrorCode::invalid_argument, *why);
      }
      args.push_back(name);
      args.push_back(encode_quota(q));
    }
    for (const auto& [name, target] : aliases) {
      args.push_back(name);
      args.push_back(target);
    }
    auto v = s_->run(kProfileSetScript, {s_->quotas(), s_->aliases(), s_->meta()}, std::move(args),
                     operation);
    if (!v) return tl::unexpected(v.error());
    s_->saw_epoch(static_cast<std::uint64_t>(v->as_int(0)));
    return {};
  }

  Status visit_stats(const StatsVisitor& visit) override {
    // The models all_stats() lists, then this process's handles with counters (a Redis
    // store at 10,000 models reads each model's keys once per scrape).
    auto all = all_stats();
    if (!all) return tl::unexpected(all.error());
    for (const auto& [model, s] : *all) visit(model, s, table_.find(model));
    for (const auto& handle : table_.all()) {
      if (all->count(handle->name) != 0 || !handle->counters.any()) continue;
      auto s = stats(handle->name);
      if (!s) return tl::unexpected(s.error());
      visit(handle->name, *s, handle.get());
    }
    return {};
  }

  Status reset(std::string_view name) override {
    const char* op = "ratelimit.reset";
    if (auto e = closed(op)) return tl::unexpected(std::move(*e));
    std::vector<std::string> names;
    if (name.empty()) {
      auto v = s_->command({"HVALS", s_->numbers()}, op);
      if (!v) return tl::unexpected(v.error());
      for (const auto& e : v->elements) names.push_back(e.str);
    } else {
      names.emplace_back(name);
    }
    for (const auto& n : names) {
      auto keys = s_->model_keys(n);
      keys.resize(4);
      keys.push_back(s_->meta());
      auto v = s_->run(kResetScript, std::move(keys), {}, op);
      if (!v) return tl::unexpected(v.error());
    }
    return {};
  }

  // Redis keeps the state (its own persistence settings decide what survives its restart).
  Status persist() override {
    if (auto e = closed("ratelimit.persist")) return tl::unexpected(std::move(*e));
    return {};
  }
  // Redis is the state: load only checks that it answers.
  Status load() override {
    if (auto e = closed("ratelimit.load")) return tl::unexpected(std::move(*e));
    auto v = s_->command({"HGET", s_->meta(), "epoch"}, "ratelimit.load");
    if (!v) return tl::unexpected(v.error());
    s_->saw_epoch(static_cast<std::uint64_t>(v->as_int(0)));
    return {};
  }
  Status close() override {
    s_->closed.store(true, std::memory_order_release);
    s_->pool.close();
    return {};
  }

  std::uint64_t names_skipped() const override {
    return s_->skipped.load(std::memory_order_relaxed);
  }
  bool shared() const override { return true; }

  // Polls the store's change counter (bumped by every release and configuration change).
  bool wait_for_change(std::chrono::milliseconds max_wait, std::stop_token stop) override
      RL_EXCLUDES(poll_mu_) {
    const auto end = std::chrono::steady_clock::now() + max_wait;
    std::mutex mu;
    std::condition_variable_any cv;
    for (;;) {
      if (s_->closed.load(std::memory_order_acquire)) return true;
      auto v = s_->command({"HMGET", s_->meta(), "ver", "epoch"}, "ratelimit.wait");
      if (!v) return true;  // let the waiters look again (and see the failure)
      if (v->type == Type::array && v->elements.size() == 2) {
        s_->saw_epoch(static_cast<std::uint64_t>(v->elements[1].as_int(0)));
        const long long ver = v->elements[0].as_int(0);
        MutexLock lock(poll_mu_);
        const bool changed = seen_ver_ >= 0 && ver != seen_ver_;
        seen_ver_ = ver;
        if (changed) return true;
      }
      const auto next = std::min(end, std::chrono::steady_clock::now() + kPollInterval);
      std::unique_lock sleep(mu);
      cv.wait_until(sleep, stop, next, [] { return false; });
      if (stop.stop_requested() || std::chrono::steady_clock::now() >= end) return false;
    }
  }

 private:
  RedisModel* handle(std::string_view name) {
    return table_.find_or_add(name, [this](std::string n, std::size_t h, std::uint32_t i) {
      return std::make_shared<RedisModel>(std::move(n), h, i, s_);
    });
  }

  std::optional<Error> closed(const char* op) const {
    if (s_->closed.load(std::memory_order_acquire)) return s_->closed_error(op);
    return std::nullopt;
  }

  Error malformed_quota(const char* op, std::string_view name) const {
    return Error{ErrorCode::corrupt_state, std::string(op) + ": redis " + s_->pool.where() +
                                               ": the quota of " + quoted(name) +
                                               " is malformed (set it again)"};
  }

  Result<std::vector<std::pair<std::string, std::string>>> read_hash(const std::string& key,
                                                                     const char* op) {
    if (auto e = closed(op)) return tl::unexpected(std::move(*e));
    auto v = s_->command({"HGETALL", key}, op);
    if (!v) return tl::unexpected(v.error());
    std::vector<std::pair<std::string, std::string>> out;
    for (std::size_t i = 0; i + 1 < v->elements.size(); i += 2) {
      out.emplace_back(v->elements[i].str, v->elements[i + 1].str);
    }
    return out;
  }

  Status config_set(const std::string& key, std::vector<std::string> args, const char* op) {
    if (auto e = closed(op)) return tl::unexpected(std::move(*e));
    auto v = s_->run(kConfigSetScript, {key, s_->meta()}, std::move(args), op);
    if (!v) return tl::unexpected(v.error());
    s_->saw_epoch(static_cast<std::uint64_t>(v->as_int(0)));
    return {};
  }

  Status config_remove(const std::string& key, std::string_view name, const char* op,
                       const char* missing) {
    if (auto e = closed(op)) return tl::unexpected(std::move(*e));
    auto v = s_->run(kConfigRemoveScript, {key, s_->meta()}, {std::string(name)}, op);
    if (!v) return tl::unexpected(v.error());
    if (v->type != Type::array || v->elements.size() != 2) {
      return make_error(ErrorCode::internal, std::string(op) + ": redis: unexpected reply");
    }
    s_->saw_epoch(static_cast<std::uint64_t>(v->elements[1].as_int(0)));
    if (v->elements[0].as_int(0) != 1) {
      return make_error(ErrorCode::not_found,
                        std::string(op) + ": " + quoted(name) + " " + missing);
    }
    return {};
  }

  std::shared_ptr<Shared> s_;
  ModelTable<RedisModel> table_;
  Mutex poll_mu_;
  long long seen_ver_ RL_GUARDED_BY(poll_mu_) = -1;
};

}  // namespace

Result<std::unique_ptr<Store>> make_redis_store(const Config& config) {
  const char* op = "ratelimit.open";
  if (config.redis_url.empty()) {
    return make_error(
        ErrorCode::invalid_argument,
        std::string(op) + ": no Redis URL (set Config::redis_url, e.g. redis://127.0.0.1:6379/0)");
  }
  if (config.key_prefix.empty() || config.key_prefix.find_first_of("{}") != std::string::npos) {
    return make_error(ErrorCode::invalid_argument,
                      std::string(op) +
                          ": Config::key_prefix must be non-empty and hold no { or } (they "
                          "would break the keys' hash tags)");
  }
  auto url = parse_redis_url(config.redis_url, op);
  if (!url) return tl::unexpected(url.error());
  RedisOptions options;
  options.url = std::move(*url);
  options.connect_timeout = config.redis_connect_timeout;
  options.command_timeout = config.redis_command_timeout;
  options.pool_size = config.redis_pool_size;
  auto shared = std::make_shared<Shared>(config, std::move(options), config.key_prefix);
  if (auto ok = shared->pool.check(op); !ok) return tl::unexpected(ok.error());

  // The seeds: written only where Redis has none yet.
  std::vector<std::string> args;
  std::random_device rd;
  const std::uint64_t id = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  std::string id_text = hex(id);
  id_text.insert(0, 16 - id_text.size(), '0');
  args.push_back(id_text);
  if (config.unknown_models == UnknownModels{}) {
    args.emplace_back();
    args.emplace_back();
  } else {
    if (auto why = quota_too_big(op, "(unknown models)", config.unknown_models.quota)) {
      return make_error(ErrorCode::invalid_argument, *why);
    }
    args.emplace_back(to_string(config.unknown_models.policy));
    args.push_back(encode_quota(config.unknown_models.quota));
  }
  const QuotaMap quotas = merged_quotas(config);
  args.push_back(std::to_string(quotas.size()));
  for (const auto& [name, q] : quotas) {
    if (auto why = quota_too_big(op, name, q)) return make_error(ErrorCode::invalid_argument, *why);
    args.push_back(name);
    args.push_back(encode_quota(q));
  }
  for (const auto& [name, target] : merged_aliases(config)) {
    args.push_back(name);
    args.push_back(target);
  }
  auto v = shared->run(kSeedScript, {shared->quotas(), shared->aliases(), shared->meta()},
                       std::move(args), op);
  if (!v) return tl::unexpected(v.error());
  if (v->type != Type::array || v->elements.size() != 2) {
    return make_error(ErrorCode::internal, std::string(op) + ": redis: unexpected seed reply");
  }
  shared->store_id = v->elements[0].as_string();
  shared->saw_epoch(static_cast<std::uint64_t>(v->elements[1].as_int(0)));
  return std::unique_ptr<Store>(std::make_unique<RedisStore>(std::move(shared)));
}

}  // namespace ratelimit::detail
