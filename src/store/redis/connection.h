// Internal: a small pool of connections to one Redis server, with reconnect and backoff, and
// scripts run by EVALSHA (reloaded on NOSCRIPT after a SCRIPT FLUSH or a server restart).
// <hiredis/hiredis.h> appears only in connection.cc.
//
// Thread-safety: every method may be called from any thread; a command holds one connection
// of the pool for its round trip, so threads do not serialise on one socket.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ratelimit/status.h"
#include "store/redis/redis_url.h"
#include "util/mutex.h"

struct redisReply;  // hiredis's

namespace ratelimit::detail {

// A reply, copied out of hiredis's.
struct RedisValue {
  enum class Type { nil, integer, string, array, error, status };
  Type type = Type::nil;
  long long integer = 0;
  std::string str;  // string, error, status
  std::vector<RedisValue> elements;

  bool is_error() const { return type == Type::error; }
  // An integer, or a string holding one; `fallback` otherwise.
  long long as_int(long long fallback = 0) const;
  // The string, or an integer's decimal form.
  std::string as_string() const;
};

// A reply as hiredis returned it, read in place (no copy); freed with this object.
class RedisReply {
 public:
  bool is_error() const;
  // A string reply's bytes; nullopt for any other type. Valid while this object lives.
  std::optional<std::string_view> string() const;
  // The reply copied out.
  RedisValue value() const;

 private:
  friend class RedisPool;
  struct Free {
    void operator()(redisReply* r) const;
  };
  explicit RedisReply(redisReply* r) : reply_(r) {}
  std::unique_ptr<redisReply, Free> reply_;
};

struct RedisOptions {
  RedisUrl url;
  std::chrono::milliseconds connect_timeout{1000};
  std::chrono::milliseconds command_timeout{1000};
  int pool_size = 4;
};

// One Lua script: its source and, once loaded, its SHA1 (from SCRIPT LOAD).
struct RedisScript {
  const char* name;    // for messages
  std::string source;  // the full text
};

class RedisPool {
 public:
  explicit RedisPool(RedisOptions options);
  ~RedisPool();
  RedisPool(const RedisPool&) = delete;
  RedisPool& operator=(const RedisPool&) = delete;

  // Connects once (checking the password and the db) so that open() reports a bad URL,
  // password or db at once. unavailable on failure.
  Status check(const char* operation);

  // One command. A transport failure (refused, reset, timeout) drops the connection and is
  // `unavailable`; the next call reconnects (after a backoff that grows from 50 ms to 1 s while
  // Redis stays away). An error reply is returned as a value (is_error()).
  Result<RedisValue> command(const std::vector<std::string>& argv, const char* operation);
  // EVALSHA of `script` (loaded on first use; EVAL when Redis answers NOSCRIPT, which also
  // reloads it).
  Result<RedisValue> eval(const RedisScript& script, const std::vector<std::string>& keys,
                          const std::vector<std::string>& args, const char* operation);
  // The same, the reply left in hiredis's (an error reply too: is_error()).
  Result<RedisReply> eval_reply(const RedisScript& script, const std::vector<std::string>& keys,
                                const std::vector<std::string>& args, const char* operation);

  // Drops every idle connection (later calls reconnect).
  void close();

  const std::string& where() const { return where_; }

 private:
  struct Conn;
  struct ConnDeleter {
    void operator()(Conn* c) const;
  };
  using ConnPtr = std::unique_ptr<Conn, ConnDeleter>;

  Result<RedisReply> command_argv(const std::vector<const char*>& ptrs,
                                  const std::vector<std::size_t>& lens, const char* operation);
  Result<ConnPtr> take(const char* operation) RL_EXCLUDES(mu_);
  void give_back(ConnPtr conn) RL_EXCLUDES(mu_);
  void lost() RL_EXCLUDES(mu_);
  Result<ConnPtr> connect(const char* operation);
  Error unavailable(const char* operation, const std::string& why) const;
  std::string sha_of(const RedisScript& script) RL_EXCLUDES(mu_);
  void remember_sha(const RedisScript& script, std::string sha) RL_EXCLUDES(mu_);

  const RedisOptions options_;
  const std::string where_;  // url.display()
  Mutex mu_;
  std::condition_variable_any freed_;
  std::vector<ConnPtr> idle_ RL_GUARDED_BY(mu_);
  int open_ RL_GUARDED_BY(mu_) = 0;  // connections made and not lost (idle or in use)
  std::chrono::steady_clock::time_point retry_at_ RL_GUARDED_BY(mu_){};
  std::chrono::milliseconds backoff_ RL_GUARDED_BY(mu_){0};
  std::vector<std::pair<const RedisScript*, std::string>> shas_ RL_GUARDED_BY(mu_);
};

}  // namespace ratelimit::detail
