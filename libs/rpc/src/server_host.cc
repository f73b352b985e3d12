#include "arbor/rpc/server_host.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>

#include "absl/strings/str_cat.h"
#include "arbor/rpc/parse_errors.h"
#include "spdlog/spdlog.h"

namespace arbor::rpc {

absl::StatusOr<std::unique_ptr<ServerHost>> ServerHost::Start(
    const ServerHostOptions& options, const std::vector<grpc::Service*>& services,
    std::shared_ptr<prometheus::Registry> registry) {
  std::unique_ptr<ServerHost> host(new ServerHost());
  host->options_ = options;
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(
      options.address,
      options.credentials != nullptr ? options.credentials : grpc::InsecureServerCredentials(),
      &host->port_);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams);
  grpc::ResourceQuota quota("arbor-server");
  quota.Resize(static_cast<size_t>(options.max_memory_bytes));
  builder.SetResourceQuota(quota);
  for (grpc::Service* s : services) builder.RegisterService(s);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(NewParseErrorInterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  host->server_ = builder.BuildAndStart();
  if (host->server_ == nullptr || host->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot serve on ", options.address));
  }
  host->server_->GetHealthCheckService()->SetServingStatus(options.serving);

  if (!options.health_address.empty()) {
    // A server of its own, with no service but the default health service: nothing else is
    // reachable without the mesh's credentials.
    grpc::ServerBuilder health;
    health.AddListeningPort(options.health_address, grpc::InsecureServerCredentials(),
                            &host->health_port_);
    health.SetMaxReceiveMessageSize(4096);
    host->health_ = health.BuildAndStart();
    if (host->health_ == nullptr || host->health_port_ <= 0) {
      host->health_port_ = -1;
      host->Shutdown();
      return absl::UnavailableError(
          absl::StrCat("cannot serve health checks on ", options.health_address));
    }
    host->health_->GetHealthCheckService()->SetServingStatus(options.serving);
  }
  if (!options.metrics_address.empty()) {
    auto metrics = MetricsServer::Start(options.metrics_address, std::move(registry));
    if (!metrics.ok()) {
      host->Shutdown();
      return metrics.status();
    }
    host->metrics_ = std::move(*metrics);
  }
  spdlog::info("serving address={} metrics_port={} health_port={}", host->address(),
               host->metrics_port(), host->health_port());
  return host;
}

ServerHost::~ServerHost() { Shutdown(); }

std::string ServerHost::address() const {
  // The configured host with the port actually bound (which differs when it was 0).
  return absl::StrCat(options_.address.substr(0, options_.address.rfind(':')), ":", port_);
}

int ServerHost::metrics_port() const { return metrics_ == nullptr ? -1 : metrics_->port(); }

void ServerHost::SetServing(bool serving) {
  absl::MutexLock lock(&mu_);
  if (shut_down_ || server_ == nullptr) return;
  server_->GetHealthCheckService()->SetServingStatus(serving);
  if (health_ != nullptr) health_->GetHealthCheckService()->SetServingStatus(serving);
}

void ServerHost::Shutdown(const std::function<void()>& before_drain) {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_ || server_ == nullptr) return;
    shut_down_ = true;
    server_->GetHealthCheckService()->SetServingStatus(false);
    if (health_ != nullptr) health_->GetHealthCheckService()->SetServingStatus(false);
  }
  spdlog::info("shutting down address={}: NOT_SERVING, draining", address());
  if (options_.shutdown_grace > absl::ZeroDuration()) absl::SleepFor(options_.shutdown_grace);
  if (before_drain) before_drain();
  server_->Shutdown(std::chrono::system_clock::now() +
                    absl::ToChronoMilliseconds(options_.drain_timeout));
  server_->Wait();
  // The health port closes last: a probe sees NOT_SERVING until the service is gone.
  if (health_ != nullptr) {
    health_->Shutdown(std::chrono::system_clock::now());
    health_->Wait();
  }
  metrics_.reset();
}

void BlockShutdownSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForShutdownSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

}  // namespace arbor::rpc
