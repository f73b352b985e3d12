// The two metrics every Arbor service reports for its RPCs, named per ARCHITECTURE.md §7:
//   arbor_<service>_requests_total{method, code}      counter
//   arbor_<service>_request_duration_seconds{method}  histogram
// Every method of the service has both series (code OK, count 0) before its first call, so a
// dashboard or alert finds the families from the start. Thread-safe (prometheus-cpp families are).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "prometheus/counter.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace arbor::rpc {

class RpcMetrics {
 public:
  // `service` as in the metric names, e.g. "kvstore"; `proto_service` its full protobuf name
  // (e.g. v1::KvStore::service_full_name()), whose methods get their series at once.
  RpcMetrics(const std::string& service, prometheus::Registry& registry, const char* proto_service);

  void Record(const char* method, const absl::Status& status, double seconds);

 private:
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& latency_;
};

}  // namespace arbor::rpc
