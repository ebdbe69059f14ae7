#include "commands.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <stop_token>
#include <string_view>
#include <thread>
#include <tuple>
#include <utility>

#include "args.h"
#include "command_parts.h"
#include "json_format.h"
#include "ratelimit/model_name.h"

#ifndef RATELIMIT_VERSION
#define RATELIMIT_VERSION "unknown"
#endif

namespace ratelimit::cli {

using namespace command_parts;  // NOLINT(google-build-using-namespace)

Terminal Terminal::detect() {
  return Terminal{::isatty(STDIN_FILENO) == 1, ::isatty(STDOUT_FILENO) == 1,
                  ::isatty(STDERR_FILENO) == 1};
}

Commands::Commands(GlobalOptions options, Terminal terminal)
    : options_(std::move(options)), terminal_(terminal) {}

void Commands::print(const std::string& text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
  if (text.empty() || text.back() != '\n') std::fputc('\n', stdout);
  std::fflush(stdout);
}

int Commands::fail(const std::string& command, const Failure& failure) {
  // One line, and never raw bytes that are not printable UTF-8 (CLI11 quotes arguments as given).
  const std::string message = printable(one_line(failure.message));
  std::fprintf(stderr, "ratelimit%s%s: %s\n", command.empty() ? "" : " ", command.c_str(),
               message.c_str());
  std::fflush(stderr);
  if (options_.json) {
    const char* code = failure.exit_code == kUsageError   ? "usage_error"
                       : failure.exit_code == kStoreError ? "state_error"
                                                          : "denied";
    print(json::error(code, failure.exit_code, message));
  }
  return failure.exit_code;
}

Outcome<StoreOptions> Commands::store_options() const {
  StoreOptions out;
  out.state = options_.state;
  out.backend = options_.backend;
  out.redis = options_.redis;
  out.recover = options_.recover;
  for (const auto& name : options_.providers) {
    if (name.find(':') != std::string::npos) {  // a tier: "openai:tier3"
      if (auto ok = check_profile(name); !ok) return tl::unexpected(ok.error());
      out.profiles.push_back(name);
      continue;
    }
    auto p = check_provider(name);
    if (!p) return tl::unexpected(p.error());
    if (std::find(out.providers.begin(), out.providers.end(), *p) == out.providers.end()) {
      out.providers.push_back(*p);
    }
  }
  return out;
}

Outcome<std::unique_ptr<Session>> Commands::open_store() {
  auto opts = store_options();
  if (!opts) return tl::unexpected(opts.error());
  auto loc = resolve_store(*opts);
  if (!loc) return tl::unexpected(loc.error());
  return Session::open(*opts, *loc);
}

// --- status, check -------------------------------------------------------------------------

Outcome<std::vector<json::StatusRow>> status_rows(RateLimiter& limiter,
                                                  const std::optional<std::string>& model) {
  std::vector<std::string> names;
  if (model) {
    names.push_back(*model);
  } else {
    auto all = limiter.models();
    if (!all) return tl::unexpected(store_error("cannot list models: " + all.error().to_string()));
    names = std::move(*all);
  }
  std::vector<json::StatusRow> rows;
  for (auto& name : names) {
    Decision d = limiter.decide(name, 0);
    if (d.code == DecisionCode::store_unavailable) {
      return tl::unexpected(store_error("the state store is unavailable; retry"));
    }
    rows.push_back({std::move(name), d});
  }
  return rows;
}

int Commands::status(const std::optional<std::string>& model) {
  if (model) {
    if (auto ok = check_model(*model); !ok) return fail("status", ok.error());
  }
  auto session = open_store();
  if (!session) return fail("status", session.error());
  auto found = status_rows((*session)->limiter(), model);
  if (!found) return fail("status", found.error());
  const std::vector<json::StatusRow>& rows = *found;
  if (auto done = (*session)->finish(); !done) return fail("status", done.error());
  if (options_.json) {
    print(json::status(rows));
    return kOk;
  }
  if (rows.empty()) {
    print(
        "no models yet: add quotas with `ratelimit --provider openai status` or "
        "`ratelimit quota set MODEL --rpm N`");
    return kOk;
  }
  // Input/output columns only when some model has such a limit or usage.
  bool io = false;
  for (const auto& row : rows) {
    const ModelStats& s = row.decision.stats;
    io |= s.max_input_tpm > 0 || s.max_output_tpm > 0 || s.output_tpm > 0;
  }
  Table t;
  t.rows.push_back({"MODEL", "RPM", "TPM", "RPD"});
  if (io) {
    t.rows.back().push_back("INPUT TPM");
    t.rows.back().push_back("OUTPUT TPM");
  }
  t.rows.back().push_back("FREES IN");
  t.rows.back().push_back("NEXT REQUEST");
  // On a terminal: a usage bar after each used/limit cell, except in a column that is unlimited
  // for every model.
  bool limited[3] = {false, false, false};
  for (const auto& row : rows) {
    const ModelStats& s = row.decision.stats;
    limited[0] |= s.max_rpm > 0;
    limited[1] |= s.max_tpm > 0;
    limited[2] |= s.max_rpd > 0;
  }
  for (const auto& row : rows) {
    const ModelStats& s = row.decision.stats;
    const Decision& d = row.decision;
    const std::size_t r = t.rows.size();
    t.rows.push_back({printable(row.model), used_text(s.rpm, s.max_rpm),
                      used_text(s.tpm, s.max_tpm), used_text(s.rpd, s.max_rpd)});
    if (io) {
      t.rows.back().push_back(used_text(s.input_tpm, s.max_input_tpm));
      t.rows.back().push_back(used_text(s.output_tpm, s.max_output_tpm));
    }
    t.rows.back().push_back(d.allowed ? "-" : format_duration(d.retry_after));
    t.rows.back().push_back(std::string(d.allowed ? "allowed (" : "denied (") +
                            std::string(to_string(d.code)) + ")");
    if (!terminal_.out) continue;
    const std::pair<std::int64_t, std::int64_t> dims[3] = {
        {s.rpm, s.max_rpm}, {s.tpm, s.max_tpm}, {s.rpd, s.max_rpd}};
    for (std::size_t i = 0; i < 3; ++i) {
      if (!limited[i]) continue;
      t.suffix[{r, i + 1}] = bar(dims[i].first, dims[i].second);
      t.suffix[{0, i + 1}] = std::string(kBarWidth + 2, ' ');
    }
  }
  print(t.render());
  return kOk;
}

int Commands::check(const std::string& model, const std::string& tokens) {
  if (auto ok = check_model(model); !ok) return fail("check", ok.error());
  auto n = check_count("--tokens", tokens, "1500");
  if (!n) return fail("check", n.error());
  auto session = open_store();
  if (!session) return fail("check", session.error());
  const Decision d = (*session)->limiter().decide(model, *n);
  if (d.code == DecisionCode::store_unavailable) {
    return fail("check", store_error("the state store is unavailable; retry"));
  }
  if (d.code == DecisionCode::invalid_model) return fail("check", invalid_model_failure(model));
  if (auto done = (*session)->finish(); !done) return fail("check", done.error());
  print(options_.json ? json::decision(d) : decision_line(model, d));
  return d.allowed ? kOk : kDenied;
}

// --- acquire -----------------------------------------------------------------------------

int Commands::acquire(const std::string& model, const std::string& tokens,
                      const std::optional<std::string>& wait) {
  if (auto ok = check_model(model); !ok) return fail("acquire", ok.error());
  auto n = check_count("--tokens", tokens, "1500");
  if (!n) return fail("acquire", n.error());
  std::optional<Duration> wait_for;
  if (wait) {
    wait_for = parse_duration(*wait);
    if (!wait_for) {
      return fail("acquire", usage_error("--wait " + quote_name(*wait) +
                                         " is not a duration; use a number and a unit: 500ms, "
                                         "30s, 2m or 1h"));
    }
  }
  auto opened = open_store();
  if (!opened) return fail("acquire", opened.error());
  Session& session = **opened;
  RateLimiter& limiter = session.limiter();
  // The limiter's clock (Config::clock) times the wait, its deadline and the countdown.
  Clock& clock = *limiter.config().clock;
  const TimePoint deadline = clock.now() + (wait_for ? *wait_for : Duration::zero());
  bool expired = !wait_for;

  const auto admitted = [&](const Reservation& r) {
    // A granted reservation that is never settled keeps its estimate as usage; with SQLite its
    // id settles it from another invocation.
    session.mark_changed();
    std::optional<std::string> id;
    if (session.ids_outlive_process()) id = r.id();
    if (auto done = session.finish(); !done) return fail("acquire", done.error());
    if (!id) {
      std::fprintf(stderr,
                   "ratelimit acquire: granted; the YAML store gives no reservation id (ids that "
                   "commit/cancel accept later need the SQLite store), so the estimate stays "
                   "recorded as usage\n");
    }
    if (options_.json) {
      print(json::decision(r.decision(), id));
    } else if (id) {
      print(*id);
    }
    return static_cast<int>(kOk);
  };

  for (;;) {
    Reservation r = limiter.try_acquire(model, *n);
    if (r.granted()) return admitted(r);
    const Decision d = r.decision();
    if (d.code == DecisionCode::store_unavailable) {
      return fail("acquire", store_error("the state store is unavailable; retry"));
    }
    if (d.code == DecisionCode::invalid_model) {
      return fail("acquire", invalid_model_failure(model));
    }
    if (expired || !is_limit_denial(d.code) || d.retry_after == Duration::max() ||
        clock.now() >= deadline) {
      if (auto done = session.finish(); !done) return fail("acquire", done.error());
      print(options_.json ? json::decision(d) : decision_line(model, d));
      return kDenied;
    }
    // Wait without holding the YAML lock, until the window frees or the deadline.
    if (auto done = session.finish(); !done) return fail("acquire", done.error());
    const TimePoint next_try = clock.now() + d.retry_after;
    std::optional<std::jthread> countdown;
    if (terminal_.err) {
      countdown.emplace([&clock, &model, next_try, deadline](std::stop_token stop) {
        while (!stop.stop_requested()) {
          const auto now = clock.now();
          const std::string line = "waiting for " + printable(model) + ": next try in " +
                                   format_duration(std::max(next_try - now, Duration::zero())) +
                                   ", giving up in " +
                                   format_duration(std::max(deadline - now, Duration::zero()));
          std::fprintf(stderr, "\r\033[K%s", line.c_str());
          std::fflush(stderr);
          clock.sleep_until(clock.now() + std::chrono::milliseconds(100), stop);
        }
        std::fprintf(stderr, "\r\033[K");
        std::fflush(stderr);
      });
    }
    WaitOptions options;
    options.timeout = std::max<Duration>(deadline - clock.now(), Duration::zero());
    if (session.ids_outlive_process()) {
      // SQLite: the library's blocking acquire; it also wakes when another process frees
      // capacity (cancel, reset, quota change).
      Result<Reservation> got = limiter.acquire(model, *n, options);
      countdown.reset();
      if (got) return admitted(*got);
      if (got.error().code == ErrorCode::deadline_exceeded) {
        expired = true;
      } else if (got.error().code != ErrorCode::never_satisfiable) {
        return fail("acquire", store_error("cannot wait for capacity: " + got.error().to_string() +
                                           "; retry"));
      }
      // One last try, which also gives the decision to print (never_satisfiable: a quota changed
      // while waiting).
      continue;
    }
    // YAML: the file may change while the lock is released, so wait on the state loaded last,
    // then take the lock again, reload and retry.
    Status waited = limiter.wait_for_capacity(model, *n, options);
    countdown.reset();
    if (!waited) {
      if (waited.error().code == ErrorCode::deadline_exceeded) {
        expired = true;
      } else if (waited.error().code != ErrorCode::never_satisfiable) {
        return fail(
            "acquire",
            store_error("cannot wait for capacity: " + waited.error().to_string() + "; retry"));
      }
    }
    if (auto again = session.reacquire(); !again) return fail("acquire", again.error());
  }
}

// --- record, commit, cancel ----------------------------------------------------------------

int Commands::record(const std::string& model, const std::string& prompt,
                     const std::string& output) {
  if (auto ok = check_model(model); !ok) return fail("record", ok.error());
  auto p = check_count("--prompt", prompt, "1200");
  if (!p) return fail("record", p.error());
  auto o = check_count("--output", output, "300");
  if (!o) return fail("record", o.error());
  auto session = open_store();
  if (!session) return fail("record", session.error());
  RateLimiter& limiter = (*session)->limiter();
  if (auto s = limiter.record_usage(model, *p, *o); !s) {
    return fail("record", store_error("cannot record: " + s.error().to_string()));
  }
  (*session)->mark_changed();
  auto stats = limiter.stats(model);
  if (!stats) return fail("record", store_error("cannot read stats: " + stats.error().to_string()));
  if (auto done = (*session)->finish(); !done) return fail("record", done.error());
  print(options_.json ? json::model_stats(model, *stats)
                      : "recorded " + printable(model) + ": " + std::to_string(*p) + " prompt + " +
                            std::to_string(*o) + " output tokens; " + stats_line(*stats));
  return kOk;
}

namespace {

Failure settle_failure(const char* op, const std::string& id, const Error& e) {
  if (e.code == ErrorCode::not_found) {
    return usage_error("unknown reservation id " + quote_name(id) +
                       "; use an id printed by `ratelimit acquire` on this store");
  }
  if (e.code == ErrorCode::invalid_argument) {
    return usage_error("reservation " + quote_name(id) +
                       " is already settled; each reservation is committed or cancelled once");
  }
  return store_error(std::string("cannot ") + op + " reservation " + quote_name(id) + " (" +
                     e.to_string() + "); retry");
}

}  // namespace

int Commands::commit(const std::string& id, const std::string& prompt, const std::string& output) {
  if (id.empty()) {
    return fail("commit", usage_error("the reservation id is empty; pass the id that `ratelimit "
                                      "acquire` printed"));
  }
  auto p = check_count("--prompt", prompt, "1200");
  if (!p) return fail("commit", p.error());
  auto o = check_count("--output", output, "300");
  if (!o) return fail("commit", o.error());
  auto opts = store_options();
  if (!opts) return fail("commit", opts.error());
  auto loc = resolve_store(*opts);
  if (!loc) return fail("commit", loc.error());
  if (loc->backend == Backend::yaml) {
    return fail(
        "commit",
        usage_error("reservation ids need the SQLite store or the Redis store, and this is the "
                    "YAML store " +
                    loc->path +
                    "; use the default store (drop --state/--backend yaml) "
                    "or --state PATH.db, or record usage with `ratelimit "
                    "record`"));
  }
  auto session = Session::open(*opts, *loc);
  if (!session) return fail("commit", session.error());
  if (auto s = (*session)->limiter().commit(id, *p, *o); !s) {
    return fail("commit", settle_failure("commit", id, s.error()));
  }
  if (auto done = (*session)->finish(); !done) return fail("commit", done.error());
  print(options_.json ? json::settled(id, "committed")
                      : "committed " + printable(id) + ": " + std::to_string(*p) + " prompt + " +
                            std::to_string(*o) + " output tokens");
  return kOk;
}

int Commands::cancel(const std::string& id) {
  if (id.empty()) {
    return fail("cancel", usage_error("the reservation id is empty; pass the id that `ratelimit "
                                      "acquire` printed"));
  }
  auto opts = store_options();
  if (!opts) return fail("cancel", opts.error());
  auto loc = resolve_store(*opts);
  if (!loc) return fail("cancel", loc.error());
  if (loc->backend == Backend::yaml) {
    return fail(
        "cancel",
        usage_error("reservation ids need the SQLite store or the Redis store, and this is the "
                    "YAML store " +
                    loc->path +
                    "; use the default store (drop --state/--backend yaml) "
                    "or --state PATH.db"));
  }
  auto session = Session::open(*opts, *loc);
  if (!session) return fail("cancel", session.error());
  if (auto s = (*session)->limiter().cancel(id); !s) {
    return fail("cancel", settle_failure("cancel", id, s.error()));
  }
  if (auto done = (*session)->finish(); !done) return fail("cancel", done.error());
  print(options_.json ? json::settled(id, "cancelled")
                      : "cancelled " + printable(id) + ": request and tokens refunded");
  return kOk;
}

// --- reset -----------------------------------------------------------------------------------

int Commands::reset(const std::optional<std::string>& model, bool all, bool yes) {
  if (model && all) {
    return fail("reset", usage_error("give either a MODEL or --all, not both"));
  }
  if (!model && !all) {
    return fail("reset", usage_error("say what to reset: `ratelimit reset MODEL` or "
                                     "`ratelimit reset --all`"));
  }
  if (model) {
    if (auto ok = check_model(*model); !ok) return fail("reset", ok.error());
  }
  auto opts = store_options();
  if (!opts) return fail("reset", opts.error());
  auto loc = resolve_store(*opts);
  if (!loc) return fail("reset", loc.error());
  if (!yes) {
    if (!terminal_.in) {
      return fail("reset", usage_error("refusing to reset without confirmation: stdin is not a "
                                       "terminal; pass --yes to reset without asking"));
    }
    const std::string what =
        model ? "the usage of " + printable(*model) : "the usage of ALL models";
    std::fprintf(stderr, "Reset %s in %s? [y/N] ", what.c_str(), loc->path.c_str());
    std::fflush(stderr);
    std::string answer;
    if (!std::getline(std::cin, answer)) answer.clear();
    if (answer != "y" && answer != "Y" && answer != "yes" && answer != "YES") {
      std::fprintf(stderr, "ratelimit reset: not confirmed; nothing was reset\n");
      return kDenied;
    }
  }
  auto session = Session::open(*opts, *loc);
  if (!session) return fail("reset", session.error());
  RateLimiter& limiter = (*session)->limiter();
  std::vector<std::string> models;
  if (model) {
    models.push_back(*model);
  } else {
    auto all_models = limiter.models();
    if (!all_models) {
      return fail("reset", store_error("cannot list models: " + all_models.error().to_string()));
    }
    models = std::move(*all_models);
  }
  // A single model with no usage: say that there was nothing to clear.
  bool had_usage = true;
  if (model) {
    if (auto st = limiter.stats(*model)) {
      had_usage = st->rpm != 0 || st->tpm != 0 || st->rpd != 0;
    }
  }
  if (auto s = limiter.reset(model ? *model : std::string()); !s) {
    return fail("reset", store_error("cannot reset: " + s.error().to_string()));
  }
  (*session)->mark_changed();
  if (auto done = (*session)->finish(); !done) return fail("reset", done.error());
  if (options_.json) {
    print(json::reset(models));
  } else if (model && !had_usage) {
    print("reset " + printable(*model) +
          ": nothing to clear (no usage in the window or today; its quota is unchanged)");
  } else if (model) {
    print("reset " + printable(*model) + ": usage cleared (its quota is unchanged)");
  } else {
    print("reset all models (" + std::to_string(models.size()) +
          "): usage cleared (quotas are unchanged)");
  }
  return kOk;
}

// --- profiles, migrate, version ----------------------------------------------------------

int Commands::profiles(const std::optional<std::string>& provider) {
  // NAME is a provider (its bare profile and every tier) or one profile ("openai:tier2").
  std::vector<ProviderProfile> chosen;
  for (auto& profile : all_profiles()) {
    if (!provider || *provider == to_string(profile.provider) || *provider == profile.name()) {
      chosen.push_back(std::move(profile));
    }
  }
  if (chosen.empty()) {
    return fail("profiles", usage_error("unknown provider or profile " + quote_name(*provider) +
                                        "; choose a provider (gemini, openai, anthropic, local) "
                                        "or a profile such as openai:tier2 (see `ratelimit "
                                        "profiles`)"));
  }
  if (options_.json) {
    print(json::profiles(chosen));
    return kOk;
  }
  Table t;
  t.rows.push_back({"PROFILE", "MODEL", "RPM", "TPM", "RPD", "ITPM", "OTPM", "DAY STARTS"});
  Table aliases;
  aliases.rows.push_back({"PROFILE", "ALIAS", "MODEL"});
  for (const auto& profile : chosen) {
    if (profile.models.empty()) {
      t.rows.push_back({profile.name(), "(no models)", "", "", "", "", "", ""});
    }
    for (const auto& [model, q] : profile.models) {
      t.rows.push_back(
          {profile.name(), model, limit_text(q.max_rpm), limit_text(q.max_tpm),
           limit_text(q.max_rpd), limit_text(q.max_input_tpm), limit_text(q.max_output_tpm),
           q.day_start == DayStart::pacific_midnight ? "midnight Pacific" : "first request"});
    }
    for (const auto& [from, to] : profile.aliases)
      aliases.rows.push_back({profile.name(), from, to});
  }
  std::string out = t.render();
  if (aliases.rows.size() > 1) out += "\n" + aliases.render();
  print(out);
  return kOk;
}

int Commands::migrate(const std::string& yaml_path, const std::optional<std::string>& db_path) {
  if (yaml_path.empty()) {
    return fail("migrate", usage_error("the YAML path is empty; give the go-ratelimit state file, "
                                       "e.g. ~/.core/ratelimits.yaml"));
  }
  std::string db;
  if (db_path) {
    db = *db_path;
    if (db.empty()) return fail("migrate", usage_error("the database path is empty"));
  } else {
    auto path = default_state_path(Backend::sqlite);
    if (!path) {
      return fail("migrate", store_error("no home directory for the default database; set HOME "
                                         "or CORE_HOME, or give the database path"));
    }
    db = *path;
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(db).parent_path(), ec);
  }
  // Hold the YAML file's lock so that no CLI invocation changes it meanwhile.
  std::string lock_problem;
  std::error_code ec;
  const int fd = std::filesystem::is_regular_file(yaml_path, ec)
                     ? lock_yaml_path(yaml_path, lock_problem)
                     : -1;
  auto s = migrate_yaml_to_sqlite(yaml_path, db);
  if (fd >= 0) ::close(fd);
  if (!s) {
    const Error& e = s.error();
    std::string why = e.code == ErrorCode::not_found
                          ? yaml_path + " does not exist; give the path of a YAML state file"
                      : e.code == ErrorCode::corrupt_state
                          ? "cannot migrate (" + e.to_string() +
                                "); repair the YAML file, the database was not changed"
                          : "cannot migrate (" + e.to_string() +
                                "); check both paths, the database was not changed";
    return fail("migrate", store_error(why));
  }
  print(options_.json ? json::migrated(yaml_path, db) : "migrated " + yaml_path + " into " + db);
  return kOk;
}

int Commands::version() {
  print(options_.json ? json::version(RATELIMIT_VERSION)
                      : std::string("ratelimit ") + RATELIMIT_VERSION);
  return kOk;
}

}  // namespace ratelimit::cli
