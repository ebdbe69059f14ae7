// Internal: one model of the Redis store (a handle): its checks, records, settles and what
// it learned from the provider, each one script on Redis. See redis_store.cc.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "store/redis/shared.h"

namespace ratelimit::detail::redis_store {

class RedisModel final : public StoreModel {
 public:
  RedisModel(std::string model_name, std::size_t model_hash, std::uint32_t model_index,
             std::shared_ptr<Shared> shared)
      : StoreModel(std::move(model_name), model_hash, model_index),
        s_(std::move(shared)),
        keys_(s_->model_keys(name)) {}

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
                               &r.entry, &no, nullptr, &keys_)) {
        r.entry = {};
        if (s_->fail_open && e->code == ErrorCode::unavailable) {
          decision = unchecked_decision();  // admitted, nothing recorded (entry seq 0)
        } else {
          decision = unavailable_decision();
          r.error = std::move(*e);
        }
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
    auto v = s_->run_model(kRecordScript, name,
                           {std::to_string(tokens.input), std::to_string(tokens.output)}, operation,
                           &keys_);
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
    auto count_settled = [&] {
      MutexLock lock(count_mu_);
      if (commit) {
        counters.committed(saturating_add(request.tokens.input, request.tokens.output));
      } else {
        counters.cancelled();
      }
    };
    if (!by_id && entry.seq == 0) {
      // Admitted unchecked (fail_open while Redis failed): nothing was recorded to settle.
      count_settled();
      return {};
    }
    const std::string gen =
        by_id ? "-1" : std::to_string(static_cast<std::int64_t>(entry.generation));
    const std::string id_no = by_id ? std::to_string(entry.generation & ~kByIdFlag) : "";
    auto v = s_->run_model(
        kSettleScript, name,
        {commit ? "commit" : "cancel", std::to_string(entry.seq), gen,
         request.from_reservation ? "1" : "0", std::to_string(commit ? request.tokens.input : 0),
         std::to_string(commit ? request.tokens.output : 0), id_no},
        request.operation, &keys_);
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
    count_settled();
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
    auto v = s_->run_model(kLearnScript, name, std::move(args), operation, &keys_);
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
  const std::vector<std::string> keys_;  // T Z E X M Q N (Shared::model_keys)
  std::atomic<std::int64_t> no_{0};
  Mutex count_mu_;  // serialises the counters' writes (the counting contract)
};

}  // namespace ratelimit::detail::redis_store
