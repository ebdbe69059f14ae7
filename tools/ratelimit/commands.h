// The `ratelimit` commands, independent of how the command line was parsed (main.cc) and of
// the JSON library (json_format.cc). Each returns the process exit code (see ExitCode) and
// writes its result to stdout, errors to stderr in one line.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "store.h"

namespace ratelimit::cli {

struct GlobalOptions {
  std::string state;                   // --state / $RATELIMIT_STATE
  std::string backend;                 // --backend
  std::vector<std::string> providers;  // --provider (repeatable)
  bool json = false;                   // --json
  bool recover = false;                // --recover
};

// Which standard streams are terminals (bars, countdown and confirmation only on a terminal).
struct Terminal {
  bool in = false, out = false, err = false;
  static Terminal detect();
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
  int quota_set(const std::string& model, const std::optional<std::string>& rpm,
                const std::optional<std::string>& tpm, const std::optional<std::string>& rpd);
  int quota_rm(const std::string& model);
  int quota_list();
  int quota_apply(const std::string& provider);
  int profiles(const std::optional<std::string>& provider);
  int migrate(const std::string& yaml_path, const std::optional<std::string>& db_path);
  int version();

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
