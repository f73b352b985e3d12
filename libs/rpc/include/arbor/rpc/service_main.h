// The start and end every service binary shares, so that each main.cc is only its own flags and
// wiring: signals, flags (command line, then ARBOR_<FLAG> from the environment), logging, and
// the wait for SIGTERM/SIGINT followed by ServerHost's NOT_SERVING, grace and drain. Also the
// health probe the launcher and tests use.
//
// Defines the flags every service has: --address, --metrics_address, --health_address,
// --max_message_mb,
// --shutdown_grace_ms, --log_level, and the mesh's mTLS files --tls_cert, --tls_key and
// --tls_ca (tls.h; all three or none) with --tls_server_name. Each service gives its own
// defaults (ServiceDefaults).
#pragma once

#include <chrono>
#include <string>

#include "absl/status/statusor.h"
#include "arbor/rpc/server_host.h"
#include "arbor/rpc/tls.h"
#include "grpc/health/v1/health.pb.h"

namespace arbor::rpc {

// A service's defaults for the shared flags.
struct ServiceDefaults {
  std::string address;          // gRPC listen address, host:port
  std::string metrics_address;  // Prometheus /metrics listen address; empty serves none
  int max_message_mb = 64;      // largest gRPC message received or sent, MiB
  // With TLS on, callers must present a certificate of the mesh's CA (false: the planner, whose
  // public API authenticates with bearer tokens).
  bool client_certificates = true;
};

// Call before gRPC starts (first in main; InitServiceMain does): gRPC's synchronous clients make
// progress on a connection only while a thread waits on one of its calls, so a call that fails
// fast because its peer is away leaves the reconnection to gRPC's backup poller, every 5 s by
// default, and a TLS reconnection (several round trips) takes 15 s or more, or never completes
// within a short connect deadline. Polled every 50 ms, a restarted peer is back within a fraction
// of a second. $GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS, when set, wins.
void PrepareGrpcClients();

// Call first in main, before any thread starts. Blocks the shutdown signals, sets the shared
// flags' defaults, applies environment overrides, parses the command line and sets up logging.
// On error it prints "<program>: <error>" to stderr and returns false (exit with status 2).
bool InitServiceMain(int argc, char** argv, const char* program, const char* usage,
                     const ServiceDefaults& defaults);

// The server's options from the shared flags (TLS credentials included).
ServerHostOptions ServerHostOptionsFromFlags();
// The mTLS files from the flags, and the callers' roles a service with them checks (a service
// without them accepts every caller).
TlsFiles TlsFilesFromFlags();
PeerRoles PeerRolesFromFlags();

// Waits for SIGTERM or SIGINT, then shuts `host` down (NOT_SERVING, grace, `before_drain`,
// drain).
void ServeUntilSignal(ServerHost& host, const std::function<void()>& before_drain = nullptr);

// The status the gRPC health service at `address` reports for the whole server within `timeout`
// (a probe's question), or the call's error. A fresh channel each call, so no reconnect backoff
// carries over between polls, with this process's default channel credentials and server name
// (tls.h).
absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> CheckHealth(
    const std::string& address, std::chrono::milliseconds timeout);

// Whether CheckHealth answers SERVING.
bool HealthServing(const std::string& address,
                   std::chrono::milliseconds timeout = std::chrono::milliseconds(500));

}  // namespace arbor::rpc
