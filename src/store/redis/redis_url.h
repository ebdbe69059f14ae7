// Internal: Config::redis_url parsed (redis://[[user]:password@]host[:port][/db] and
// unix:///path/to.sock[?db=N]). No hiredis here.
#pragma once

#include <string>
#include <string_view>

#include "ratelimit/status.h"

namespace ratelimit::detail {

struct RedisUrl {
  bool unix_socket = false;
  std::string host;  // TCP host, or the socket path
  int port = 6379;
  std::string user;      // empty: the default user
  std::string password;  // empty: no AUTH
  int db = 0;
  // Where it points, for messages: "redis://host:port/db" or "unix:///path?db=N" — never the
  // password.
  std::string display() const;
};

// invalid_argument naming `operation` on a malformed URL (the message never shows the password).
Result<RedisUrl> parse_redis_url(std::string_view url, const char* operation);

}  // namespace ratelimit::detail
