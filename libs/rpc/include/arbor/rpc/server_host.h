// Runs a service's gRPC server the way every Arbor service must: the standard health service
// and reflection, Prometheus metrics on their own port, optionally a plaintext health-only port
// for probes, message size limits, and a shutdown
// that reports NOT_SERVING first, waits a grace period for load balancers and probes to notice,
// then stops accepting and drains in-flight RPCs. Thread-safe.
#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "arbor/rpc/metrics_server.h"
#include "prometheus/registry.h"

namespace arbor::rpc {

struct ServerHostOptions {
  std::string address = "127.0.0.1:0";  // host:port; port 0 picks a free one
  std::string metrics_address;          // host:port for /metrics; empty = no metrics endpoint
  // host:port of a plaintext port that serves only grpc.health.v1 (the same status), for probes
  // that cannot present the mesh's client certificate (a kubelet's grpc probe); empty = none.
  std::string health_address;
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
  // Health SERVING from the start; false: NOT_SERVING until SetServing(true) (a service that
  // must load something first, still answering health checks meanwhile).
  bool serving = true;
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
  int metrics_port() const;                         // -1 without metrics
  int health_port() const { return health_port_; }  // -1 without a health port

  // The health status every service name reports; ignored once shutting down.
  void SetServing(bool serving);

  // NOT_SERVING, grace period, `before_drain` (if any: a service stopping its own work), stop
  // accepting, drain (bounded by drain_timeout). Idempotent.
  void Shutdown(const std::function<void()>& before_drain = nullptr);

 private:
  ServerHost() = default;

  ServerHostOptions options_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<MetricsServer> metrics_;
  std::unique_ptr<grpc::Server> health_;  // the health-only port, if any
  int port_ = 0;
  int health_port_ = -1;
  absl::Mutex mu_;  // orders SetServing and Shutdown
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

// Blocks SIGTERM and SIGINT in the calling thread (call first in main, before any thread
// starts, so every thread inherits it), then WaitForShutdownSignal() returns the one received.
void BlockShutdownSignals();
int WaitForShutdownSignal();

}  // namespace arbor::rpc
