#include "arbor/rpc/rpc_metrics.h"

#include "arbor/rpc/metric_families.h"
#include "google/protobuf/descriptor.h"

namespace arbor::rpc {

namespace {

const prometheus::Histogram::BucketBoundaries& Buckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1, 3, 10, 30, 60, 120, 300};
  return kBuckets;
}

}  // namespace

RpcMetrics::RpcMetrics(const std::string& service, prometheus::Registry& registry,
                       const char* proto_service)
    : requests_(CounterFamily(registry, ("arbor_" + service + "_requests_total").c_str(),
                              (service + " RPCs by method and status code").c_str())),
      latency_(HistogramFamily(registry, ("arbor_" + service + "_request_duration_seconds").c_str(),
                               (service + " RPC handling time").c_str())) {
  const google::protobuf::ServiceDescriptor* d =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(proto_service);
  for (int i = 0; d != nullptr && i < d->method_count(); ++i) {
    const std::string& method = d->method(i)->name();
    requests_.Add({{"method", method}, {"code", "OK"}});
    latency_.Add({{"method", method}}, Buckets());
  }
}

void RpcMetrics::Record(const char* method, const absl::Status& status, double seconds) {
  requests_.Add({{"method", method}, {"code", absl::StatusCodeToString(status.code())}})
      .Increment();
  latency_.Add({{"method", method}}, Buckets()).Observe(seconds);
}

}  // namespace arbor::rpc
