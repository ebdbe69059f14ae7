#include "leases.h"

#include <functional>
#include <utility>

namespace ratelimit::server {

std::uint64_t Leases::hash_of(std::string_view id) { return std::hash<std::string_view>{}(id); }

std::size_t Leases::find_slot(const Shard& s, std::string_view id, std::uint64_t hash) {
  const std::size_t mask = s.index.size() - 1;
  const std::uint64_t tag = hash << 32;
  for (std::size_t i = hash & mask;; i = (i + 1) & mask) {
    const std::uint64_t e = s.index[i];
    if (e == kEmpty) return i;
    if ((e & ~std::uint64_t{kNone}) != tag) continue;
    const Lease& l = s.leases[static_cast<std::uint32_t>(e)];
    if (l.hash == hash && l.id == id) return i;
  }
}

// The index at least twice the leases held (linear probing stays short); rebuilt from the
// vector, whose positions do not change.
void Leases::grow(Shard& s) {
  const std::size_t size = s.index.empty() ? 64 : s.index.size() * 2;
  s.index.assign(size, kEmpty);
  const std::size_t mask = size - 1;
  for (std::uint32_t at = s.oldest; at != kNone; at = s.leases[at].next) {
    const std::uint64_t hash = s.leases[at].hash;
    std::size_t i = hash & mask;
    while (s.index[i] != kEmpty) i = (i + 1) & mask;
    s.index[i] = (hash << 32) | at;
  }
}

void Leases::remove(Shard& s, std::size_t slot) {
  const auto at = static_cast<std::uint32_t>(s.index[slot]);
  Lease& l = s.leases[at];
  // Out of the expiry list.
  (l.prev == kNone ? s.oldest : s.leases[l.prev].next) = l.next;
  (l.next == kNone ? s.newest : s.leases[l.next].prev) = l.prev;
  // Onto the free list (the id's text is kept: the next lease reuses its capacity).
  l.prev = kNone;
  l.next = s.free;
  s.free = at;
  --s.held;
  // Out of the index: shift back the entries after it that probed past the emptied slot.
  const std::size_t mask = s.index.size() - 1;
  std::size_t hole = slot;
  for (std::size_t i = (slot + 1) & mask; s.index[i] != kEmpty; i = (i + 1) & mask) {
    const std::size_t home = (s.index[i] >> 32) & mask;
    // The entry may move to the hole when its home is not in (hole, i] (cyclically).
    if (((i - home) & mask) >= ((i - hole) & mask)) {
      s.index[hole] = s.index[i];
      hole = i;
    }
  }
  s.index[hole] = kEmpty;
}

void Leases::add(std::string_view id, TimePoint expires, TimePoint now) {
  const std::uint64_t hash = hash_of(id);
  Shard& s = shard(hash);
  std::lock_guard lock(s.mu);
  expire_locked(s, now);
  if ((s.held + 1) * 2 > s.index.size()) grow(s);
  const std::size_t slot = find_slot(s, id, hash);
  if (s.index[slot] != kEmpty) {  // held already (an id is granted once): the room goes back
    count_.fetch_sub(1, std::memory_order_relaxed);
    return;
  }
  std::uint32_t at = s.free;
  if (at != kNone) {
    s.free = s.leases[at].next;
  } else {
    at = static_cast<std::uint32_t>(s.leases.size());
    s.leases.emplace_back();
  }
  Lease& l = s.leases[at];
  l.id.assign(id);
  l.hash = hash;
  l.expires = expires;
  l.prev = s.newest;
  l.next = kNone;
  (s.newest == kNone ? s.oldest : s.leases[s.newest].next) = at;
  s.newest = at;
  s.index[slot] = (hash << 32) | at;
  ++s.held;
}

bool Leases::take(std::string_view id, TimePoint now) {
  const std::uint64_t hash = hash_of(id);
  Shard& s = shard(hash);
  std::lock_guard lock(s.mu);
  expire_locked(s, now);
  if (s.held == 0) return false;
  const std::size_t slot = find_slot(s, id, hash);
  if (s.index[slot] == kEmpty) return false;
  remove(s, slot);
  count_.fetch_sub(1, std::memory_order_relaxed);
  return true;
}

std::size_t Leases::expire(TimePoint now) {
  std::size_t n = 0;
  for (Shard& s : shards_) {
    std::lock_guard lock(s.mu);
    n += expire_locked(s, now);
  }
  return n;
}

std::size_t Leases::expire_locked(Shard& s, TimePoint now) {
  std::size_t n = 0;
  while (s.oldest != kNone && s.leases[s.oldest].expires <= now) {
    const Lease& l = s.leases[s.oldest];
    remove(s, find_slot(s, l.id, l.hash));
    ++n;
  }
  if (n > 0) {
    count_.fetch_sub(n, std::memory_order_relaxed);
    expired_.fetch_add(n, std::memory_order_relaxed);
  }
  return n;
}

}  // namespace ratelimit::server
