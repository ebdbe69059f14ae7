// `ratelimit`: see and steer LLM API quotas from a terminal or a script. The command line is
// parsed here (CLI11 stays in this file); commands.cc does the work.
#include <CLI/CLI.hpp>
#include <optional>
#include <string>
#include <vector>

#include "commands.h"

namespace {

using ratelimit::cli::Commands;

// The value of an option that was given, or nullopt.
std::optional<std::string> given(const CLI::Option* option, const std::string& value) {
  if (option->count() == 0) return std::nullopt;
  return value;
}

// The subcommand path that was being parsed ("quota set"), for error messages.
std::string command_path(CLI::App& app) {
  std::string path;
  for (CLI::App* sub = &app;;) {
    auto subs = sub->get_subcommands();
    if (subs.empty()) break;
    sub = subs.front();
    path += (path.empty() ? "" : " ") + sub->get_name();
  }
  return path;
}

}  // namespace

int main(int argc, char** argv) {
  ratelimit::cli::GlobalOptions global;
  CLI::App app{
      "ratelimit: keep LLM API calls inside per-model quotas (requests per minute, tokens per "
      "minute, requests per day).\nState: the shared SQLite store at ~/.core/ratelimits.db "
      "unless --state/--backend say otherwise.",
      "ratelimit"};
  app.require_subcommand(1);
  app.fallthrough();
  app.footer(
      "Exit codes: 0 ok, 1 denied, 2 usage error, 3 state/store error.\n"
      "Example:\n  ratelimit --provider openai status\n  ratelimit check gpt-4o --tokens 1500");
  app.add_option("--state", global.state,
                 "State path: a .yaml/.yml file means the YAML store, anything else a SQLite "
                 "database (default: $CORE_HOME or $HOME + /.core/ratelimits.db)")
      ->envname("RATELIMIT_STATE");
  app.add_option("--backend", global.backend,
                 "State store: sqlite (default), yaml or redis; `serve` also takes memory");
  app.add_option("--redis", global.redis,
                 "The Redis store shared by a fleet: redis://[[user]:password@]host[:port][/db] "
                 "or unix:///path.sock (selects --backend redis; not with --state)")
      ->envname("RATELIMIT_REDIS_URL");
  app.add_option("--provider", global.providers,
                 "Write this provider profile's quotas and aliases (gemini, openai, anthropic, "
                 "local, or a tier such as openai:tier3, anthropic:tier2, gemini:free; see "
                 "`ratelimit profiles`) for models with none yet; repeatable; never overwrites "
                 "`quota set`");
  app.add_flag("--json", global.json, "Machine-readable output (one JSON object)");
  app.add_flag("--recover", global.recover,
               "Move a damaged state file aside and start fresh (only a file that really is a "
               "damaged database or YAML file)");

  // status
  std::string status_model;
  auto* status = app.add_subcommand("status", "Usage, limits and the next decision per model");
  auto* status_model_opt = status->add_option("model", status_model, "Only this model");
  status->footer(
      "Example:\n  ratelimit --provider openai status\n  ratelimit status gpt-4o --json");

  // check
  std::string check_model, check_tokens = "0";
  auto* check = app.add_subcommand("check", "Would a request pass now? (records nothing)");
  check->add_option("model", check_model, "Model name")->required();
  check->add_option("--tokens", check_tokens, "Estimated tokens (default 0)");
  check->footer("Exit 0 allowed, 1 denied.\nExample:\n  ratelimit check gpt-4o --tokens 1500");

  // acquire
  std::string acquire_model, acquire_tokens = "0", acquire_wait;
  auto* acquire = app.add_subcommand("acquire", "Reserve capacity for one request");
  acquire->add_option("model", acquire_model, "Model name")->required();
  acquire->add_option("--tokens", acquire_tokens, "Estimated tokens (default 0)");
  auto* wait_opt = acquire->add_option("--wait", acquire_wait,
                                       "Block up to this long for capacity: 500ms, 30s, 2m, 1h");
  acquire->footer(
      "Prints the reservation id (SQLite store) for `commit`/`cancel`; exit 1 when denied.\n"
      "Example:\n  id=$(ratelimit acquire gpt-4o --tokens 1500 --wait 30s) &&\n"
      "  ratelimit commit \"$id\" --prompt 1200 --output 250");

  // record
  std::string record_model, record_prompt = "0", record_output = "0";
  auto* record = app.add_subcommand("record", "Record usage that was not reserved");
  record->add_option("model", record_model, "Model name")->required();
  record->add_option("--prompt", record_prompt, "Prompt tokens (default 0)");
  record->add_option("--output", record_output, "Output tokens (default 0)");
  record->footer("Example:\n  ratelimit record gpt-4o --prompt 1200 --output 250");

  // commit, cancel
  std::string commit_id, commit_prompt, commit_output;
  auto* commit = app.add_subcommand("commit", "Settle a reservation with the actual usage");
  commit->add_option("id", commit_id, "Reservation id printed by acquire")->required();
  commit->add_option("--prompt", commit_prompt, "Prompt tokens")->required();
  commit->add_option("--output", commit_output, "Output tokens")->required();
  commit->footer(
      "Needs the SQLite or Redis store.\nExample:\n  ratelimit commit \"$id\" --prompt 1200 "
      "--output 250");
  std::string cancel_id;
  auto* cancel = app.add_subcommand("cancel", "Refund a reservation whose call was never made");
  cancel->add_option("id", cancel_id, "Reservation id printed by acquire")->required();
  cancel->footer("Needs the SQLite or Redis store.\nExample:\n  ratelimit cancel \"$id\"");

  // reset
  std::string reset_model;
  bool reset_all = false, reset_yes = false;
  auto* reset = app.add_subcommand("reset", "Clear the usage of a model (or --all); quotas stay");
  auto* reset_model_opt = reset->add_option("model", reset_model, "Model name");
  reset->add_flag("--all", reset_all, "Every model");
  reset->add_flag("--yes,-y", reset_yes, "Do not ask (required when stdin is not a terminal)");
  reset->footer("Example:\n  ratelimit reset gpt-4o --yes\n  ratelimit reset --all");

  // quota
  auto* quota = app.add_subcommand("quota", "Show and change per-model quotas");
  quota->require_subcommand(1);
  quota->footer(
      "Example:\n  ratelimit quota set gpt-4o --rpm 500 --tpm 30000\n"
      "  ratelimit quota list");
  // The limit flags of `quota set` and `quota unknown`.
  struct LimitFlags {
    std::string rpm, tpm, rpd, input_tpm, output_tpm, day_start;
    CLI::Option *rpm_opt, *tpm_opt, *rpd_opt, *input_opt, *output_opt, *day_opt;
    void add(CLI::App* cmd) {
      rpm_opt = cmd->add_option("--rpm", rpm, "Requests per minute");
      tpm_opt = cmd->add_option("--tpm", tpm, "Tokens (input + output) per minute");
      rpd_opt = cmd->add_option("--rpd", rpd, "Requests per day");
      input_opt = cmd->add_option("--input-tpm", input_tpm, "Input tokens per minute");
      output_opt = cmd->add_option("--output-tpm", output_tpm, "Output tokens per minute");
      day_opt = cmd->add_option("--day-start", day_start,
                                "Where the day starts: first_request (24 h from the first "
                                "request) or pacific_midnight (the provider's calendar day)");
    }
    ratelimit::cli::QuotaFlags given_flags() const {
      return {given(rpm_opt, rpm),           given(tpm_opt, tpm),
              given(rpd_opt, rpd),           given(input_opt, input_tpm),
              given(output_opt, output_tpm), given(day_opt, day_start)};
    }
  };
  std::string qset_model;
  LimitFlags qset_flags;
  auto* qset = quota->add_subcommand("set", "Set a model's limits (0 = unlimited)");
  qset->add_option("model", qset_model, "Model name")->required();
  qset_flags.add(qset);
  qset->footer(
      "Omitted limits keep their current value (0 for a new model).\nExample:\n"
      "  ratelimit quota set gpt-4o --rpm 500 --tpm 30000 --rpd 0\n"
      "  ratelimit quota set claude-sonnet-4 --rpm 50 --input-tpm 30000 --output-tpm 8000");
  std::string qalias_name, qalias_target;
  auto* qalias =
      quota->add_subcommand("alias", "Let a model name use another's quota and usage (one pool)");
  qalias->add_option("name", qalias_name, "The name callers send")->required();
  qalias->add_option("target", qalias_target, "The model whose quota it uses")->required();
  qalias->footer("Example:\n  ratelimit quota alias my-gpt gpt-4o");
  std::string qunalias_name;
  auto* qunalias = quota->add_subcommand("unalias", "Remove an alias");
  qunalias->add_option("name", qunalias_name, "The alias")->required();
  auto* qaliases = quota->add_subcommand("aliases", "List the aliases in the store");
  std::string qunknown_policy;
  LimitFlags qunknown_flags;
  auto* qunknown = quota->add_subcommand(
      "unknown", "Show or set what models with no quota get: allow, deny or default_quota");
  auto* qunknown_opt =
      qunknown->add_option("policy", qunknown_policy, "allow, deny, default_quota");
  qunknown_flags.add(qunknown);
  qunknown->footer(
      "Example:\n  ratelimit quota unknown deny\n"
      "  ratelimit quota unknown default_quota --rpm 60 --tpm 100000");
  std::string qrm_model;
  auto* qrm = quota->add_subcommand("rm", "Remove a model's quota");
  qrm->add_option("model", qrm_model, "Model name")->required();
  qrm->footer("Example:\n  ratelimit quota rm gpt-4o");
  auto* qlist = quota->add_subcommand("list", "List the quotas in the store");
  qlist->footer("Example:\n  ratelimit quota list --json");
  std::string qapply_provider;
  auto* qapply =
      quota->add_subcommand("apply", "Overwrite quotas with a provider profile's values");
  qapply
      ->add_option("provider", qapply_provider,
                   "gemini, openai, anthropic, local, or a tier such as openai:tier3 (see "
                   "`ratelimit profiles`)")
      ->required();
  qapply->footer(
      "Example:\n  ratelimit quota apply anthropic\n  ratelimit quota apply openai:tier3");

  // observe
  ratelimit::cli::ObserveArgs observe_args;
  std::string observe_body;
  auto* observe = app.add_subcommand(
      "observe", "Learn from a provider's response: cooldowns (429) and remaining budgets");
  observe->add_option("model", observe_args.model, "Model name")->required();
  observe->add_option("--status", observe_args.status, "HTTP status code (default 200)");
  observe->add_option("--header", observe_args.headers, "'name: value'; repeatable");
  auto* observe_body_opt =
      observe->add_option("--body-file", observe_body, "The response body (Gemini's 429 details)");
  observe->add_option("--format", observe_args.format,
                      "auto (default), openai, azure_openai, groq, anthropic, mistral, gemini");
  observe->footer(
      "Example:\n  ratelimit observe gpt-4o --status 429 --header 'retry-after: 20'\n"
      "  ratelimit observe claude-sonnet-4 --header "
      "'anthropic-ratelimit-requests-remaining: 0' --header "
      "'anthropic-ratelimit-requests-reset: 2026-12-02T10:00:30Z'");

  // profiles
  std::string profiles_provider;
  auto* profiles =
      app.add_subcommand("profiles", "The built-in provider profiles, their tiers and aliases");
  auto* profiles_opt = profiles->add_option(
      "name", profiles_provider, "Only this provider (with its tiers) or profile (openai:tier2)");
  profiles->footer(
      "Example:\n  ratelimit profiles openai\n  ratelimit profiles anthropic:tier2 --json");

  // migrate
  std::string migrate_yaml, migrate_db;
  auto* migrate = app.add_subcommand("migrate", "Copy go-ratelimit YAML state into SQLite");
  migrate->add_option("yaml", migrate_yaml, "The YAML state file")->required();
  auto* migrate_db_opt =
      migrate->add_option("db", migrate_db, "The database (default ~/.core/ratelimits.db)");
  migrate->footer("Example:\n  ratelimit migrate ~/.core/ratelimits.yaml ~/.core/ratelimits.db");

  // serve
  ratelimit::cli::ServeArgs serve_args;
  std::string serve_token_file, serve_upstream_ca;
  auto* serve = app.add_subcommand(
      "serve", "Run the HTTP/JSON server (and /metrics) so that any language shares the quotas");
  serve->add_option("--listen", serve_args.listen,
                    "HOST:PORT to listen on (default 127.0.0.1:8787; port 0: any free port)");
  auto* token_opt = serve->add_option(
      "--token-file", serve_token_file,
      "File holding a bearer token that every endpoint but /healthz and / then requires "
      "(needed to listen beyond loopback)");
  serve->add_option("--lease", serve_args.lease,
                    "Forget a reservation not settled within this long; it keeps its estimate "
                    "(default 10m)");
  serve->add_option("--max-wait", serve_args.max_wait,
                    "The largest wait_ms an acquire may ask for, and how long a proxied call "
                    "waits for capacity before its 429 (default 5m)");
  serve->add_option("--upstream", serve_args.upstreams,
                    "NAME=URL[,api=openai|anthropic|gemini], or openai|anthropic|gemini: proxy "
                    "/NAME/... to URL/..., limited (repeatable; docs/proxy.md)");
  serve->add_option("--proxy-max-body", serve_args.proxy_max_body,
                    "Largest request body of a proxied call in bytes (default 33554432)");
  serve->add_option("--retry-429", serve_args.retry_429,
                    "Retry a proxied call the upstream answered 429 after its hint, up to N "
                    "times (default 0: pass the 429 on)");
  serve->add_flag("--pass-unknown", serve_args.pass_unknown,
                  "Forward an inference call the proxy cannot parse, unlimited (default: 400)");
  auto* upstream_ca_opt = serve->add_option(
      "--upstream-ca", serve_upstream_ca,
      "PEM file of the CA that signed an https upstream's certificate (besides the system's)");
  serve->add_option("--persist-every", serve_args.persist_every,
                    "YAML store: write the state this often (default 5s; always at shutdown)");
  serve->add_option("--max-models", serve_args.max_models,
                    "Distinct model names the server tracks (default 10000)");
  serve->add_option("--max-leases", serve_args.max_leases,
                    "Unsettled reservations held at once (default 1000000)");
  serve->add_option("--max-body", serve_args.max_body,
                    "Largest request body in bytes (default 65536)");
  serve->add_option("--threads", serve_args.threads,
                    "io threads; each serves many connections, none blocks while an acquire "
                    "waits (default 2)");
  serve->add_option("--max-connections", serve_args.max_connections,
                    "Open connections at once; beyond, a new one gets 503 and is closed "
                    "(default 10000)");
  serve->add_option("--max-waiters", serve_args.max_waiters,
                    "Acquires that actually wait (wait_ms) at once (default 1024)");
  serve->add_option("--shutdown-grace", serve_args.shutdown_grace,
                    "On SIGTERM/SIGINT, how long requests in flight may finish before their "
                    "connections are cut (default 5s)");
  serve->footer(
      "Store: the same options as every command (--state, --backend sqlite|yaml|memory, "
      "--provider).\nStops on SIGTERM/SIGINT: finishes in-flight requests (up to "
      "--shutdown-grace), saves the state, exits 0.\nExample:\n  ratelimit --provider openai serve "
      "--listen 127.0.0.1:8787\n"
      "  curl -s localhost:8787/v1/acquire -d '{\"model\": \"gpt-4o\", \"tokens\": 1500}'");

  // count-tokens
  ratelimit::cli::CountTokensArgs ct_args;
  std::string ct_text, ct_file, ct_base_url;
  auto* count_tokens = app.add_subcommand(
      "count-tokens", "Count a text's tokens with Gemini's countTokens, or estimate them");
  count_tokens->add_option("model", ct_args.model, "The Gemini model, e.g. gemini-2.0-flash")
      ->required();
  auto* ct_text_opt = count_tokens->add_option("--text", ct_text, "The text to count");
  auto* ct_file_opt =
      count_tokens->add_option("--file", ct_file, "A file holding the text (- for stdin)");
  ct_text_opt->excludes(ct_file_opt);
  auto* ct_base_opt = count_tokens->add_option(
      "--base-url", ct_base_url,
      "The API root (default https://generativelanguage.googleapis.com/v1beta)");
  count_tokens->add_flag("--estimate", ct_args.estimate,
                         "No request: estimate 1 token per 4 bytes, rounded up (any provider)");
  count_tokens->footer(
      "The API key comes from GEMINI_API_KEY (or GOOGLE_API_KEY). Exit code 3 when the API "
      "cannot be reached or fails.\nExample:\n  ratelimit count-tokens gemini-2.0-flash "
      "--text 'Why is the sky blue?'\n  ratelimit count-tokens gpt-4o --file prompt.txt "
      "--estimate --json");

  auto* version = app.add_subcommand("version", "Print the version");
  version->footer("Example:\n  ratelimit version");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    for (int i = 1; i < argc; ++i) {
      if (std::string(argv[i]) == "--json") global.json = true;
    }
    Commands reporter(global, ratelimit::cli::Terminal::detect());
    std::string path = command_path(app);
    if (path.empty()) {
      // The first word that is neither an option nor an option's value names the command.
      for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--state" || arg == "--backend" || arg == "--provider" || arg == "--redis") {
          ++i;
        } else if (!arg.empty() && arg[0] != '-') {
          return reporter.fail(
              "", ratelimit::cli::usage_error("unknown command \"" + arg +
                                              "\"; see `ratelimit --help` for the commands"));
        }
      }
    }
    std::string help = path.empty() ? "ratelimit --help" : "ratelimit " + path + " --help";
    return reporter.fail(
        path, ratelimit::cli::usage_error(std::string(e.what()) + "; see `" + help + "`"));
  }

  Commands run(global, ratelimit::cli::Terminal::detect());
  if (status->parsed()) return run.status(given(status_model_opt, status_model));
  if (check->parsed()) return run.check(check_model, check_tokens);
  if (acquire->parsed())
    return run.acquire(acquire_model, acquire_tokens, given(wait_opt, acquire_wait));
  if (record->parsed()) return run.record(record_model, record_prompt, record_output);
  if (commit->parsed()) return run.commit(commit_id, commit_prompt, commit_output);
  if (cancel->parsed()) return run.cancel(cancel_id);
  if (reset->parsed()) return run.reset(given(reset_model_opt, reset_model), reset_all, reset_yes);
  if (qset->parsed()) return run.quota_set(qset_model, qset_flags.given_flags());
  if (qalias->parsed()) return run.quota_alias(qalias_name, qalias_target);
  if (qunalias->parsed()) return run.quota_unalias(qunalias_name);
  if (qaliases->parsed()) return run.quota_aliases();
  if (qunknown->parsed()) {
    return run.quota_unknown(given(qunknown_opt, qunknown_policy), qunknown_flags.given_flags());
  }
  if (observe->parsed()) {
    observe_args.body_file = given(observe_body_opt, observe_body);
    return run.observe(observe_args);
  }
  if (qrm->parsed()) return run.quota_rm(qrm_model);
  if (qlist->parsed()) return run.quota_list();
  if (qapply->parsed()) return run.quota_apply(qapply_provider);
  if (profiles->parsed()) return run.profiles(given(profiles_opt, profiles_provider));
  if (migrate->parsed()) return run.migrate(migrate_yaml, given(migrate_db_opt, migrate_db));
  if (version->parsed()) return run.version();
  if (count_tokens->parsed()) {
    if (ct_text_opt->count() > 0) ct_args.text = ct_text;
    if (ct_file_opt->count() > 0) ct_args.file = ct_file;
    if (ct_base_opt->count() > 0) ct_args.base_url = ct_base_url;
    return run.count_tokens(ct_args);
  }
  if (serve->parsed()) {
    if (token_opt->count() > 0) serve_args.token_file = serve_token_file;
    if (upstream_ca_opt->count() > 0) serve_args.upstream_ca = serve_upstream_ca;
    return run.serve(serve_args);
  }
  return run.fail("", ratelimit::cli::usage_error("no command given; see `ratelimit --help`"));
}
