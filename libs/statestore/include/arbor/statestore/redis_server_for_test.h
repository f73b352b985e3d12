// Starts a real redis-server on a free loopback port for a test, and stops it. Test-only.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace arbor::statestore::testing {

// A port the kernel reports free on 127.0.0.1 (bound and released; a tiny race is accepted).
inline int FreeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

inline bool CanConnect(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

class RedisServerForTest {
 public:
  // Starts redis-server (from PATH) with no persistence and waits, up to 10 s, until it accepts
  // connections. UNAVAILABLE if it does not come up.
  static absl::StatusOr<std::unique_ptr<RedisServerForTest>> Start() {
    std::unique_ptr<RedisServerForTest> s(new RedisServerForTest());
    s->port_ = FreeLoopbackPort();
    const std::string port = std::to_string(s->port_);
    s->pid_ = ::fork();
    if (s->pid_ == 0) {
      const int null_fd = ::open("/dev/null", O_WRONLY);
      ::dup2(null_fd, STDOUT_FILENO);
      ::dup2(null_fd, STDERR_FILENO);
      ::execlp("redis-server", "redis-server", "--port", port.c_str(), "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no", "--loglevel", "warning", "--dir", "/tmp",
               static_cast<char*>(nullptr));
      ::_exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!CanConnect(s->port_)) {
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
