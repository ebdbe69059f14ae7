// migrate_yaml_to_sqlite: a YAML state file (ours or go-ratelimit's) into the SQLite store.
#include <iostream>

#include "limiter/validation.h"
#include "ratelimit/limiter.h"
#include "ratelimit/model_name.h"
#include "store/snapshot.h"
#include "store/sqlite/open.h"
#include "store/sqlite/schema.h"
#include "store/sqlite/seed_tables.h"
#include "store/sqlite/sqlite_store.h"

namespace ratelimit {
namespace detail {

Status migrate_yaml(const std::string& yaml_path, const std::string& sqlite_path,
                    std::function<void(std::string_view)> on_warning,
                    const SqliteOptions& options) {
  const char* op = "ratelimit.migrate";
  auto rename_op = [&](Error e) {
    constexpr std::string_view kLoad = "ratelimit.load: ";
    if (e.message.rfind(kLoad, 0) == 0)
      e.message = std::string(op) + ": " + e.message.substr(kLoad.size());
    return tl::unexpected(std::move(e));
  };
  auto loaded = make_yaml_store(yaml_path)->load();
  if (!loaded) return rename_op(loaded.error());
  if (!loaded->has_value()) {
    return make_error(ErrorCode::not_found, std::string(op) + ": " + yaml_path +
                                                ": no such YAML state file (check the path)");
  }
  Snapshot snapshot = std::move(**loaded);
  // Names the model-name rule refuses are skipped and reported, never the whole file.
  auto drop_invalid = [&](auto& map, const char* what) {
    for (auto it = map.begin(); it != map.end();) {
      if (auto problem = model_name_problem(it->first)) {
        const std::string message = std::string(op) + ": " + yaml_path + ": skipped the " + what +
                                    " of " + quoted(it->first) + ": the name " + *problem;
        if (on_warning) {
          on_warning(message);
        } else {
          std::cerr << "ratelimit: warning: " << message << '\n';
        }
        it = map.erase(it);
      } else {
        ++it;
      }
    }
  };
  drop_invalid(snapshot.quotas, "quota");
  drop_invalid(snapshot.state, "usage");
  for (const auto& [model, q] : snapshot.quotas) {
    if (auto why = validate_quota("migrate", model, q)) {
      return make_error(ErrorCode::corrupt_state, *why + " (in " + yaml_path + ")");
    }
  }
  auto opened = open_database(sqlite_path, Seeds{}, false, options, op);
  if (!opened) return tl::unexpected(opened.error());
  Connection& c = *opened->conn;
  const std::string where = std::string(op) + ": sqlite " + sqlite_path + ": ";
  try {
    c.exec("BEGIN IMMEDIATE");
    std::int64_t day_gen = 1;
    {
      sqlite3_stmt* s = c.prepare(
          "SELECT coalesce(max(day_gen), 0) + 1 FROM rl_log WHERE seq = 9223372036854775807");
      Query u(c, s);
      if (u.row()) day_gen = u.i64(0);
    }
    if (!snapshot.quotas.empty()) {
      c.exec("DELETE FROM quotas");
      sqlite3_stmt* s = c.prepare(
          "INSERT INTO quotas (model, max_rpm, max_tpm, max_rpd) VALUES (?1, ?2, ?3, ?4)");
      for (const auto& [model, q] : snapshot.quotas) {
        Query u(c, s);
        u.bind(1, model).bind(2, q.max_rpm).bind(3, q.max_tpm).bind(4, q.max_rpd).run();
      }
    }
    for (const char* sql : {"DELETE FROM requests", "DELETE FROM tokens", "DELETE FROM daily"}) {
      c.exec(sql);
    }
    sqlite3_stmt* req = c.prepare("INSERT INTO requests (model, ts) VALUES (?1, ?2)");
    sqlite3_stmt* tok = c.prepare("INSERT INTO tokens (model, ts, count) VALUES (?1, ?2, ?3)");
    sqlite3_stmt* day =
        c.prepare("INSERT INTO daily (model, day_start, day_count) VALUES (?1, ?2, ?3)");
    // INT64_MIN is the "nothing" horizon: a row there could never leave the totals.
    auto clamp = [](std::int64_t t) { return std::max(t, INT64_MIN + 1); };
    for (const auto& [model, state] : snapshot.state) {
      for (std::int64_t t : state.requests) {
        Query u(c, req);
        u.bind(1, model).bind(2, clamp(t)).run();
      }
      for (const TokenEntry& e : state.tokens) {
        Query u(c, tok);
        u.bind(1, model)
            .bind(2, clamp(e.time_ns))
            .bind(3, std::max<std::int64_t>(0, e.count))
            .run();
      }
      if (state.day_start_ns != 0) {
        Query u(c, day);
        u.bind(1, model)
            .bind(2, state.day_start_ns)
            .bind(3, std::max<std::int64_t>(0, state.day_count))
            .run();
      }
    }
    import_seed_usage(c, false, day_gen, op);  // the YAML usage replaces the live usage
    c.exec("COMMIT");
  } catch (const DbFailure& e) {
    c.rollback();
    ErrorCode code = ErrorCode::io_error;
    if (is_busy_code(e.rc)) code = ErrorCode::unavailable;
    if (is_damage_code(e.rc)) code = ErrorCode::corrupt_state;
    return make_error(code, where + e.message + " (the database was left as it was)");
  } catch (const OpFailure& e) {
    c.rollback();
    return tl::unexpected(e.error);
  }
  return {};
}

}  // namespace detail

Status migrate_yaml_to_sqlite(const std::string& yaml_path, const std::string& sqlite_path,
                              std::function<void(std::string_view)> on_warning) {
  return detail::migrate_yaml(yaml_path, sqlite_path, std::move(on_warning),
                              detail::SqliteOptions{});
}

}  // namespace ratelimit
