#include "store/sqlite/schema.h"

#include <charconv>
#include <cstdio>
#include <random>
#include <set>
#include <string_view>
#include <vector>

#include "limiter/validation.h"
#include "store/sqlite/seed_tables.h"

namespace ratelimit::detail {
namespace {

constexpr std::int64_t kAppId = 0x524c4d54;  // "RLMT", in the database header
constexpr std::string_view kSchemaVersion = "4";
// Versions 1 and 2 kept the live window in the seed's tables (plus rl_totals and
// rl_reservations); version 3 kept the totals in rl_models. They are migrated in the opening
// transaction.
constexpr std::string_view kOlderSchemaVersions[] = {"1", "2", "3"};

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
    "CREATE TABLE IF NOT EXISTS rl_models (model TEXT PRIMARY KEY, model_no INTEGER NOT NULL "
    "UNIQUE) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS rl_log (model_no INTEGER NOT NULL, seq INTEGER NOT NULL, "
    "ts INTEGER NOT NULL, requests INTEGER NOT NULL, tokens INTEGER NOT NULL, output INTEGER NOT "
    "NULL, state INTEGER NOT NULL, day_gen INTEGER NOT NULL, next_seq INTEGER, tokens_hi "
    "INTEGER, output_hi INTEGER, horizon INTEGER, head_seq INTEGER, tail_seq INTEGER, oldest_ts "
    "INTEGER, has_day INTEGER, day_start INTEGER, day_count INTEGER, PRIMARY KEY (model_no, "
    "seq)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS rl_aliases (name TEXT PRIMARY KEY, target TEXT NOT NULL) "
    "WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS rl_learned (model TEXT PRIMARY KEY, cooldown_until INTEGER NOT "
    "NULL, req_left INTEGER NOT NULL, req_until INTEGER NOT NULL, tok_left INTEGER NOT NULL, "
    "tok_until INTEGER NOT NULL, in_left INTEGER NOT NULL, in_until INTEGER NOT NULL, "
    "out_left INTEGER NOT NULL, out_until INTEGER NOT NULL) WITHOUT ROWID",
};
// The columns of rl_log that only the totals row (seq = INT64_MAX) fills, NULL on an entry (a
// version 3 database gets them with ALTER TABLE).
constexpr const char* kTotalsColumns[] = {"next_seq",  "tokens_hi", "output_hi", "horizon",
                                          "head_seq",  "tail_seq",  "oldest_ts", "has_day",
                                          "day_start", "day_count"};
// Columns of ours added to the seed's tables (go-ratelimit's, and those of version 1).
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

namespace {

// Checks that the database at `c` is ours or go-ratelimit's (to adopt), and returns our schema
// version ("" when rl_meta is missing: a new or a go-ratelimit database). Throws OpFailure for
// a foreign or newer database.
std::string check_existing_schema(Connection& c, const std::string& where) {
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
    bool older = false;
    for (std::string_view v : kOlderSchemaVersions) older = older || version == v;
    if (version != kSchemaVersion && !older) {
      throw OpFailure{{ErrorCode::corrupt_state, where + "schema version \"" + version +
                                                     "\", this build reads version " +
                                                     std::string(kSchemaVersion) +
                                                     " (use the ratelimit version that wrote it)"}};
    }
    return version;
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
  return std::string();
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
  import_seed_usage(c, false, std::nullopt, op);  // a go-ratelimit database's usage
}

// Schema version 1 or 2: the live window was in the seed's tables, the totals in rl_totals.
// Their rows become rl_log rows (numbers, next seqs, horizons and day generations kept), then
// rl_totals and rl_reservations are dropped, so that a process of the old release still
// running fails loudly ("no such table: rl_totals") instead of writing where nobody reads.
void migrate_live_tables(Connection& c, const std::string& version, const char* op) {
  {
    Query u(c, c.prepare("SELECT COUNT(*) FROM sqlite_master WHERE name = 'rl_totals'"));
    if (!u.row() || u.i64(0) == 0) {
      throw OpFailure{{ErrorCode::corrupt_state,
                       std::string(op) + ": sqlite " + c.path() + ": schema version " + version +
                           " without its table rl_totals: the database is damaged" +
                           recover_hint(c.path())}};
    }
  }
  c.exec(
      "INSERT INTO rl_models (model, model_no) SELECT model, model_no FROM rl_totals WHERE true "
      "ON CONFLICT(model) DO NOTHING");
  c.exec("INSERT INTO " + std::string(kTotalsRowColumns) +
         " SELECT model_no, 9223372036854775807, -9223372036854775807 - 1, 0, 0, 0, 3, day_gen, "
         "next_seq, 0, 0, horizon, next_seq, next_seq, 9223372036854775807, 0, 0, 0 FROM "
         "rl_totals WHERE true ON CONFLICT DO NOTHING");
  import_seed_usage(c, true, std::nullopt, op);
  c.exec("DROP TABLE rl_totals");
  c.exec("DROP TABLE IF EXISTS rl_reservations");
}

// Schema version 3 kept each model's totals in its rl_models row: a grant wrote that row and
// the rl_log tail, two b-trees. Before the tables of version 4 are created, rl_models is set
// aside and rl_log gets the totals columns; after, each old row becomes the model's totals row
// in rl_log and the old table is dropped, so that a process of the old release still running
// fails loudly (no such column: next_seq) instead of writing where nobody reads.
void set_aside_version_3(Connection& c, const std::string& where) {
  sqlite3_stmt* probe = nullptr;
  const char* check = "SELECT next_seq, head_seq, day_gen FROM rl_models LIMIT 0";
  const int rc = sqlite3_prepare_v2(c.db(), check, -1, &probe, nullptr);
  sqlite3_finalize(probe);
  if (is_damage_code(rc)) c.fail(rc);
  if (rc != SQLITE_OK) {
    throw OpFailure{{ErrorCode::corrupt_state,
                     where +
                         "schema version 3 without the columns of its table rl_models: the "
                         "database is damaged" +
                         recover_hint(c.path())}};
  }
  c.exec("ALTER TABLE rl_models RENAME TO rl_models_v3");
  for (const char* column : kTotalsColumns) {
    c.exec(std::string("ALTER TABLE rl_log ADD COLUMN ") + column + " INTEGER");
  }
}

void finish_version_3(Connection& c) {
  c.exec("INSERT INTO rl_models (model, model_no) SELECT model, model_no FROM rl_models_v3");
  c.exec("INSERT INTO " + std::string(kTotalsRowColumns) +
         " SELECT model_no, 9223372036854775807, newest_ts, requests, tokens_lo, output_lo, 3, "
         "day_gen, next_seq, tokens_hi, output_hi, horizon, head_seq, tail_seq, oldest_ts, "
         "has_day, day_start, day_count FROM rl_models_v3");
  c.exec("DROP TABLE rl_models_v3");
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
  const std::string version = check_existing_schema(c, where);
  if (version == "3") set_aside_version_3(c, where);
  for (std::string_view sql : kSeedSchema) c.exec(sql);
  for (std::string_view sql : kOwnSchema) c.exec(sql);
  add_missing_columns(c);
  if (version.empty()) {
    create_meta(c, op);
  } else if (version == "3") {
    finish_version_3(c);
  } else if (version != kSchemaVersion) {
    migrate_live_tables(c, version, op);
  }
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
