// The /metrics endpoint Prometheus scrapes: a minimal HTTP/1.1 server that answers
// `GET /metrics` with the registry in the text exposition format (0.0.4), 404 for other paths,
// 405 for other methods, one connection at a time, `Connection: close`.
//
// Arbor's own rather than prometheus-cpp's civetweb Exposer because civetweb starts its threads
// with ~100 KB stacks, and a process's static TLS is carved out of every thread's stack: with
// OpenBLAS (60 KB of TLS) and the CUDA runtime linked, civetweb's request threads overflowed
// inside mg_printf. This server's one thread has the default stack. Reads and writes time out
// after 2 s, so a stalled client cannot hold the endpoint. Thread-safe; stops in its destructor.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "prometheus/registry.h"

namespace arbor::rpc {

// What the metrics port answers a request whose head (request line, then headers) is `head`:
// GET /metrics (a query allowed) is the metrics, another GET path 404, any other method 405.
// The head is untrusted bytes from the network.
enum class MetricsRoute { kMetrics, kNotFound, kMethodNotAllowed };
MetricsRoute RouteMetricsRequest(absl::string_view head);

class MetricsServer {
 public:
  // Listens on `address` ("host:port"; port 0 picks a free one). UNAVAILABLE naming the address
  // when it cannot be resolved or bound.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      const std::string& address, std::shared_ptr<prometheus::Registry> registry);
  ~MetricsServer();

  int port() const { return port_; }

 private:
  MetricsServer(int fd, int port, std::shared_ptr<prometheus::Registry> registry);
  void Loop();
  void Serve(int client);

  const int listen_fd_;
  const int port_;
  std::shared_ptr<prometheus::Registry> registry_;
  int wake_[2] = {-1, -1};  // a pipe: the destructor writes to stop the loop
  std::thread thread_;
};

}  // namespace arbor::rpc
