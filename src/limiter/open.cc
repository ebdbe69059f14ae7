// RateLimiter::open: resolves the configuration and puts a limiter around the chosen store.
#include <filesystem>
#include <iostream>
#include <system_error>

#include "limiter/limiter_core.h"
#include "limiter/validation.h"
#include "ratelimit/limiter.h"
#include "store/memory/memory_store.h"
#include "store/redis/redis_store.h"
#include "store/sqlite/sqlite_store.h"

namespace ratelimit {
namespace detail {

Result<Config> resolve_config(Config config) {
  for (const auto& [model, quota] : config.quotas) {
    if (auto error = check_model_name("open", model)) return tl::unexpected(std::move(*error));
    if (auto why = validate_quota("open", model, quota)) {
      return make_error(ErrorCode::invalid_argument, *why);
    }
  }
  if (config.clock == nullptr) config.clock = system_clock();
  if (!config.on_warning) {
    config.on_warning = [](std::string_view message) {
      std::cerr << "ratelimit: warning: " << message << '\n';
    };
  }
  if (config.backend != Backend::memory && config.backend != Backend::redis &&
      config.file_path.empty()) {
    auto path = default_state_path(config.backend);
    if (!path) return tl::unexpected(path.error());
    config.file_path = *path;
    if (config.backend == Backend::sqlite) {
      // Only the default path gets its parent created; an explicit one must exist.
      std::error_code ec;
      const auto parent = std::filesystem::path(config.file_path).parent_path();
      std::filesystem::create_directories(parent, ec);
      if (ec) {
        return make_error(ErrorCode::io_error,
                          "ratelimit.open: cannot create " + parent.string() + ": " + ec.message());
      }
    }
  }
  return config;
}

Result<std::unique_ptr<RateLimiter>> open_limiter(Config config, const SqliteOptions& options) {
  auto resolved = resolve_config(std::move(config));
  if (!resolved) return tl::unexpected(resolved.error());
  std::unique_ptr<Store> store;
  switch (resolved->backend) {
    case Backend::memory:
      store = make_memory_store(*resolved, nullptr);
      break;
    case Backend::yaml:
      store = make_memory_store(*resolved, make_yaml_store(resolved->file_path));
      break;
    case Backend::sqlite: {
      auto opened = make_sqlite_store(*resolved, options);
      if (!opened) return tl::unexpected(opened.error());
      store = std::move(*opened);
      break;
    }
    case Backend::redis: {
      auto opened = make_redis_store(*resolved);
      if (!opened) return tl::unexpected(opened.error());
      store = std::move(*opened);
      break;
    }
  }
  auto core = std::make_unique<LimiterCore>(std::move(*resolved), std::move(store));
  return LimiterCore::make_limiter(std::move(core));
}

Result<std::unique_ptr<RateLimiter>> open_sqlite_limiter(Config config,
                                                         const SqliteOptions& options) {
  config.backend = Backend::sqlite;
  return open_limiter(std::move(config), options);
}

}  // namespace detail

Result<std::unique_ptr<RateLimiter>> RateLimiter::open(Config config) {
  return detail::open_limiter(std::move(config), detail::SqliteOptions{});
}

Result<std::unique_ptr<RateLimiter>> RateLimiter::open_sqlite(std::string path, Config config) {
  if (!path.empty()) config.file_path = std::move(path);
  config.backend = Backend::sqlite;
  return open(std::move(config));
}

Result<std::unique_ptr<RateLimiter>> RateLimiter::open_redis(std::string url, Config config) {
  if (!url.empty()) config.redis_url = std::move(url);
  config.backend = Backend::redis;
  return open(std::move(config));
}

}  // namespace ratelimit
