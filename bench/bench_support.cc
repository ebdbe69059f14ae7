// Global operator new/delete replacements that count allocations per thread, and the
// multi-threaded process mode (see bench_support.h).
#include "bench_support.h"

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>
#include <thread>

namespace {

constinit thread_local std::uint64_t t_allocations = 0;

// malloc with the standard new-handler loop; nullptr when there is no handler left to try.
void* allocate(std::size_t size, std::size_t alignment) {
  ++t_allocations;
  if (size == 0) size = 1;
  if (alignment < sizeof(void*)) alignment = sizeof(void*);
  for (;;) {
    void* p = nullptr;
    if (alignment <= alignof(std::max_align_t)) {
      p = std::malloc(size);
    } else if (::posix_memalign(&p, alignment, size) != 0) {
      p = nullptr;
    }
    if (p != nullptr) return p;
    std::new_handler handler = std::get_new_handler();
    if (handler == nullptr) return nullptr;
    handler();
  }
}

void* allocate_or_throw(std::size_t size, std::size_t alignment) {
  if (void* p = allocate(size, alignment)) return p;
  throw std::bad_alloc();
}

void* allocate_nothrow(std::size_t size, std::size_t alignment) noexcept {
  try {
    return allocate(size, alignment);
  } catch (...) {  // a new-handler may throw
    return nullptr;
  }
}

// Starts and joins a thread before main unless RATELIMIT_BENCH_SINGLE_THREADED=1.
// The mode is shown in the context lines above the results.
[[maybe_unused]] const bool g_multi_threaded = [] {
  const char* single = std::getenv("RATELIMIT_BENCH_SINGLE_THREADED");
  if (single != nullptr && std::strcmp(single, "1") == 0) {
    benchmark::AddCustomContext("process", "single-threaded (glibc/libstdc++ skip atomics)");
    return false;
  }
  std::thread([] {}).join();
  benchmark::AddCustomContext("process", "multi-threaded (a thread was started before main)");
  return true;
}();

}  // namespace

namespace ratelimit::bench {
std::uint64_t thread_allocations() { return t_allocations; }
}  // namespace ratelimit::bench

void* operator new(std::size_t size) { return allocate_or_throw(size, 0); }
void* operator new[](std::size_t size) { return allocate_or_throw(size, 0); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  return allocate_nothrow(size, 0);
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  return allocate_nothrow(size, 0);
}
void* operator new(std::size_t size, std::align_val_t align) {
  return allocate_or_throw(size, static_cast<std::size_t>(align));
}
void* operator new[](std::size_t size, std::align_val_t align) {
  return allocate_or_throw(size, static_cast<std::size_t>(align));
}
void* operator new(std::size_t size, std::align_val_t align, const std::nothrow_t&) noexcept {
  return allocate_nothrow(size, static_cast<std::size_t>(align));
}
void* operator new[](std::size_t size, std::align_val_t align, const std::nothrow_t&) noexcept {
  return allocate_nothrow(size, static_cast<std::size_t>(align));
}

void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
