// arbor-planner: tree-of-thought search as a service over the kv-store and the router. Tasks are
// checkpointed in the kv-store's state store; a planner restarted against it resumes the tasks
// still running there. Any number of planners may share one state store: each task is run by the
// holder of its lease, the others adopt a dead planner's tasks and answer for every task.
// SIGTERM/SIGINT: NOT_SERVING, grace, drain (running tasks stay checkpointed as running). Every
// flag can also be set from the environment as ARBOR_<FLAG>.
#include <arpa/inet.h>
#include <netdb.h>
#include <unistd.h>

#include <atomic>
#include <set>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "arbor/mesh/call.h"
#include "arbor/rpc/server_host.h"
#include "arbor/rpc/service_main.h"
#include "planner_service.h"
#include "remote_state_store.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, model, "models/game24-moe", "model folder; task presets in <model>/presets");
ABSL_FLAG(std::string, kvstore, "127.0.0.1:50051",
          "kv-store address (host:port), or its shards' in shard order, comma-separated: each "
          "task's sequences live on one shard (rendezvous hashing on the task)");
ABSL_FLAG(std::string, router, "127.0.0.1:50071",
          "router address (host:port), or several, comma-separated: each task keeps to one (its "
          "prompt prefix stays in that router's cache) and moves on while it is away or "
          "overloaded. dns:HOST:PORT stands for every address HOST resolves to (a headless "
          "Kubernetes Service), resolved again every 10 s (new routers are added)");
ABSL_FLAG(bool, router_affinity, true,
          "with several routers, keep each task on its own (its prompt prefix stays in that "
          "router's cache); false: each round goes to the next router in turn (round robin)");
ABSL_FLAG(double, router_load_factor, 1.25,
          "with router affinity, a round leaves its task's router for the next in the task's "
          "order while that one runs more than this factor times the mean of this planner's "
          "Extends per router (bounded-load consistent hashing)");
ABSL_FLAG(int, max_tasks, 64, "running tasks, over all tenants");
ABSL_FLAG(int, max_tasks_per_tenant, 4, "running tasks of one tenant");
ABSL_FLAG(int, default_max_nodes, 200, "Budget.max_nodes when a request leaves it 0");
ABSL_FLAG(int64_t, default_max_tokens, 200000, "Budget.max_tokens when a request leaves it 0");
ABSL_FLAG(int, io_threads, 64, "concurrent Extend calls, over all tasks");
ABSL_FLAG(int, io_threads_per_tenant, 0,
          "concurrent Extend calls of one tenant; 0 = io_threads less an eighth, the rest kept "
          "for other tenants");
ABSL_FLAG(int, call_timeout_ms, 120000, "deadline of every kv-store and router call");
ABSL_FLAG(int, heal_timeout_s, 300,
          "how long a running task keeps retrying when the kv-store or router is unreachable or "
          "lost its sequences (its own deadline may end it sooner)");
ABSL_FLAG(int, finished_retention_s, 86400,
          "how long a finished task's checkpoint stays in the state store before it is deleted");
ABSL_FLAG(std::string, tokens_file, "",
          "the clients' bearer tokens (SHA-256 hash -> tenant and quotas; re-read when it "
          "changes); required unless --insecure");
ABSL_FLAG(std::string, name, "",
          "this planner's name in its fleet (task leases name their holder): unique among the "
          "planners sharing a state store and kept across restarts, so a restarted planner takes "
          "its tasks back at once; default <hostname>/<--address>");
ABSL_FLAG(int, lease_ms, 10000,
          "how long a task's lease lasts unrenewed: another planner adopts the tasks of one that "
          "died within 1.25 leases (renewed every quarter)");
ABSL_FLAG(bool, insecure, false,
          "serve without authentication: any caller may name any tenant and see every task "
          "(a laptop, never a shared deployment)");

namespace {

// Every address `host_port` ("name:port") resolves to, as "ip:port" ("[ip6]:port"), sorted.
absl::StatusOr<std::vector<std::string>> Resolve(const std::string& host_port) {
  const size_t colon = host_port.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == host_port.size()) {
    return absl::InvalidArgumentError(absl::StrCat("dns:", host_port, ": expected dns:HOST:PORT"));
  }
  const std::string host = host_port.substr(0, colon), port = host_port.substr(colon + 1);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return absl::UnavailableError(absl::StrCat("cannot resolve ", host, ": ", gai_strerror(rc)));
  }
  std::set<std::string> addresses;
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    char ip[INET6_ADDRSTRLEN] = {};
    if (a->ai_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(a->ai_addr)->sin_addr, ip,
                sizeof(ip));
      addresses.insert(absl::StrCat(ip, ":", port));
    } else if (a->ai_family == AF_INET6) {
      inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(a->ai_addr)->sin6_addr, ip,
                sizeof(ip));
      addresses.insert(absl::StrCat("[", ip, "]:", port));
    }
  }
  freeaddrinfo(found);
  if (addresses.empty()) {
    return absl::UnavailableError(absl::StrCat(host, " resolves to no address"));
  }
  return std::vector<std::string>(addresses.begin(), addresses.end());
}

}  // namespace

int main(int argc, char** argv) {
  if (!arbor::rpc::InitServiceMain(
          argc, argv, "arbor-planner", "arbor-planner: tree-of-thought search over the mesh",
          {.address = "127.0.0.1:50081",
           .metrics_address = "127.0.0.1:9121",
           .max_message_mb = 4,  // requests are text (planner.proto's limits)
           .client_certificates = false})) {
    return 2;
  }
  std::unique_ptr<arbor::rpc::TokenAuthenticator> auth;
  if (const std::string tokens = absl::GetFlag(FLAGS_tokens_file); !tokens.empty()) {
    if (absl::GetFlag(FLAGS_insecure)) {
      spdlog::error("--tokens_file and --insecure contradict each other; pick one");
      return 2;
    }
    auto opened = arbor::rpc::TokenAuthenticator::Open(tokens);
    if (!opened.ok()) {
      spdlog::error("--tokens_file: {}", opened.status().ToString());
      return 2;
    }
    auth = *std::move(opened);
  } else if (absl::GetFlag(FLAGS_insecure)) {
    spdlog::warn(
        "INSECURE: --insecure serves every caller without authentication; any client can name "
        "any tenant and read, watch and cancel every task. Use --tokens_file on a shared mesh.");
  } else {
    spdlog::error("--tokens_file is required (or --insecure for an unauthenticated laptop mesh)");
    return 2;
  }
  std::string name = absl::GetFlag(FLAGS_name);
  if (name.empty()) {
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    name = absl::StrCat(host, "/", arbor::rpc::ServerHostOptionsFromFlags().address);
  }
  if (absl::GetFlag(FLAGS_router_load_factor) < 1) {
    spdlog::error("--router_load_factor {} is below 1", absl::GetFlag(FLAGS_router_load_factor));
    return 2;
  }
  if (absl::GetFlag(FLAGS_lease_ms) < 200) {
    spdlog::error("--lease_ms {} is below 200", absl::GetFlag(FLAGS_lease_ms));
    return 2;
  }
  std::vector<std::shared_ptr<grpc::Channel>> kv_channels;
  for (absl::string_view address :
       absl::StrSplit(absl::GetFlag(FLAGS_kvstore), ',', absl::SkipWhitespace())) {
    kv_channels.push_back(arbor::mesh::NewChannel(std::string(address)));
  }
  if (kv_channels.empty() || kv_channels.size() > 256) {
    spdlog::error("--kvstore names {} kv-stores; 1 to 256 shards", kv_channels.size());
    return 2;
  }
  std::vector<std::shared_ptr<grpc::Channel>> router_channels;
  std::vector<std::string> router_names, dns_names;
  for (absl::string_view entry :
       absl::StrSplit(absl::GetFlag(FLAGS_router), ',', absl::SkipWhitespace())) {
    std::vector<std::string> addresses = {std::string(entry)};
    if (absl::ConsumePrefix(&entry, "dns:")) {
      dns_names.emplace_back(entry);
      absl::StatusOr<std::vector<std::string>> resolved = Resolve(std::string(entry));
      if (!resolved.ok()) {
        spdlog::error("--router: {}", resolved.status().ToString());
        return 2;
      }
      addresses = *std::move(resolved);
      spdlog::info("--router dns:{} resolves to {}", dns_names.back(),
                   absl::StrJoin(addresses, ","));
    }
    for (const std::string& address : addresses) {
      router_channels.push_back(arbor::mesh::NewChannel(address));
      router_names.push_back(address);
    }
  }
  if (router_channels.empty()) {
    spdlog::error("--router names no router");
    return 2;
  }
  // The state store's calls end at shutdown too, however the kv-store hangs (after the tasks'
  // last writes).
  arbor::mesh::CallCanceller state_canceller;
  // One kv-store is waited for while it starts; with several shards, a call moves on to the
  // next shard instead.
  std::vector<std::unique_ptr<arbor::mesh::KvStoreClient>> state_clients;
  std::vector<arbor::mesh::KvStoreClient*> state_shards;
  for (const auto& channel : kv_channels) {
    state_clients.push_back(std::make_unique<arbor::mesh::KvStoreClient>(
        channel, arbor::mesh::ClientOptions{
                     .timeout = std::chrono::milliseconds(absl::GetFlag(FLAGS_call_timeout_ms)),
                     .wait_for_ready = kv_channels.size() == 1,
                     .canceller = &state_canceller}));
    state_shards.push_back(state_clients.back().get());
  }
  auto state = arbor::planner::NewRemoteStateStore(state_shards);
  auto registry = std::make_shared<prometheus::Registry>();
  auto service = arbor::planner::PlannerService::Create(
      std::move(kv_channels), std::move(router_channels), state.get(),
      {.model_dir = absl::GetFlag(FLAGS_model),
       .max_tasks = absl::GetFlag(FLAGS_max_tasks),
       .max_tasks_per_tenant = absl::GetFlag(FLAGS_max_tasks_per_tenant),
       .default_max_nodes = absl::GetFlag(FLAGS_default_max_nodes),
       .default_max_tokens = absl::GetFlag(FLAGS_default_max_tokens),
       .io_threads = absl::GetFlag(FLAGS_io_threads),
       .io_threads_per_tenant = absl::GetFlag(FLAGS_io_threads_per_tenant),
       .call_timeout = std::chrono::milliseconds(absl::GetFlag(FLAGS_call_timeout_ms)),
       .finished_retention = std::chrono::seconds(absl::GetFlag(FLAGS_finished_retention_s)),
       .heal_timeout = std::chrono::seconds(absl::GetFlag(FLAGS_heal_timeout_s)),
       .auth = auth.get(),
       .state_canceller = &state_canceller,
       .name = name,
       .lease = std::chrono::milliseconds(absl::GetFlag(FLAGS_lease_ms)),
       .router_affinity = absl::GetFlag(FLAGS_router_affinity),
       .router_load_factor = absl::GetFlag(FLAGS_router_load_factor),
       .router_names = router_names},
      *registry);
  if (!service.ok()) {
    spdlog::error("{}", service.status().ToString());
    return 1;
  }
  // NOT_SERVING until the checkpointed tasks are loaded (the state store may be down).
  arbor::rpc::ServerHostOptions host_options = arbor::rpc::ServerHostOptionsFromFlags();
  host_options.serving = false;
  auto host = arbor::rpc::ServerHost::Start(host_options, {service->get()}, registry);
  if (!host.ok()) {
    spdlog::error("{}", host.status().ToString());
    return 1;
  }
  spdlog::info("arbor-planner ready address={} metrics_port={} presets={}", (*host)->address(),
               (*host)->metrics_port(), (*service)->presets().size());
  (*service)->OnReady([h = host->get()] { h->SetServing(true); });
  // Routers behind DNS names: resolved again every 10 s; new ones join.
  std::atomic<bool> stop{false};
  std::thread resolver;
  if (!dns_names.empty()) {
    resolver = std::thread([&] {
      while (!stop) {
        for (int i = 0; i < 100 && !stop; ++i) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        for (const std::string& name : dns_names) {
          absl::StatusOr<std::vector<std::string>> resolved = Resolve(name);
          if (!resolved.ok()) {
            spdlog::warn("--router dns:{}: {}", name, resolved.status().ToString());
            continue;
          }
          for (const std::string& address : *resolved) {
            (*service)->AddRouter(arbor::mesh::NewChannel(address), address);
          }
        }
      }
    });
  }
  arbor::rpc::ServeUntilSignal(**host, [&] { (*service)->BeginShutdown(); });
  stop = true;
  if (resolver.joinable()) resolver.join();
  service->reset();
  return 0;
}
