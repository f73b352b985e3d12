#include "health.h"

#include <chrono>
#include <cstdio>

#include "absl/flags/flag.h"
#include "arbor/rpc/service_main.h"

ABSL_FLAG(int, health_timeout_ms, 1000, "health: the deadline of each check");

namespace arbor::cli {

int Health(const std::vector<std::string>& addresses) {
  using grpc::health::v1::HealthCheckResponse;
  if (addresses.empty()) {
    std::fprintf(stderr, "arbor health: give one or more addresses (host:port)\n");
    return 2;
  }
  const std::chrono::milliseconds timeout(absl::GetFlag(FLAGS_health_timeout_ms));
  bool all_serving = true;
  for (const std::string& address : addresses) {
    const auto status = rpc::CheckHealth(address, timeout);
    if (!status.ok()) {
      std::printf("%s UNREACHABLE %d %s\n", address.c_str(),
                  static_cast<int>(status.status().code()),
                  std::string(status.status().message()).c_str());
    } else {
      std::printf("%s %s\n", address.c_str(),
                  HealthCheckResponse::ServingStatus_Name(*status).c_str());
    }
    all_serving &= status.ok() && *status == HealthCheckResponse::SERVING;
  }
  std::fflush(stdout);
  return all_serving ? 0 : 1;
}

}  // namespace arbor::cli
