// Test helper: runs a service binary as a child process on loopback and waits for its gRPC
// health to report SERVING. Test-only; cross-service tests live in tests/.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "arbor/common/process.h"
#include "arbor/rpc/service_main.h"

namespace arbor::testing {

// Polls `cond` every 50 ms until it holds or `timeout` passes; returns its last value.
inline bool WaitFor(const std::function<bool()>& cond, std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return cond();
}

class ChildProcess {
 public:
  // Starts `argv` (argv[0] is the binary path) with output appended to `log_path`.
  ChildProcess(std::vector<std::string> argv, const std::string& log_path)
      : pid_(SpawnProcess(argv, {.log_path = log_path})) {}
  ~ChildProcess() { Signal(SIGKILL); }

  // Waits until the gRPC health service at `address` answers SERVING (bounded by `timeout`).
  absl::Status WaitServing(const std::string& address, std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      int status;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return absl::UnavailableError(absl::StrCat("process for ", address, " exited"));
      }
      if (rpc::HealthServing(address)) return absl::OkStatus();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return absl::DeadlineExceededError(absl::StrCat(address, " not serving in time"));
  }

  // Waits (up to `timeout`) for the process to exit by itself: its wait status, or -1 (after
  // killing it) if it did not.
  int Wait(std::chrono::seconds timeout) {
    if (pid_ <= 0) return -1;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) != pid_) {
      if (std::chrono::steady_clock::now() > deadline) {
        Signal(SIGKILL);
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    pid_ = -1;
    return status;
  }

  // Sends `sig` and reaps the process. Returns its wait status, or -1 if already gone.
  int Signal(int sig) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, sig);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }

  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

}  // namespace arbor::testing
