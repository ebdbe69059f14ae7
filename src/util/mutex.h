// Internal: a mutex and lock guards that carry Clang's thread-safety annotations.
//
// libstdc++'s std::mutex has none, so `-Wthread-safety` cannot check code that uses it. State
// guarded by a Mutex is declared `RL_GUARDED_BY(mu_)`, functions that expect it held
// `RL_REQUIRES(mu_)`; a clang build of the library with -Wthread-safety -Werror (CI) proves the
// discipline. Under gcc the macros expand to nothing.
#pragma once

#include <mutex>

#if defined(__clang__)
#define RL_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define RL_THREAD_ANNOTATION(x)
#endif

#define RL_CAPABILITY(x) RL_THREAD_ANNOTATION(capability(x))
#define RL_SCOPED_CAPABILITY RL_THREAD_ANNOTATION(scoped_lockable)
#define RL_GUARDED_BY(x) RL_THREAD_ANNOTATION(guarded_by(x))
#define RL_PT_GUARDED_BY(x) RL_THREAD_ANNOTATION(pt_guarded_by(x))
#define RL_REQUIRES(...) RL_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define RL_EXCLUDES(...) RL_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define RL_ACQUIRE(...) RL_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define RL_RELEASE(...) RL_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define RL_TRY_ACQUIRE(...) RL_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
#define RL_RETURN_CAPABILITY(x) RL_THREAD_ANNOTATION(lock_returned(x))
#define RL_NO_THREAD_SAFETY_ANALYSIS RL_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace ratelimit::detail {

// std::mutex with annotations. Also a BasicLockable, so condition_variable_any works with it.
class RL_CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() RL_ACQUIRE() { mu_.lock(); }
  void unlock() RL_RELEASE() { mu_.unlock(); }
  bool try_lock() RL_TRY_ACQUIRE(true) { return mu_.try_lock(); }

 private:
  std::mutex mu_;
};

// Holds `mu` for its scope (std::lock_guard).
class RL_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) RL_ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~MutexLock() RL_RELEASE() { mu_.unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex& mu_;
};

// Holds `mu` for its scope but may let go of it for a while (a sleep): unlock() and lock()
// must be balanced before the scope ends. A BasicLockable for condition_variable_any.
class RL_SCOPED_CAPABILITY RelockableLock {
 public:
  explicit RelockableLock(Mutex& mu) RL_ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~RelockableLock() RL_RELEASE() { mu_.unlock(); }
  RelockableLock(const RelockableLock&) = delete;
  RelockableLock& operator=(const RelockableLock&) = delete;

  void unlock() RL_RELEASE() { mu_.unlock(); }
  void lock() RL_ACQUIRE() { mu_.lock(); }

 private:
  Mutex& mu_;
};

}  // namespace ratelimit::detail
