#include "store/redis/connection.h"

#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <algorithm>
#include <charconv>

namespace ratelimit::detail {
namespace {

struct ReplyDeleter {
  void operator()(redisReply* r) const {
    if (r != nullptr) freeReplyObject(r);
  }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

// The command in Redis's wire form (RESP), written into `out` (reused: no allocation once it
// has grown). hiredis's own formatting (redisCommandArgv) builds it with sdscatfmt, which took
// about half of the client's instructions per script call.
void format_command(const std::vector<const char*>& ptrs, const std::vector<std::size_t>& lens,
                    std::string& out) {
  out.clear();
  char num[24];
  auto put_count = [&](char tag, std::size_t n) {
    out += tag;
    out.append(num, std::to_chars(num, num + sizeof num, n).ptr);
    out += "\r\n";
  };
  put_count('*', ptrs.size());
  for (std::size_t i = 0; i < ptrs.size(); ++i) {
    put_count('$', lens[i]);
    out.append(ptrs[i], lens[i]);
    out += "\r\n";
  }
}

RedisValue copy_reply(const redisReply* r) {
  RedisValue v;
  switch (r->type) {
    case REDIS_REPLY_INTEGER:
      v.type = RedisValue::Type::integer;
      v.integer = r->integer;
      break;
    case REDIS_REPLY_STRING:
      v.type = RedisValue::Type::string;
      v.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      v.type = RedisValue::Type::status;
      v.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      v.type = RedisValue::Type::error;
      v.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ARRAY:
      v.type = RedisValue::Type::array;
      v.elements.reserve(r->elements);
      for (std::size_t i = 0; i < r->elements; ++i) v.elements.push_back(copy_reply(r->element[i]));
      break;
    default:
      v.type = RedisValue::Type::nil;
  }
  return v;
}

constexpr auto kMinBackoff = std::chrono::milliseconds(50);
constexpr auto kMaxBackoff = std::chrono::milliseconds(1000);

}  // namespace

void RedisReply::Free::operator()(redisReply* r) const {
  if (r != nullptr) freeReplyObject(r);
}

bool RedisReply::is_error() const { return reply_->type == REDIS_REPLY_ERROR; }

std::optional<std::string_view> RedisReply::string() const {
  if (reply_->type != REDIS_REPLY_STRING) return std::nullopt;
  return std::string_view(reply_->str, reply_->len);
}

RedisValue RedisReply::value() const { return copy_reply(reply_.get()); }

long long RedisValue::as_int(long long fallback) const {
  if (type == Type::integer) return integer;
  if (type == Type::string) {
    long long v = 0;
    auto r = std::from_chars(str.data(), str.data() + str.size(), v);
    if (r.ec == std::errc() && r.ptr == str.data() + str.size()) return v;
  }
  return fallback;
}

std::string RedisValue::as_string() const {
  if (type == Type::integer) return std::to_string(integer);
  return str;
}

struct RedisPool::Conn {
  redisContext* ctx = nullptr;
};

void RedisPool::ConnDeleter::operator()(Conn* c) const {
  if (c->ctx != nullptr) redisFree(c->ctx);
  delete c;
}

RedisPool::RedisPool(RedisOptions options)
    : options_(std::move(options)), where_(options_.url.display()) {}

RedisPool::~RedisPool() { close(); }

Error RedisPool::unavailable(const char* operation, const std::string& why) const {
  return Error{ErrorCode::unavailable, std::string(operation) + ": redis " + where_ + ": " + why};
}

Result<RedisPool::ConnPtr> RedisPool::connect(const char* operation) {
  const RedisUrl& url = options_.url;
  const timeval tv = to_timeval(options_.connect_timeout);
  ConnPtr conn(new Conn);
  conn->ctx = url.unix_socket ? redisConnectUnixWithTimeout(url.host.c_str(), tv)
                              : redisConnectWithTimeout(url.host.c_str(), url.port, tv);
  if (conn->ctx == nullptr) return tl::unexpected(unavailable(operation, "out of memory"));
  if (conn->ctx->err != 0) {
    return tl::unexpected(
        unavailable(operation, std::string("cannot connect: ") + conn->ctx->errstr +
                                   " (is redis-server running there? check Config::redis_url)"));
  }
  if (redisSetTimeout(conn->ctx, to_timeval(options_.command_timeout)) != REDIS_OK) {
    return tl::unexpected(unavailable(operation, "cannot set the command timeout"));
  }
  auto run = [&](const std::vector<std::string>& argv) -> ReplyPtr {
    std::vector<const char*> ptrs;
    std::vector<std::size_t> lens;
    for (const auto& a : argv) {
      ptrs.push_back(a.data());
      lens.push_back(a.size());
    }
    return ReplyPtr(static_cast<redisReply*>(
        redisCommandArgv(conn->ctx, static_cast<int>(argv.size()), ptrs.data(), lens.data())));
  };
  if (!url.password.empty()) {
    ReplyPtr r =
        url.user.empty() ? run({"AUTH", url.password}) : run({"AUTH", url.user, url.password});
    if (!r) {
      return tl::unexpected(unavailable(operation, std::string("AUTH: ") + conn->ctx->errstr));
    }
    if (r->type == REDIS_REPLY_ERROR) {
      // Redis's own text ("WRONGPASS invalid username-password pair ...") has no password.
      return tl::unexpected(
          unavailable(operation, "authentication failed: " + std::string(r->str, r->len) +
                                     " (check the user and password in Config::redis_url)"));
    }
  }
  if (url.db != 0) {
    ReplyPtr r = run({"SELECT", std::to_string(url.db)});
    if (!r) {
      return tl::unexpected(unavailable(operation, std::string("SELECT: ") + conn->ctx->errstr));
    }
    if (r->type == REDIS_REPLY_ERROR) {
      return tl::unexpected(
          unavailable(operation, "cannot select db " + std::to_string(url.db) + ": " +
                                     std::string(r->str, r->len) +
                                     " (use a db number below the server's `databases` setting)"));
    }
  }
  {
    // A server that wants a password we did not give answers NOAUTH here, not at connect.
    ReplyPtr r = run({"PING"});
    if (!r)
      return tl::unexpected(unavailable(operation, std::string("PING: ") + conn->ctx->errstr));
    if (r->type == REDIS_REPLY_ERROR) {
      return tl::unexpected(unavailable(operation, std::string(r->str, r->len) +
                                                       " (give the password in Config::redis_url: "
                                                       "redis://:password@host:port)"));
    }
  }
  return conn;
}

Result<RedisPool::ConnPtr> RedisPool::take(const char* operation) {
  const auto deadline = std::chrono::steady_clock::now() + options_.command_timeout;
  {
    RelockableLock lock(mu_);
    for (;;) {
      if (!idle_.empty()) {
        ConnPtr c = std::move(idle_.back());
        idle_.pop_back();
        return c;
      }
      if (open_ < std::max(1, options_.pool_size)) break;
      if (freed_.wait_until(lock, deadline) == std::cv_status::timeout && idle_.empty() &&
          open_ >= std::max(1, options_.pool_size)) {
        return tl::unexpected(unavailable(operation,
                                          "every connection of the pool stayed busy "
                                          "for the command timeout"));
      }
    }
    const auto now = std::chrono::steady_clock::now();
    if (now < retry_at_) {
      return tl::unexpected(unavailable(
          operation,
          "unreachable; reconnecting with backoff (the next attempt in " +
              std::to_string(
                  std::chrono::duration_cast<std::chrono::milliseconds>(retry_at_ - now).count()) +
              " ms)"));
    }
    ++open_;
  }
  auto conn = connect(operation);
  MutexLock lock(mu_);
  if (!conn) {
    --open_;
    backoff_ = backoff_.count() == 0 ? kMinBackoff : std::min(kMaxBackoff, backoff_ * 2);
    retry_at_ = std::chrono::steady_clock::now() + backoff_;
    freed_.notify_one();
    return tl::unexpected(conn.error());
  }
  backoff_ = std::chrono::milliseconds(0);
  return std::move(*conn);
}

void RedisPool::give_back(ConnPtr conn) {
  MutexLock lock(mu_);
  idle_.push_back(std::move(conn));
  freed_.notify_one();
}

void RedisPool::lost() {
  MutexLock lock(mu_);
  --open_;
  freed_.notify_one();
}

Status RedisPool::check(const char* operation) {
  auto c = take(operation);
  if (!c) return tl::unexpected(c.error());
  give_back(std::move(*c));
  return {};
}

Result<RedisValue> RedisPool::command(const std::vector<std::string>& argv, const char* operation) {
  std::vector<const char*> ptrs;
  std::vector<std::size_t> lens;
  ptrs.reserve(argv.size());
  lens.reserve(argv.size());
  for (const auto& a : argv) {
    ptrs.push_back(a.data());
    lens.push_back(a.size());
  }
  auto r = command_argv(ptrs, lens, operation);
  if (!r) return tl::unexpected(std::move(r.error()));
  return r->value();
}

Result<RedisReply> RedisPool::command_argv(const std::vector<const char*>& ptrs,
                                           const std::vector<std::size_t>& lens,
                                           const char* operation) {
  auto conn = take(operation);
  if (!conn) return tl::unexpected(conn.error());
  thread_local std::string wire;
  format_command(ptrs, lens, wire);
  void* raw = nullptr;
  if (redisAppendFormattedCommand((*conn)->ctx, wire.data(), wire.size()) == REDIS_OK) {
    redisGetReply((*conn)->ctx, &raw);
  }
  ReplyPtr reply(static_cast<redisReply*>(raw));
  if (wire.capacity() > (std::size_t{1} << 16)) std::string().swap(wire);  // a script's text
  if (!reply) {
    std::string why = (*conn)->ctx->errstr;
    if ((*conn)->ctx->err == REDIS_ERR_IO &&
        (why.find("Resource temporarily") != std::string::npos ||
         why.find("timed out") != std::string::npos)) {
      why = "no answer within the command timeout (" +
            std::to_string(options_.command_timeout.count()) +
            " ms); a script may still run: its grant can be counted although this call failed";
    }
    conn->reset();
    lost();
    return tl::unexpected(unavailable(operation, why));
  }
  give_back(std::move(*conn));
  return RedisReply(reply.release());
}

std::string RedisPool::sha_of(const RedisScript& script) {
  MutexLock lock(mu_);
  for (const auto& [s, sha] : shas_) {
    if (s == &script) return sha;
  }
  return {};
}

void RedisPool::remember_sha(const RedisScript& script, std::string sha) {
  MutexLock lock(mu_);
  for (auto& [s, known] : shas_) {
    if (s == &script) {
      known = std::move(sha);
      return;
    }
  }
  shas_.emplace_back(&script, std::move(sha));
}

Result<RedisValue> RedisPool::eval(const RedisScript& script, const std::vector<std::string>& keys,
                                   const std::vector<std::string>& args, const char* operation) {
  auto r = eval_reply(script, keys, args, operation);
  if (!r) return tl::unexpected(std::move(r.error()));
  return r->value();
}

Result<RedisReply> RedisPool::eval_reply(const RedisScript& script,
                                         const std::vector<std::string>& keys,
                                         const std::vector<std::string>& args,
                                         const char* operation) {
  std::string sha = sha_of(script);
  if (sha.empty()) {
    auto loaded = command({"SCRIPT", "LOAD", script.source}, operation);
    if (!loaded) return tl::unexpected(std::move(loaded.error()));
    if (loaded->is_error()) {
      return make_error(ErrorCode::internal, std::string(operation) + ": redis " + where_ +
                                                 ": cannot load the " + script.name +
                                                 " script: " + loaded->str);
    }
    sha = loaded->str;
    remember_sha(script, sha);
  }
  const std::string nkeys = std::to_string(keys.size());
  std::vector<const char*> ptrs;
  std::vector<std::size_t> lens;
  ptrs.reserve(3 + keys.size() + args.size());
  lens.reserve(3 + keys.size() + args.size());
  auto add = [&](const std::string& s) {
    ptrs.push_back(s.data());
    lens.push_back(s.size());
  };
  const std::string evalsha = "EVALSHA";
  add(evalsha);
  add(sha);
  add(nkeys);
  for (const auto& k : keys) add(k);
  for (const auto& a : args) add(a);
  auto r = command_argv(ptrs, lens, operation);
  if (r && r->is_error() &&
      std::string_view(r->reply_->str, r->reply_->len).starts_with("NOSCRIPT")) {
    // The server forgot it (SCRIPT FLUSH, a restart): EVAL sends the text and caches it again.
    static const std::string eval = "EVAL";
    ptrs[0] = eval.data();
    lens[0] = eval.size();
    ptrs[1] = script.source.data();
    lens[1] = script.source.size();
    r = command_argv(ptrs, lens, operation);
  }
  return r;
}

void RedisPool::close() {
  std::vector<ConnPtr> drop;
  {
    MutexLock lock(mu_);
    drop.swap(idle_);
    open_ -= static_cast<int>(drop.size());
  }
}

}  // namespace ratelimit::detail
