// The request head a metrics port reads from the network, against an independent reading of
// the rule: the first line (up to CRLF) is "GET /metrics" followed by its end, a space or a query.
#include "arbor/rpc/metrics_server.h"
#include "fuzz_helpers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view head = arbor::fuzz::Text(data, size);
  const arbor::rpc::MetricsRoute r = arbor::rpc::RouteMetricsRequest(head);
  const absl::string_view line = head.substr(0, head.find("\r\n"));
  const absl::string_view want = "GET /metrics";
  const bool metrics =
      line.substr(0, want.size()) == want &&
      (line.size() == want.size() || line[want.size()] == ' ' || line[want.size()] == '?');
  const bool get = line.substr(0, 4) == "GET ";
  const arbor::rpc::MetricsRoute expected = metrics ? arbor::rpc::MetricsRoute::kMetrics
                                            : get   ? arbor::rpc::MetricsRoute::kNotFound
                                                    : arbor::rpc::MetricsRoute::kMethodNotAllowed;
  if (r != expected) std::abort();
  return 0;
}
