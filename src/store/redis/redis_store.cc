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
#include "store/redis/redis_model.h"
#include "store/redis/redis_url.h"
#include "store/redis/scripts.h"
#include "store/redis/shared.h"
#include "util/mutex.h"

namespace ratelimit::detail {
namespace redis_store {
namespace {

constexpr auto kPollInterval = std::chrono::milliseconds(25);  // change-signal polling

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
    if (auto e = check_model(*s_, name, 1, estimate, "ratelimit.decide", d, nullptr, nullptr)) {
      return s_->fail_open && e->code == ErrorCode::unavailable ? unchecked_decision()
                                                                : unavailable_decision();
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
  bool admits_unchecked() const override { return s_->fail_open; }

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
}  // namespace redis_store

Result<std::unique_ptr<Store>> make_redis_store(const Config& config) {
  using namespace redis_store;
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
