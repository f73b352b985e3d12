#include "health.h"

#include <chrono>
#include <cstdio>

#include "absl/flags/flag.h"
#include "arbor/rpc/tls.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"

ABSL_FLAG(int, health_timeout_ms, 1000, "health: the deadline of each check");

namespace arbor::cli {

int Health(const std::vector<std::string>& addresses) {
  using grpc::health::v1::HealthCheckResponse;
  if (addresses.empty()) {
    std::fprintf(stderr, "arbor health: give one or more addresses (host:port)\n");
    return 2;
  }
  bool all_serving = true;
  for (const std::string& address : addresses) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a fresh connection per check
    if (const std::string name = rpc::DefaultServerName(); !name.empty()) {
      args.SetSslTargetNameOverride(name);
    }
    auto stub = grpc::health::v1::Health::NewStub(
        grpc::CreateCustomChannel(address, rpc::DefaultChannelCredentials(), args));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(absl::GetFlag(FLAGS_health_timeout_ms)));
    HealthCheckResponse resp;
    const grpc::Status st = stub->Check(&ctx, {}, &resp);
    if (!st.ok()) {
      std::printf("%s UNREACHABLE %d %s\n", address.c_str(), static_cast<int>(st.error_code()),
                  st.error_message().c_str());
      all_serving = false;
      continue;
    }
    std::printf("%s %s\n", address.c_str(),
                HealthCheckResponse::ServingStatus_Name(resp.status()).c_str());
    all_serving &= resp.status() == HealthCheckResponse::SERVING;
  }
  std::fflush(stdout);
  return all_serving ? 0 : 1;
}

}  // namespace arbor::cli
