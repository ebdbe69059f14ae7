// Internal to the server: the reservations granted over HTTP and not settled yet, each until its
// lease ends.
//
// The table holds ids, not Reservation objects: a granted reservation that is never settled
// keeps its estimate (what ~Reservation does), and a held id is settled through
// RateLimiter::commit/cancel by id, like an id from any other client of the store. So a lease
// costs one small entry (the id and its expiry) and no allocation beyond the id's own text,
// which keeps a busy server's acquire path off the allocator and its memory in proportion to the
// most leases held at once: each shard keeps its leases in one vector (reused through a free list),
// an open-addressing index of positions into it (each beside its hash's low bits), and a list
// through the vector in expiry order (every lease lasts as long, so a new lease goes to the end).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "ratelimit/clock.h"

namespace ratelimit::server {

class Leases {
 public:
  // At most `cap` leases at once (claim() refuses beyond).
  explicit Leases(std::size_t cap) : cap_(cap) {}

  // Claims room for one lease; false when the server already holds `cap` reservations.
  bool claim() {
    if (count_.fetch_add(1, std::memory_order_relaxed) >= cap_) {
      count_.fetch_sub(1, std::memory_order_relaxed);
      return false;
    }
    return true;
  }
  void unclaim() { count_.fetch_sub(1, std::memory_order_relaxed); }

  // Holds `id` (whose room was claimed) until `expires`; forgets expired leases of its shard.
  // An id already held keeps its place and takes the new expiry's room back.
  void add(std::string_view id, TimePoint expires, TimePoint now);
  // True when `id` was held and its lease had not ended; it is no longer held.
  bool take(std::string_view id, TimePoint now);
  // Forgets every lease that ended by `now`; returns how many.
  std::size_t expire(TimePoint now);

  std::size_t size() const { return count_.load(std::memory_order_relaxed); }
  std::size_t cap() const { return cap_; }
  std::uint64_t expired() const { return expired_.load(std::memory_order_relaxed); }

 private:
  static constexpr std::uint32_t kNone = UINT32_MAX;
  static constexpr std::uint64_t kEmpty = UINT64_MAX;

  struct Lease {
    std::string id;
    std::uint64_t hash = 0;
    TimePoint expires{};
    std::uint32_t prev = kNone;  // expiry order; in the free list, next links free entries
    std::uint32_t next = kNone;
  };

  struct Shard {
    std::mutex mu;
    std::vector<Lease> leases;
    // Position in `leases` (low 32 bits) under the hash's low 32 bits, so that probing compares
    // hashes without reading the leases; kEmpty: empty. Size a power of 2.
    std::vector<std::uint64_t> index;
    std::size_t held = 0;
    std::uint32_t free = kNone;
    std::uint32_t oldest = kNone;
    std::uint32_t newest = kNone;
  };

  static std::uint64_t hash_of(std::string_view id);
  Shard& shard(std::uint64_t hash) { return shards_[hash >> 60]; }

  // The index slot holding `id`, or the empty slot where it would go.
  static std::size_t find_slot(const Shard& s, std::string_view id, std::uint64_t hash);
  static void grow(Shard& s);
  // Removes the lease in index slot `slot` (from the index, the expiry list and the vector).
  static void remove(Shard& s, std::size_t slot);
  std::size_t expire_locked(Shard& s, TimePoint now);

  const std::size_t cap_;
  std::atomic<std::size_t> count_{0};
  std::atomic<std::uint64_t> expired_{0};
  std::array<Shard, 16> shards_;
};

}  // namespace ratelimit::server
