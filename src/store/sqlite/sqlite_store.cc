// The SQLite store: every operation is one transaction on a database shared by the processes
// of one machine. One connection per store, guarded by a mutex (SQLite serialises writers
// anyway); WAL mode, so readers never wait for the writer.
#include "store/sqlite/sqlite_store.h"

#include <algorithm>
#include <charconv>
#include <map>
#include <new>
#include <set>
#include <thread>

#include "core/model_table.h"
#include "limiter/validation.h"
#include "ratelimit/model_name.h"
#include "store/sqlite/model_rows.h"
#include "store/sqlite/open.h"
#include "store/sqlite/schema.h"
#include "store/sqlite/statements.h"
#include "util/mutex.h"

namespace ratelimit::detail {
namespace {

constexpr auto kPollInterval = std::chrono::milliseconds(25);  // change-signal polling

Decision unavailable_decision() {
  Decision d;
  d.code = DecisionCode::store_unavailable;
  return d;
}

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
      Query u(*conn_, st_.commit);
      u.run();
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

  // A read first; a write only when many rows expired since the last write on this model.
  // `visit(rows, state)` sees the state advanced to now.
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

  // Every model with rows or a quota, advanced to now (in a read, or in a write when a read
  // would walk many rows). Names the model-name rule refuses are skipped with a warning.
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

  // rl_meta.config_version: read outside a transaction (one indexed row).
  std::uint64_t config_version() RL_REQUIRES(mu) {
    if (!conn_) return 0;
    try {
      Query u(*conn_, st_.get_meta);
      u.bind(1, std::string_view("config_version"));
      return u.row() ? static_cast<std::uint64_t>(u.i64(0)) : 0;
    } catch (const DbFailure&) {
      return 0;  // the operation that follows reports the failure
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
};

// One model's handle. Its counters are written under the database's mutex.
class SqliteModel final : public StoreModel {
 public:
  SqliteModel(std::string model_name, std::size_t model_hash, std::uint32_t model_index,
              std::shared_ptr<Database> db)
      : StoreModel(std::move(model_name), model_hash, model_index), db_(std::move(db)) {}

  CheckOutcome check_into(const CheckRequest& request, Decision& decision) override {
    CheckResult r;
    Database& db = *db_;
    MutexLock lock(db.mu);
    Error error;
    bool ok;
    if (!request.record) {
      ok = db.read_model(name, request.operation, &error, [&](ModelRows& rows, RowState& s) {
        r.decision = rows.evaluate(name, s, request.estimate);
      });
    } else {
      std::int64_t model_no = 0;
      ok = db.transaction(true, request.operation, &error, [&](ModelRows& rows) {
        RowState s = rows.load(name);
        rows.advance(name, s, db.now_ns(), true);
        r.decision = rows.evaluate(name, s, request.estimate);
        if (r.decision.allowed) r.entry = rows.reserve(name, s, request.estimate);
        rows.save(name, s);
        model_no = s.model_no;
      });
      if (ok && r.decision.allowed) {
        model_no_.store(model_no, std::memory_order_release);
        db.remember_number(model_no, name);
      }
    }
    if (!ok) {
      r.decision = unavailable_decision();
      r.error = std::move(error);
    }
    if (request.count && (r.decision.allowed || request.count_denials || r.error)) {
      counters.decided(r.decision, saturating_add(request.estimate.input, request.estimate.output));
    }
    decision = r.decision;
    return CheckOutcome{r.entry, std::move(r.error)};
  }

  Status learn(const Learned& learned, const char* operation, bool* changed) override {
    *changed = false;
    Database& db = *db_;
    MutexLock lock(db.mu);
    Error error;
    const bool ok = db.transaction(true, operation, &error, [&](ModelRows& rows) {
      RowState s = rows.load(name);
      rows.advance(name, s, db.now_ns(), true);
      if (merge_learned(s.learned, learned)) {
        s.learned_dirty = true;
        *changed = true;
      }
      rows.save(name, s);
    });
    if (!ok) {
      *changed = false;
      return tl::unexpected(std::move(error));
    }
    return {};
  }

  Status record(TokenEstimate tokens, const char* operation) override {
    Database& db = *db_;
    MutexLock lock(db.mu);
    Error error;
    const bool ok = db.transaction(true, operation, &error, [&](ModelRows& rows) {
      RowState s = rows.load(name);
      rows.advance(name, s, db.now_ns(), true);
      rows.record(name, s, tokens);
      rows.save(name, s);
    });
    if (!ok) {
      counters.request(RequestOutcome::store_unavailable);
      return tl::unexpected(std::move(error));
    }
    counters.recorded(saturating_add(tokens.input, tokens.output));
    return {};
  }

  Status settle(EntryRef entry, const SettleRequest& request, bool* released) override {
    *released = false;
    Database& db = *db_;
    MutexLock lock(db.mu);
    if (!db.open()) {
      return make_error(ErrorCode::closed,
                        std::string(request.operation) +
                            ": the limiter that granted this reservation is closed or gone; "
                            "nothing was changed");
    }
    const std::int64_t model_no = model_no_.load(std::memory_order_acquire);
    const std::string id = format_id(entry);
    Error error;
    const bool ok = db.transaction(true, request.operation, &error, [&](ModelRows& rows) {
      rows.settle(name, model_no, entry, request, db.now_ns(), id, released);
    });
    if (!ok) {
      *released = false;
      return tl::unexpected(std::move(error));
    }
    // An entry that had left the window settles with nothing to change: still a successful
    // commit/cancel for the caller.
    if (request.kind == SettleKind::commit) {
      counters.committed(saturating_add(request.tokens.input, request.tokens.output));
    } else {
      counters.cancelled();
    }
    return {};
  }

  std::string format_id(EntryRef entry) const override {
    // "<store id>-<model_no>-<seq>", lower-case hex without leading zeros.
    char digits[40];
    const auto model_no = static_cast<std::uint64_t>(model_no_.load(std::memory_order_acquire));
    char* p = std::to_chars(digits, digits + 16, model_no, 16).ptr;
    *p++ = '-';
    p = std::to_chars(p, p + 16, entry.seq, 16).ptr;
    std::string id = db_->prefix();
    id.append(digits, p);
    return id;
  }

  void count(RequestOutcome outcome) override {
    MutexLock lock(db_->mu);
    counters.request(outcome);
  }

  // An id names this model by its number (find_entry checked it against the database).
  void learn_number(std::int64_t model_no) {
    std::int64_t expected = 0;
    model_no_.compare_exchange_strong(expected, model_no, std::memory_order_acq_rel);
  }
  std::int64_t number() const { return model_no_.load(std::memory_order_acquire); }

 private:
  const std::shared_ptr<Database> db_;
  std::atomic<std::int64_t> model_no_{0};  // 0: not known yet; then never changes
};

class SqliteStore final : public Store {
 public:
  explicit SqliteStore(std::shared_ptr<Database> db) : db_(std::move(db)) {
    MutexLock lock(db_->mu);
    db_->data_changed();  // the change signal starts from now
  }
  ~SqliteStore() override { close(); }

  std::shared_ptr<StoreModel> model(std::string_view name) override {
    return handle(name)->shared_from_this();
  }
  StoreModel* find(std::string_view name) override { return table_.find(name); }

  Decision decide_unseen(std::string_view name, TokenEstimate estimate) override {
    // The database may hold this model's quota and usage (another process): look.
    CheckRequest request;
    request.operation = "ratelimit.decide";
    request.estimate = estimate;
    return handle(name)->check(request).decision;
  }

  StoreModel* at_index(std::uint32_t index) override { return table_.at_index(index); }

  std::uint64_t config_epoch() override {
    MutexLock lock(db_->mu);
    return db_->config_version();
  }

  Result<AliasMap> aliases() override {
    MutexLock lock(db_->mu);
    AliasMap out;
    Error error;
    if (!db_->read_aliases("ratelimit.aliases", &error, &out)) {
      return tl::unexpected(std::move(error));
    }
    return out;
  }
  Result<std::optional<std::string>> alias(std::string_view name) override {
    MutexLock lock(db_->mu);
    std::optional<std::string> out;
    Error error;
    if (!db_->read_alias(name, "ratelimit.resolve", &error, &out)) {
      return tl::unexpected(std::move(error));
    }
    return out;
  }
  Status set_aliases(const AliasMap& aliases, const char* operation) override {
    MutexLock lock(db_->mu);
    Error error;
    if (!db_->write_aliases(aliases, operation, &error)) return tl::unexpected(std::move(error));
    return {};
  }
  Status remove_alias(std::string_view name) override {
    MutexLock lock(db_->mu);
    Error error;
    bool removed = false;
    if (!db_->erase_alias(name, "ratelimit.remove_alias", &error, &removed)) {
      return tl::unexpected(std::move(error));
    }
    if (!removed) {
      return make_error(ErrorCode::not_found,
                        "ratelimit.remove_alias: " + quoted(name) + " has no alias");
    }
    return {};
  }
  Result<UnknownModels> unknown_models() override {
    MutexLock lock(db_->mu);
    UnknownModels out;
    Error error;
    if (!db_->read_unknown("ratelimit.unknown_models", &error, &out)) {
      return tl::unexpected(std::move(error));
    }
    return out;
  }
  Status set_unknown_models(const UnknownModels& policy) override {
    MutexLock lock(db_->mu);
    Error error;
    if (!db_->write_unknown(policy, "ratelimit.set_unknown_models", &error)) {
      return tl::unexpected(std::move(error));
    }
    return {};
  }

  std::vector<std::shared_ptr<StoreModel>> handles() override {
    auto all = table_.all();
    return {all.begin(), all.end()};
  }

  Result<Found> find_entry(std::string_view id, const char* operation) override {
    auto not_found = [&] {
      return tl::unexpected(unknown_reservation_id(operation, id, "a limiter on this database"));
    };
    const auto parsed = parse_id(id);
    if (!parsed) return not_found();
    std::optional<std::string> model;
    {
      MutexLock lock(db_->mu);
      Error error;
      if (!db_->model_by_number(parsed->first, operation, &error, &model)) {
        return tl::unexpected(std::move(error));
      }
    }
    if (!model || model_name_problem(*model)) return not_found();
    SqliteModel* m = handle(*model);
    m->learn_number(parsed->first);
    if (m->number() != parsed->first) return not_found();
    return Found{m->shared_from_this(), EntryRef{static_cast<std::uint64_t>(parsed->second), 0}};
  }

  Result<ModelStats> stats(std::string_view name) override {
    MutexLock lock(db_->mu);
    ModelStats out;
    Error error;
    if (!db_->read_model(name, "ratelimit.stats", &error,
                         [&](ModelRows&, RowState& s) { out = s.stats(); })) {
      return tl::unexpected(std::move(error));
    }
    return out;
  }

  Result<std::map<std::string, ModelStats, std::less<>>> all_stats() override {
    std::vector<std::pair<std::string, RowState>> states;
    {
      MutexLock lock(db_->mu);
      Error error;
      if (!db_->all_models("ratelimit.all_stats", &error, &states)) {
        return tl::unexpected(std::move(error));
      }
    }
    std::map<std::string, ModelStats, std::less<>> out;
    for (const auto& [model, s] : states) {
      if (s.shown()) out.emplace(model, s.stats());
    }
    return out;
  }

  Status visit_stats(const StatsVisitor& visit) override {
    std::vector<std::pair<std::string, RowState>> states;
    {
      MutexLock lock(db_->mu);
      Error error;
      if (!db_->all_models("ratelimit.metrics", &error, &states)) {
        return tl::unexpected(std::move(error));
      }
    }
    std::set<std::string, std::less<>> seen;
    for (const auto& [model, s] : states) {
      if (!s.shown()) continue;
      visit(model, s.stats(), table_.find(model));
      seen.insert(model);
    }
    for (const auto& handle : table_.all()) {
      if (seen.count(handle->name) != 0 || !handle->counters.any()) continue;
      auto s = stats(handle->name);
      if (!s) return tl::unexpected(s.error());
      visit(handle->name, *s, handle.get());
    }
    return {};
  }

  Result<std::optional<ModelQuota>> quota(std::string_view name) override {
    MutexLock lock(db_->mu);
    std::optional<ModelQuota> out;
    Error error;
    const bool ok = db_->transaction(false, "ratelimit.quota", &error, [&](ModelRows& rows) {
      const RowState s = rows.load(name);
      if (s.has_quota) out = s.quota;
    });
    if (!ok) return tl::unexpected(std::move(error));
    return out;
  }

  Result<QuotaMap> quotas() override {
    MutexLock lock(db_->mu);
    QuotaMap out;
    Error error;
    if (!db_->all_quotas("ratelimit.quotas", &error, &out)) return tl::unexpected(std::move(error));
    return out;
  }

  Status set_quotas(const QuotaMap& quotas, const char* operation) override {
    MutexLock lock(db_->mu);
    Error error;
    if (!db_->upsert_quotas(quotas, operation, &error)) return tl::unexpected(std::move(error));
    return {};
  }

  Status set_profile(const QuotaMap& quotas, const AliasMap& aliases,
                     const char* operation) override {
    MutexLock lock(db_->mu);
    Error error;
    if (!db_->upsert_quotas(quotas, operation, &error, aliases)) {
      return tl::unexpected(std::move(error));
    }
    return {};
  }

  Status remove_quota(std::string_view name) override {
    MutexLock lock(db_->mu);
    Error error;
    bool removed = false;
    if (!db_->delete_quota(name, "ratelimit.remove_quota", &error, &removed)) {
      return tl::unexpected(std::move(error));
    }
    if (!removed) {
      return make_error(ErrorCode::not_found,
                        "ratelimit.remove_quota: " + quoted(name) + " has no quota");
    }
    return {};
  }

  Status reset(std::string_view name) override {
    MutexLock lock(db_->mu);
    Error error;
    const bool ok = db_->transaction(true, "ratelimit.reset", &error, [&](ModelRows& rows) {
      if (name.empty()) {
        rows.reset_all();
      } else {
        rows.reset(name);
      }
    });
    if (!ok) return tl::unexpected(std::move(error));
    return {};
  }

  // The state is durable after every transaction: persist only checkpoints the WAL.
  Status persist() override {
    MutexLock lock(db_->mu);
    return db_->checkpoint("ratelimit.persist");
  }

  // The database is the state: load only checks that its quotas can be read.
  Status load() override {
    MutexLock lock(db_->mu);
    QuotaMap quotas;
    Error error;
    if (!db_->all_quotas("ratelimit.load", &error, &quotas))
      return tl::unexpected(std::move(error));
    return {};
  }

  Status close() override {
    MutexLock lock(db_->mu);
    db_->close();
    return {};
  }

  std::uint64_t names_skipped() const override {
    return db_->skipped.load(std::memory_order_relaxed);
  }

  bool shared() const override { return true; }

  bool wait_for_change(std::chrono::milliseconds max_wait, std::stop_token stop) override {
    const auto end = std::chrono::steady_clock::now() + max_wait;
    std::mutex mu;
    std::condition_variable_any cv;
    for (;;) {
      {
        MutexLock lock(db_->mu);
        if (db_->data_changed()) return true;
      }
      const auto next = std::min(end, std::chrono::steady_clock::now() + kPollInterval);
      std::unique_lock sleep(mu);
      cv.wait_until(sleep, stop, next, [] { return false; });
      if (stop.stop_requested() || std::chrono::steady_clock::now() >= end) return false;
    }
  }

 private:
  SqliteModel* handle(std::string_view name) {
    return table_.find_or_add(name, [this](std::string n, std::size_t h, std::uint32_t i) {
      return std::make_shared<SqliteModel>(std::move(n), h, i, db_);
    });
  }

  // "<store id>-<model_no>-<seq>" (lower-case hex, no leading zeros) → (model_no, seq).
  std::optional<std::pair<std::int64_t, std::int64_t>> parse_id(std::string_view id) const {
    const std::string& prefix = db_->prefix();
    if (id.substr(0, prefix.size()) != prefix) return std::nullopt;
    std::string_view rest = id.substr(prefix.size());
    std::int64_t fields[2];
    for (int i = 0; i < 2; ++i) {
      const std::size_t end = i == 0 ? rest.find('-') : rest.size();
      if (end == std::string_view::npos || end == 0 || end > 15) return std::nullopt;
      const std::string_view digits = rest.substr(0, end);
      if (digits.front() == '0') return std::nullopt;
      for (char ch : digits) {
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return std::nullopt;
      }
      std::uint64_t v = 0;
      std::from_chars(digits.data(), digits.data() + digits.size(), v, 16);
      fields[i] = static_cast<std::int64_t>(v);
      rest = i == 0 ? rest.substr(end + 1) : std::string_view();
    }
    return std::make_pair(fields[0], fields[1]);
  }

  std::shared_ptr<Database> db_;
  ModelTable<SqliteModel> table_;
};

}  // namespace

Result<std::unique_ptr<Store>> make_sqlite_store(const Config& config,
                                                 const SqliteOptions& options) {
  const char* op = "ratelimit.open";
  if (config.file_path.empty()) {
    return make_error(ErrorCode::invalid_argument, std::string(op) + ": empty database path");
  }
  auto opened = open_database(config.file_path,
                              Seeds{merged_quotas(config), merged_aliases(config),
                                    config.unknown_models == UnknownModels{}
                                        ? std::nullopt
                                        : std::optional<UnknownModels>(config.unknown_models)},
                              config.recover_corrupt, options, op);
  if (!opened) return tl::unexpected(opened.error());
  try {
    auto db = std::make_shared<Database>(config, std::move(*opened));
    return std::unique_ptr<Store>(std::make_unique<SqliteStore>(std::move(db)));
  } catch (const DbFailure& e) {
    return make_error(ErrorCode::io_error,
                      std::string(op) + ": sqlite: preparing statements: " + e.message);
  }
}

}  // namespace ratelimit::detail
