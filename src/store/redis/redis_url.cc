#include "store/redis/redis_url.h"

#include <charconv>

namespace ratelimit::detail {
namespace {

// %XX in the user or password part.
bool percent_decode(std::string_view in, std::string* out) {
  out->clear();
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      *out += in[i];
      continue;
    }
    if (i + 2 >= in.size()) return false;
    unsigned v = 0;
    auto r = std::from_chars(in.data() + i + 1, in.data() + i + 3, v, 16);
    if (r.ec != std::errc() || r.ptr != in.data() + i + 3) return false;
    *out += static_cast<char>(v);
    i += 2;
  }
  return true;
}

bool parse_int(std::string_view s, int lo, int hi, int* out) {
  if (s.empty()) return false;
  int v = 0;
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size() || v < lo || v > hi) return false;
  *out = v;
  return true;
}

}  // namespace

std::string RedisUrl::display() const {
  if (unix_socket) return "unix://" + host + (db != 0 ? "?db=" + std::to_string(db) : "");
  const bool v6 = host.find(':') != std::string::npos;
  return "redis://" + (user.empty() ? "" : user + "@") + (v6 ? "[" + host + "]" : host) + ":" +
         std::to_string(port) + "/" + std::to_string(db);
}

Result<RedisUrl> parse_redis_url(std::string_view url, const char* operation) {
  auto bad = [&](const std::string& why) {
    return make_error(ErrorCode::invalid_argument,
                      std::string(operation) + ": malformed Redis URL (" + why +
                          "); use redis://[[user]:password@]host[:port][/db] or "
                          "unix:///path/to.sock");
  };
  RedisUrl out;
  if (url.starts_with("unix://")) {
    std::string_view rest = url.substr(7);
    const std::size_t q = rest.find('?');
    std::string_view path = rest.substr(0, q);
    if (path.empty() || path.front() != '/') return bad("the socket path must be absolute");
    out.unix_socket = true;
    out.host = std::string(path);
    if (q != std::string_view::npos) {
      std::string_view query = rest.substr(q + 1);
      if (!query.starts_with("db=") || !parse_int(query.substr(3), 0, 1'000'000, &out.db)) {
        return bad("the only query parameter is db=N");
      }
    }
    return out;
  }
  if (!url.starts_with("redis://")) return bad("the scheme must be redis:// or unix://");
  std::string_view rest = url.substr(8);
  const std::size_t at = rest.rfind('@');
  if (at != std::string_view::npos) {
    std::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    const std::size_t colon = userinfo.find(':');
    std::string_view user = userinfo.substr(0, colon);
    std::string_view pass =
        colon == std::string_view::npos ? std::string_view() : userinfo.substr(colon + 1);
    if (colon == std::string_view::npos) {
      // redis://password@host (as redis-cli -u accepts): the part is the password.
      pass = user;
      user = {};
    }
    if (!percent_decode(user, &out.user) || !percent_decode(pass, &out.password)) {
      return bad("bad %-escape in the user or password");
    }
  }
  const std::size_t slash = rest.find('/');
  std::string_view hostport = rest.substr(0, slash);
  if (slash != std::string_view::npos) {
    std::string_view db = rest.substr(slash + 1);
    if (!db.empty() && !parse_int(db, 0, 1'000'000, &out.db)) return bad("the db must be a number");
  }
  std::string_view host = hostport;
  std::string_view port;
  if (hostport.starts_with("[")) {
    const std::size_t close = hostport.find(']');
    if (close == std::string_view::npos) return bad("unclosed [ in the host");
    host = hostport.substr(1, close - 1);
    std::string_view after = hostport.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return bad("unexpected text after the host");
      port = after.substr(1);
      if (port.empty()) return bad("empty port");
    }
  } else {
    const std::size_t colon = hostport.rfind(':');
    if (colon != std::string_view::npos) {
      host = hostport.substr(0, colon);
      port = hostport.substr(colon + 1);
      if (port.empty()) return bad("empty port");
    }
  }
  if (host.empty()) return bad("no host");
  if (!port.empty() && !parse_int(port, 1, 65535, &out.port)) {
    return bad("the port must be 1..65535");
  }
  out.host = std::string(host);
  return out;
}

}  // namespace ratelimit::detail
