#include "store/sqlite/seed_tables.h"

#include <algorithm>
#include <string>
#include <vector>

#include "core/rules.h"
#include "limiter/validation.h"
#include "store/sqlite/schema.h"

namespace ratelimit::detail {

void import_seed_usage(Connection& c, bool keep_horizon, std::optional<std::int64_t> day_gen,
                       const char* op) {
  sqlite3_stmt* models = c.prepare(
      "SELECT model FROM requests UNION SELECT model FROM tokens UNION SELECT model FROM daily "
      "UNION SELECT model FROM rl_models");
  sqlite3_stmt* known = c.prepare(
      "SELECT m.model_no, coalesce(g.next_seq, 1), coalesce(g.horizon, -9223372036854775807 - 1), "
      "coalesce(g.day_gen, 0) FROM rl_models AS m LEFT JOIN rl_log AS g ON g.model_no = "
      "m.model_no AND g.seq = 9223372036854775807 WHERE m.model = ?1");
  sqlite3_stmt* next_no = c.prepare("SELECT coalesce(max(model_no), 0) + 1 FROM rl_models");
  // Per model in time order: a request row, or a token row (go-ratelimit keeps them apart).
  sqlite3_stmt* rows = c.prepare(
      "SELECT ts, 1, 0, 0 FROM requests WHERE model = ?1 AND ts > ?2 UNION ALL "
      "SELECT ts, 0, count, output FROM tokens WHERE model = ?1 AND ts > ?2 ORDER BY 1, 2 DESC");
  sqlite3_stmt* day = c.prepare("SELECT day_start, day_count FROM daily WHERE model = ?1");
  sqlite3_stmt* insert = c.prepare(
      "INSERT INTO rl_log (model_no, seq, ts, requests, tokens, output, state, day_gen) VALUES "
      "(?1, ?2, ?3, ?4, ?5, ?6, 1, ?7)");
  sqlite3_stmt* name = c.prepare(
      "INSERT INTO rl_models (model, model_no) VALUES (?1, ?2) ON CONFLICT(model) DO NOTHING");
  // The model's totals row (rl_log was emptied, so a plain insert).
  sqlite3_stmt* upsert = c.prepare("INSERT INTO " + std::string(kTotalsRowColumns) +
                                   " VALUES (?2, 9223372036854775807, ?11, ?4, ?6, ?8, 3, ?16, "
                                   "?3, ?5, ?7, ?9, ?10, ?10, ?12, ?13, ?14, ?15)");
  // Per model: its number, next seq, horizon and day generation (0, 1, INT64_MIN, 0: new),
  // read before rl_log (and the totals rows in it) is emptied.
  struct Known {
    std::string model;
    std::int64_t model_no = 0, next_seq = 1, horizon = INT64_MIN, gen = 0;
  };
  std::vector<Known> names;
  {
    Query m(c, models);
    while (m.row()) names.push_back(Known{m.text(0)});
  }
  for (Known& n : names) {
    Query k(c, known);
    k.bind(1, n.model);
    if (k.row()) {
      n.model_no = k.i64(0);
      n.next_seq = k.i64(1);
      n.horizon = k.i64(2);
      n.gen = k.i64(3);
    }
  }
  c.exec("DELETE FROM rl_log");
  auto corrupt = [&](const std::string& model, const char* what, std::int64_t v) {
    return OpFailure{{ErrorCode::corrupt_state, std::string(op) + ": sqlite " + c.path() + ": " +
                                                    quoted(model) + ": " + what + " is negative (" +
                                                    std::to_string(v) + ")"}};
  };
  for (const Known& n : names) {
    const std::string& model = n.model;
    std::int64_t model_no = n.model_no, next_seq = n.next_seq, horizon = n.horizon, gen = n.gen;
    if (model_no == 0) {
      Query n(c, next_no);
      model_no = n.row() ? n.i64(0) : 1;
    }
    if (!keep_horizon) horizon = INT64_MIN;
    if (day_gen) gen = *day_gen;
    const std::int64_t head = next_seq;
    std::int64_t requests = 0, newest = INT64_MIN, oldest = kNone;
    Int128 tokens = 0, output = 0;
    {
      Query r(c, rows);
      r.bind(1, model).bind(2, horizon);
      while (r.row()) {
        const std::int64_t count = r.i64(2);
        if (count < 0) throw corrupt(model, "tokens.count", count);
        const std::int64_t out = std::clamp<std::int64_t>(r.i64(3), 0, count);
        Query ins(c, insert);
        ins.bind(1, model_no).bind(2, next_seq++).bind(3, r.i64(0)).bind(4, r.i64(1));
        ins.bind(5, count).bind(6, out).bind(7, gen).run();
        requests += r.i64(1);
        tokens += count;
        output += out;
        newest = std::max(newest, r.i64(0));
        oldest = std::min(oldest, r.i64(0));
      }
    }
    bool has_day = false;
    std::int64_t day_start = 0, day_count = 0;
    {
      Query d(c, day);
      d.bind(1, model);
      if (d.row()) {
        day_start = d.i64(0);
        day_count = d.i64(1);
        if (day_count < 0) throw corrupt(model, "daily.day_count", day_count);
        has_day = true;
      }
    }
    {
      Query n(c, name);
      n.bind(1, model).bind(2, model_no).run();
    }
    Query u(c, upsert);
    u.bind(1, model).bind(2, model_no).bind(3, next_seq).bind(4, requests);
    u.bind(5, hi_of(tokens)).bind(6, lo_of(tokens)).bind(7, hi_of(output)).bind(8, lo_of(output));
    u.bind(9, horizon).bind(10, head).bind(11, newest).bind(12, oldest);
    u.bind(13, has_day ? 1 : 0).bind(14, day_start).bind(15, day_count).bind(16, gen).run();
  }
}

void export_seed_usage(Connection& c, std::int64_t now_ns) {
  const std::int64_t h = now_ns >= INT64_MIN + kWindowNs ? now_ns - kWindowNs : INT64_MIN;
  for (const char* sql : {"DELETE FROM requests", "DELETE FROM tokens", "DELETE FROM daily"}) {
    c.exec(sql);
  }
  // Cancelled rows were refunded; rows before head_seq had left the window; the totals row
  // (g, seq = INT64_MAX) is not an entry.
  const std::string live =
      " FROM rl_models AS m JOIN rl_log AS g ON g.model_no = m.model_no AND g.seq = "
      "9223372036854775807 JOIN rl_log AS l ON l.model_no = m.model_no WHERE l.seq >= "
      "g.head_seq AND l.seq < 9223372036854775807 AND l.state != 2 AND l.ts > " +
      std::to_string(h);
  for (std::string sql :
       {std::string("INSERT INTO requests (model, ts) SELECT m.model, l.ts") + live +
            " AND l.requests = 1 ORDER BY m.model, l.seq",
        std::string("INSERT INTO tokens (model, ts, count, output) SELECT m.model, l.ts, "
                    "l.tokens, l.output") +
            live + " AND l.tokens > 0 ORDER BY m.model, l.seq"}) {
    c.exec(sql);
  }
  c.exec(
      "INSERT INTO daily (model, day_start, day_count) SELECT m.model, g.day_start, g.day_count "
      "FROM rl_models AS m JOIN rl_log AS g ON g.model_no = m.model_no AND g.seq = "
      "9223372036854775807 WHERE g.has_day = 1");
}

}  // namespace ratelimit::detail
