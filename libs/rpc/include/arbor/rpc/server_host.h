// Runs a service's gRPC server the way every Arbor service must: the standard health service
// and reflection, Prometheus metrics on their own port, message size limits, and a shutdown
// that reports NOT_SERVING first, waits a grace period for load balancers and probes to notice,
// then stops accepting and drains in-flight RPCs. Thread-safe.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "arbor/rpc/metrics_server.h"
#include "prometheus/registry.h"

namespace arbor::rpc {

struct ServerHostOptions {
  std::string address = "127.0.0.1:0";  // host:port; port 0 picks a free one
  std::string metrics_address;          // host:port for /metrics; empty = no metrics endpoint
  int max_message_bytes = 64 << 20;
  absl::Duration shutdown_grace = absl::ZeroDuration();  // NOT_SERVING before draining
  absl::Duration drain_timeout = absl::Seconds(10);      // then in-flight RPCs are cancelled
  // Streams one connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
  int max_concurrent_streams = 1024;
  // Memory gRPC may use for this server's connections and calls (its resource quota); beyond
  // it, new calls are refused instead of the process running out of memory.
  int64_t max_memory_bytes = int64_t{4} << 30;
  // The listening port's credentials (tls.h); null: plaintext.
  std::shared_ptr<grpc::ServerCredentials> credentials;
};

class ServerHost {
 public:
  // Starts serving `services` (not owned; they must outlive the host) and, if a metrics address
  // is set, exposes `registry` at /metrics. UNAVAILABLE naming the address if binding fails.
  static absl::StatusOr<std::unique_ptr<ServerHost>> Start(
      const ServerHostOptions& options, const std::vector<grpc::Service*>& services,
      std::shared_ptr<prometheus::Registry> registry);
  ~ServerHost();

  int port() const { return port_; }
  std::string address() const;
  int metrics_port() const;  // -1 without metrics

  // NOT_SERVING, grace period, stop accepting, drain (bounded by drain_timeout). Idempotent.
  void Shutdown();

 private:
  ServerHost() = default;

  ServerHostOptions options_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<MetricsServer> metrics_;
  int port_ = 0;
  bool shut_down_ = false;
};

// Blocks SIGTERM and SIGINT in the calling thread (call first in main, before any thread
// starts, so every thread inherits it), then WaitForShutdownSignal() returns the one received.
void BlockShutdownSignals();
int WaitForShutdownSignal();

}  // namespace arbor::rpc
