// Internal: the waiters of one model, written once for every store.
//
// `queue` holds acquires in arrival order (the front is served first; the ones behind it sleep
// until the head expects capacity or leaves); `watchers` holds wait_for_capacity calls, which
// do not take capacity and so do not queue. A waiter is woken early (wake_all) when capacity
// is released in this process (cancel, a commit that lowers usage, reset, a quota change,
// load) or when the store signals a change made by another process or machine.
//
// A waiter is either a thread blocked in sleep() or a callback waiter that holds no thread
// (completed by the limiter's waiter service); both kinds share the queue's FIFO order.
//
// Thread-safety: thread-safe; every member is guarded by the queue's mutex.
#pragma once

#include <atomic>
#include <cstdint>
#include <list>
#include <optional>
#include <stop_token>

#include "ratelimit/clock.h"
#include "util/mutex.h"

namespace ratelimit::detail {

class WaitQueue {
 public:
  // One waiter. wake() is called with the queue's mutex held: look again now.
  class Waiter {
   public:
    virtual ~Waiter() = default;
    virtual void wake() = 0;
  };
  using Position = std::list<Waiter*>::iterator;

  WaitQueue() = default;
  WaitQueue(const WaitQueue&) = delete;
  WaitQueue& operator=(const WaitQueue&) = delete;

  // Joins the acquire queue at the back.
  Position join_queue(Waiter* waiter) RL_EXCLUDES(mu_);
  // Leaves it; when `position` was the head, the next waiter is woken to become the head.
  void leave_queue(Position position) RL_EXCLUDES(mu_);
  Position join_watchers(Waiter* waiter) RL_EXCLUDES(mu_);
  void leave_watchers(Position position) RL_EXCLUDES(mu_);

  // What a waiter reads before it looks at the store: whether it is the head, when the head
  // expects capacity, and the wake epoch (a wake_all after this read makes sleep() return at
  // once, so no release between the read and the sleep is missed).
  struct View {
    bool head = false;
    std::optional<TimePoint> head_wake;
    std::uint64_t epoch = 0;
  };
  View view(const Waiter* waiter) RL_EXCLUDES(mu_);

  // The head's expected wake time; waiters behind it are woken when it changes.
  void set_head_wake(TimePoint wake) RL_EXCLUDES(mu_);

  // Wakes every waiter (queue and watchers) to look again. Without waiters it takes no lock
  // (a commit or cancel calls it on the hot path).
  void wake_all() RL_EXCLUDES(mu_);

  // The number of waiters (queue and watchers).
  std::size_t size() RL_EXCLUDES(mu_);

  // A blocking waiter: a thread in sleep().
  class Sleeper final : public Waiter {
   public:
    void wake() override {
      if (source_ != nullptr) source_->request_stop();
    }

   private:
    friend class WaitQueue;
    std::stop_source* source_ = nullptr;  // set while the thread sleeps
  };

  // Sleeps on `clock` until `until` (none: until woken), until woken, or until `stop` is
  // requested. Returns at once when the epoch has moved since `seen`.
  void sleep(Clock& clock, Sleeper& self, std::uint64_t seen, std::optional<TimePoint> until,
             const std::stop_token& stop) RL_EXCLUDES(mu_);

 private:
  void wake_all_locked() RL_REQUIRES(mu_);

  Mutex mu_;
  std::list<Waiter*> queue_ RL_GUARDED_BY(mu_);
  std::list<Waiter*> watchers_ RL_GUARDED_BY(mu_);
  std::optional<TimePoint> head_wake_ RL_GUARDED_BY(mu_);
  std::uint64_t epoch_ RL_GUARDED_BY(mu_) = 0;
  // queue_.size() + watchers_.size(), written under mu_. A waiter joins before it looks at
  // the store, and a release happens in the store before wake_all reads this: a release that
  // reads 0 comes before the joining waiter's look, which then sees it.
  std::atomic<std::size_t> waiting_{0};
};

}  // namespace ratelimit::detail
