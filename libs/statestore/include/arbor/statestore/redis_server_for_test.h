// Starts a real redis-server on a free loopback port for a test, and stops it. Test-only.
#pragma once

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "arbor/common/process.h"

namespace arbor::statestore::testing {

using ::arbor::FreeLoopbackPort;

class RedisServerForTest {
 public:
  // Starts redis-server (from PATH) with no persistence and waits, up to 10 s, until it accepts
  // connections. UNAVAILABLE if it does not come up.
  static absl::StatusOr<std::unique_ptr<RedisServerForTest>> Start() {
    std::unique_ptr<RedisServerForTest> s(new RedisServerForTest());
    s->port_ = FreeLoopbackPort();
    const std::string port = std::to_string(s->port_);
    s->pid_ = SpawnProcess({"redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--loglevel", "warning", "--dir", "/tmp"},
                           {.log_path = "/dev/null", .search_path = true});
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!LoopbackPortAccepts(s->port_)) {
      int status;
      if (::waitpid(s->pid_, &status, WNOHANG) == s->pid_) {
        s->pid_ = -1;
        return absl::UnavailableError("redis-server exited at start (is it installed?)");
      }
      if (std::chrono::steady_clock::now() > deadline) {
        return absl::UnavailableError(absl::StrCat("redis-server not up on port ", port));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return s;
  }

  ~RedisServerForTest() { Stop(SIGTERM); }

  // Kills the server (SIGKILL) and reaps it.
  void Kill() { Stop(SIGKILL); }

  int port() const { return port_; }
  std::string url() const { return absl::StrCat("redis://127.0.0.1:", port_); }

 private:
  RedisServerForTest() = default;
  void Stop(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  pid_t pid_ = -1;
  int port_ = -1;
};

}  // namespace arbor::statestore::testing
