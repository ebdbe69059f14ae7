// A redis-server for the tests: started on a free loopback port and a unix socket in a temp
// dir (no persistence), stopped by its pid. Needs only the redis-server binary (Debian's
// redis-server package), found on PATH or in /usr/bin and /usr/sbin.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace ratelimit::testing {

class RedisServer {
 public:
  RedisServer() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "ratelimit-redis-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("redis: mkdtemp failed");
    dir_ = pattern;
    port_ = free_port();
    start();
  }
  ~RedisServer() {
    stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string socket() const { return (dir_ / "redis.sock").string(); }
  std::string url(int db = 0) const {
    return "redis://127.0.0.1:" + std::to_string(port_) + "/" + std::to_string(db);
  }
  std::string unix_url() const { return "unix://" + socket(); }

  // Starts it (again, on the same port) and waits until it answers.
  void start(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {binary(), "--port",       std::to_string(port_),
                                     "--bind", "127.0.0.1",    "--save",
                                     "",       "--appendonly", "no",
                                     "--dir",  dir_.string(),  "--unixsocket",
                                     socket(), "--logfile",    (dir_ / "log").string()};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlives a test program that crashed
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    for (int i = 0; i < 500; ++i) {
      if (answers()) return;
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("redis-server exited at start (see " + (dir_ / "log").string() +
                                 ")");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    throw std::runtime_error("redis-server did not answer within 5 s");
  }
  void stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGCONT);
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  void pause() { kill(pid_, SIGSTOP); }
  void resume() { kill(pid_, SIGCONT); }

  // Runs redis-cli against it (for SCRIPT FLUSH and the like); its exit status.
  int cli(const std::string& args) const {
    return std::system(
        ("redis-cli -p " + std::to_string(port_) + " " + args + " > /dev/null").c_str());
  }

 private:
  static std::string binary() {
    if (const char* path = std::getenv("PATH")) {
      std::string p = path;
      std::size_t start = 0;
      while (start <= p.size()) {
        const std::size_t end = p.find(':', start);
        const std::string dir = p.substr(start, end == std::string::npos ? end : end - start);
        const std::string candidate = dir + "/redis-server";
        if (!dir.empty() && access(candidate.c_str(), X_OK) == 0) return candidate;
        if (end == std::string::npos) break;
        start = end + 1;
      }
    }
    for (const char* c : {"/usr/bin/redis-server", "/usr/sbin/redis-server"}) {
      if (access(c, X_OK) == 0) return c;
    }
    throw std::runtime_error("redis-server not found: install Debian's redis-server package");
  }
  static int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    close(fd);
    return ntohs(addr.sin_port);
  }
  bool answers() const {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<std::uint16_t>(port_));
    bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    if (ok) {
      const char ping[] = "PING\r\n";
      char buf[16] = {};
      ok = write(fd, ping, sizeof ping - 1) == sizeof ping - 1 && read(fd, buf, sizeof buf) > 0 &&
           (buf[0] == '+' || buf[0] == '-');  // PONG, or NOAUTH with --requirepass
    }
    close(fd);
    return ok;
  }

  std::filesystem::path dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

// One server per test program, started on first use and stopped when the program exits.
inline RedisServer& shared_redis() {
  static RedisServer server;
  return server;
}

// A key prefix no other test of this run uses.
inline std::string unique_prefix() {
  static std::atomic<int> next{0};
  return "t" + std::to_string(getpid()) + "-" + std::to_string(next++);
}

}  // namespace ratelimit::testing
