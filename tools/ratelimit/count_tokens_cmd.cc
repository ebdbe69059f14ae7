// `ratelimit count-tokens`: Gemini's countTokens (ratelimit::count_tokens) or the local
// estimate. Needs no store.
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include "commands.h"
#include "ratelimit/tokens.h"

namespace ratelimit::cli {
namespace {

Outcome<std::string> read_text(const std::string& path) {
  if (path == "-") {
    std::ostringstream s;
    s << std::cin.rdbuf();
    return s.str();
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return tl::unexpected(usage_error("cannot read --file \"" + path +
                                      "\"; give a readable file, or - for standard input"));
  }
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

int Commands::count_tokens(const CountTokensArgs& args) {
  const std::string command = "count-tokens";
  if (args.text.has_value() == args.file.has_value()) {
    return fail(command, usage_error("give the text with --text TEXT or --file FILE (one of "
                                     "them), e.g. --text 'Why is the sky blue?'"));
  }
  std::string text;
  if (args.text) {
    text = *args.text;
  } else {
    auto read = read_text(*args.file);
    if (!read) return fail(command, read.error());
    text = std::move(*read);
  }
  std::int64_t tokens = 0;
  std::string source;
  if (args.estimate) {
    tokens = estimate_text_tokens(text);
    source = "estimate";
  } else {
    CountTokensOptions options;
    if (args.base_url) options.base_url = *args.base_url;
    auto n = ratelimit::count_tokens(args.model, text, options);
    if (!n) {
      const Error& e = n.error();
      const bool bad_input =
          e.code == ErrorCode::invalid_argument || e.code == ErrorCode::not_found;
      return fail(command, bad_input ? usage_error(e.message) : store_error(e.message));
    }
    tokens = *n;
    source = "gemini";
  }
  if (options_.json) {
    print(json::token_count(args.model, tokens, source));
  } else {
    print(args.model + ": " + std::to_string(tokens) + " tokens" +
          (args.estimate ? " (estimated: 1 per 4 bytes, rounded up)" : " (counted by Gemini)"));
  }
  return kOk;
}

}  // namespace ratelimit::cli
