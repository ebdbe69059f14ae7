// The YAML store's files: missing, corrupt, truncated and unreadable ones, symbolic links,
// stale temporary files of gone writers, a full disk, and atomicity (a writer killed during a
// save, concurrent saves and loads). The format itself is in yaml_store_test.cc.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "store/snapshot.h"
#include "store/yaml/yaml_file.h"
#include "yaml_test_util.h"

namespace ratelimit::detail {
namespace {

using namespace yaml_test;

// Loads `text` written to a file, expecting an error.
Error load_error(const TempDir& dir, std::string_view text) {
  const std::string path = dir.file("state.yaml");
  write_text(path, text);
  const Result<std::optional<Snapshot>> loaded = make_yaml_store(path)->load();
  EXPECT_FALSE(loaded.has_value()) << "loaded without error:\n" << text;
  return loaded.has_value() ? Error{} : loaded.error();
}

// ---------------------------------------------------------------------------------------------
// Missing, corrupt and unreadable files

TEST(YamlStore, MissingFileIsNotAnError) {
  TempDir dir;
  for (const std::string& path : {dir.file("state.yaml"), dir.file("no/such/dir/state.yaml")}) {
    const Result<std::optional<Snapshot>> loaded = make_yaml_store(path)->load();
    ASSERT_TRUE(loaded) << loaded.error().to_string();
    EXPECT_FALSE(loaded->has_value());
  }
}

struct CorruptCase {
  std::string_view text;
  std::string_view mentions;  // a part of the message
};

TEST(YamlStore, CorruptFilesAreCorruptStateNamingYamlAndWhere) {
  const CorruptCase cases[] = {
      {"quotas: {a: 1\n", "line"},
      {"quotas:\n  a: [1, 2\nstate: {}\n", "line"},
      {"quotas: {a: {max_rpm: 1}}}\n", "line"},
      {"\tquotas: {}\n", "line"},
      {"quotas: \"unterminated\n", "line"},
      {"[1, 2, 3]\n", "top level is not a map"},
      {"just a scalar\n", "top level is not a map"},
      {"quotas: [gemini, openai]\n", "\"quotas\" is not a map (line 1"},
      {"quotas: 5\n", "\"quotas\" is not a map"},
      {"state: [a]\n", "\"state\" is not a map"},
      {"quotas:\n  m: [1, 2]\n", "model \"m\": quota is not a map (line 2"},
      {"quotas:\n  m: {max_rpm: lots}\n",
       "model \"m\": max_rpm is not an integer (\"lots\") (line 2"},
      {"quotas:\n  m: {max_tpm: 1.5}\n", "model \"m\": max_tpm is not an integer"},
      {"quotas:\n  m: {max_rpd: [1]}\n", "model \"m\": max_rpd is not an integer"},
      {"quotas:\n  m: {max_rpm: 0x10}\n", "max_rpm is not an integer"},
      {"quotas:\n  m: {max_rpm: +-5}\n", "max_rpm is not an integer"},
      {"quotas:\n  m: {max_rpm: ++5}\n", "max_rpm is not an integer"},
      {"quotas:\n  m: {max_rpm: \"\"}\n", "max_rpm is not an integer"},
      {"quotas:\n  m: {max_rpm: 9223372036854775808}\n", "max_rpm is out of range"},
      {"quotas:\n  m: {max_rpm: -9223372036854775809}\n", "max_rpm is out of range"},
      {"quotas:\n  m: {max_rpm: 99999999999999999999999}\n", "max_rpm is out of range"},
      {"quotas:\n  m: {max_rpm: 1}\n  m: {max_rpm: 2}\n", "model \"m\": quota appears twice"},
      {"quotas:\n  m: {max_rpm: 1, max_rpm: 2}\n", "max_rpm appears twice"},
      {"quotas: {}\nquotas: {}\n", "key \"quotas\" appears twice"},
      {"quotas:\n  [a, b]: {max_rpm: 1}\n", "model name in quotas is not a scalar"},
      {"state:\n  m: 5\n", "model \"m\": state is not a map"},
      {"state:\n  m: {requests: 5}\n", "model \"m\": requests is not a sequence"},
      {"state:\n  m: {requests: {a: 1}}\n", "requests is not a sequence"},
      {"state:\n  m:\n    requests: [2026-02-19T10:00:00Z, yesterday]\n",
       "model \"m\": requests[1] is not a timestamp in the years 1677..2262 (\"yesterday\") (line "
       "3"},
      {"state:\n  m: {requests: [2026-02-30T10:00:00Z]}\n", "requests[0] is not a timestamp"},
      {"state:\n  m: {requests: [1500-01-01T00:00:00Z]}\n", "requests[0] is not a timestamp"},
      {"state:\n  m: {requests: [0001-01-01T00:00:00Z]}\n", "requests[0] is not a timestamp"},
      {"state:\n  m: {requests: [~]}\n", "requests[0] is not a timestamp"},
      {"state:\n  m: {requests: [[2026-02-19T10:00:00Z]]}\n", "requests[0] is not a timestamp"},
      {"state:\n  m: {requests: [1771495200]}\n", "requests[0] is not a timestamp"},
      {"state:\n  m: {tokens: 3}\n", "model \"m\": tokens is not a sequence"},
      {"state:\n  m: {tokens: [3]}\n", "model \"m\": tokens[0] is not a map"},
      {"state:\n  m: {tokens: [{count: 3}]}\n", "model \"m\": tokens[0] has no time"},
      {"state:\n  m: {tokens: [{time: soon, count: 3}]}\n", "tokens[0].time is not a timestamp"},
      {"state:\n  m: {tokens: [{time: 2026-02-19T10:00:00Z, count: x}]}\n",
       "tokens[0].count is not an integer"},
      {"state:\n  m: {tokens: [{time: 2026-02-19T10:00:00Z, count: 1, count: 2}]}\n",
       "tokens[0].count appears twice"},
      {"state:\n  m: {day_start: tomorrow}\n", "model \"m\": day_start is not a timestamp"},
      {"state:\n  m: {day_start: [1]}\n", "model \"m\": day_start is not a timestamp"},
      {"state:\n  m: {day_count: many}\n", "model \"m\": day_count is not an integer"},
      {"state:\n  m: {day_count: 1, day_count: 2}\n", "day_count appears twice"},
      {"state:\n  \"\": {day_count: x}\n", "model \"\": day_count is not an integer"},
      {"state:\n  m: {}\n  m: {}\n", "model \"m\": state appears twice"},
  };
  TempDir dir;
  const std::string path = dir.file("state.yaml");
  for (const CorruptCase& c : cases) {
    const Error error = load_error(dir, c.text);
    EXPECT_EQ(error.code, ErrorCode::corrupt_state) << c.text;
    EXPECT_TRUE(starts_with(error.message, "ratelimit.load: yaml: " + path + ": "))
        << error.message;
    EXPECT_NE(error.message.find(c.mentions), std::string::npos)
        << "message: " << error.message << "\nwanted: " << c.mentions;
  }
}

TEST(YamlStore, NegativeValuesAreCorruptStateNamingModelAndField) {
  const CorruptCase cases[] = {
      {"quotas:\n  gpt-4o: {max_rpm: -5, max_tpm: 1, max_rpd: 1}\n",
       "model \"gpt-4o\": max_rpm is negative (-5)"},
      {"quotas:\n  gpt-4o: {max_tpm: -1}\n", "model \"gpt-4o\": max_tpm is negative (-1)"},
      {"quotas:\n  gpt-4o: {max_rpd: -1000}\n", "model \"gpt-4o\": max_rpd is negative (-1000)"},
      {"quotas:\n  \"model with spaces\": {max_rpd: -1}\n",
       "model \"model with spaces\": max_rpd is negative"},
      {"state:\n  gpt-4o: {day_count: -3}\n", "model \"gpt-4o\": day_count is negative (-3)"},
      {"state:\n  gpt-4o: {tokens: [{time: 2026-02-19T10:00:00Z, count: 5}, "
       "{time: 2026-02-19T10:00:01Z, count: -7}]}\n",
       "model \"gpt-4o\": tokens[1].count is negative (-7)"},
  };
  TempDir dir;
  const std::string path = dir.file("state.yaml");
  for (const CorruptCase& c : cases) {
    const Error error = load_error(dir, c.text);
    EXPECT_EQ(error.code, ErrorCode::corrupt_state) << c.text;
    EXPECT_EQ(
        error.message.rfind("ratelimit.load: yaml: " + path + ": " + std::string(c.mentions), 0),
        0u)
        << "message: " << error.message << "\nwanted: " << c.mentions;
  }
}

TEST(YamlStore, TruncatedFileIsCorruptAndNeverCrashes) {
  TempDir dir;
  const std::string good = dir.file("good.yaml");
  ASSERT_TRUE(make_yaml_store(good)->save(big_snapshot(1, 400)));
  const std::string text = read_text(good);
  const std::string path = dir.file("state.yaml");

  // Cut in half: inside a flow sequence.
  write_text(path, text.substr(0, text.size() / 2));
  const Result<std::optional<Snapshot>> half = make_yaml_store(path)->load();
  ASSERT_FALSE(half);
  EXPECT_EQ(half.error().code, ErrorCode::corrupt_state);
  EXPECT_TRUE(starts_with(half.error().message, "ratelimit.load: yaml: " + path));

  // Every cut of a small file either fails cleanly or loads (a cut at a line end can be valid).
  ASSERT_TRUE(make_yaml_store(good)->save(sample_snapshot()));
  const std::string small = read_text(good);
  for (std::size_t cut = 0; cut < small.size(); ++cut) {
    write_text(path, small.substr(0, cut));
    const Result<std::optional<Snapshot>> loaded = make_yaml_store(path)->load();
    if (!loaded) {
      EXPECT_EQ(loaded.error().code, ErrorCode::corrupt_state) << loaded.error().to_string();
    }
  }
}

TEST(YamlStore, GarbageBytesNeverCrash) {
  TempDir dir;
  const std::string path = dir.file("state.yaml");
  std::uint64_t x = 88172645463325252ull;
  for (int round = 0; round < 200; ++round) {
    std::string junk;
    for (int i = 0; i < 200; ++i) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      // Mostly YAML punctuation, so that the parser gets somewhere.
      static constexpr std::string_view kAlphabet = "{}[]:,-#&*!|>'\"% \n\tqs0129Z.~?";
      junk += (round % 2 == 0) ? kAlphabet[x % kAlphabet.size()] : static_cast<char>(x & 0xff);
    }
    write_text(path, junk);
    const Result<std::optional<Snapshot>> loaded = make_yaml_store(path)->load();
    if (!loaded) {
      EXPECT_EQ(loaded.error().code, ErrorCode::corrupt_state) << loaded.error().message;
    }
  }
}

TEST(YamlStore, UnreadablePathIsAnIoError) {
  TempDir dir;
  const std::string path = dir.file("state.yaml");
  ASSERT_TRUE(fs::create_directory(path));  // a directory where the file should be
  const Result<std::optional<Snapshot>> loaded = make_yaml_store(path)->load();
  ASSERT_FALSE(loaded);
  EXPECT_EQ(loaded.error().code, ErrorCode::io_error);
  EXPECT_TRUE(starts_with(loaded.error().message, "ratelimit.load: " + path))
      << loaded.error().message;

  // A path through a regular file.
  const std::string file = dir.file("file");
  write_text(file, "x");
  const Result<std::optional<Snapshot>> through = make_yaml_store(file + "/state.yaml")->load();
  ASSERT_FALSE(through);
  EXPECT_EQ(through.error().code, ErrorCode::io_error);

  // Permission bits only stop a non-root user.
  if (::geteuid() != 0) {
    const std::string locked = dir.file("locked.yaml");
    write_text(locked, "quotas: {}\n");
    ASSERT_EQ(::chmod(locked.c_str(), 0), 0);
    const Result<std::optional<Snapshot>> denied = make_yaml_store(locked)->load();
    ASSERT_FALSE(denied);
    EXPECT_EQ(denied.error().code, ErrorCode::io_error);
    EXPECT_NE(denied.error().message.find(locked), std::string::npos);
  }
}

TEST(YamlStore, UnwritablePathIsAnIoErrorAndLeavesNoTemporaryFile) {
  TempDir dir;
  const std::string file = dir.file("file");
  write_text(file, "not a directory");
  const std::string under_file = file + "/x/state.yaml";
  const Status status = make_yaml_store(under_file)->save(sample_snapshot());
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error().code, ErrorCode::io_error);
  EXPECT_TRUE(starts_with(status.error().message, "ratelimit.persist: ")) << status.error().message;
  EXPECT_NE(status.error().message.find(under_file), std::string::npos) << status.error().message;
  EXPECT_NE(status.error().message.find("Not a directory"), std::string::npos)
      << status.error().message;
  EXPECT_EQ(read_text(file), "not a directory");

  // A directory at the path: the rename fails and the temporary file is removed.
  const std::string directory = dir.file("state.yaml");
  ASSERT_TRUE(fs::create_directory(directory));
  const Status over_directory = make_yaml_store(directory)->save(sample_snapshot());
  ASSERT_FALSE(over_directory);
  EXPECT_EQ(over_directory.error().code, ErrorCode::io_error);
  EXPECT_TRUE(starts_with(over_directory.error().message,
                          "ratelimit.persist: cannot write " + directory + ": Is a directory"))
      << over_directory.error().message;
  EXPECT_TRUE(temp_files(dir.path()).empty());

  if (::geteuid() != 0) {
    const std::string read_only = dir.file("read-only");
    ASSERT_TRUE(fs::create_directory(read_only));
    ASSERT_EQ(::chmod(read_only.c_str(), 0500), 0);
    const Status denied = make_yaml_store(read_only + "/state.yaml")->save(sample_snapshot());
    ASSERT_FALSE(denied);
    EXPECT_EQ(denied.error().code, ErrorCode::io_error);
  }
}

// --- symbolic links, stale temporary files, a full disk ----------------------------------------

TEST(YamlStore, SaveWritesThroughASymbolicLink) {
  TempDir dir;
  fs::create_directories(dir.path() / "real");
  const std::string target = dir.file("real/state.yaml");
  const std::string link = dir.file("link.yaml");
  const std::string link_to_link = dir.file("again.yaml");
  fs::create_symlink("real/state.yaml", link);  // relative: resolved beside the link
  fs::create_symlink(link, link_to_link);
  write_text(target, "quotas: {}\nstate: {}\n");
  ASSERT_EQ(::chmod(target.c_str(), 0640), 0);

  const Snapshot first = sample_snapshot();
  ASSERT_TRUE(make_yaml_store(link_to_link)->save(first));
  EXPECT_TRUE(fs::is_symlink(link));
  EXPECT_TRUE(fs::is_symlink(link_to_link));
  EXPECT_EQ(load_ok(target), first);  // the real file holds the new state
  EXPECT_EQ(load_ok(link_to_link), first);
  EXPECT_EQ(fs::status(target).permissions(), fs::perms(0640));
  EXPECT_TRUE(temp_files(dir.path()).empty());
  EXPECT_TRUE(temp_files(dir.path() / "real").empty());

  // A link whose target does not exist yet: the target is created.
  const std::string dangling = dir.file("dangling.yaml");
  fs::create_symlink(dir.file("real/new.yaml"), dangling);
  ASSERT_TRUE(make_yaml_store(dangling)->save(first));
  EXPECT_TRUE(fs::is_symlink(dangling));
  EXPECT_EQ(load_ok(dir.file("real/new.yaml")), first);

  // A loop is an error naming the path, and writes nothing.
  const std::string loop = dir.file("loop.yaml");
  fs::create_symlink(loop, loop);
  const Status looped = make_yaml_store(loop)->save(first);
  ASSERT_FALSE(looped);
  EXPECT_EQ(looped.error().code, ErrorCode::io_error);
  EXPECT_TRUE(starts_with(looped.error().message, "ratelimit.persist: cannot write " + loop))
      << looped.error().message;
}

// A pid that no process has: a child that has exited and been reaped.
pid_t dead_pid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  int status = 0;
  ::waitpid(child, &status, 0);
  return child;
}

void set_mtime(const std::string& path, std::chrono::system_clock::time_point t) {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch());
  const timespec times[2] = {{static_cast<time_t>(ns.count() / kNs), ns.count() % kNs},
                             {static_cast<time_t>(ns.count() / kNs), ns.count() % kNs}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
}

TEST(YamlStore, SaveRemovesTemporaryFilesOfGoneWritersUnderTheStateLock) {
  TempDir dir;
  const std::string path = dir.file("state.yaml");
  const std::string self = std::to_string(::getpid());
  const std::string dead = dir.file("state.yaml.tmp-" + std::to_string(dead_pid()) + "-aaaaaa");
  const std::string live_old = dir.file("state.yaml.tmp-" + self + "-bbbbbb");
  const std::string live_new = dir.file("state.yaml.tmp-" + self + "-cccccc");
  const std::string unnamed = dir.file("state.yaml.tmp-dddddd");  // no pid (an older writer)
  const std::string other_state = dir.file("other.yaml.tmp-" + std::to_string(dead_pid()) + "-e");
  for (const auto& f : {dead, live_old, live_new, unnamed, other_state}) write_text(f, "partial");
  set_mtime(live_old, std::chrono::system_clock::now() - kStaleTempAge - std::chrono::minutes(1));
  const auto all = temp_files(dir.path());
  ASSERT_EQ(all.size(), 5u);

  // Another process holds the state's lock: nothing is removed.
  int go[2];
  int held[2];
  ASSERT_EQ(::pipe(go), 0);
  ASSERT_EQ(::pipe(held), 0);
  const pid_t holder = ::fork();
  ASSERT_GE(holder, 0);
  if (holder == 0) {
    const int fd = ::open((path + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    const char byte = fd >= 0 && ::flock(fd, LOCK_EX) == 0 ? 1 : 0;
    if (::write(held[1], &byte, 1) != 1) ::_exit(3);
    char wait = 0;
    (void)!::read(go[0], &wait, 1);
    ::_exit(0);
  }
  char byte = 0;
  ASSERT_EQ(::read(held[0], &byte, 1), 1);
  ASSERT_EQ(byte, 1);
  ASSERT_TRUE(make_yaml_store(path)->save(sample_snapshot()));
  EXPECT_EQ(temp_files(dir.path()), all);
  ASSERT_EQ(::write(go[1], &byte, 1), 1);
  int status = 0;
  ASSERT_EQ(::waitpid(holder, &status, 0), holder);
  for (int fd : {go[0], go[1], held[0], held[1]}) ::close(fd);

  // This process holds it (as `ratelimit` does while it persists): the dead writer's file and
  // the hour-old one go; a live writer's recent file, an unnamed recent one and another state's
  // stay.
  const int lock = ::open((path + ".lock").c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(lock, 0);
  ASSERT_EQ(::flock(lock, LOCK_EX), 0);
  ASSERT_TRUE(make_yaml_store(path)->save(sample_snapshot()));
  ::close(lock);
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_FALSE(fs::exists(live_old));
  EXPECT_TRUE(fs::exists(live_new));
  EXPECT_TRUE(fs::exists(unnamed));
  EXPECT_TRUE(fs::exists(other_state));
  EXPECT_EQ(temp_files(dir.path()).size(), 3u);

  // Nobody holds it: the save takes it. An hour later (by the injected time) the rest of this
  // state's files are stale too.
  ASSERT_TRUE(make_yaml_store(path)->save(sample_snapshot()));
  EXPECT_TRUE(fs::exists(live_new));
  EXPECT_EQ(sweep_stale_temp_files(
                path, std::chrono::system_clock::now() + kStaleTempAge + std::chrono::minutes(1)),
            2);
  EXPECT_FALSE(fs::exists(live_new));
  EXPECT_FALSE(fs::exists(unnamed));
  EXPECT_TRUE(fs::exists(other_state));
  EXPECT_EQ(load_ok(path), sample_snapshot());
}

TEST(YamlStore, AFullDiskNamesTheOperationTheFileAndTheCause) {
  // The writer's own write loop against /dev/full, which fails every write with ENOSPC.
  const int full = ::open("/dev/full", O_WRONLY | O_CLOEXEC);
  if (full < 0) GTEST_SKIP() << "no /dev/full";
  const int error = write_all(full, "quotas: {}\n");
  ::close(full);
  ASSERT_EQ(error, ENOSPC);
  const Error e = persist_io_error("/srv/state.yaml", "write /srv/state.yaml.tmp-42-abcdef", error);
  EXPECT_EQ(e.code, ErrorCode::io_error);
  EXPECT_EQ(e.message,
            "ratelimit.persist: cannot write /srv/state.yaml: No space left on device (write "
            "/srv/state.yaml.tmp-42-abcdef; free disk space on the file system of /srv, or keep "
            "the state on another one)");

  // A link to /dev/full is refused before anything is written: only a regular file is replaced.
  TempDir dir;
  const std::string link = dir.file("state.yaml");
  fs::create_symlink("/dev/full", link);
  const Status refused = make_yaml_store(link)->save(sample_snapshot());
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::io_error);
  EXPECT_EQ(refused.error().message,
            "ratelimit.persist: cannot write " + link + ": /dev/full is not a regular file");
  EXPECT_TRUE(fs::is_character_file("/dev/full"));
  EXPECT_TRUE(fs::is_symlink(link));
}

TEST(YamlStore, EmptyPathIsInvalid) {
  auto store = make_yaml_store("");
  const Status saved = store->save(Snapshot{});
  ASSERT_FALSE(saved);
  EXPECT_EQ(saved.error().code, ErrorCode::invalid_argument);
  const Result<std::optional<Snapshot>> loaded = store->load();
  ASSERT_FALSE(loaded);
  EXPECT_EQ(loaded.error().code, ErrorCode::invalid_argument);
}

// ---------------------------------------------------------------------------------------------
// Atomicity

// Waits for the next inotify event on a file whose name contains ".tmp-"; false after 10 s
// without one.
bool wait_for_temp_file_event(int inotify_fd) {
  alignas(inotify_event) char buffer[4096];
  for (;;) {
    pollfd ready{inotify_fd, POLLIN, 0};
    if (::poll(&ready, 1, 10'000) != 1) return false;
    const ssize_t got = ::read(inotify_fd, buffer, sizeof buffer);
    if (got <= 0) return false;
    for (ssize_t offset = 0; offset < got;) {
      const auto* event = reinterpret_cast<const inotify_event*>(buffer + offset);
      if (event->len > 0 && std::string_view(event->name).find(".tmp-") != std::string::npos) {
        return true;
      }
      offset += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
    }
  }
}

// A process killed while saving leaves the old or the new snapshot, never a mix. At most one
// temporary file (`state.yaml.tmp-<pid>-XXXXXX`, from the interrupted save) stays behind; load
// ignores it. Some rounds kill the child the moment its temporary file is created or written to
// (seen through inotify), the others after a fraction of the time one save takes.
TEST(YamlStore, KillDuringSaveLeavesACompleteSnapshot) {
  TempDir dir;
  const std::string path = dir.file("state.yaml");
  const Snapshot first = big_snapshot(1, 4'000);
  const Snapshot second = big_snapshot(2, 4'000);
  ASSERT_NE(first, second);
  constexpr int kRounds = 6;
  for (int round = 0; round < kRounds; ++round) {
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    const auto forked = std::chrono::steady_clock::now();
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      ::close(ready[0]);
      auto store = make_yaml_store(path);
      for (int i = 0;; ++i) {
        if (!store->save(i % 2 == 0 ? first : second)) ::_exit(3);
        if (i == 0) {
          const char byte = 1;
          if (::write(ready[1], &byte, 1) != 1) ::_exit(4);
        }
      }
    }
    ::close(ready[1]);
    char byte = 0;
    const bool saved_once = ::read(ready[0], &byte, 1) == 1;
    ::close(ready[0]);
    bool saw_event = true;
    if (saved_once && round < 4) {
      // Rounds 0, 2: on creation of the next temporary file; 1, 3: on its first write.
      const int watch = ::inotify_init1(IN_CLOEXEC);
      const std::uint32_t mask = round % 2 == 0 ? IN_CREATE : IN_MODIFY;
      saw_event = watch >= 0 && ::inotify_add_watch(watch, dir.path().c_str(), mask) >= 0 &&
                  wait_for_temp_file_event(watch);
      if (watch >= 0) ::close(watch);
    } else if (saved_once) {
      const auto one_save = std::chrono::steady_clock::now() - forked;
      std::this_thread::sleep_for(one_save * (round - 3) / 3);
    }
    ASSERT_EQ(::kill(child, SIGKILL), 0);
    int wait_status = 0;
    ASSERT_EQ(::waitpid(child, &wait_status, 0), child);
    ASSERT_TRUE(saved_once);
    ASSERT_TRUE(saw_event) << "round " << round;
    ASSERT_TRUE(WIFSIGNALED(wait_status)) << "child exited with " << WEXITSTATUS(wait_status);

    const Snapshot loaded = load_ok(path);
    EXPECT_TRUE(loaded == first || loaded == second) << "round " << round;
    const std::vector<std::string> temps = temp_files(dir.path());
    EXPECT_LE(temps.size(), 1u);
    for (const std::string& name : temps) {  // named for the writer, so a later save can tell
      EXPECT_TRUE(starts_with(name, "state.yaml.tmp-" + std::to_string(child) + "-")) << name;
    }
    for (const std::string& name : temps) fs::remove(dir.path() / name);
  }
}

TEST(YamlStore, ConcurrentSavesAndLoadsSeeCompleteSnapshots) {
  TempDir dir;
  const std::string path = dir.file("state.yaml");
  std::vector<Snapshot> snapshots;
  for (int i = 1; i <= 4; ++i) snapshots.push_back(big_snapshot(i, 400));
  auto store = make_yaml_store(path);
  ASSERT_TRUE(store->save(snapshots[0]));
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        if (!store->save(snapshots[static_cast<std::size_t>(t)])) ++failures;
      }
    });
  }
  threads.emplace_back([&] {
    for (int i = 0; i < 20; ++i) {
      const Result<std::optional<Snapshot>> loaded = store->load();
      if (!loaded || !loaded->has_value()) {
        ++failures;
        continue;
      }
      bool known = false;
      for (const Snapshot& s : snapshots) known = known || (**loaded == s);
      if (!known) ++failures;
    }
  });
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_TRUE(temp_files(dir.path()).empty());
}

}  // namespace
}  // namespace ratelimit::detail
