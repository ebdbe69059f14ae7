// Internal: the state of a snapshot store (memory, YAML), in the shape of go-ratelimit's file.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/rules.h"
#include "ratelimit/clock.h"
#include "ratelimit/config.h"
#include "ratelimit/quota.h"
#include "ratelimit/status.h"

namespace ratelimit::detail {

struct TokenEntry {
  std::int64_t time_ns = 0;  // Unix ns
  std::int64_t count = 0;    // >= 0: input + output
  std::int64_t output = 0;   // 0..count: of which output (our key; go-ratelimit ignores it)
  friend bool operator==(const TokenEntry&, const TokenEntry&) = default;
};

struct ModelState {
  std::vector<std::int64_t> requests;  // Unix ns, in time order
  std::vector<TokenEntry> tokens;      // in time order
  std::int64_t day_start_ns = 0;       // 0: the day has not started
  std::int64_t day_count = 0;          // >= 0
  friend bool operator==(const ModelState&, const ModelState&) = default;
};

struct Snapshot {
  QuotaMap quotas;
  std::map<std::string, ModelState, std::less<>> state;
  // Ours (extra top-level keys go-ratelimit ignores):
  AliasMap aliases;
  std::optional<UnknownModels> unknown_models;          // nullopt: never set
  std::map<std::string, Learned, std::less<>> learned;  // what providers said, in force
  friend bool operator==(const Snapshot&, const Snapshot&) = default;
};

// Where a snapshot store keeps its state. Implementations validate what they read: a value
// no valid state can have (a negative limit or count) is corrupt_state naming model and field.
class SnapshotStore {
 public:
  virtual ~SnapshotStore() = default;
  // Writes the whole snapshot atomically: afterwards the store holds the old or the new one.
  virtual Status save(const Snapshot& snapshot) = 0;
  // nullopt when there is nothing stored yet (a missing file).
  virtual Result<std::optional<Snapshot>> load() = 0;
  // Moves a damaged state aside (Config::recover_corrupt) and returns where it went; the
  // next load finds nothing. Refuses (corrupt_state) a file that is some other store's.
  virtual Result<std::string> move_aside() = 0;
};

// A store for Backend::yaml at `path` (parent directories are created on save).
std::unique_ptr<SnapshotStore> make_yaml_store(std::string path);

}  // namespace ratelimit::detail
