// RateLimiter::acquire and wait_for_capacity: waiting written once for every store.
//
// A waiter looks at the store, then sleeps on the injected clock until the exact moment
// capacity may free (the decision's retry_after), its deadline, its stop token, or an early
// wake (capacity released in this process, or the store's change signal). Deadlines are kept
// on the clock's monotonic time, so a wall clock step cannot stretch a timeout.
#include "limiter/waiting.h"

#include <optional>

#include "core/time_util.h"
#include "limiter/limiter_core.h"
#include "limiter/validation.h"
#include "ratelimit/limiter.h"

namespace ratelimit {
namespace detail {
namespace {

// Whether the deadline has passed, and else the wall time at which it falls.
struct DeadlineNow {
  bool passed = false;
  std::optional<TimePoint> wall;
};
DeadlineNow deadline_now(const Clock& clock, std::optional<SteadyTime> deadline, TimePoint now) {
  if (!deadline) return {};
  const SteadyTime mono = clock.monotonic_now();
  if (mono >= *deadline) return {true, std::nullopt};
  return {false, add_saturating(now, *deadline - mono)};
}

std::optional<TimePoint> earlier(std::optional<TimePoint> a, std::optional<TimePoint> b) {
  if (!a) return b;
  if (!b) return a;
  return std::min(*a, *b);
}

}  // namespace

// Whether a denial can never turn into a grant by waiting.
bool never(const Decision& d) {
  return d.retry_after == Duration::max() || d.code == DecisionCode::model_not_allowed;
}

RequestOutcome never_outcome(TokenEstimate tokens, const Decision& d) {
  if (d.code == DecisionCode::model_not_allowed) return RequestOutcome::model_not_allowed;
  if (tokens.input > d.stats.max_input_tpm && d.stats.max_input_tpm > 0) {
    return RequestOutcome::input_tpm_exceeded;
  }
  if (tokens.output > d.stats.max_output_tpm && d.stats.max_output_tpm > 0) {
    return RequestOutcome::output_tpm_exceeded;
  }
  return RequestOutcome::tpm_exceeded;
}

Error never_error(const char* operation, std::string_view model, TokenEstimate tokens,
                  const Decision& d) {
  std::string why;
  if (d.code == DecisionCode::model_not_allowed) {
    why =
        "it has no quota and unknown models are denied (set a quota, an alias, or the "
        "unknown-model policy)";
  } else if (tokens.input > d.stats.max_input_tpm && d.stats.max_input_tpm > 0) {
    why = std::to_string(tokens.input) + " input tokens can never fit within max_input_tpm " +
          std::to_string(d.stats.max_input_tpm);
  } else if (tokens.output > d.stats.max_output_tpm && d.stats.max_output_tpm > 0) {
    why = std::to_string(tokens.output) + " output tokens can never fit within max_output_tpm " +
          std::to_string(d.stats.max_output_tpm);
  } else {
    why = std::to_string(saturating_add(tokens.input, tokens.output)) +
          " tokens can never fit within max_tpm " + std::to_string(d.stats.max_tpm);
  }
  return Error{ErrorCode::never_satisfiable,
               std::string(operation) + ": " + quoted(model) + ": " + why};
}

std::optional<SteadyTime> deadline_of(const Clock& clock, const WaitOptions& options) {
  if (!options.timeout) return std::nullopt;
  const SteadyTime now = clock.monotonic_now();
  const Duration timeout = std::max(Duration(0), *options.timeout);
  if (timeout >= SteadyTime::max() - now) return SteadyTime::max();
  return now + timeout;
}

Look look(AcquireWait& w, bool cancelled) {
  constexpr const char* kOp = "ratelimit.acquire";
  Clock& clock = *w.core.clock;
  StoreModel& m = w.model;
  Look out;
  auto fail = [&](RequestOutcome outcome, Error error) {
    m.waiters.leave_queue(w.position);
    m.count(outcome);
    out.result = tl::unexpected(std::move(error));
    return std::move(out);
  };
  const WaitQueue::View view = m.waiters.view(w.self);
  out.epoch = view.epoch;
  if (w.core.is_closed()) return fail(RequestOutcome::store_unavailable, w.core.closed_error(kOp));
  const TimePoint now = clock.now();
  std::optional<TimePoint> wake;
  if (view.head || w.first_look) {
    // The head tries to take capacity; a newcomer behind it only looks (never_satisfiable is
    // known at once).
    CheckRequest request;
    request.operation = kOp;
    request.estimate = w.estimate;
    request.record = view.head;
    request.count = view.head;
    request.count_denials = false;  // the wait's end is counted instead
    CheckResult r = m.check(request);
    if (r.error) {
      m.waiters.leave_queue(w.position);
      if (!request.count) m.count(RequestOutcome::store_unavailable);  // else the store counted
      out.result = tl::unexpected(std::move(*r.error));
      return out;
    }
    r.decision.resolved_model = m.name;
    if (r.decision.allowed && view.head) {
      m.waiters.leave_queue(w.position);
      out.result = Grants::granted(std::move(r.decision), m.shared_from_this(), r.entry);
      return out;
    }
    if (never(r.decision)) {
      return fail(never_outcome(w.estimate, r.decision),
                  never_error(kOp, m.name, w.estimate, r.decision));
    }
    if (view.head) {
      wake = add_saturating(now, r.decision.retry_after);
      m.waiters.set_head_wake(*wake);
    } else if (view.head_wake && *view.head_wake > now) {
      wake = view.head_wake;
    }
  } else if (view.head_wake && *view.head_wake > now) {
    wake = view.head_wake;
  }
  w.first_look = false;
  const DeadlineNow d = deadline_now(clock, w.deadline, now);
  if (d.passed) {
    return fail(RequestOutcome::deadline_exceeded,
                Error{ErrorCode::deadline_exceeded,
                      std::string(kOp) + ": " + quoted(m.name) +
                          ": no capacity before the deadline (raise the timeout, or lower the "
                          "estimate)"});
  }
  if (cancelled || w.stop.stop_requested()) {
    return fail(RequestOutcome::cancelled,
                Error{ErrorCode::cancelled,
                      std::string(kOp) + ": " + quoted(m.name) + ": cancelled while waiting"});
  }
  // A waiter behind the head with no known wake time waits until the head acts (on a manual
  // clock, sleeping to its deadline would end the wait before the head could).
  if (wake) out.until = earlier(wake, d.wall);
  return out;
}

// The first checks of acquire and acquire_async: the model's handle (an invalid name is an
// error), and a negative estimate (counted).
Result<StoreModel*> acquire_model(LimiterCore& core, std::string_view model,
                                  TokenEstimate estimate) {
  constexpr const char* kOp = "ratelimit.acquire";
  if (core.is_closed()) return tl::unexpected(core.closed_error(kOp));
  auto found = core.model_for(model, kOp);
  if (!found) return tl::unexpected(found.error());
  if (estimate.input < 0 || estimate.output < 0) {
    (*found)->count(RequestOutcome::invalid_tokens);
    return make_error(ErrorCode::invalid_argument,
                      "ratelimit.acquire: estimated tokens must be non-negative (got input " +
                          std::to_string(estimate.input) + ", output " +
                          std::to_string(estimate.output) + ")");
  }
  return found;
}

}  // namespace detail

namespace {
using detail::DeadlineNow;
using detail::SteadyTime;
using detail::StoreModel;
using detail::WaitQueue;
}  // namespace

Result<Reservation> RateLimiter::acquire(std::string_view model, std::int64_t estimated_tokens,
                                         WaitOptions options) {
  return acquire(model, TokenEstimate{estimated_tokens, 0}, std::move(options));
}

Result<Reservation> RateLimiter::acquire(std::string_view model, TokenEstimate estimate,
                                         WaitOptions options) {
  detail::LimiterCore& core = *core_;
  const std::optional<SteadyTime> deadline = detail::deadline_of(*core.clock, options);
  auto found = detail::acquire_model(core, model, estimate);
  if (!found) return tl::unexpected(found.error());
  StoreModel& m = **found;
  const detail::LimiterCore::WatchingChanges watching(core);
  WaitQueue::Sleeper self;
  detail::AcquireWait wait{
      core, m, estimate, deadline, options.stop, &self, m.waiters.join_queue(&self)};
  for (;;) {
    detail::Look l = detail::look(wait, false);
    if (l.result) return std::move(*l.result);
    m.waiters.sleep(*core.clock, self, l.epoch, l.until, options.stop);
  }
}

Status RateLimiter::wait_for_capacity(std::string_view model, std::int64_t tokens,
                                      WaitOptions options) {
  return wait_for_capacity(model, TokenEstimate{tokens, 0}, std::move(options));
}

Status RateLimiter::wait_for_capacity(std::string_view model, TokenEstimate tokens,
                                      WaitOptions options) {
  constexpr const char* kOp = "ratelimit.wait_for_capacity";
  detail::LimiterCore& core = *core_;
  Clock& clock = *core.clock;
  if (tokens.input < 0 || tokens.output < 0) {
    return make_error(ErrorCode::invalid_argument, std::string(kOp) +
                                                       ": tokens must be non-negative (got input " +
                                                       std::to_string(tokens.input) + ", output " +
                                                       std::to_string(tokens.output) + ")");
  }
  const std::optional<SteadyTime> deadline = detail::deadline_of(clock, options);
  if (core.is_closed()) return tl::unexpected(core.closed_error(kOp));
  StoreModel* own = core.store->find(model);
  if (own == nullptr) {
    if (auto s = core.check_name(model, kOp); !s) return s;
  }
  // A model the store knows nothing of, in-process, is decided at once (a shared store may
  // hold its quota, so it gets a handle to wait on).
  auto target = core.target_of(model, own, /*create=*/core.store->shared(), kOp);
  if (!target) return tl::unexpected(target.error());
  if (*target == nullptr) {
    const Decision d = core.store->decide_unseen(model, tokens);
    if (d.allowed) return {};
    return tl::unexpected(detail::never_error(kOp, model, tokens, d));
  }
  StoreModel& m = **target;
  const detail::LimiterCore::WatchingChanges watching(core);
  WaitQueue::Sleeper self;
  const WaitQueue::Position position = m.waiters.join_watchers(&self);
  auto finish = [&](Status s) {
    m.waiters.leave_watchers(position);
    return s;
  };
  detail::CheckRequest request;
  request.operation = kOp;
  request.estimate = tokens;
  for (;;) {
    const WaitQueue::View view = m.waiters.view(&self);
    if (core.is_closed()) return finish(tl::unexpected(core.closed_error(kOp)));
    const TimePoint now = clock.now();
    detail::CheckResult r = m.check(request);
    if (r.error) return finish(tl::unexpected(std::move(*r.error)));
    if (r.decision.allowed) return finish({});
    if (detail::never(r.decision)) {
      return finish(tl::unexpected(detail::never_error(kOp, model, tokens, r.decision)));
    }
    const DeadlineNow d = detail::deadline_now(clock, deadline, now);
    if (d.passed) {
      return finish(make_error(
          ErrorCode::deadline_exceeded,
          std::string(kOp) + ": " + detail::quoted(model) + ": no capacity before the deadline"));
    }
    if (options.stop.stop_requested()) {
      return finish(make_error(
          ErrorCode::cancelled,
          std::string(kOp) + ": " + detail::quoted(model) + ": cancelled while waiting"));
    }
    m.waiters.sleep(clock, self, view.epoch,
                    detail::earlier(detail::add_saturating(now, r.decision.retry_after), d.wall),
                    options.stop);
  }
}

namespace detail {

LimiterCore::WatchingChanges::WatchingChanges(LimiterCore& core)
    : core_(core.store->shared() ? &core : nullptr) {
  if (core_ == nullptr) return;
  MutexLock lock(core_->watcher_mu);
  ++core_->shared_waiters;
  if (!core_->watcher.joinable()) {
    core_->watcher = std::jthread([c = core_](std::stop_token stop) {
      constexpr auto kMaxWait = std::chrono::milliseconds(200);
      while (!stop.stop_requested()) {
        {
          RelockableLock parked(c->watcher_mu);
          c->watcher_cv.wait(parked, stop,
                             [c]() RL_NO_THREAD_SAFETY_ANALYSIS { return c->shared_waiters > 0; });
        }
        if (stop.stop_requested()) break;
        if (c->store->wait_for_change(kMaxWait, stop)) c->wake_everyone();
      }
    });
  }
  core_->watcher_cv.notify_all();
}

LimiterCore::WatchingChanges::~WatchingChanges() {
  if (core_ == nullptr) return;
  MutexLock lock(core_->watcher_mu);
  --core_->shared_waiters;
}

}  // namespace detail
}  // namespace ratelimit
