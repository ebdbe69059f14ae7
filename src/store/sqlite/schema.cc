#include "store/sqlite/schema.h"

#include <charconv>
#include <cstdio>
#include <random>
#include <set>
#include <string_view>
#include <vector>

#include "limiter/validation.h"

namespace ratelimit::detail {
namespace {

constexpr std::int64_t kAppId = 0x524c4d54;  // "RLMT", in the database header
constexpr std::string_view kSchemaVersion = "2";
constexpr std::string_view kOlderSchemaVersion = "1";  // upgraded in place at open

constexpr std::string_view kSeedSchema[] = {
    "CREATE TABLE IF NOT EXISTS quotas (model TEXT PRIMARY KEY, max_rpm INTEGER NOT NULL "
    "DEFAULT 0, max_tpm INTEGER NOT NULL DEFAULT 0, max_rpd INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS requests (model TEXT NOT NULL, ts INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tokens (model TEXT NOT NULL, ts INTEGER NOT NULL, count INTEGER "
    "NOT NULL)",
    "CREATE TABLE IF NOT EXISTS daily (model TEXT PRIMARY KEY, day_start INTEGER NOT NULL, "
    "day_count INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS idx_requests_model_ts ON requests(model, ts)",
    "CREATE INDEX IF NOT EXISTS idx_tokens_model_ts ON tokens(model, ts)",
};
constexpr std::string_view kOwnSchema[] = {
    "CREATE TABLE IF NOT EXISTS rl_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) "
    "WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS rl_reservations (model_no INTEGER NOT NULL, seq INTEGER NOT "
    "NULL, ts INTEGER NOT NULL, est_tokens INTEGER NOT NULL, state INTEGER NOT NULL, "
    "request_rowid INTEGER NOT NULL, token_rowid INTEGER, day_gen INTEGER NOT NULL, "
    "PRIMARY KEY (model_no, seq)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS rl_totals (model TEXT PRIMARY KEY, model_no INTEGER NOT NULL "
    "UNIQUE, next_seq INTEGER NOT NULL, requests INTEGER NOT NULL, "
    "tokens_hi INTEGER NOT NULL, tokens_lo INTEGER NOT NULL, horizon INTEGER NOT NULL, "
    "newest_ts INTEGER NOT NULL, oldest_ts INTEGER NOT NULL, pending INTEGER NOT NULL, "
    "day_gen INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS rl_aliases (name TEXT PRIMARY KEY, target TEXT NOT NULL) "
    "WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS rl_learned (model TEXT PRIMARY KEY, cooldown_until INTEGER NOT "
    "NULL, req_left INTEGER NOT NULL, req_until INTEGER NOT NULL, tok_left INTEGER NOT NULL, "
    "tok_until INTEGER NOT NULL, in_left INTEGER NOT NULL, in_until INTEGER NOT NULL, "
    "out_left INTEGER NOT NULL, out_until INTEGER NOT NULL) WITHOUT ROWID",
};
// Columns of ours added to existing tables (version 1 databases and go-ratelimit's tables).
struct AddedColumn {
  const char* table;
  const char* column;
  const char* declaration;
};
constexpr AddedColumn kAddedColumns[] = {
    {"quotas", "max_input_tpm", "INTEGER NOT NULL DEFAULT 0"},
    {"quotas", "max_output_tpm", "INTEGER NOT NULL DEFAULT 0"},
    {"quotas", "day_start", "INTEGER NOT NULL DEFAULT 0"},
    {"tokens", "output", "INTEGER NOT NULL DEFAULT 0"},
    {"rl_totals", "output_hi", "INTEGER NOT NULL DEFAULT 0"},
    {"rl_totals", "output_lo", "INTEGER NOT NULL DEFAULT 0"},
    {"rl_reservations", "est_output", "INTEGER NOT NULL DEFAULT 0"},
};
// Objects a go-ratelimit database may hold (it is adopted: our tables are added beside them).
const std::set<std::string, std::less<>> kSeedObjects = {"quotas",
                                                         "requests",
                                                         "tokens",
                                                         "daily",
                                                         "idx_requests_model_ts",
                                                         "idx_tokens_model_ts",
                                                         "sqlite_autoindex_quotas_1",
                                                         "sqlite_autoindex_daily_1",
                                                         "sqlite_sequence"};
// Statements that succeed only when the seed's tables have the seed's columns.
constexpr std::string_view kSeedColumnChecks[] = {
    "SELECT model, max_rpm, max_tpm, max_rpd FROM quotas LIMIT 0",
    "SELECT model, ts FROM requests LIMIT 0",
    "SELECT model, ts, count FROM tokens LIMIT 0",
    "SELECT model, day_start, day_count FROM daily LIMIT 0",
};

std::uint64_t random_u64() {
  std::random_device rd;
  std::uint64_t v = 0;
  while (v == 0) v = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  return v;
}

}  // namespace

std::string recover_hint(const std::string& path) {
  return "; to start fresh, open with Config::recover_corrupt = true (the file is moved to " +
         path + ".corrupt-<time>, nothing is deleted), or restore it from a backup";
}

std::int64_t hi_of(Int128 v) { return static_cast<std::int64_t>(v >> 64); }
std::int64_t lo_of(Int128 v) {
  return static_cast<std::int64_t>(static_cast<std::uint64_t>(v & ~std::uint64_t{0}));
}
Int128 join_hi_lo(std::int64_t hi, std::int64_t lo) {
  return (static_cast<Int128>(hi) << 64) | static_cast<Int128>(static_cast<std::uint64_t>(lo));
}
std::string hex16(std::uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// Recomputes rl_totals from the rows of the seed's tables (a go-ratelimit database being
// adopted, or a migration), keeping each model's number and next reservation seq so that no
// reservation id is ever issued twice. REQUIRES: a write transaction. Throws DbFailure /
// OpFailure.
void rebuild_totals(Connection& c, std::int64_t day_gen, const char* op) {
  sqlite3_stmt* models = c.prepare(
      "SELECT model FROM requests UNION SELECT model FROM tokens UNION SELECT model FROM daily "
      "UNION SELECT model FROM rl_totals");
  sqlite3_stmt* reqs =
      c.prepare("SELECT COUNT(*), min(ts), max(ts) FROM requests WHERE model = ?1 AND ts > ?2");
  sqlite3_stmt* toks =
      c.prepare("SELECT ts, count, output FROM tokens WHERE model = ?1 AND ts > ?2");
  sqlite3_stmt* upsert = c.prepare(
      "INSERT INTO rl_totals (model, model_no, next_seq, requests, tokens_hi, tokens_lo, "
      "horizon, newest_ts, oldest_ts, pending, day_gen, output_hi, output_lo) VALUES (?1, "
      "(SELECT coalesce(max(model_no), 0) + 1 FROM rl_totals), 1, ?2, ?3, ?4, ?5, ?6, ?7, 1, "
      "?8, ?9, ?10) ON CONFLICT(model) DO UPDATE SET requests = excluded.requests, tokens_hi = "
      "excluded.tokens_hi, tokens_lo = excluded.tokens_lo, horizon = excluded.horizon, "
      "output_hi = excluded.output_hi, output_lo = excluded.output_lo, "
      "newest_ts = excluded.newest_ts, oldest_ts = excluded.oldest_ts, pending = 1, "
      "day_gen = excluded.day_gen");
  std::vector<std::string> names;
  {
    Query m(c, models);
    while (m.row()) names.push_back(m.text(0));
  }
  for (const std::string& model : names) {
    std::int64_t requests = 0, oldest = kNone, newest = INT64_MIN;
    {
      Query r(c, reqs);
      r.bind(1, model).bind(2, INT64_MIN);
      if (r.row() && r.i64(0) > 0) {
        requests = r.i64(0);
        oldest = r.i64(1);
        newest = r.i64(2);
      }
    }
    Int128 tokens = 0, output = 0;
    {
      Query t(c, toks);
      t.bind(1, model).bind(2, INT64_MIN);
      while (t.row()) {
        if (t.i64(1) < 0) {
          throw OpFailure{{ErrorCode::corrupt_state,
                           std::string(op) + ": sqlite " + c.path() + ": " + quoted(model) +
                               ": tokens.count is negative (" + std::to_string(t.i64(1)) + ")"}};
        }
        tokens += t.i64(1);
        output += std::clamp<std::int64_t>(t.i64(2), 0, t.i64(1));
        oldest = std::min(oldest, t.i64(0));
        newest = std::max(newest, t.i64(0));
      }
    }
    Query ins(c, upsert);
    ins.bind(1, model).bind(2, requests).bind(3, hi_of(tokens)).bind(4, lo_of(tokens));
    ins.bind(5, INT64_MIN).bind(6, newest).bind(7, oldest).bind(8, day_gen);
    ins.bind(9, hi_of(output)).bind(10, lo_of(output));
    ins.run();
  }
}

namespace {

// Checks that the database at `c` is ours or go-ratelimit's (to adopt), and says whether our
// tables are there already. Throws OpFailure for a foreign or newer database.
bool check_existing_schema(Connection& c, const std::string& where) {
  std::int64_t app_id = 0;
  {
    Query u(c, c.prepare("PRAGMA application_id"));
    if (u.row()) app_id = u.i64(0);
  }
  std::vector<std::string> objects;
  bool has_meta = false;
  {
    Query u(c, c.prepare("SELECT name FROM sqlite_master ORDER BY name"));
    while (u.row()) {
      objects.push_back(u.text(0));
      if (objects.back() == "rl_meta") has_meta = true;
    }
  }
  auto foreign = [&](const std::string& why) {
    return OpFailure{{ErrorCode::corrupt_state,
                      where + "not a ratelimit database (" + why +
                          "); it was left unchanged: point file_path at another file"}};
  };
  if (app_id != 0 && app_id != kAppId) {
    throw foreign("application id " + std::to_string(app_id));
  }
  if (has_meta) {
    Query u(c, c.prepare("SELECT value FROM rl_meta WHERE key = 'schema_version'"));
    const std::string version = u.row() ? u.text(0) : std::string();
    if (version != kSchemaVersion && version != kOlderSchemaVersion) {
      throw OpFailure{{ErrorCode::corrupt_state, where + "schema version \"" + version +
                                                     "\", this build reads version " +
                                                     std::string(kSchemaVersion) +
                                                     " (use the ratelimit version that wrote it)"}};
    }
    return true;
  }
  std::string unknown;
  for (const std::string& name : objects) {
    if (kSeedObjects.count(name) == 0) unknown += (unknown.empty() ? "" : ", ") + name;
  }
  if (!unknown.empty()) throw foreign("it holds " + unknown);
  std::set<std::string, std::less<>> present(objects.begin(), objects.end());
  const char* tables[] = {"quotas", "requests", "tokens", "daily"};
  for (int i = 0; i < 4; ++i) {
    if (present.count(tables[i]) == 0) continue;
    sqlite3_stmt* probe = nullptr;
    const int rc =
        sqlite3_prepare_v2(c.db(), kSeedColumnChecks[i].data(),
                           static_cast<int>(kSeedColumnChecks[i].size()), &probe, nullptr);
    sqlite3_finalize(probe);
    if (is_damage_code(rc)) c.fail(rc);
    if (rc != SQLITE_OK) throw foreign(std::string("table ") + tables[i] + " has other columns");
  }
  return false;
}

// Our tables' first rows: the schema version and a new store id; a go-ratelimit database's
// rows become our totals.
void create_meta(Connection& c, const char* op) {
  c.exec("PRAGMA application_id = " + std::to_string(kAppId));
  sqlite3_stmt* s = c.prepare("INSERT INTO rl_meta (key, value) VALUES (?1, ?2)");
  {
    Query u(c, s);
    u.bind(1, std::string_view("schema_version")).bind(2, kSchemaVersion).run();
  }
  const std::string id = hex16(random_u64());
  {
    Query u(c, s);
    u.bind(1, std::string_view("store_id")).bind(2, id).run();
  }
  rebuild_totals(c, 0, op);
}

}  // namespace

// Creates or checks the schema, writes `seed_quotas` for models without a row, and returns the
// store id. REQUIRES: a write transaction. Throws DbFailure / OpFailure.
namespace {

// Adds our columns where they are missing (a version 1 database, go-ratelimit's tables).
void add_missing_columns(Connection& c) {
  for (const AddedColumn& a : kAddedColumns) {
    bool present = false;
    {
      Query u(c, c.prepare(std::string("PRAGMA table_info(") + a.table + ")"));
      while (u.row()) present = present || u.text(1) == a.column;
    }
    if (!present) {
      c.exec(std::string("ALTER TABLE ") + a.table + " ADD COLUMN " + a.column + " " +
             a.declaration);
    }
  }
}

}  // namespace

std::uint64_t prepare_schema(Connection& c, const Seeds& seeds, const char* op) {
  const std::string where = std::string(op) + ": sqlite " + c.path() + ": ";
  const bool has_meta = check_existing_schema(c, where);
  for (std::string_view sql : kSeedSchema) c.exec(sql);
  for (std::string_view sql : kOwnSchema) c.exec(sql);
  add_missing_columns(c);
  if (!has_meta) create_meta(c, op);
  c.exec("INSERT OR REPLACE INTO rl_meta (key, value) VALUES ('schema_version', '" +
         std::string(kSchemaVersion) + "')");
  c.exec("INSERT OR IGNORE INTO rl_meta (key, value) VALUES ('config_version', '0')");
  {
    sqlite3_stmt* s = c.prepare(
        "INSERT OR IGNORE INTO quotas (model, max_rpm, max_tpm, max_rpd, max_input_tpm, "
        "max_output_tpm, day_start) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    for (const auto& [model, q] : seeds.quotas) {
      Query u(c, s);
      u.bind(1, model).bind(2, q.max_rpm).bind(3, q.max_tpm).bind(4, q.max_rpd);
      u.bind(5, q.max_input_tpm).bind(6, q.max_output_tpm);
      u.bind(7, static_cast<std::int64_t>(q.day_start)).run();
    }
  }
  {
    sqlite3_stmt* s = c.prepare("INSERT OR IGNORE INTO rl_aliases (name, target) VALUES (?1, ?2)");
    for (const auto& [name, target] : seeds.aliases) {
      Query u(c, s);
      u.bind(1, name).bind(2, target).run();
    }
  }
  if (seeds.unknown) {
    sqlite3_stmt* s = c.prepare("INSERT OR IGNORE INTO rl_meta (key, value) VALUES (?1, ?2)");
    {
      Query u(c, s);
      u.bind(1, std::string_view("unknown_policy"))
          .bind(2, std::string(to_string(seeds.unknown->policy)))
          .run();
    }
    Query u(c, s);
    u.bind(1, std::string_view("unknown_quota")).bind(2, encode_quota(seeds.unknown->quota)).run();
  }
  Query u(c, c.prepare("SELECT value FROM rl_meta WHERE key = 'store_id'"));
  std::uint64_t id = 0;
  const std::string text = u.row() ? u.text(0) : std::string();
  auto r = std::from_chars(text.data(), text.data() + text.size(), id, 16);
  if (text.size() != 16 || r.ec != std::errc() || r.ptr != text.data() + text.size()) {
    throw OpFailure{{ErrorCode::corrupt_state,
                     where + "rl_meta.store_id is missing or malformed" + recover_hint(c.path())}};
  }
  return id;
}

}  // namespace ratelimit::detail
