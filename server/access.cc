// The server's routing and access checks, and the public helpers of server.h (listen
// addresses, loopback, the token file).
#include <arpa/inet.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "handler_parts.h"
#include "server.h"

namespace ratelimit::server {

namespace handler_parts {

bool authorized(const Request& req, const std::string& token) {
  if (token.empty()) return true;
  const std::string* header = req.header("Authorization");
  if (header == nullptr) return false;
  std::string_view h = *header;
  constexpr std::string_view kBearer = "Bearer";
  if (h.size() <= kBearer.size() || !iequals(h.substr(0, kBearer.size()), kBearer) ||
      (h[kBearer.size()] != ' ' && h[kBearer.size()] != '\t')) {
    return false;
  }
  h.remove_prefix(kBearer.size());
  while (!h.empty() && (h.front() == ' ' || h.front() == '\t')) h.remove_prefix(1);
  while (!h.empty() && (h.back() == ' ' || h.back() == '\t')) h.remove_suffix(1);
  return constant_time_equal(h, token);
}

bool local_browser_context(const Request& req) {
  auto host_of = [](std::string_view authority) {
    if (!authority.empty() && authority.front() == '[') {
      const auto close = authority.find(']');
      return close == std::string_view::npos ? std::string_view() : authority.substr(1, close - 1);
    }
    return authority.substr(0, authority.find(':'));
  };
  const std::string* host = req.header("Host");
  if (host == nullptr) {
    if (req.version != 10) return false;
  } else if (!is_loopback(host_of(*host))) {
    return false;
  }
  const std::string* origin_header = req.header("Origin");
  if (origin_header == nullptr) return true;
  std::string_view origin = *origin_header;
  constexpr std::string_view kHttp = "http://";
  if (origin.size() < kHttp.size() || !iequals(origin.substr(0, kHttp.size()), kHttp)) {
    return false;  // "null", https, file
  }
  origin.remove_prefix(kHttp.size());
  return is_loopback(host_of(origin.substr(0, origin.find('/'))));
}

Route route_of(const std::string& path) {
  if (path == "/") return Route::page;
  if (path == "/healthz") return Route::healthz;
  if (path == "/metrics") return Route::metrics;
  if (path == "/v1/decide") return Route::decide;
  if (path == "/v1/acquire") return Route::acquire;
  if (path == "/v1/record") return Route::record;
  if (path == "/v1/stats") return Route::stats;
  if (path == "/v1/reset") return Route::reset;
  if (path == "/v1/observe") return Route::observe;
  if (path.rfind("/v1/stats/", 0) == 0 && path.size() > 10) return Route::model_stats;
  if (path.rfind("/v1/quotas/", 0) == 0 && path.size() > 11) return Route::quota;
  if (path.rfind("/v1/reservations/", 0) == 0) {
    const std::string_view rest = std::string_view(path).substr(17);
    const auto slash = rest.find('/');
    if (slash != std::string_view::npos && slash > 0) {
      const std::string_view action = rest.substr(slash + 1);
      if (action == "commit") return Route::commit;
      if (action == "cancel") return Route::cancel;
    }
  }
  return Route::unmatched;
}

const char* allowed_methods(Route route) {
  switch (route) {
    case Route::page:
    case Route::healthz:
    case Route::metrics:
    case Route::stats:
    case Route::model_stats:
      return "GET";
    case Route::quota:
      return "GET, PUT, DELETE";
    default:
      return "POST";
  }
}

bool method_allowed(Route route, const std::string& method) {
  const std::string m = method == "HEAD" ? "GET" : method;
  const std::string_view allowed = allowed_methods(route);
  std::size_t pos = 0;
  while (pos < allowed.size()) {
    auto end = allowed.find(", ", pos);
    if (end == std::string_view::npos) end = allowed.size();
    if (allowed.substr(pos, end - pos) == m) return true;
    pos = end + 2;
  }
  return false;
}

}  // namespace handler_parts

namespace {

using cli::printable;

bool parse_ipv4(std::string_view host, in_addr& out) {
  return ::inet_pton(AF_INET, std::string(host).c_str(), &out) == 1;
}

Error usage(std::string message) { return Error{ErrorCode::invalid_argument, std::move(message)}; }

}  // namespace

// --- public helpers -------------------------------------------------------------------------

Result<ListenAddress> parse_listen(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return tl::unexpected(usage("--listen \"" + printable(text) + "\": " + why +
                                "; use HOST:PORT such as 127.0.0.1:8787 or [::1]:8787"));
  };
  std::string_view host, port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return bad("an IPv6 address needs brackets and a port");
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad("no port");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return bad("an IPv6 address needs brackets");
  }
  if (host.empty()) return bad("no host");
  const auto n = cli::parse_count(port);
  if (!n || *n > 65535) return bad("the port must be a number from 0 to 65535");
  return ListenAddress{std::string(host), static_cast<int>(*n)};
}

bool is_loopback(std::string_view host) {
  if (iequals(host, "localhost") || host == "::1") return true;
  in_addr v4{};
  if (parse_ipv4(host, v4)) return (ntohl(v4.s_addr) >> 24) == 127;
  if (host.size() > 7 && iequals(host.substr(0, 7), "::ffff:") && parse_ipv4(host.substr(7), v4)) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  return false;
}

Result<std::string> read_token_file(const std::string& path, std::string& warning) {
  constexpr std::size_t kMaxTokenFile = 4096;
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) {
    return tl::unexpected(usage("cannot read --token-file " + path + ": " + std::strerror(errno) +
                                "; give a readable file that holds the bearer token"));
  }
  if (!S_ISREG(info.st_mode)) {
    return tl::unexpected(usage("--token-file " + path +
                                " is not a regular file (a directory or a device); give a file "
                                "that holds the bearer token"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return tl::unexpected(usage("cannot read --token-file " + path + ": " + std::strerror(errno) +
                                "; give a readable file that holds the bearer token"));
  }
  std::string token(kMaxTokenFile + 1, '\0');
  in.read(token.data(), static_cast<std::streamsize>(token.size()));
  token.resize(static_cast<std::size_t>(in.gcount()));
  if (token.size() > kMaxTokenFile) {
    return tl::unexpected(usage("--token-file " + path + " is larger than " +
                                std::to_string(kMaxTokenFile) +
                                " bytes; it should hold only the bearer token"));
  }
  const auto first = token.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) {
    return tl::unexpected(usage("--token-file " + path +
                                " is empty; put a secret of at least 16 characters in it, "
                                "e.g. `head -c 32 /dev/urandom | base64 > " +
                                path + "`"));
  }
  token = token.substr(first, token.find_last_not_of(" \t\r\n") - first + 1);
  for (char c : token) {
    if (c < 0x21 || c > 0x7E) {
      return tl::unexpected(
          usage("--token-file " + path + ": the token must be printable ASCII without spaces"));
    }
  }
  if (token.size() < 16) {
    return tl::unexpected(usage("--token-file " + path + ": the token has " +
                                std::to_string(token.size()) +
                                " characters; use at least 16 (e.g. `head -c 32 "
                                "/dev/urandom | base64`)"));
  }
  if ((info.st_mode & 077) != 0) {
    warning = "--token-file " + path + " can be read by other users; `chmod 600 " + path + "`";
  }
  return token;
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  // Every byte of `a` is compared whatever the contents; lengths are not secret.
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff |=
        static_cast<unsigned char>(a[i]) ^ static_cast<unsigned char>(i < b.size() ? b[i] : ~a[i]);
  }
  return diff == 0;
}

}  // namespace ratelimit::server
