#include "arbor/rpc/service_main.h"

#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "arbor/common/logging.h"
#include "arbor/rpc/flags_env.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, log_level, "info", "trace, debug, info, warn, error or off");

namespace arbor::rpc {

bool InitServiceMain(int argc, char** argv, const char* program, const char* usage) {
  BlockShutdownSignals();
  absl::SetProgramUsageMessage(usage);
  if (auto st = ApplyFlagEnvOverrides(); !st.ok()) {
    std::fprintf(stderr, "%s: %s\n", program, st.ToString().c_str());
    return false;
  }
  absl::ParseCommandLine(argc, argv);
  if (auto st = InitLogging(absl::GetFlag(FLAGS_log_level)); !st.ok()) {
    std::fprintf(stderr, "%s: %s\n", program, st.ToString().c_str());
    return false;
  }
  return true;
}

void ServeUntilSignal(ServerHost& host) {
  const int sig = WaitForShutdownSignal();
  spdlog::info("signal {}: shutting down", sig);
  host.Shutdown();
}

bool HealthServing(const std::string& address, std::chrono::milliseconds timeout) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  grpc::health::v1::HealthCheckResponse resp;
  return stub->Check(&ctx, {}, &resp).ok() &&
         resp.status() == grpc::health::v1::HealthCheckResponse::SERVING;
}

}  // namespace arbor::rpc
