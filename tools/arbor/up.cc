// `arbor up` starts the kv-store, N expert workers (the model's experts split evenly, each shard
// `--replicas` times) and the router as child processes on loopback, waits until every one
// reports SERVING on grpc.health.v1, prints the endpoints (and writes them to --ready_file), and
// stops them all, router first so its Extend calls drain, on SIGINT/SIGTERM, when its own parent
// dies, or when any child exits by itself.
#include "up.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "arbor/common/process.h"
#include "arbor/model/config.h"
#include "arbor/model/expert_spec.h"
#include "arbor/rpc/service_main.h"
#include "nlohmann/json.hpp"

ABSL_DECLARE_FLAG(std::string, model);
ABSL_FLAG(int, workers, 2, "arbor up: expert worker shards");
ABSL_FLAG(int, replicas, 1, "arbor up: processes per shard (replicas of the same experts)");
ABSL_FLAG(std::string, ports, "fixed",
          "arbor up: fixed (kv-store 50051, workers 50061.., router 50071, planner 50081; "
          "metrics 9091, 9101.., 9111, 9121) or auto (free loopback ports)");
ABSL_FLAG(bool, with_planner, true, "arbor up: start the planner too");
ABSL_FLAG(std::string, ready_file, "", "arbor up: write the endpoints here as JSON when ready");
ABSL_FLAG(std::string, log_dir, "",
          "arbor up: write each service's log to DIR/<name>.log (default: this terminal)");
ABSL_DECLARE_FLAG(std::string, log_level);  // passed on to every service
ABSL_FLAG(std::string, redis_url, "", "arbor up: the kv-store's state store (empty: in memory)");
ABSL_FLAG(std::string, bin_dir, "",
          "arbor up: where the service binaries are (default: beside arbor)");
ABSL_FLAG(std::string, backend, "auto",
          "arbor up: the routers' and workers' --backend; arbor generate (in process): where the "
          "engine and experts run. auto (cuda when built with CUDA and a GPU is present), cpu or "
          "cuda");
ABSL_FLAG(int, kv_cache_tokens, 65536, "arbor up: the router's KV cache, in tokens");
ABSL_FLAG(int, max_seqs, 64, "arbor up: sequences the router batches in one step");
ABSL_FLAG(int, start_timeout_s, 120, "arbor up: how long to wait for every service");
ABSL_FLAG(int, blas_threads, 0,
          "arbor up: OpenBLAS threads of every service; 0 = OpenBLAS default");

namespace arbor::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct Child {
  std::string name;
  std::string address;
  int metrics_port = 0;
  std::string detail;
  pid_t pid = -1;
};

bool PortFree(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

class PortPicker {
 public:
  explicit PortPicker(bool fixed) : fixed_(fixed) {}
  // `wanted` in fixed mode; a free port otherwise. -1 (with a message) when taken.
  int Pick(int wanted) {
    if (!fixed_) {
      int p;
      do {
        p = FreeLoopbackPort();
      } while (p > 0 && std::find(used_.begin(), used_.end(), p) != used_.end());
      used_.push_back(p);
      return p;
    }
    if (!PortFree(wanted)) {
      std::fprintf(stderr,
                   "arbor up: port %d is in use (is another arbor up running?); try --ports=auto\n",
                   wanted);
      return -1;
    }
    return wanted;
  }

 private:
  bool fixed_;
  std::vector<int> used_;
};

// Reaps children that exited; returns the first one found, or nullptr.
Child* Reap(std::vector<Child>& children, int* status) {
  for (Child& c : children) {
    if (c.pid > 0 && ::waitpid(c.pid, status, WNOHANG) == c.pid) {
      c.pid = -1;
      return &c;
    }
  }
  return nullptr;
}

// SIGTERM to `which`, then SIGKILL to what is left after `grace`.
void Stop(std::vector<Child*> which, std::chrono::seconds grace) {
  for (Child* c : which) {
    if (c->pid > 0) ::kill(c->pid, SIGTERM);
  }
  const auto deadline = Clock::now() + grace;
  for (Child* c : which) {
    while (c->pid > 0) {
      int status;
      if (::waitpid(c->pid, &status, WNOHANG) == c->pid) {
        c->pid = -1;
      } else if (Clock::now() > deadline) {
        std::fprintf(stderr, "arbor up: %s did not stop in time; killing it\n", c->name.c_str());
        ::kill(c->pid, SIGKILL);
        ::waitpid(c->pid, &status, 0);
        c->pid = -1;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  }
}

// The planner first (its tasks stay checkpointed), then the router (its Extends drain), then
// the rest.
void StopAll(std::vector<Child>& children) {
  std::vector<Child*> planner, router, rest;
  for (Child& c : children) {
    (c.name == "planner" ? planner : c.name == "router" ? router : rest).push_back(&c);
  }
  Stop(planner, std::chrono::seconds(15));
  Stop(router, std::chrono::seconds(15));
  Stop(rest, std::chrono::seconds(10));
}

const Child* Named(const std::vector<Child>& children, const std::string& name) {
  for (const Child& c : children) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

}  // namespace

int Up() {
  // Our parent dying (a terminal closed, a test runner killed) stops everything too.
  const pid_t parent = ::getppid();
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &signals, nullptr);
  if (::getppid() != parent) return 1;  // the parent died before prctl took effect

  const std::string model = absl::GetFlag(FLAGS_model);
  auto config = model::ModelConfig::Load(model);
  if (!config.ok()) {
    std::fprintf(stderr, "arbor up: %s\n", config.status().ToString().c_str());
    return 1;
  }
  const int n_workers = absl::GetFlag(FLAGS_workers);
  const int replicas = absl::GetFlag(FLAGS_replicas);
  if (n_workers < 1 || n_workers > config->num_hidden_layers * config->num_local_experts) {
    std::fprintf(stderr, "arbor up: --workers %d out of range [1, %d]\n", n_workers,
                 config->num_hidden_layers * config->num_local_experts);
    return 2;
  }
  if (replicas < 1 || replicas > 8 || n_workers * replicas > 64) {
    std::fprintf(stderr, "arbor up: --replicas %d out of range [1, 8] (at most 64 workers)\n",
                 replicas);
    return 2;
  }
  const std::string ports = absl::GetFlag(FLAGS_ports);
  if (ports != "fixed" && ports != "auto") {
    std::fprintf(stderr, "arbor up: --ports must be fixed or auto, not \"%s\"\n", ports.c_str());
    return 2;
  }
  if (ports == "fixed" && n_workers * replicas > 10) {
    std::fprintf(stderr, "arbor up: more than 10 workers need --ports=auto\n");
    return 2;
  }
  std::string bin_dir = absl::GetFlag(FLAGS_bin_dir);
  if (bin_dir.empty()) bin_dir = std::filesystem::read_symlink("/proc/self/exe").parent_path();
  for (const char* b : {"arbor-kvstore", "arbor-expert", "arbor-router", "arbor-planner"}) {
    if (!std::filesystem::exists(std::filesystem::path(bin_dir) / b)) {
      std::fprintf(stderr, "arbor up: %s/%s not found (build it, or give --bin_dir)\n",
                   bin_dir.c_str(), b);
      return 1;
    }
  }
  const std::string log_dir = absl::GetFlag(FLAGS_log_dir);
  if (!log_dir.empty()) std::filesystem::create_directories(log_dir);
  const std::string log_level = absl::GetFlag(FLAGS_log_level);

  PortPicker pick(ports == "fixed");
  std::vector<Child> children;
  auto add = [&](const std::string& name, int port, int metrics_port, const std::string& detail) {
    if (port < 0 || metrics_port < 0) return false;
    children.push_back({name, absl::StrCat("127.0.0.1:", port), metrics_port, detail});
    return true;
  };
  if (!add("kvstore", pick.Pick(50051), pick.Pick(9091), "")) return 1;
  const std::vector<std::vector<model::ExpertKey>> shards =
      model::SplitExpertsEvenly(config->num_hidden_layers, config->num_local_experts, n_workers);
  int index = 0;
  for (int s = 0; s < n_workers; ++s) {
    for (int r = 0; r < replicas; ++r, ++index) {
      if (!add(absl::StrCat("expert-", index), pick.Pick(50061 + index), pick.Pick(9101 + index),
               model::FormatExpertSpec(shards[s]))) {
        return 1;
      }
    }
  }
  if (!add("router", pick.Pick(50071), pick.Pick(9111), "")) return 1;
  if (absl::GetFlag(FLAGS_with_planner) && !add("planner", pick.Pick(50081), pick.Pick(9121), "")) {
    return 1;
  }

  std::vector<std::string> worker_addresses;
  for (const Child& c : children) {
    if (c.name.rfind("expert-", 0) == 0) worker_addresses.push_back(c.address);
  }
  const std::string kvstore = children.front().address;
  for (Child& c : children) {
    const std::string metrics = absl::StrCat("--metrics_address=127.0.0.1:", c.metrics_port);
    std::vector<std::string> argv;
    if (c.name == "kvstore") {
      argv = {bin_dir + "/arbor-kvstore", "--address=" + c.address, metrics, "--model=" + model,
              "--redis_url=" + absl::GetFlag(FLAGS_redis_url)};
    } else if (c.name == "planner") {
      argv = {bin_dir + "/arbor-planner",
              "--address=" + c.address,
              metrics,
              "--model=" + model,
              "--kvstore=" + kvstore,
              "--router=" + Named(children, "router")->address};
    } else if (c.name == "router") {
      argv = {bin_dir + "/arbor-router",
              "--address=" + c.address,
              metrics,
              "--model=" + model,
              "--kvstore=" + kvstore,
              "--workers=" + absl::StrJoin(worker_addresses, ","),
              absl::StrCat("--kv_cache_tokens=", absl::GetFlag(FLAGS_kv_cache_tokens)),
              absl::StrCat("--max_seqs=", absl::GetFlag(FLAGS_max_seqs)),
              absl::StrCat("--describe_timeout_ms=", absl::GetFlag(FLAGS_start_timeout_s) * 1000)};
    } else {
      argv = {bin_dir + "/arbor-expert", "--address=" + c.address, metrics, "--model=" + model,
              "--experts=" + c.detail};
    }
    argv.push_back("--log_level=" + log_level);
    if (c.name == "router" || c.name.rfind("expert-", 0) == 0) {
      argv.push_back("--backend=" + absl::GetFlag(FLAGS_backend));
    }
    if (c.name != "kvstore" && absl::GetFlag(FLAGS_blas_threads) > 0) {
      argv.push_back(absl::StrCat("--blas_threads=", absl::GetFlag(FLAGS_blas_threads)));
    }
    // A child stops when `arbor up` dies, whatever the cause; Ctrl-C reaches only `arbor up`,
    // which stops the children in order.
    c.pid = SpawnProcess(
        argv, {.log_path = log_dir.empty() ? "" : absl::StrCat(log_dir, "/", c.name, ".log"),
               .new_process_group = true,
               .parent_death_signal = SIGTERM});
  }

  // Wait for every service, watching for one that exits instead.
  const auto deadline = Clock::now() + std::chrono::seconds(absl::GetFlag(FLAGS_start_timeout_s));
  for (Child& c : children) {
    while (!rpc::HealthServing(c.address)) {
      int status = 0;
      if (Child* dead = Reap(children, &status)) {
        std::fprintf(stderr, "arbor up: %s exited while starting (status %d)%s\n",
                     dead->name.c_str(), status,
                     log_dir.empty()
                         ? ""
                         : absl::StrCat("; see ", log_dir, "/", dead->name, ".log").c_str());
        StopAll(children);
        return 1;
      }
      if (Clock::now() > deadline) {
        std::fprintf(stderr, "arbor up: %s at %s is not serving after %d s\n", c.name.c_str(),
                     c.address.c_str(), absl::GetFlag(FLAGS_start_timeout_s));
        StopAll(children);
        return 1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  nlohmann::json ready;
  std::printf("arbor up: ready (model %s)\n", model.c_str());
  for (const Child& c : children) {
    std::printf("  %-10s %-16s metrics http://127.0.0.1:%d/metrics%s%s\n", c.name.c_str(),
                c.address.c_str(), c.metrics_port, c.detail.empty() ? "" : "  experts ",
                c.detail.c_str());
    nlohmann::json entry = {{"name", c.name},
                            {"address", c.address},
                            {"metrics", absl::StrCat("127.0.0.1:", c.metrics_port)},
                            {"pid", c.pid}};
    if (!c.detail.empty()) entry["experts"] = c.detail;
    ready["services"].push_back(entry);
  }
  ready["kvstore"] = kvstore;
  ready["router"] = Named(children, "router")->address;
  if (const Child* p = Named(children, "planner")) ready["planner"] = p->address;
  std::printf("try: arbor generate --router %s --kvstore %s --prompt \"4 9 10 13\"\n",
              Named(children, "router")->address.c_str(), kvstore.c_str());
  if (const Child* p = Named(children, "planner")) {
    std::printf("     arbor solve --planner %s --preset game24 \"4 9 10 13\"\n",
                p->address.c_str());
  }
  std::printf("stop: Ctrl-C\n");
  std::fflush(stdout);
  const std::string ready_file = absl::GetFlag(FLAGS_ready_file);
  if (!ready_file.empty()) {
    const std::string tmp = ready_file + ".tmp";
    std::ofstream(tmp) << ready.dump(2) << "\n";
    std::filesystem::rename(tmp, ready_file);  // readers never see half a file
  }

  int code = 0;
  for (;;) {
    const timespec tick{0, 200 * 1000 * 1000};
    const int sig = ::sigtimedwait(&signals, nullptr, &tick);
    if (sig == SIGINT || sig == SIGTERM) {
      std::printf("arbor up: signal %d, stopping\n", sig);
      break;
    }
    int status = 0;
    if (Child* dead = Reap(children, &status)) {
      std::fprintf(stderr, "arbor up: %s exited unexpectedly (status %d); stopping the rest\n",
                   dead->name.c_str(), status);
      code = 1;
      break;
    }
    if (::getppid() != parent) break;  // orphaned: our parent is gone
  }
  StopAll(children);
  if (!ready_file.empty()) std::filesystem::remove(ready_file);
  std::printf("arbor up: stopped\n");
  return code;
}

}  // namespace arbor::cli
