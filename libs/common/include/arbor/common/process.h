// Child processes and loopback ports: what `arbor up`, the benchmarks and the cross-service
// tests use to run Arbor's binaries side by side on one machine.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace arbor {

// A TCP port the kernel reports free on 127.0.0.1 (bound and released, so another process may
// take it before it is used; callers accept that race). -1 if none could be bound.
int FreeLoopbackPort();

// Whether something accepts TCP connections on 127.0.0.1:port.
bool LoopbackPortAccepts(int port);

struct SpawnOptions {
  std::string log_path;            // stdout and stderr go here (appended); empty: inherited
  bool search_path = false;        // argv[0] is looked up in PATH
  bool new_process_group = false;  // so that a terminal's Ctrl-C reaches only the parent
  int parent_death_signal = 0;     // sent to the child when the spawning thread dies (Linux)
};

// Starts argv[0] with the arguments argv[1..] and an empty signal mask. Returns the child's pid,
// or -1 if fork failed; an exec failure shows up as the child exiting with status 127.
pid_t SpawnProcess(const std::vector<std::string>& argv, const SpawnOptions& options = {});

}  // namespace arbor
