// RateLimiter and Reservation: thin forwarding to the engine of the configured store.
#include "ratelimit/limiter.h"

#include <charconv>
#include <filesystem>
#include <system_error>
#include <utility>

#include "limiter/engine.h"
#include "store/snapshot.h"
#include "store/sqlite/sqlite_store.h"

namespace ratelimit {

namespace {

// Commit's argument check, for a Reservation and for an id alike (engines never see negatives).
Status check_commit_tokens(std::int64_t prompt_tokens, std::int64_t output_tokens) {
  if (prompt_tokens < 0 || output_tokens < 0) {
    return make_error(ErrorCode::invalid_argument,
                      "ratelimit.commit: token counts must be non-negative (got prompt " +
                          std::to_string(prompt_tokens) + ", output " +
                          std::to_string(output_tokens) + ")");
  }
  return {};
}

}  // namespace

// --- Reservation ---

Reservation::Reservation(Decision decision, std::shared_ptr<detail::Settler> settler,
                         std::uint64_t seq, std::uint64_t generation)
    : decision_(std::move(decision)),
      settler_(std::move(settler)),
      seq_(seq),
      generation_(generation) {}

Reservation::Reservation(Reservation&& other) noexcept
    : decision_(std::exchange(other.decision_, Decision{})),
      settler_(std::move(other.settler_)),
      seq_(std::exchange(other.seq_, 0)),
      generation_(std::exchange(other.generation_, 0)),
      settled_(std::exchange(other.settled_, false)),
      id_(std::move(other.id_)) {
  other.id_.clear();
}

Reservation& Reservation::operator=(Reservation&& other) noexcept {
  if (this != &other) {
    // Settling "as the destructor would" keeps the estimate: nothing to do but let go.
    decision_ = std::exchange(other.decision_, Decision{});
    settler_ = std::move(other.settler_);
    seq_ = std::exchange(other.seq_, 0);
    generation_ = std::exchange(other.generation_, 0);
    settled_ = std::exchange(other.settled_, false);
    id_ = std::move(other.id_);
    other.id_.clear();
  }
  return *this;
}

Reservation::~Reservation() = default;

const std::string& Reservation::id() const {
  if (settler_ != nullptr && id_.empty()) id_ = settler_->format_id(seq_, generation_);
  return id_;
}

Status Reservation::settle_check(const char* operation) const {
  if (settler_ == nullptr) {
    return make_error(ErrorCode::invalid_argument,
                      std::string("ratelimit.") + operation +
                          ": the reservation was not granted (check granted() first)");
  }
  if (settled_) {
    return make_error(ErrorCode::invalid_argument,
                      std::string("ratelimit.") + operation +
                          ": the reservation is already settled (commit or cancel it once)");
  }
  return {};
}

Status Reservation::commit(std::int64_t prompt_tokens, std::int64_t output_tokens) {
  if (auto s = settle_check("commit"); !s) return s;
  if (auto s = check_commit_tokens(prompt_tokens, output_tokens); !s) return s;
  Status s = settler_->commit(seq_, generation_, prompt_tokens, output_tokens);
  if (s || s.error().code == ErrorCode::closed) settled_ = true;
  return s;
}

Status Reservation::cancel() {
  if (auto s = settle_check("cancel"); !s) return s;
  Status s = settler_->cancel(seq_, generation_);
  if (s || s.error().code == ErrorCode::closed) settled_ = true;
  return s;
}

// --- RateLimiter ---

Result<std::unique_ptr<RateLimiter>> RateLimiter::open(Config config) {
  for (const auto& [model, quota] : config.quotas) {
    if (auto why = detail::validate_quota("open", model, quota)) {
      return make_error(ErrorCode::invalid_argument, *why);
    }
  }
  if (config.clock == nullptr) config.clock = system_clock();
  std::unique_ptr<detail::SnapshotStore> store;
  switch (config.backend) {
    case Backend::memory:
      break;
    case Backend::yaml: {
      if (config.file_path.empty()) {
        auto path = default_state_path(Backend::yaml);
        if (!path) return tl::unexpected(path.error());
        config.file_path = *path;
      }
      store = detail::make_yaml_store(config.file_path);
      break;
    }
    case Backend::sqlite: {
      if (config.file_path.empty()) {
        auto path = default_state_path(Backend::sqlite);
        if (!path) return tl::unexpected(path.error());
        config.file_path = *path;
        // Only the default path gets its parent created; an explicit one must exist.
        std::error_code ec;
        const auto parent = std::filesystem::path(config.file_path).parent_path();
        std::filesystem::create_directories(parent, ec);
        if (ec) {
          return make_error(ErrorCode::io_error, "ratelimit.open: cannot create " +
                                                     parent.string() + ": " + ec.message());
        }
      }
      auto engine = detail::make_sqlite_engine(std::move(config));
      if (!engine) return tl::unexpected(engine.error());
      return std::unique_ptr<RateLimiter>(new RateLimiter(std::move(*engine)));
    }
  }
  auto engine = detail::make_local_engine(std::move(config), std::move(store));
  return std::unique_ptr<RateLimiter>(new RateLimiter(std::move(engine)));
}

Result<std::unique_ptr<RateLimiter>> RateLimiter::open_sqlite(std::string path, Config config) {
  if (!path.empty()) config.file_path = std::move(path);
  config.backend = Backend::sqlite;
  return open(std::move(config));
}

RateLimiter::RateLimiter(std::unique_ptr<detail::Engine> engine) : engine_(std::move(engine)) {}
RateLimiter::~RateLimiter() = default;

Decision RateLimiter::decide(std::string_view model, std::int64_t estimated_tokens) {
  return engine_->decide(model, estimated_tokens);
}
bool RateLimiter::can_send(std::string_view model, std::int64_t estimated_tokens) {
  return engine_->decide(model, estimated_tokens).allowed;
}
Status RateLimiter::record_usage(std::string_view model, std::int64_t prompt_tokens,
                                 std::int64_t output_tokens) {
  return engine_->record_usage(model, prompt_tokens, output_tokens);
}
Reservation RateLimiter::try_acquire(std::string_view model, std::int64_t estimated_tokens) {
  return engine_->try_acquire(model, estimated_tokens);
}
Result<Reservation> RateLimiter::acquire(std::string_view model, std::int64_t estimated_tokens,
                                         WaitOptions options) {
  return engine_->acquire(model, estimated_tokens, options);
}
Status RateLimiter::wait_for_capacity(std::string_view model, std::int64_t tokens,
                                      WaitOptions options) {
  return engine_->wait_for_capacity(model, tokens, options);
}
Status RateLimiter::commit(std::string_view reservation_id, std::int64_t prompt_tokens,
                           std::int64_t output_tokens) {
  if (auto s = check_commit_tokens(prompt_tokens, output_tokens); !s) return s;
  return engine_->commit(reservation_id, prompt_tokens, output_tokens);
}
Status RateLimiter::cancel(std::string_view reservation_id) {
  return engine_->cancel(reservation_id);
}
Result<ModelStats> RateLimiter::stats(std::string_view model) { return engine_->stats(model); }
Result<std::map<std::string, ModelStats, std::less<>>> RateLimiter::all_stats() {
  return engine_->all_stats();
}
Result<std::map<std::string, ModelMetrics, std::less<>>> RateLimiter::metrics() {
  return engine_->metrics();
}
Result<std::vector<std::string>> RateLimiter::models() { return engine_->models(); }
std::optional<ModelQuota> RateLimiter::quota(std::string_view model) {
  return engine_->quota(model);
}
QuotaMap RateLimiter::quotas() { return engine_->quotas(); }
Status RateLimiter::set_quota(std::string_view model, ModelQuota quota) {
  return engine_->set_quota(model, quota);
}
Status RateLimiter::remove_quota(std::string_view model) { return engine_->remove_quota(model); }
Status RateLimiter::add_provider(Provider provider) { return engine_->add_provider(provider); }
Status RateLimiter::reset(std::string_view model) { return engine_->reset(model); }
Status RateLimiter::persist() { return engine_->persist(); }
Status RateLimiter::load() { return engine_->load(); }
Status RateLimiter::close() { return engine_->close(); }
const Config& RateLimiter::config() const { return engine_->config(); }

}  // namespace ratelimit
