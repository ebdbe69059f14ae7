// Internal: the SQLite store's open database: one connection guarded by a mutex, and every
// operation as one transaction on it. Shared by the store and its model handles (a Reservation
// may outlive the store: its handle then finds the connection closed).
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <new>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "limiter/validation.h"
#include "ratelimit/config.h"
#include "ratelimit/model_name.h"
#include "store/sqlite/model_rows.h"
#include "store/sqlite/open.h"
#include "store/sqlite/schema.h"
#include "store/sqlite/seed_tables.h"
#include "store/sqlite/statements.h"
#include "util/mutex.h"

namespace ratelimit::detail {

// The open database, shared by the store and its model handles (a Reservation may outlive
// the store: its handle then finds the connection closed).
class Database {
 public:
  Database(const Config& config, Opened opened)
      : clock_(config.clock),
        warn_(config.on_warning),
        conn_(std::move(opened.conn)),
        prefix_(hex16(opened.store_id) + "-") {
    st_.prepare(*conn_);  // throws DbFailure (the caller catches)
  }

  Mutex mu;
  std::atomic<std::uint64_t> skipped{0};  // distinct invalid names seen in the database

  bool open() const RL_REQUIRES(mu) { return conn_ != nullptr; }
  const std::string& prefix() const { return prefix_; }
  std::int64_t now_ns() const { return to_ns(clock_->now()); }
  Error closed_error(const char* op) const {
    return Error{ErrorCode::closed, std::string(op) + ": the limiter is closed (open a new one)"};
  }

  // Runs `body(rows)` in one transaction; on failure rolls back and fills `error`. A closed
  // database fails with `closed`.
  template <class F>
  bool transaction(bool write, const char* op, Error* error, F&& body) RL_REQUIRES(mu) {
    if (!conn_) {
      *error = closed_error(op);
      return false;
    }
    ModelRows rows(*conn_, st_, floors_);
    rows.set_operation(op);
    try {
      {
        Query u(*conn_, write ? st_.begin_write : st_.begin_read);
        u.run();
      }
      body(rows);
      {
        Query u(*conn_, st_.commit);
        u.run();
      }
      // config_epoch() is what the last transaction read (no query of its own).
      if (rows.seen_config >= 0) epoch_.store(rows.seen_config, std::memory_order_release);
      return true;
    } catch (const DbFailure& e) {
      conn_->rollback();
      *error = to_error(op, e);
    } catch (const OpFailure& e) {
      conn_->rollback();
      *error = e.error;
    } catch (const std::bad_alloc&) {
      conn_->rollback();
      *error = Error{ErrorCode::internal, std::string(op) + ": out of memory"};
    }
    return false;
  }

  // A read transaction; a write only in the rare cases advance() names (the clock behind the
  // database, the first look at a new day), never to prune. `visit(rows, state)` sees the
  // state advanced to now.
  template <class F>
  bool read_model(std::string_view model, const char* op, Error* error, F&& visit) RL_REQUIRES(mu) {
    bool done = false;
    bool ok = transaction(false, op, error, [&](ModelRows& rows) {
      RowState s = rows.load(model);
      if (!rows.advance(model, s, now_ns(), false)) return;
      visit(rows, s);
      done = true;
    });
    if (ok && !done) {
      ok = transaction(true, op, error, [&](ModelRows& rows) {
        RowState s = rows.load(model);
        rows.advance(model, s, now_ns(), true);
        rows.save(model, s);
        visit(rows, s);
      });
    }
    return ok;
  }

  // Every model with rows or a quota, advanced to now (in a read, or in a write in the rare
  // cases of read_model). Names the model-name rule refuses are skipped with a warning.
  bool all_models(const char* op, Error* error, std::vector<std::pair<std::string, RowState>>* out)
      RL_REQUIRES(mu) {
    for (bool write : {false, true}) {
      bool done = false;
      const bool ok = transaction(write, op, error, [&](ModelRows& rows) RL_REQUIRES(mu) {
        out->clear();
        const std::int64_t now = now_ns();
        for (std::string& model : model_names()) {
          RowState s = rows.load(model);
          if (!rows.advance(model, s, now, write)) return;
          if (write) rows.save(model, s);
          out->emplace_back(std::move(model), s);
        }
        done = true;
      });
      if (!ok) return false;
      if (done) return true;
    }
    return true;  // unreachable: a write always completes
  }

  // Every quota row with a valid name.
  bool all_quotas(const char* op, Error* error, QuotaMap* out) RL_REQUIRES(mu) {
    return transaction(false, op, error, [&](ModelRows&) RL_REQUIRES(mu) {
      out->clear();
      Query u(*conn_, st_.all_quotas);
      while (u.row()) {
        std::string model = u.text(0);
        if (!valid_name(model)) continue;
        const ModelQuota q{
            u.i64(1), u.i64(2),
            u.i64(3), u.i64(4),
            u.i64(5), u.i64(6) == 1 ? DayStart::pacific_midnight : DayStart::first_request};
        if (auto why = validate_quota("load", model, q)) {
          throw OpFailure{{ErrorCode::corrupt_state, *why + " (in " + conn_->path() + ")"}};
        }
        out->emplace(std::move(model), q);
      }
    });
  }

  bool upsert_quotas(const QuotaMap& quotas, const char* op, Error* error,
                     const AliasMap& aliases = {}) RL_REQUIRES(mu) {
    return transaction(true, op, error, [&](ModelRows&) RL_REQUIRES(mu) {
      for (const auto& [name, target] : aliases) {
        Query u(*conn_, st_.upsert_alias);
        u.bind(1, name).bind(2, target).run();
      }
      for (const auto& [model, q] : quotas) {
        Query u(*conn_, st_.upsert_quota);
        u.bind(1, model).bind(2, q.max_rpm).bind(3, q.max_tpm).bind(4, q.max_rpd);
        u.bind(5, q.max_input_tpm).bind(6, q.max_output_tpm);
        u.bind(7, static_cast<std::int64_t>(q.day_start)).run();
      }
      bump_config();
    });
  }

  // rl_meta.config_version as the last transaction of this store read or wrote it (every
  // model transaction reads it with the model's row). A change by another process is seen at
  // this process's next transaction on any model.
  std::uint64_t config_version() const {
    return static_cast<std::uint64_t>(epoch_.load(std::memory_order_acquire));
  }
  // Reads it once (at open).
  void read_config_version() RL_REQUIRES(mu) {
    try {
      Query u(*conn_, st_.get_meta);
      u.bind(1, std::string_view("config_version"));
      if (u.row()) epoch_.store(u.i64(0), std::memory_order_release);
    } catch (const DbFailure&) {
      // The next transaction reads it again (and reports the failure).
    }
  }

  bool read_aliases(const char* op, Error* error, AliasMap* out) RL_REQUIRES(mu) {
    return transaction(false, op, error, [&](ModelRows&) RL_REQUIRES(mu) {
      out->clear();
      Query u(*conn_, st_.all_aliases);
      while (u.row()) {
        std::string name = u.text(0);
        std::string target = u.text(1);
        if (!valid_name(name) || !valid_name(target)) continue;
        out->emplace(std::move(name), std::move(target));
      }
    });
  }
  bool read_alias(std::string_view name, const char* op, Error* error,
                  std::optional<std::string>* out) RL_REQUIRES(mu) {
    return transaction(false, op, error, [&](ModelRows&) RL_REQUIRES(mu) {
      Query u(*conn_, st_.get_alias);
      u.bind(1, name);
      if (u.row()) {
        std::string target = u.text(0);
        if (valid_name(target)) *out = std::move(target);
      }
    });
  }
  bool write_aliases(const AliasMap& aliases, const char* op, Error* error) RL_REQUIRES(mu) {
    return transaction(true, op, error, [&](ModelRows&) RL_REQUIRES(mu) {
      for (const auto& [name, target] : aliases) {
        Query u(*conn_, st_.upsert_alias);
        u.bind(1, name).bind(2, target).run();
      }
      bump_config();
    });
  }
  bool erase_alias(std::string_view name, const char* op, Error* error, bool* removed)
      RL_REQUIRES(mu) {
    return transaction(true, op, error, [&](ModelRows&) RL_REQUIRES(mu) {
      Query u(*conn_, st_.delete_alias);
      u.bind(1, name).run();
      *removed = sqlite3_changes(conn_->db()) > 0;
      if (*removed) bump_config();
    });
  }
  bool read_unknown(const char* op, Error* error, UnknownModels* out) RL_REQUIRES(mu) {
    return transaction(false, op, error, [&](ModelRows& rows) RL_REQUIRES(mu) {
      // Any name: the policy rides along with every model's state.
      *out = rows.load("").unknown;
    });
  }
  bool write_unknown(const UnknownModels& policy, const char* op, Error* error) RL_REQUIRES(mu) {
    return transaction(true, op, error, [&](ModelRows&) RL_REQUIRES(mu) {
      {
        Query u(*conn_, st_.set_meta);
        u.bind(1, std::string_view("unknown_policy"))
            .bind(2, std::string(to_string(policy.policy)))
            .run();
      }
      {
        Query u(*conn_, st_.set_meta);
        u.bind(1, std::string_view("unknown_quota")).bind(2, encode_quota(policy.quota)).run();
      }
      bump_config();
    });
  }

  bool delete_quota(std::string_view model, const char* op, Error* error, bool* removed)
      RL_REQUIRES(mu) {
    return transaction(true, op, error, [&](ModelRows&) RL_REQUIRES(mu) {
      Query u(*conn_, st_.delete_quota);
      u.bind(1, model).run();
      *removed = sqlite3_changes(conn_->db()) > 0;
      if (*removed) bump_config();
    });
  }

  // The model named by a reservation number (nullopt: none).
  bool model_by_number(std::int64_t model_no, const char* op, Error* error,
                       std::optional<std::string>* out) RL_REQUIRES(mu) {
    auto known = names_by_number_.find(model_no);
    if (known != names_by_number_.end()) {
      *out = known->second;
      return true;
    }
    return transaction(false, op, error, [&](ModelRows&) RL_REQUIRES(mu) {
      Query u(*conn_, st_.model_by_no);
      u.bind(1, model_no);
      if (u.row()) *out = u.text(0);
    });
  }
  void remember_number(std::int64_t model_no, std::string_view model) RL_REQUIRES(mu) {
    if (model_no != 0 && names_by_number_.count(model_no) == 0) {
      names_by_number_.emplace(model_no, std::string(model));
    }
  }

  // Writes the seed's tables (go-ratelimit's shape) from the live window, then checkpoints.
  Status persist(const char* op) RL_REQUIRES(mu) {
    Error error;
    if (!transaction(true, op, &error,
                     [&](ModelRows&) RL_REQUIRES(mu) { export_seed_usage(*conn_, now_ns()); })) {
      return tl::unexpected(std::move(error));
    }
    return checkpoint(op);
  }

  Status checkpoint(const char* op) RL_REQUIRES(mu) {
    if (!conn_) return tl::unexpected(closed_error(op));
    int log = 0, done = 0;
    const int rc =
        sqlite3_wal_checkpoint_v2(conn_->db(), nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
    if (rc != SQLITE_OK) {
      return tl::unexpected(to_error(op, DbFailure{rc, sqlite3_errmsg(conn_->db())}));
    }
    return {};
  }

  // Whether another connection committed since the last call (the first call only looks).
  bool data_changed() RL_REQUIRES(mu) {
    if (!conn_) return true;  // closing: let the waiters look (and see it)
    try {
      Query u(*conn_, st_.data_version);
      const std::int64_t v = u.row() ? u.i64(0) : -1;
      const bool changed = seen_version_ >= 0 && v != seen_version_;
      seen_version_ = v;
      return changed;
    } catch (const DbFailure&) {
      return true;  // let the waiters look again (and see the failure)
    }
  }

  void close() RL_REQUIRES(mu) { conn_.reset(); }

 private:
  void bump_config() RL_REQUIRES(mu) {
    Query u(*conn_, st_.bump_config);
    if (u.row()) epoch_.store(u.i64(0), std::memory_order_release);
    u.run();
  }

  std::vector<std::string> model_names() RL_REQUIRES(mu) {
    std::vector<std::string> names;
    Query u(*conn_, st_.all_models);
    while (u.row()) {
      std::string name = u.text(0);
      if (valid_name(name)) names.push_back(std::move(name));
    }
    return names;
  }

  // The model-name rule on a name read from the database: a bad row is skipped, and named in
  // a warning the first time this store sees it.
  bool valid_name(const std::string& model) RL_REQUIRES(mu) {
    auto problem = model_name_problem(model);
    if (!problem) return true;
    if (warned_.insert(model).second) {  // counted and named once per store
      skipped.fetch_add(1, std::memory_order_relaxed);
      if (warn_) {
        warn_("sqlite " + conn_->path() + ": skipped the rows of " + quoted(model) + ": the name " +
              *problem + " (rename or delete them with the sqlite3 tool)");
      }
    }
    return false;
  }

  Error to_error(const char* op, const DbFailure& e) const RL_REQUIRES(mu) {
    const std::string where = std::string(op) + ": sqlite " + conn_->path() + ": ";
    if (is_busy_code(e.rc)) {
      return Error{ErrorCode::unavailable,
                   where + e.message + " (another process held the database lock for more than " +
                       seconds_text(conn_->busy_budget_ns()) + "; retry later)"};
    }
    if (is_damage_code(e.rc)) {
      return Error{ErrorCode::corrupt_state, where + e.message +
                                                 " (the database is damaged; reopen it with "
                                                 "Config::recover_corrupt to move it aside)"};
    }
    return Error{ErrorCode::io_error, where + e.message};
  }

  const std::shared_ptr<Clock> clock_;
  const std::function<void(std::string_view)> warn_;
  std::unique_ptr<Connection> conn_ RL_GUARDED_BY(mu);  // null once closed
  Statements st_{};
  const std::string prefix_;  // "<store id>-"
  std::map<std::int64_t, std::string> names_by_number_ RL_GUARDED_BY(mu);
  HorizonFloors floors_ RL_GUARDED_BY(mu);
  std::set<std::string, std::less<>> warned_ RL_GUARDED_BY(mu);
  std::int64_t seen_version_ RL_GUARDED_BY(mu) = -1;
  std::atomic<std::int64_t> epoch_{0};  // rl_meta.config_version, as last read
};

}  // namespace ratelimit::detail
