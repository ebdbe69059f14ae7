// `ratelimit serve`: opens the store like every other command, then runs the HTTP server until
// SIGTERM or SIGINT, and saves the state on the way out.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <thread>

#include "args.h"
#include "commands.h"
#include "server.h"  // server/: the HTTP server library

namespace ratelimit::cli {
namespace {

using server::ServerOptions;

// The server library's errors as the CLI's: invalid_argument is a usage error, the rest a
// store (environment) error.
Failure from_error(const Error& e) {
  return e.code == ErrorCode::invalid_argument ? usage_error(e.message) : store_error(e.message);
}

Outcome<std::size_t> size_option(const char* flag, const std::string& text, std::size_t min,
                                 std::size_t max) {
  const auto n = parse_count(text);
  if (!n || static_cast<std::uint64_t>(*n) < min || static_cast<std::uint64_t>(*n) > max) {
    return tl::unexpected(usage_error(std::string(flag) + " \"" + printable(text) +
                                      "\" must be a whole number from " + std::to_string(min) +
                                      " to " + std::to_string(max)));
  }
  return static_cast<std::size_t>(*n);
}

Outcome<Duration> duration_option(const char* flag, const std::string& text, Duration min,
                                  const char* min_text) {
  const auto d = parse_duration(text);
  if (!d || *d < min) {
    return tl::unexpected(usage_error(std::string(flag) + " \"" + printable(text) +
                                      "\" must be a duration of at least " + min_text +
                                      ", written like 500ms, 30s, 2m or 1h"));
  }
  return *d;
}

Outcome<ServerOptions> server_options(const ServeArgs& a) {
  ServerOptions o;
  auto listen = server::parse_listen(a.listen);
  if (!listen) return tl::unexpected(from_error(listen.error()));
  o.listen = *listen;
  if (a.token_file) {
    std::string warning;
    auto token = server::read_token_file(*a.token_file, warning);
    if (!token) return tl::unexpected(from_error(token.error()));
    if (!warning.empty()) std::fprintf(stderr, "ratelimit serve: warning: %s\n", warning.c_str());
    o.token = std::move(*token);
  }
  if (!server::is_loopback(o.listen.host) && o.token.empty()) {
    return tl::unexpected(usage_error(
        "refusing to listen on " + a.listen +
        " without a token: anyone who can reach it could spend your quotas; pass --token-file "
        "PATH (a file holding a secret), or listen on 127.0.0.1"));
  }
  auto lease = duration_option("--lease", a.lease, std::chrono::seconds(1), "1s");
  if (!lease) return tl::unexpected(lease.error());
  o.lease = *lease;
  auto max_wait = duration_option("--max-wait", a.max_wait, Duration(0), "0s");
  if (!max_wait) return tl::unexpected(max_wait.error());
  o.max_wait = *max_wait;
  auto persist = duration_option("--persist-every", a.persist_every, std::chrono::seconds(1), "1s");
  if (!persist) return tl::unexpected(persist.error());
  o.persist_every = *persist;
  auto grace = duration_option("--shutdown-grace", a.shutdown_grace, Duration(0), "0s");
  if (!grace) return tl::unexpected(grace.error());
  o.shutdown_grace = *grace;
  struct SizeOpt {
    const char* flag;
    const std::string& text;
    std::size_t min, max;
    std::size_t* out;
  };
  const SizeOpt sizes[] = {
      {"--max-models", a.max_models, 1, 10'000'000, &o.max_models},
      {"--max-leases", a.max_leases, 1, 100'000'000, &o.max_leases},
      {"--max-body", a.max_body, 64, 16 * 1024 * 1024, &o.max_body_bytes},
      {"--threads", a.threads, 1, 64, &o.threads},
      {"--max-connections", a.max_connections, 1, 1'000'000, &o.max_connections},
      {"--max-waiters", a.max_waiters, 0, 1'000'000, &o.max_waiters},
  };
  for (const SizeOpt& s : sizes) {
    auto v = size_option(s.flag, s.text, s.min, s.max);
    if (!v) return tl::unexpected(v.error());
    *s.out = *v;
  }
  for (const std::string& text : a.upstreams) {
    auto up = server::parse_upstream(text);
    if (!up) return tl::unexpected(from_error(up.error()));
    for (const server::Upstream& other : o.upstreams) {
      if (other.name == up->name) {
        return tl::unexpected(
            usage_error("--upstream " + up->name + " is given twice; give each name once"));
      }
    }
    o.upstreams.push_back(std::move(*up));
  }
  const bool proxy = !o.upstreams.empty();
  if (!proxy && (a.pass_unknown || a.upstream_ca)) {
    return tl::unexpected(
        usage_error(std::string(a.pass_unknown ? "--pass-unknown" : "--upstream-ca") +
                    " applies to the proxy only; add --upstream NAME=URL (see docs/proxy.md)"));
  }
  auto proxy_body = size_option("--proxy-max-body", a.proxy_max_body, 64, std::size_t{1} << 32);
  if (!proxy_body) return tl::unexpected(proxy_body.error());
  o.proxy_max_body = *proxy_body;
  auto retries = size_option("--retry-429", a.retry_429, 0, 10);
  if (!retries) return tl::unexpected(retries.error());
  o.retry_429 = static_cast<int>(*retries);
  o.pass_unknown = a.pass_unknown;
  if (a.upstream_ca) o.upstream_ca = *a.upstream_ca;
  return o;
}

}  // namespace

int Commands::serve(const ServeArgs& args) {
  auto options = server_options(args);
  if (!options) return fail("serve", options.error());

  // Signals go to one thread (sigwait below); block them before any thread starts.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  std::unique_ptr<Session> session;
  std::unique_ptr<RateLimiter> memory;
  RateLimiter* limiter = nullptr;
  std::string where;
  if (options_.backend == "memory") {
    auto opts = store_options();
    if (!opts) return fail("serve", opts.error());
    if (!options_.state.empty()) {
      return fail("serve",
                  usage_error("--backend memory keeps no file; drop --state " + options_.state));
    }
    Config config;
    config.backend = Backend::memory;
    config.providers =
        opts->providers.empty() ? std::vector<Provider>{Provider::local} : opts->providers;
    auto opened = RateLimiter::open(std::move(config));
    if (!opened) return fail("serve", store_error(opened.error().to_string()));
    memory = std::move(*opened);
    limiter = memory.get();
    options->backend = "memory";
    where = "memory (state is lost when the server stops)";
  } else {
    auto opened = open_store();
    if (!opened) return fail("serve", opened.error());
    session = std::move(*opened);
    limiter = &session->limiter();
    options->backend = std::string(to_string(session->location().backend));
    where = options->backend + " " + session->location().path;
    if (session->location().backend != Backend::yaml) options->persist_every.reset();
  }

  const std::string host = options->listen.host;
  const bool yaml = session && session->location().backend == Backend::yaml;
  const std::string persist_every = args.persist_every;
  const std::vector<server::Upstream> upstreams = options->upstreams;
  server::Server server(*limiter, std::move(*options));
  auto port = server.bind();
  if (!port) return fail("serve", from_error(port.error()));
  const bool v6 = host.find(':') != std::string::npos;
  std::printf("ratelimit serve: listening on http://%s%s%s:%d (store: %s)\n", v6 ? "[" : "",
              host.c_str(), v6 ? "]" : "", *port, where.c_str());
  for (const server::Upstream& up : upstreams) {
    std::printf("ratelimit serve: proxy /%s/ -> %s (api %s)\n", up.name.c_str(), up.url.c_str(),
                std::string(server::to_string(up.api)).c_str());
  }
  std::fflush(stdout);
  if (yaml) {
    std::fprintf(stderr,
                 "ratelimit serve: warning: the YAML store is written every %s (--persist-every) "
                 "and at exit; if the server is killed (SIGKILL, power loss) the grants since the "
                 "last write are lost. Use the SQLite store (the default) to keep every grant\n",
                 persist_every.c_str());
  }

  std::atomic<bool> signalled{false};
  std::thread signals([&server, &stop_signals, &signalled] {
    int received = 0;
    sigwait(&stop_signals, &received);
    signalled = true;
    server.stop();
  });
  server.run();
  // run() also returns when listening failed: wake the signal thread so it can be joined.
  if (!signalled) pthread_kill(signals.native_handle(), SIGTERM);
  signals.join();

  if (!session) {
    std::printf("ratelimit serve: stopped; the memory store's state is discarded\n");
    std::fflush(stdout);
    return kOk;
  }
  session->mark_changed();
  if (auto done = session->finish(); !done) return fail("serve", done.error());
  if (session->location().backend == Backend::sqlite) {
    // Every grant is already durable (each is a transaction); the checkpoint only folds the
    // WAL into the database file, and another process on the database (a second server, the
    // CLI) may hold it: then that process or a later one checkpoints.
    if (auto s = limiter->persist(); !s) {
      std::printf(
          "ratelimit serve: stopped; state saved (every change was already in the database; "
          "the WAL checkpoint was skipped: %s)\n",
          s.error().message.c_str());
      std::fflush(stdout);
      return kOk;
    }
    std::printf("ratelimit serve: stopped; state saved\n");
    std::fflush(stdout);
    return kOk;
  }
  std::printf("ratelimit serve: stopped; state saved\n");
  std::fflush(stdout);
  return kOk;
}

}  // namespace ratelimit::cli
