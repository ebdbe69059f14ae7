// The `ratelimit` commands, independent of how the command line was parsed (main.cc) and of
// the JSON library (json_format.cc). Each returns the process exit code (see ExitCode) and
// writes its result to stdout, errors to stderr in one line.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "json_format.h"
#include "store.h"

namespace ratelimit::cli {

struct GlobalOptions {
  std::string state;                   // --state / $RATELIMIT_STATE
  std::string backend;                 // --backend
  std::string redis;                   // --redis / $RATELIMIT_REDIS_URL
  std::vector<std::string> providers;  // --provider (repeatable)
  bool json = false;                   // --json
  bool recover = false;                // --recover
};

// Which standard streams are terminals (bars, countdown and confirmation only on a terminal).
struct Terminal {
  bool in = false, out = false, err = false;
  static Terminal detect();
};

// The rows of `status` (and of the server's GET /v1/stats): every model of the store, or only
// `model`, each with the decision a request of 0 tokens would get now. Store error when the
// store cannot list its models or is unavailable.
Outcome<std::vector<json::StatusRow>> status_rows(RateLimiter& limiter,
                                                  const std::optional<std::string>& model);

// The options of `ratelimit serve` as given on the command line (checked by serve()).
struct ServeArgs {
  std::string listen = "127.0.0.1:8787";
  std::optional<std::string> token_file;
  std::string lease = "10m";
  std::string max_wait = "5m";
  std::string persist_every = "5s";
  std::string max_models = "10000";
  std::string max_leases = "1000000";
  std::string max_body = "65536";
  std::string threads = "2";
  std::string max_connections = "10000";
  std::string max_waiters = "1024";
  std::string shutdown_grace = "5s";
  // The limiting proxy (docs/proxy.md).
  std::vector<std::string> upstreams;  // --upstream, repeatable
  std::string proxy_max_body = "33554432";
  std::string retry_429 = "0";
  bool pass_unknown = false;
  std::optional<std::string> upstream_ca;
};

// `quota set` and `quota unknown` flags as given (checked by the command).
struct QuotaFlags {
  std::optional<std::string> rpm, tpm, rpd, input_tpm, output_tpm, day_start;
  bool any() const { return rpm || tpm || rpd || input_tpm || output_tpm || day_start; }
};

// `observe`: a provider response as given on the command line.
struct ObserveArgs {
  std::string model;
  std::string status = "200";
  std::vector<std::string> headers;  // "name: value"
  std::optional<std::string> body_file;
  std::string format = "auto";
};

// The options of `ratelimit count-tokens` as given on the command line.
struct CountTokensArgs {
  std::string model;
  std::optional<std::string> text;      // --text
  std::optional<std::string> file;      // --file ("-": standard input)
  std::optional<std::string> base_url;  // --base-url
  bool estimate = false;                // --estimate: the local rule, no request
};

class Commands {
 public:
  Commands(GlobalOptions options, Terminal terminal);

  int status(const std::optional<std::string>& model);
  int check(const std::string& model, const std::string& tokens);
  int acquire(const std::string& model, const std::string& tokens,
              const std::optional<std::string>& wait);
  int record(const std::string& model, const std::string& prompt, const std::string& output);
  int commit(const std::string& id, const std::string& prompt, const std::string& output);
  int cancel(const std::string& id);
  int reset(const std::optional<std::string>& model, bool all, bool yes);
  int quota_set(const std::string& model, const QuotaFlags& flags);
  int quota_alias(const std::string& name, const std::string& target);
  int quota_unalias(const std::string& name);
  int quota_aliases();
  int quota_unknown(const std::optional<std::string>& policy, const QuotaFlags& flags);
  int observe(const ObserveArgs& args);
  int quota_rm(const std::string& model);
  int quota_list();
  int quota_apply(const std::string& provider);
  int profiles(const std::optional<std::string>& provider);
  int migrate(const std::string& yaml_path, const std::optional<std::string>& db_path);
  int version();
  // Counts tokens with Gemini's countTokens, or estimates them (count_tokens_cmd.cc).
  int count_tokens(const CountTokensArgs& args);
  // Runs the HTTP server until SIGTERM/SIGINT (serve.cc).
  int serve(const ServeArgs& args);

  // Prints `failure` (stderr; with --json also an error object on stdout) for `command`
  // ("check", "quota set", or "" for the command line as a whole) and returns its exit code.
  int fail(const std::string& command, const Failure& failure);

 private:
  Outcome<StoreOptions> store_options() const;
  Outcome<std::unique_ptr<Session>> open_store();
  void print(const std::string& text);  // stdout, with a newline

  GlobalOptions options_;
  Terminal terminal_;
};

}  // namespace ratelimit::cli
