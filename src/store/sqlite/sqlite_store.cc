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
#include "store/sqlite/database.h"
#include "store/sqlite/model_rows.h"
#include "store/sqlite/open.h"
#include "store/sqlite/schema.h"
#include "store/sqlite/seed_tables.h"
#include "store/sqlite/statements.h"
#include "util/mutex.h"

namespace ratelimit::detail {
namespace {

constexpr auto kPollInterval = std::chrono::milliseconds(25);  // change-signal polling

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
    db_->read_config_version();
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

  std::uint64_t config_epoch() override { return db_->config_version(); }

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

  // The state is durable after every transaction: persist writes go-ratelimit's tables from
  // the live window (for tools that read them) and checkpoints the WAL.
  Status persist() override {
    MutexLock lock(db_->mu);
    return db_->persist("ratelimit.persist");
  }

  // The database is the state: load only checks that its quotas can be read (it never
  // replaces other processes' usage with a snapshot; a go-ratelimit database's usage is
  // imported when it is first opened).
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
