// Internal: a read-mostly map from model name to a per-model object, with lock-free lookups.
//
// Readers find an entry by string_view without building a std::string, without taking a lock
// and without writing any shared cache line: an open-addressing table of atomic pointers,
// published with release stores and read with acquire loads. Writers (a model seen for the
// first time) take a mutex. Entries are never removed; tables outgrown are kept until the
// map is destroyed, so a reader holding an old table stays safe. Entries also get a dense
// index (0, 1, 2, ...) with a lock-free lookup, for reservation ids.
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "util/mutex.h"

namespace ratelimit::detail {

// T must have `const std::string name;` and `const std::size_t hash;` members and a
// constructor T(std::string name, std::size_t hash, std::uint32_t index, Args...).
template <class T>
class ModelTable {
 public:
  ModelTable() {
    MutexLock lock(write_mu_);
    install(new Table(16));
  }
  ModelTable(const ModelTable&) = delete;
  ModelTable& operator=(const ModelTable&) = delete;
  ~ModelTable() {
    for (auto& segment : segments_) delete[] segment.load(std::memory_order_relaxed);
  }

  // A word-at-a-time hash for short keys (the idea of wyhash's small-input path): names of up
  // to 16 bytes are read as two (possibly overlapping) words and mixed with one 64×64→128-bit
  // multiply; longer names fold 16 bytes per step. Every byte and the length reach the result,
  // and the multiply's folded halves mix the low bits (the table index). Not a stable format:
  // only this process's tables use it.
  static std::size_t hash_of(std::string_view name) {
    const char* p = name.data();
    const std::size_t n = name.size();
    std::uint64_t seed = 0x9e3779b97f4a7c15ULL ^ n;
    std::uint64_t a = 0;
    std::uint64_t b = 0;
    if (n <= 16) [[likely]] {
      if (n >= 8) {
        a = read64(p);
        b = read64(p + n - 8);
      } else if (n >= 4) {
        a = read32(p);
        b = read32(p + n - 4);
      } else if (n > 0) {
        a = (std::uint64_t{static_cast<unsigned char>(p[0])} << 16) |
            (std::uint64_t{static_cast<unsigned char>(p[n >> 1])} << 8) |
            static_cast<unsigned char>(p[n - 1]);
      }
    } else {
      std::size_t i = 0;
      for (; i + 16 < n; i += 16) {
        seed = mix(read64(p + i) ^ 0xa0761d6478bd642fULL, read64(p + i + 8) ^ seed);
      }
      a = read64(p + n - 16);
      b = read64(p + n - 8);
    }
    return static_cast<std::size_t>(
        mix(0xe7037ed1a0b428dbULL ^ n, mix(a ^ 0xa0761d6478bd642fULL, b ^ seed)));
  }

  // Lock-free. nullptr when the model has never been added.
  T* find(std::string_view name) const {
    const std::size_t h = hash_of(name);
    const Table* table = current_.load(std::memory_order_acquire);
    for (std::size_t i = h & table->mask;; i = (i + 1) & table->mask) {
      T* item = table->slots[i].load(std::memory_order_acquire);
      if (item == nullptr) return nullptr;
      if (item->hash == h && item->name == name) return item;
    }
  }

  // Lock-free. nullptr for an index never handed out.
  T* at_index(std::uint64_t index) const {
    if (index >= kMaxItems) return nullptr;
    const auto [segment, offset] = locate(index);
    const std::atomic<T*>* items = segments_[segment].load(std::memory_order_acquire);
    return items == nullptr ? nullptr : items[offset].load(std::memory_order_acquire);
  }

  // Finds or adds `name`. The new entry is created with `make(name, hash, index)`, which
  // returns a std::shared_ptr<T>.
  template <class Make>
  T* find_or_add(std::string_view name, Make&& make) RL_EXCLUDES(write_mu_) {
    if (T* found = find(name)) return found;
    MutexLock lock(write_mu_);
    if (T* found = find(name)) return found;
    const std::size_t h = hash_of(name);
    const auto index = static_cast<std::uint32_t>(owned_.size());
    std::shared_ptr<T> item = make(std::string(name), h, index);
    Table* table = current_.load(std::memory_order_relaxed);
    if ((owned_.size() + 1) * 2 > table->size) {
      auto* bigger = new Table(table->size * 2);
      for (const auto& existing : owned_) insert(bigger, existing.get());
      install(bigger);
      table = bigger;
    }
    const auto [segment, offset] = locate(index);
    std::atomic<T*>* items = segments_[segment].load(std::memory_order_relaxed);
    if (items == nullptr) {
      items = new std::atomic<T*>[segment_size(segment)]();
      segments_[segment].store(items, std::memory_order_release);
    }
    items[offset].store(item.get(), std::memory_order_release);
    insert(table, item.get());
    owned_.push_back(std::move(item));
    return owned_.back().get();
  }

  // Every entry, in the order added (a copy of the owning pointers, taken under the lock).
  std::vector<std::shared_ptr<T>> all() const RL_EXCLUDES(write_mu_) {
    MutexLock lock(write_mu_);
    return owned_;
  }

 private:
  static std::uint64_t read64(const char* p) {
    std::uint64_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static std::uint64_t read32(const char* p) {
    std::uint32_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  // The 128-bit product of a and b, its halves folded together.
  static std::uint64_t mix(std::uint64_t a, std::uint64_t b) {
    __extension__ using U128 = unsigned __int128;
    const U128 r = static_cast<U128>(a) * b;
    return static_cast<std::uint64_t>(r) ^ static_cast<std::uint64_t>(r >> 64);
  }

  static constexpr std::size_t kFirstSegment = 64;
  static constexpr std::size_t kSegments = 26;  // 64·(2^26 − 1) entries at most
  static constexpr std::uint64_t kMaxItems = kFirstSegment * ((std::uint64_t{1} << kSegments) - 1);

  struct Table {
    explicit Table(std::size_t n) : size(n), mask(n - 1), slots(new std::atomic<T*>[n]()) {}
    std::size_t size;
    std::size_t mask;
    std::unique_ptr<std::atomic<T*>[]> slots;
  };

  // Segment s holds indices [64·(2^s − 1), 64·(2^(s+1) − 1)).
  static std::pair<std::size_t, std::size_t> locate(std::uint64_t index) {
    const std::uint64_t block = index / kFirstSegment + 1;
    const auto segment = static_cast<std::size_t>(std::bit_width(block) - 1);
    const std::uint64_t first = kFirstSegment * ((std::uint64_t{1} << segment) - 1);
    return {segment, static_cast<std::size_t>(index - first)};
  }
  static std::size_t segment_size(std::size_t segment) { return kFirstSegment << segment; }

  static void insert(Table* table, T* item) {
    for (std::size_t i = item->hash & table->mask;; i = (i + 1) & table->mask) {
      if (table->slots[i].load(std::memory_order_relaxed) == nullptr) {
        table->slots[i].store(item, std::memory_order_release);
        return;
      }
    }
  }
  void install(Table* table) RL_REQUIRES(write_mu_) {
    tables_.emplace_back(table);
    current_.store(table, std::memory_order_release);
  }

  std::atomic<Table*> current_{nullptr};
  std::atomic<std::atomic<T*>*> segments_[kSegments] = {};
  mutable Mutex write_mu_;  // serialises writers; readers take no lock
  std::vector<std::unique_ptr<Table>> tables_ RL_GUARDED_BY(write_mu_);
  std::vector<std::shared_ptr<T>> owned_ RL_GUARDED_BY(write_mu_);
};

}  // namespace ratelimit::detail
