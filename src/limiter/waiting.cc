// RateLimiter::acquire and wait_for_capacity: waiting written once for every store.
//
// A waiter looks at the store, then sleeps on the injected clock until the exact moment
// capacity may free (the decision's retry_after), its deadline, its stop token, or an early
// wake (capacity released in this process, or the store's change signal). Deadlines are kept
// on the clock's monotonic time, so a wall clock step cannot stretch a timeout.
#include <optional>

#include "core/time_util.h"
#include "limiter/limiter_core.h"
#include "limiter/validation.h"
#include "ratelimit/limiter.h"

namespace ratelimit {
namespace {

using detail::StoreModel;
using detail::WaitQueue;
using SteadyTime = std::chrono::steady_clock::time_point;

// The deadline of a wait on `clock`'s monotonic time (none: no timeout).
std::optional<SteadyTime> deadline_of(const Clock& clock, const WaitOptions& options) {
  if (!options.timeout) return std::nullopt;
  const SteadyTime now = clock.monotonic_now();
  const Duration timeout = std::max(Duration(0), *options.timeout);
  if (timeout >= SteadyTime::max() - now) return SteadyTime::max();
  return now + timeout;
}

// Whether the deadline has passed, and else the wall time at which it falls.
struct DeadlineNow {
  bool passed = false;
  std::optional<TimePoint> wall;
};
DeadlineNow deadline_now(const Clock& clock, std::optional<SteadyTime> deadline, TimePoint now) {
  if (!deadline) return {};
  const SteadyTime mono = clock.monotonic_now();
  if (mono >= *deadline) return {true, std::nullopt};
  return {false, detail::add_saturating(now, *deadline - mono)};
}

std::optional<TimePoint> earlier(std::optional<TimePoint> a, std::optional<TimePoint> b) {
  if (!a) return b;
  if (!b) return a;
  return std::min(*a, *b);
}

Error never_error(const char* operation, std::string_view model, std::int64_t tokens,
                  const Decision& d) {
  return Error{ErrorCode::never_satisfiable,
               std::string(operation) + ": " + detail::quoted(model) + ": " +
                   std::to_string(tokens) + " tokens can never fit within max_tpm " +
                   std::to_string(d.stats.max_tpm)};
}

}  // namespace

Result<Reservation> RateLimiter::acquire(std::string_view model, std::int64_t estimated_tokens,
                                         WaitOptions options) {
  constexpr const char* kOp = "ratelimit.acquire";
  detail::LimiterCore& core = *core_;
  Clock& clock = *core.clock;
  const std::optional<SteadyTime> deadline = deadline_of(clock, options);
  if (core.is_closed()) return tl::unexpected(core.closed_error(kOp));
  auto found = core.model_for(model, kOp);
  if (!found) return tl::unexpected(found.error());
  StoreModel& m = **found;
  // Every return below counts the call once.
  if (estimated_tokens < 0) {
    m.count(RequestOutcome::invalid_tokens);
    return make_error(ErrorCode::invalid_argument,
                      "ratelimit.acquire: estimated tokens must be non-negative (got " +
                          std::to_string(estimated_tokens) + ")");
  }
  const detail::LimiterCore::WatchingChanges watching(core);
  WaitQueue::Sleeper self;
  const WaitQueue::Position position = m.waiters.join_queue(&self);
  auto fail = [&](RequestOutcome outcome, Error error) -> Result<Reservation> {
    m.waiters.leave_queue(position);
    m.count(outcome);
    return tl::unexpected(std::move(error));
  };
  detail::CheckRequest request;
  request.operation = kOp;
  request.estimated_tokens = estimated_tokens;
  request.record = true;
  request.count = true;
  request.count_denials = false;  // the wait's end is counted instead
  bool first = true;
  for (;;) {
    const WaitQueue::View view = m.waiters.view(&self);
    if (core.is_closed()) {
      return fail(RequestOutcome::store_unavailable, core.closed_error(kOp));
    }
    const TimePoint now = clock.now();
    std::optional<TimePoint> wake;
    if (view.head || first) {
      // The head tries to take capacity; a newcomer behind it only looks (never_satisfiable
      // is known at once).
      detail::CheckRequest look = request;
      look.record = view.head;
      look.count = view.head;
      detail::CheckResult r = m.check(look);
      if (r.error) {
        m.waiters.leave_queue(position);
        if (!look.count) m.count(RequestOutcome::store_unavailable);  // else the store counted
        return tl::unexpected(std::move(*r.error));
      }
      if (r.decision.allowed && view.head) {
        m.waiters.leave_queue(position);
        return detail::Grants::granted(std::move(r.decision), m.shared_from_this(), r.entry);
      }
      if (r.decision.retry_after == Duration::max()) {
        return fail(RequestOutcome::tpm_exceeded,
                    never_error(kOp, model, estimated_tokens, r.decision));
      }
      if (view.head) {
        wake = detail::add_saturating(now, r.decision.retry_after);
        m.waiters.set_head_wake(*wake);
      } else if (view.head_wake && *view.head_wake > now) {
        wake = view.head_wake;
      }
    } else if (view.head_wake && *view.head_wake > now) {
      wake = view.head_wake;
    }
    first = false;
    const DeadlineNow d = deadline_now(clock, deadline, now);
    if (d.passed) {
      return fail(RequestOutcome::deadline_exceeded,
                  Error{ErrorCode::deadline_exceeded,
                        std::string(kOp) + ": " + detail::quoted(model) +
                            ": no capacity before the deadline (raise the timeout, or lower "
                            "the estimate)"});
    }
    if (options.stop.stop_requested()) {
      return fail(RequestOutcome::cancelled,
                  Error{ErrorCode::cancelled, std::string(kOp) + ": " + detail::quoted(model) +
                                                  ": cancelled while waiting"});
    }
    // A waiter behind the head with no known wake time sleeps until the head acts.
    m.waiters.sleep(clock, self, view.epoch, wake ? earlier(wake, d.wall) : std::nullopt,
                    options.stop);
  }
}

Status RateLimiter::wait_for_capacity(std::string_view model, std::int64_t tokens,
                                      WaitOptions options) {
  constexpr const char* kOp = "ratelimit.wait_for_capacity";
  detail::LimiterCore& core = *core_;
  Clock& clock = *core.clock;
  if (tokens < 0) {
    return make_error(ErrorCode::invalid_argument,
                      std::string(kOp) + ": tokens must be non-negative (got " +
                          std::to_string(tokens) + ")");
  }
  const std::optional<SteadyTime> deadline = deadline_of(clock, options);
  if (core.is_closed()) return tl::unexpected(core.closed_error(kOp));
  StoreModel* found = core.store->find(model);
  if (found == nullptr) {
    if (auto s = core.check_name(model, kOp); !s) return s;
    // A model the store knows nothing of is allowed at once (in-process); a shared store
    // may hold its quota, so it gets a handle to wait on.
    if (!core.store->shared()) return {};
    found = core.store->model(model).get();
  }
  StoreModel& m = *found;
  const detail::LimiterCore::WatchingChanges watching(core);
  WaitQueue::Sleeper self;
  const WaitQueue::Position position = m.waiters.join_watchers(&self);
  auto finish = [&](Status s) {
    m.waiters.leave_watchers(position);
    return s;
  };
  detail::CheckRequest request;
  request.operation = kOp;
  request.estimated_tokens = tokens;
  for (;;) {
    const WaitQueue::View view = m.waiters.view(&self);
    if (core.is_closed()) return finish(tl::unexpected(core.closed_error(kOp)));
    const TimePoint now = clock.now();
    detail::CheckResult r = m.check(request);
    if (r.error) return finish(tl::unexpected(std::move(*r.error)));
    if (r.decision.allowed) return finish({});
    if (r.decision.retry_after == Duration::max()) {
      return finish(tl::unexpected(never_error(kOp, model, tokens, r.decision)));
    }
    const DeadlineNow d = deadline_now(clock, deadline, now);
    if (d.passed) {
      return finish(make_error(ErrorCode::deadline_exceeded,
                               std::string(kOp) + ": " + detail::quoted(model) +
                                   ": no capacity before the deadline"));
    }
    if (options.stop.stop_requested()) {
      return finish(make_error(ErrorCode::cancelled, std::string(kOp) + ": " +
                                                         detail::quoted(model) +
                                                         ": cancelled while waiting"));
    }
    m.waiters.sleep(clock, self, view.epoch,
                    earlier(detail::add_saturating(now, r.decision.retry_after), d.wall),
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
          c->watcher_cv.wait(parked, stop, [c]() RL_NO_THREAD_SAFETY_ANALYSIS {
            return c->shared_waiters > 0;
          });
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
