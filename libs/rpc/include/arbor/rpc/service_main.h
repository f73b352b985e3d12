// The start and end every service binary shares, so that each main.cc is only its own flags and
// wiring: signals, flags (command line, then ARBOR_<FLAG> from the environment), logging, and
// the wait for SIGTERM/SIGINT followed by ServerHost's NOT_SERVING, grace and drain. Defines
// the --log_level flag. Also the health probe the launcher and tests use.
#pragma once

#include <chrono>
#include <string>

#include "arbor/rpc/server_host.h"

namespace arbor::rpc {

// Call first in main, before any thread starts. Blocks the shutdown signals, applies environment
// overrides, parses the command line and sets up logging. On error it prints
// "<program>: <error>" to stderr and returns false (exit with status 2).
bool InitServiceMain(int argc, char** argv, const char* program, const char* usage);

// Waits for SIGTERM or SIGINT, then shuts `host` down (NOT_SERVING, grace, drain).
void ServeUntilSignal(ServerHost& host);

// Whether the gRPC health service at `address` answers SERVING within `timeout`. Uses a fresh
// channel each call, so no reconnect backoff carries over between polls.
bool HealthServing(const std::string& address,
                   std::chrono::milliseconds timeout = std::chrono::milliseconds(500));

}  // namespace arbor::rpc
