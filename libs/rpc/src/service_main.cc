#include "arbor/rpc/service_main.h"

#include <cstdio>
#include <cstdlib>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/synchronization/mutex.h"
#include "arbor/common/logging.h"
#include "arbor/rpc/flags_env.h"
#include "arbor/rpc/status.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, log_level, "info", "trace, debug, info, warn, error or off");
ABSL_FLAG(std::string, address, "", "gRPC listen address (host:port); each service has a default");
ABSL_FLAG(std::string, metrics_address, "",
          "Prometheus /metrics listen address (host:port); empty serves none");
ABSL_FLAG(std::string, health_address, "",
          "plaintext grpc.health.v1-only listen address (host:port) for probes without the "
          "mesh's certificates, such as a kubelet's grpc probe; empty serves none");
ABSL_FLAG(int, max_message_mb, 64, "largest gRPC message received or sent, MiB");
ABSL_FLAG(int, shutdown_grace_ms, 0, "NOT_SERVING time before draining on SIGTERM");
ABSL_FLAG(std::string, tls_cert, "",
          "mTLS: this service's certificate (PEM; its common name states its role, "
          "arbor-<role>); re-read when it changes");
ABSL_FLAG(std::string, tls_key, "", "mTLS: the certificate's private key (PEM)");
ABSL_FLAG(std::string, tls_server_name, "",
          "mTLS: the name every mesh service's certificate carries (a DNS subject alternative "
          "name), checked instead of the dialled address's host; for peers dialled by pod IP");
ABSL_FLAG(std::string, tls_ca, "",
          "mTLS: the mesh's CA certificate (PEM); with it every call in and out is TLS");

namespace arbor::rpc {
namespace {
bool client_certificates = true;  // ServiceDefaults::client_certificates of this process
}  // namespace

void PrepareGrpcClients() {
  ::setenv("GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS", "50", /*overwrite=*/0);
}

bool InitServiceMain(int argc, char** argv, const char* program, const char* usage,
                     const ServiceDefaults& defaults) {
  PrepareGrpcClients();
  BlockShutdownSignals();
#ifdef NDEBUG
  // The lock-order graph absl keeps on every Mutex acquisition is a debugging aid (Debug and
  // sanitizer builds keep it); in a release service it is a few percent of the CPU.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
  absl::SetProgramUsageMessage(usage);
  // The service's defaults first, so the environment and then the command line override them.
  absl::SetFlag(&FLAGS_address, defaults.address);
  absl::SetFlag(&FLAGS_metrics_address, defaults.metrics_address);
  absl::SetFlag(&FLAGS_max_message_mb, defaults.max_message_mb);
  if (auto st = ApplyFlagEnvOverrides(); !st.ok()) {
    std::fprintf(stderr, "%s: %s\n", program, st.ToString().c_str());
    return false;
  }
  absl::ParseCommandLine(argc, argv);
  if (auto st = InitLogging(absl::GetFlag(FLAGS_log_level)); !st.ok()) {
    std::fprintf(stderr, "%s: %s\n", program, st.ToString().c_str());
    return false;
  }
  if (const int mb = absl::GetFlag(FLAGS_max_message_mb); mb < 1 || mb > 2047) {
    std::fprintf(stderr, "%s: --max_message_mb=%d is out of range [1, 2047]\n", program, mb);
    return false;
  }
  const TlsFiles tls = TlsFilesFromFlags();
  if (auto st = CheckTlsFiles(tls, "--tls_cert/--tls_key/--tls_ca"); !st.ok()) {
    std::fprintf(stderr, "%s: %s\n", program, std::string(st.message()).c_str());
    return false;
  }
  if (tls.enabled() && tls.cert.empty()) {
    std::fprintf(stderr, "%s: --tls_ca needs --tls_cert and --tls_key\n", program);
    return false;
  }
  client_certificates = defaults.client_certificates;
  SetDefaultChannelCredentials(MakeChannelCredentials(tls));
  SetDefaultServerName(absl::GetFlag(FLAGS_tls_server_name));
  return true;
}

TlsFiles TlsFilesFromFlags() {
  return {.cert = absl::GetFlag(FLAGS_tls_cert),
          .key = absl::GetFlag(FLAGS_tls_key),
          .ca = absl::GetFlag(FLAGS_tls_ca)};
}

PeerRoles PeerRolesFromFlags() {
  return TlsFilesFromFlags().enabled() ? PeerRoles::Required() : PeerRoles();
}

ServerHostOptions ServerHostOptionsFromFlags() {
  return {.address = absl::GetFlag(FLAGS_address),
          .metrics_address = absl::GetFlag(FLAGS_metrics_address),
          .health_address = absl::GetFlag(FLAGS_health_address),
          .max_message_bytes = absl::GetFlag(FLAGS_max_message_mb) << 20,
          .shutdown_grace = absl::Milliseconds(absl::GetFlag(FLAGS_shutdown_grace_ms)),
          .credentials = MakeServerCredentials(TlsFilesFromFlags(), client_certificates)};
}

void ServeUntilSignal(ServerHost& host, const std::function<void()>& before_drain) {
  const int sig = WaitForShutdownSignal();
  spdlog::info("signal {}: shutting down", sig);
  host.Shutdown(before_drain);
}

absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> CheckHealth(
    const std::string& address, std::chrono::milliseconds timeout) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  if (const std::string name = DefaultServerName(); !name.empty()) {
    args.SetSslTargetNameOverride(name);
  }
  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateCustomChannel(address, DefaultChannelCredentials(), args));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  grpc::health::v1::HealthCheckResponse resp;
  if (const grpc::Status st = stub->Check(&ctx, {}, &resp); !st.ok()) return FromGrpcStatus(st);
  return resp.status();
}

bool HealthServing(const std::string& address, std::chrono::milliseconds timeout) {
  const auto status = CheckHealth(address, timeout);
  return status.ok() && *status == grpc::health::v1::HealthCheckResponse::SERVING;
}

}  // namespace arbor::rpc
