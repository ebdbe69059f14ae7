#include "limiter/wait_queue.h"

#include "core/time_util.h"

namespace ratelimit::detail {

WaitQueue::Position WaitQueue::join_queue(Waiter* waiter) {
  MutexLock lock(mu_);
  queue_.push_back(waiter);
  waiting_.fetch_add(1, std::memory_order_seq_cst);
  return std::prev(queue_.end());
}

void WaitQueue::leave_queue(Position position) {
  MutexLock lock(mu_);
  const bool was_head = queue_.begin() == position;
  queue_.erase(position);
  waiting_.fetch_sub(1, std::memory_order_seq_cst);
  if (was_head) {
    head_wake_.reset();
    ++epoch_;
    if (!queue_.empty()) queue_.front()->wake();  // the next in line becomes the head
    // The others wait for the new head's wake time; it wakes them when it sets one.
  }
}

WaitQueue::Position WaitQueue::join_watchers(Waiter* waiter) {
  MutexLock lock(mu_);
  watchers_.push_back(waiter);
  waiting_.fetch_add(1, std::memory_order_seq_cst);
  return std::prev(watchers_.end());
}

void WaitQueue::leave_watchers(Position position) {
  MutexLock lock(mu_);
  watchers_.erase(position);
  waiting_.fetch_sub(1, std::memory_order_seq_cst);
}

WaitQueue::View WaitQueue::view(const Waiter* waiter) {
  MutexLock lock(mu_);
  return View{!queue_.empty() && queue_.front() == waiter, head_wake_, epoch_};
}

void WaitQueue::set_head_wake(TimePoint wake) {
  MutexLock lock(mu_);
  if (head_wake_ == wake) return;
  head_wake_ = wake;
  ++epoch_;
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (it != queue_.begin()) (*it)->wake();
  }
}

void WaitQueue::wake_all() {
  if (waiting_.load(std::memory_order_seq_cst) == 0) return;
  MutexLock lock(mu_);
  wake_all_locked();
}

void WaitQueue::wake_all_locked() {
  ++epoch_;
  for (Waiter* w : queue_) w->wake();
  for (Waiter* w : watchers_) w->wake();
}

std::size_t WaitQueue::size() {
  MutexLock lock(mu_);
  return queue_.size() + watchers_.size();
}

void WaitQueue::sleep(Clock& clock, Sleeper& self, std::uint64_t seen,
                      std::optional<TimePoint> until, const std::stop_token& stop) {
  std::stop_source source;
  {
    MutexLock lock(mu_);
    if (epoch_ != seen) return;  // woken between the caller's look and now
    self.source_ = &source;
  }
  {
    std::stop_callback on_stop(stop, [&source] { source.request_stop(); });
    if (until) {
      clock.sleep_until(*until, source.get_token());
    } else {
      block_until_stopped(source.get_token());
    }
  }
  MutexLock lock(mu_);
  self.source_ = nullptr;
}

}  // namespace ratelimit::detail
