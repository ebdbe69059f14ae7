// Internal: the interface between RateLimiter and the implementation for one kind of store.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ratelimit/limiter.h"
#include "limiter/validation.h"
#include "store/snapshot.h"

namespace ratelimit::detail {

// Where a granted reservation's entry lives. Reservation holds it by shared_ptr, so it may
// outlive the limiter; implementations then answer `closed`. Thread-safe.
class Settler {
 public:
  virtual ~Settler() = default;
  // From a Reservation object, which knows the entry was never settled.
  virtual Status commit(std::uint64_t seq, std::uint64_t generation, std::int64_t prompt_tokens,
                        std::int64_t output_tokens) = 0;
  virtual Status cancel(std::uint64_t seq, std::uint64_t generation) = 0;
  // The opaque id RateLimiter::commit/cancel accept.
  virtual std::string format_id(std::uint64_t seq, std::uint64_t generation) const = 0;
};

// RateLimiter's operations for one kind of store. Thread-safe.
class Engine {
 public:
  virtual ~Engine() = default;

  virtual Decision decide(std::string_view model, std::int64_t estimated_tokens) = 0;
  virtual Status record_usage(std::string_view model, std::int64_t prompt_tokens,
                              std::int64_t output_tokens) = 0;
  virtual Reservation try_acquire(std::string_view model, std::int64_t estimated_tokens) = 0;
  virtual Result<Reservation> acquire(std::string_view model, std::int64_t estimated_tokens,
                                      const WaitOptions& options) = 0;
  virtual Status wait_for_capacity(std::string_view model, std::int64_t tokens,
                                   const WaitOptions& options) = 0;
  // The token counts are non-negative (RateLimiter checks them).
  virtual Status commit(std::string_view id, std::int64_t prompt_tokens,
                        std::int64_t output_tokens) = 0;
  virtual Status cancel(std::string_view id) = 0;
  virtual Result<ModelStats> stats(std::string_view model) = 0;
  virtual Result<std::map<std::string, ModelStats, std::less<>>> all_stats() = 0;
  virtual Result<std::map<std::string, ModelMetrics, std::less<>>> metrics() = 0;
  virtual Result<std::vector<std::string>> models() = 0;
  virtual std::optional<ModelQuota> quota(std::string_view model) = 0;
  virtual QuotaMap quotas() = 0;
  virtual Status set_quota(std::string_view model, ModelQuota quota) = 0;
  virtual Status remove_quota(std::string_view model) = 0;
  virtual Status add_provider(Provider provider) = 0;
  virtual Status reset(std::string_view model) = 0;
  virtual Status persist() = 0;
  virtual Status load() = 0;
  virtual Status close() = 0;
  virtual const Config& config() const = 0;

 protected:
  static Reservation granted(Decision decision, std::shared_ptr<Settler> settler, std::uint64_t seq,
                             std::uint64_t generation) {
    return Reservation(std::move(decision), std::move(settler), seq, generation);
  }
  static Reservation denied(Decision decision) {
    return Reservation(std::move(decision), nullptr, 0, 0);
  }
};

// The in-process engine: windows in memory, snapshots to `store` (null for Backend::memory).
// `config` must be resolved (clock set, file_path filled in for stores that need one).
std::unique_ptr<Engine> make_local_engine(Config config, std::unique_ptr<SnapshotStore> store);

}  // namespace ratelimit::detail
