// `arbor up` starts the state store (its own redis-server, append-only in the data folder, unless
// --state says otherwise), the kv-store, N expert workers (the model's experts split evenly, each
// shard
// `--replicas` times; none with --workers 0, where the router runs every expert) and the router as
// child processes on loopback, waits until every one reports SERVING on grpc.health.v1, prints
// the endpoints (and writes them to --ready_file), restarts a child that exits (with backoff, as a
// kubelet would), and stops them all, router first so its Extend calls drain, on SIGINT/SIGTERM,
// when its own parent dies, or when a child cannot stay up.
#include "up.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "arbor/common/process.h"
#include "arbor/common/random_id.h"
#include "arbor/common/status_macros.h"
#include "arbor/model/config.h"
#include "arbor/model/expert_spec.h"
#include "arbor/rpc/service_main.h"
#include "client_auth.h"
#include "mesh_certs.h"
#include "nlohmann/json.hpp"

ABSL_DECLARE_FLAG(std::string, model);
ABSL_FLAG(int, workers, 2,
          "arbor up: expert worker shards; 0 runs every expert inside the router (one process "
          "for the model: no RunExperts round trips, for a small model on one machine)");
ABSL_FLAG(int, replicas, 1, "arbor up: processes per shard (replicas of the same experts)");
ABSL_FLAG(int, routers, 1,
          "arbor up: routers (1-8); the planner keeps each task on one and moves it while that "
          "one is away");
ABSL_FLAG(int, kvstores, 1,
          "arbor up: kv-store shards (1-8; several need --state=redis or an external Redis, which "
          "they share): each task's sequences live on one");
ABSL_FLAG(int, planners, 1,
          "arbor up: planners (1-8) on the one state store: each task runs on the planner holding "
          "its lease, the others adopt the tasks of one that dies and answer for every task");
ABSL_FLAG(int, lease_ms, 10000, "arbor up: the planners' task lease (--lease_ms of arbor-planner)");
ABSL_FLAG(std::string, ports, "fixed",
          "arbor up: fixed (kv-store 50051, workers 50061.., router 50071, planner 50081; "
          "metrics 9091, 9101.., 9111, 9121) or auto (free loopback ports)");
ABSL_FLAG(bool, with_planner, true, "arbor up: start the planner too");
ABSL_FLAG(std::string, ready_file, "", "arbor up: write the endpoints here as JSON when ready");
ABSL_FLAG(std::string, log_dir, "",
          "arbor up: write each service's log to DIR/<name>.log (default: this terminal)");
ABSL_DECLARE_FLAG(std::string, log_level);  // passed on to every service
ABSL_FLAG(std::string, state, "redis",
          "arbor up: where task checkpoints live. redis: a redis-server of its own, append-only "
          "in <data_dir>/redis, so tasks survive a restart of any service and of arbor up itself; "
          "memory: in the kv-store (gone when it restarts); redis://host:port[/db]: an external "
          "Redis (password in $ARBOR_REDIS_PASSWORD)");
ABSL_FLAG(std::string, bin_dir, "",
          "arbor up: where the service binaries are (default: beside arbor)");
ABSL_FLAG(std::string, backend, "auto",
          "arbor up: the routers' and workers' --backend; arbor generate (in process): where the "
          "engine and experts run. auto (cuda when built with CUDA and a GPU is present), cpu or "
          "cuda");
ABSL_FLAG(int, kv_cache_tokens, 65536, "arbor up: the router's KV cache, in tokens");
ABSL_FLAG(
    std::string, expert_wire_dtype, "f32",
    "arbor up: the router's --expert_wire_dtype (f32, or bf16: half the bytes per RunExperts)");
ABSL_FLAG(int, max_seqs, 64, "arbor up: sequences the router batches in one step");
ABSL_FLAG(int, start_timeout_s, 120, "arbor up: how long to wait for every service");
ABSL_FLAG(std::string, data_dir, "",
          "arbor up: where the mesh's credentials live (token, tokens); default ~/.arbor");
ABSL_FLAG(bool, insecure, false,
          "arbor up: run the planner without authentication (any client, any tenant)");
ABSL_FLAG(int, blas_threads, 0,
          "arbor up: OpenBLAS threads of routers and expert workers; 0 = OpenBLAS's default for "
          "routers and 1 for expert workers (they share the machine's cores)");

namespace arbor::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct Child {
  std::string name;
  std::string address;
  int metrics_port = 0;
  std::string detail;
  pid_t pid = -1;
  // Supervision: restarts so far, when the last start was, the next start's delay (doubling
  // while it keeps exiting), when a pending restart is due, and its recent exits.
  int restarts = 0;
  Clock::time_point started;
  std::chrono::milliseconds backoff{0};
  Clock::time_point restart_at;
  std::deque<Clock::time_point> exits;
};

// A child that exits is started again after a backoff of 0.5 s, doubling up to 30 s, that starts
// over once it has stayed up a minute; one that exits more than 5 times in 2 minutes cannot stay
// up, and `arbor up` stops.
constexpr std::chrono::milliseconds kFirstBackoff{500}, kMaxBackoff{30000};
constexpr std::chrono::seconds kStableAfter{60}, kExitWindow{120};
constexpr size_t kMaxExitsInWindow = 5;

// "exit code 3", "killed by signal 9".
std::string ExitText(int status) {
  if (WIFSIGNALED(status)) return absl::StrCat("killed by signal ", WTERMSIG(status));
  if (WIFEXITED(status)) return absl::StrCat("exit code ", WEXITSTATUS(status));
  return absl::StrCat("status ", status);
}

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

bool IsRouter(const Child& c) { return c.name == "router" || c.name.rfind("router-", 0) == 0; }
bool IsKvStore(const Child& c) { return c.name == "kvstore" || c.name.rfind("kvstore-", 0) == 0; }
const Child* FirstKvStore(const std::vector<Child>& children) {
  for (const Child& c : children) {
    if (IsKvStore(c)) return &c;
  }
  return nullptr;
}
// The kv-store shards' addresses in shard order, comma-separated (every router's and planner's
// --kvstore).
std::string KvStoreList(const std::vector<Child>& children) {
  std::vector<std::string> shards;
  for (const Child& c : children) {
    if (IsKvStore(c)) shards.push_back(c.address);
  }
  return absl::StrJoin(shards, ",");
}

bool IsPlanner(const Child& c) { return c.name == "planner" || c.name.rfind("planner-", 0) == 0; }

const Child* FirstPlanner(const std::vector<Child>& children) {
  for (const Child& c : children) {
    if (IsPlanner(c)) return &c;
  }
  return nullptr;
}

const Child* FirstRouter(const std::vector<Child>& children) {
  for (const Child& c : children) {
    if (IsRouter(c)) return &c;
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
// the rest, Redis last.
void StopAll(std::vector<Child>& children) {
  std::vector<Child*> planner, router, rest, redis;
  for (Child& c : children) {
    (IsPlanner(c)        ? planner
     : IsRouter(c)       ? router
     : c.name == "redis" ? redis
                         : rest)
        .push_back(&c);
  }
  Stop(planner, std::chrono::seconds(15));
  Stop(router, std::chrono::seconds(15));
  Stop(rest, std::chrono::seconds(10));
  Stop(redis, std::chrono::seconds(10));  // last: the kv-store's state calls are done
}

const Child* Named(const std::vector<Child>& children, const std::string& name) {
  for (const Child& c : children) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

// What the flags ask for, checked.
struct UpPlan {
  std::string model;
  model::ModelConfig config;
  int workers = 0, replicas = 0;
  bool fixed_ports = true;
  std::string bin_dir, log_dir, log_level;
  std::string data_dir;
  std::string tokens_file;  // the planner's; empty with --insecure
  std::string tls_dir;      // the mesh's certificates; empty with --insecure
  // The state store: "memory", an external redis:// url, or "redis" (our own: its folder holds
  // its config and append-only file).
  std::string state;
  std::string redis_dir, redis_password;
};

// Our own redis-server's folder (readable by the user only) and its password: kept in
// <dir>/password (0600; made at the first start) for the kv-store, and in the config file, never
// on a command line.
absl::StatusOr<std::string> PrepareRedis(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  std::filesystem::permissions(dir, std::filesystem::perms::owner_all,
                               std::filesystem::perm_options::replace, ec);
  const std::string password_file = dir + "/password";
  std::string password;
  if (std::ifstream in(password_file); in && std::getline(in, password) && !password.empty()) {
    return password;
  }
  password = RandomHex(24);
  ARBOR_RETURN_IF_ERROR(WriteAtomically(password_file, password + "\n", 0600));
  return password;
}

// The config of our own redis-server on `port`: loopback only, `password`, append-only
// persistence (fsync every second) in `dir`, no RDB snapshots.
absl::Status WriteRedisConfig(const std::string& dir, int port, const std::string& password) {
  return WriteAtomically(dir + "/redis.conf",
                         absl::StrCat("# written by arbor up at every start\nport ", port,
                                      "\nbind 127.0.0.1\nprotected-mode yes\ndir \"", dir,
                                      "\"\nappendonly yes\nappendfsync everysec\nsave \"\"\n"
                                      "requirepass ",
                                      password, "\nloglevel warning\ndaemonize no\n"),
                         0600);
}

// The plan, or the exit status (1: the model or a binary is missing; 2: a bad flag) after a
// message on stderr.
std::variant<UpPlan, int> PlanFromFlags() {
  UpPlan plan;
  plan.model = absl::GetFlag(FLAGS_model);
  auto config = model::ModelConfig::Load(plan.model);
  if (!config.ok()) {
    std::fprintf(stderr, "arbor up: %s\n", config.status().ToString().c_str());
    return 1;
  }
  plan.config = *config;
  plan.workers = absl::GetFlag(FLAGS_workers);
  plan.replicas = absl::GetFlag(FLAGS_replicas);
  const int experts = config->num_hidden_layers * config->num_local_experts;
  if (plan.workers < 0 || plan.workers > experts) {
    std::fprintf(stderr, "arbor up: --workers %d out of range [0, %d]\n", plan.workers, experts);
    return 2;
  }
  if (plan.replicas < 1 || plan.replicas > 8 || plan.workers * plan.replicas > 64) {
    std::fprintf(stderr, "arbor up: --replicas %d out of range [1, 8] (at most 64 workers)\n",
                 plan.replicas);
    return 2;
  }
  if (absl::GetFlag(FLAGS_routers) < 1 || absl::GetFlag(FLAGS_routers) > 8) {
    std::fprintf(stderr, "arbor up: --routers %d out of range [1, 8]\n",
                 absl::GetFlag(FLAGS_routers));
    return 2;
  }
  if (absl::GetFlag(FLAGS_kvstores) < 1 || absl::GetFlag(FLAGS_kvstores) > 8) {
    std::fprintf(stderr, "arbor up: --kvstores %d out of range [1, 8]\n",
                 absl::GetFlag(FLAGS_kvstores));
    return 2;
  }
  if (absl::GetFlag(FLAGS_planners) < 1 || absl::GetFlag(FLAGS_planners) > 8) {
    std::fprintf(stderr, "arbor up: --planners %d out of range [1, 8]\n",
                 absl::GetFlag(FLAGS_planners));
    return 2;
  }
  if (absl::GetFlag(FLAGS_lease_ms) < 200) {
    std::fprintf(stderr, "arbor up: --lease_ms %d is below 200\n", absl::GetFlag(FLAGS_lease_ms));
    return 2;
  }
  const std::string ports = absl::GetFlag(FLAGS_ports);
  if (ports != "fixed" && ports != "auto") {
    std::fprintf(stderr, "arbor up: --ports must be fixed or auto, not \"%s\"\n", ports.c_str());
    return 2;
  }
  plan.fixed_ports = ports == "fixed";
  if (plan.fixed_ports && plan.workers * plan.replicas > 10) {
    std::fprintf(stderr, "arbor up: more than 10 workers need --ports=auto\n");
    return 2;
  }
  plan.bin_dir = absl::GetFlag(FLAGS_bin_dir);
  if (plan.bin_dir.empty()) {
    plan.bin_dir = std::filesystem::read_symlink("/proc/self/exe").parent_path();
  }
  for (const char* b : {"arbor-kvstore", "arbor-expert", "arbor-router", "arbor-planner"}) {
    if (!std::filesystem::exists(std::filesystem::path(plan.bin_dir) / b)) {
      std::fprintf(stderr, "arbor up: %s/%s not found (build it, or give --bin_dir)\n",
                   plan.bin_dir.c_str(), b);
      return 1;
    }
  }
  plan.log_dir = absl::GetFlag(FLAGS_log_dir);
  plan.log_level = absl::GetFlag(FLAGS_log_level);
  plan.data_dir = absl::GetFlag(FLAGS_data_dir);
  if (plan.data_dir.empty()) plan.data_dir = DefaultDataDir();
  plan.state = absl::GetFlag(FLAGS_state);
  if (absl::GetFlag(FLAGS_kvstores) > 1 && plan.state == "memory") {
    std::fprintf(stderr,
                 "arbor up: --kvstores %d needs a state store the shards share (--state=redis or "
                 "redis://...), not --state=memory\n",
                 absl::GetFlag(FLAGS_kvstores));
    return 2;
  }
  if (plan.state == "redis") {
    plan.redis_dir = plan.data_dir + "/redis";
    absl::StatusOr<std::string> password = PrepareRedis(plan.redis_dir);
    if (!password.ok()) {
      std::fprintf(stderr, "arbor up: --state=redis: %s\n",
                   std::string(password.status().message()).c_str());
      return 1;
    }
    plan.redis_password = *std::move(password);
  } else if (plan.state != "memory" && plan.state.rfind("redis://", 0) != 0) {
    std::fprintf(stderr,
                 "arbor up: --state must be redis, memory or a redis://host:port url, not \"%s\"\n",
                 plan.state.c_str());
    return 2;
  } else if (plan.state.find('@') != std::string::npos) {
    std::fprintf(stderr,
                 "arbor up: --state carries a password; put it in $ARBOR_REDIS_PASSWORD instead\n");
    return 2;
  }
  if (absl::GetFlag(FLAGS_insecure)) {
    std::fprintf(stderr,
                 "arbor up: INSECURE: no TLS and no tokens (--insecure); any client can call any "
                 "service, name any tenant and read or cancel every task. Clients need "
                 "--tls_dir=none.\n");
    return plan;
  }
  plan.tls_dir = plan.data_dir + "/tls";
  if (absl::Status st = EnsureMeshCertificates(plan.tls_dir); !st.ok()) {
    std::fprintf(stderr, "arbor up: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  // `arbor up` itself checks its children's health as an operator.
  rpc::SetDefaultChannelCredentials(
      rpc::MakeChannelCredentials(MeshTlsFiles(plan.tls_dir, rpc::Role::kOperator)));
  if (absl::GetFlag(FLAGS_with_planner)) {
    absl::StatusOr<std::string> tokens = EnsureLocalToken(plan.data_dir);
    if (!tokens.ok()) {
      std::fprintf(stderr, "arbor up: %s\n", std::string(tokens.status().message()).c_str());
      return 1;
    }
    plan.tokens_file = *tokens;
  }
  return plan;
}

// The services to start, kv-store first, with their ports; false (after a message) when a
// fixed port is taken.
bool PlanChildren(const UpPlan& plan, std::vector<Child>* children) {
  PortPicker pick(plan.fixed_ports);
  auto add = [&](const std::string& name, int port, int metrics_port, const std::string& detail) {
    if (port < 0 || metrics_port < 0) return false;
    children->push_back({name, absl::StrCat("127.0.0.1:", port), metrics_port, detail});
    return true;
  };
  if (!plan.redis_dir.empty()) {
    const int port = pick.Pick(50090);
    if (port < 0) return false;
    if (absl::Status st = WriteRedisConfig(plan.redis_dir, port, plan.redis_password); !st.ok()) {
      std::fprintf(stderr, "arbor up: %s\n", std::string(st.message()).c_str());
      return false;
    }
    if (!add("redis", port, 0, "")) return false;
  }
  const int kvstores = absl::GetFlag(FLAGS_kvstores);
  for (int k = 0; k < kvstores; ++k) {
    // One kv-store keeps the plain name; shards are kvstore-0, kvstore-1, ... (--shard=k).
    if (!add(kvstores == 1 ? "kvstore" : absl::StrCat("kvstore-", k), pick.Pick(50051 + k),
             pick.Pick(9091 + k), "")) {
      return false;
    }
  }
  const std::vector<std::vector<model::ExpertKey>> shards = model::SplitExpertsEvenly(
      plan.config.num_hidden_layers, plan.config.num_local_experts, plan.workers);
  int index = 0;
  for (int s = 0; s < plan.workers; ++s) {
    for (int r = 0; r < plan.replicas; ++r, ++index) {
      if (!add(absl::StrCat("expert-", index), pick.Pick(50061 + index), pick.Pick(9101 + index),
               model::FormatExpertSpec(shards[s]))) {
        return false;
      }
    }
  }
  const int routers = absl::GetFlag(FLAGS_routers);
  for (int r = 0; r < routers; ++r) {
    // One router keeps the plain name; several are router-0, router-1, ...
    if (!add(routers == 1 ? "router" : absl::StrCat("router-", r), pick.Pick(50071 + r),
             pick.Pick(9111 + r), "")) {
      return false;
    }
  }
  const int planners = absl::GetFlag(FLAGS_with_planner) ? absl::GetFlag(FLAGS_planners) : 0;
  for (int p = 0; p < planners; ++p) {
    if (!add(planners == 1 ? "planner" : absl::StrCat("planner-", p), pick.Pick(50081 + p),
             pick.Pick(9121 + p), "")) {
      return false;
    }
  }
  return true;
}

// The command line of child `c`.
std::vector<std::string> ChildArgv(const UpPlan& plan, const Child& c,
                                   const std::vector<Child>& children) {
  std::vector<std::string> workers;
  for (const Child& w : children) {
    if (w.name.rfind("expert-", 0) == 0) workers.push_back(w.address);
  }
  if (c.name == "redis") return {"redis-server", plan.redis_dir + "/redis.conf"};
  const std::string kvstore = KvStoreList(children);
  const std::string bin = plan.bin_dir + "/arbor-";
  std::vector<std::string> argv = {"", "--address=" + c.address,
                                   absl::StrCat("--metrics_address=127.0.0.1:", c.metrics_port),
                                   "--model=" + plan.model, "--log_level=" + plan.log_level};
  if (IsKvStore(c)) {
    argv[0] = bin + "kvstore";
    int shard = 0;
    for (const Child& k : children) {
      if (&k == &c) break;
      shard += IsKvStore(k);
    }
    argv.push_back(absl::StrCat("--shard=", shard));
    if (const Child* redis = Named(children, "redis")) {
      argv.push_back("--redis_url=redis://" + redis->address);
      argv.push_back("--redis_password_file=" + plan.redis_dir + "/password");
    } else if (plan.state != "memory") {
      argv.push_back("--redis_url=" + plan.state);
    }
  } else if (IsPlanner(c)) {
    argv[0] = bin + "planner";
    argv.push_back("--kvstore=" + kvstore);
    // Its name in the fleet: the same after a restart, so it takes its tasks back at once.
    argv.push_back("--name=" + c.name);
    argv.push_back(absl::StrCat("--lease_ms=", absl::GetFlag(FLAGS_lease_ms)));
    std::vector<std::string> routers;
    for (const Child& r : children) {
      if (IsRouter(r)) routers.push_back(r.address);
    }
    argv.push_back("--router=" + absl::StrJoin(routers, ","));
    argv.push_back(plan.tokens_file.empty() ? "--insecure" : "--tokens_file=" + plan.tokens_file);
  } else if (IsRouter(c)) {
    argv[0] = bin + "router";
    argv.push_back("--kvstore=" + kvstore);
    argv.push_back(workers.empty() ? "--local_experts"
                                   : "--workers=" + absl::StrJoin(workers, ","));
    argv.push_back(absl::StrCat("--kv_cache_tokens=", absl::GetFlag(FLAGS_kv_cache_tokens)));
    argv.push_back(absl::StrCat("--max_seqs=", absl::GetFlag(FLAGS_max_seqs)));
    if (!workers.empty()) {
      argv.push_back("--expert_wire_dtype=" + absl::GetFlag(FLAGS_expert_wire_dtype));
    }
    argv.push_back(
        absl::StrCat("--describe_timeout_ms=", absl::GetFlag(FLAGS_start_timeout_s) * 1000));
  } else {
    argv[0] = bin + "expert";
    argv.push_back("--experts=" + c.detail);
  }
  if (!plan.tls_dir.empty()) {
    const rpc::Role role = IsKvStore(c)   ? rpc::Role::kKvStore
                           : IsPlanner(c) ? rpc::Role::kPlanner
                           : IsRouter(c)  ? rpc::Role::kRouter
                                          : rpc::Role::kExpert;
    const rpc::TlsFiles tls = MeshTlsFiles(plan.tls_dir, role);
    argv.push_back("--tls_cert=" + tls.cert);
    argv.push_back("--tls_key=" + tls.key);
    argv.push_back("--tls_ca=" + tls.ca);
  }
  // The services that run the model: only they take --backend and --blas_threads.
  if (IsRouter(c) || c.name.rfind("expert-", 0) == 0) {
    argv.push_back("--backend=" + absl::GetFlag(FLAGS_backend));
    int blas = absl::GetFlag(FLAGS_blas_threads);
    // Every process here shares this machine's cores: expert workers, whose products are one
    // expert's rows of a step, keep OpenBLAS on their calling thread unless told otherwise, so
    // their idle BLAS threads do not spin (sched_yield) against the router's step.
    if (blas == 0 && !IsRouter(c)) blas = 1;
    if (blas > 0) argv.push_back(absl::StrCat("--blas_threads=", blas));
  }
  return argv;
}

// Starts child `c` (its log appended to), stopped whenever `arbor up` dies, whatever the cause;
// Ctrl-C reaches only `arbor up`, which stops the children in order.
pid_t Spawn(const UpPlan& plan, const Child& c, const std::vector<Child>& children) {
  return SpawnProcess(
      ChildArgv(plan, c, children),
      {.log_path = plan.log_dir.empty() ? "" : absl::StrCat(plan.log_dir, "/", c.name, ".log"),
       .search_path = c.name == "redis",
       .new_process_group = true,
       .parent_death_signal = SIGTERM});
}

// Waits for every child to serve; false (after a message) if one exits or the time runs out.
bool WaitUntilServing(std::vector<Child>& children, const std::string& log_dir) {
  const auto deadline = Clock::now() + std::chrono::seconds(absl::GetFlag(FLAGS_start_timeout_s));
  for (Child& c : children) {
    // Redis has no gRPC health service: it is up once it accepts connections.
    auto serving = [&] {
      return c.name == "redis"
                 ? LoopbackPortAccepts(std::stoi(c.address.substr(c.address.rfind(':') + 1)))
                 : rpc::HealthServing(c.address);
    };
    while (!serving()) {
      int status = 0;
      if (Child* dead = Reap(children, &status)) {
        std::fprintf(stderr, "arbor up: %s exited while starting (status %d)%s\n",
                     dead->name.c_str(), status,
                     log_dir.empty()
                         ? ""
                         : absl::StrCat("; see ", log_dir, "/", dead->name, ".log").c_str());
        return false;
      }
      if (Clock::now() > deadline) {
        std::fprintf(stderr, "arbor up: %s at %s is not serving after %d s\n", c.name.c_str(),
                     c.address.c_str(), absl::GetFlag(FLAGS_start_timeout_s));
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  return true;
}

// Writes --ready_file (if any): the endpoints, and each service's pid and restarts.
void WriteReady(const UpPlan& plan, const std::vector<Child>& children) {
  const std::string ready_file = absl::GetFlag(FLAGS_ready_file);
  if (ready_file.empty()) return;
  nlohmann::json ready;
  for (const Child& c : children) {
    nlohmann::json entry = {
        {"name", c.name}, {"address", c.address}, {"pid", c.pid}, {"restarts", c.restarts}};
    if (c.metrics_port > 0) entry["metrics"] = absl::StrCat("127.0.0.1:", c.metrics_port);
    if (!c.detail.empty()) entry["experts"] = c.detail;
    ready["services"].push_back(entry);
  }
  // "kvstore": the first shard (any shard takes new sequences and state calls); "kvstores": all.
  ready["kvstore"] = FirstKvStore(children)->address;
  for (const Child& k : children) {
    if (IsKvStore(k)) ready["kvstores"].push_back(k.address);
  }
  ready["state"] = plan.state;
  if (const Child* redis = Named(children, "redis")) ready["redis"] = redis->address;
  ready["router"] = FirstRouter(children)->address;
  for (const Child& r : children) {
    if (IsRouter(r)) ready["routers"].push_back(r.address);
  }
  if (const Child* p = FirstPlanner(children)) ready["planner"] = p->address;
  for (const Child& p : children) {
    if (IsPlanner(p)) ready["planners"].push_back(p.address);
  }
  if (!plan.tls_dir.empty()) ready["tls_dir"] = plan.tls_dir;
  if (!plan.tokens_file.empty()) {
    ready["token_file"] = plan.data_dir + "/token";
    ready["tokens_file"] = plan.tokens_file;
  }
  const std::string tmp = ready_file + ".tmp";
  std::ofstream(tmp) << ready.dump(2) << "\n";
  std::filesystem::rename(tmp, ready_file);  // readers never see half a file
}

// Prints the endpoints and writes --ready_file.
void AnnounceReady(const UpPlan& plan, const std::vector<Child>& children) {
  std::printf("arbor up: ready (model %s)\n", plan.model.c_str());
  for (const Child& c : children) {
    if (c.name == "redis") {
      std::printf("  %-10s %-16s append-only in %s\n", c.name.c_str(), c.address.c_str(),
                  plan.redis_dir.c_str());
      continue;
    }
    std::printf("  %-10s %-16s metrics http://127.0.0.1:%d/metrics%s%s\n", c.name.c_str(),
                c.address.c_str(), c.metrics_port, c.detail.empty() ? "" : "  experts ",
                c.detail.c_str());
  }
  if (plan.state == "memory") {
    std::printf(
        "state: in the kv-store's memory (--state=memory): a kv-store restart loses every "
        "task checkpoint\n");
  }
  const std::string& kvstore = FirstKvStore(children)->address;
  if (!plan.tls_dir.empty()) {
    std::printf(
        "mTLS: every service's certificate and the CA are in %s (arbor reads ~/.arbor/tls "
        "or $ARBOR_TLS_DIR)\n",
        plan.tls_dir.c_str());
  }
  if (!plan.tokens_file.empty()) {
    std::printf(
        "planner token: %s/token (arbor and examples/python read ~/.arbor/token or "
        "$ARBOR_TOKEN_FILE); tenants: %s\n",
        plan.data_dir.c_str(), plan.tokens_file.c_str());
  }
  std::printf("try: arbor generate --router %s --kvstore %s --prompt \"4 9 10 13\"\n",
              FirstRouter(children)->address.c_str(), kvstore.c_str());
  if (const Child* p = FirstPlanner(children)) {
    std::printf("     arbor solve --planner %s --preset game24 \"4 9 10 13\"\n",
                p->address.c_str());
  }
  std::printf("a service that exits is restarted; stop: Ctrl-C\n");
  std::fflush(stdout);
  WriteReady(plan, children);
}

// Runs until a signal, a child that cannot stay up, or our parent's death; the exit status. A
// child that exits is restarted after its backoff (as a kubelet would), logged and counted.
int Supervise(const sigset_t& signals, pid_t parent, const UpPlan& plan,
              std::vector<Child>& children) {
  for (;;) {
    const timespec tick{0, 100 * 1000 * 1000};
    const int sig = ::sigtimedwait(&signals, nullptr, &tick);
    if (sig == SIGINT || sig == SIGTERM) {
      std::printf("arbor up: signal %d, stopping\n", sig);
      return 0;
    }
    auto now = Clock::now();
    int status = 0;
    while (Child* dead = Reap(children, &status)) {
      if (now - dead->started >= kStableAfter) dead->backoff = std::chrono::milliseconds(0);
      dead->backoff =
          dead->backoff.count() == 0 ? kFirstBackoff : std::min(2 * dead->backoff, kMaxBackoff);
      dead->exits.push_back(now);
      while (now - dead->exits.front() > kExitWindow) dead->exits.pop_front();
      if (dead->exits.size() > kMaxExitsInWindow) {
        std::fprintf(stderr,
                     "arbor up: %s exited (%s), %zu times in %lld s: it cannot stay up; stopping "
                     "the rest\n",
                     dead->name.c_str(), ExitText(status).c_str(), dead->exits.size(),
                     static_cast<long long>(kExitWindow.count()));
        return 1;
      }
      dead->restart_at = now + dead->backoff;
      std::fprintf(stderr, "arbor up: %s exited (%s); restarting it in %.1f s\n",
                   dead->name.c_str(), ExitText(status).c_str(),
                   static_cast<double>(dead->backoff.count()) / 1000);
    }
    now = Clock::now();
    for (Child& c : children) {
      if (c.pid > 0 || now < c.restart_at) continue;
      c.pid = Spawn(plan, c, children);
      c.started = now;
      ++c.restarts;
      std::fprintf(stderr, "arbor up: %s restarted (pid %d, restart %d)\n", c.name.c_str(), c.pid,
                   c.restarts);
      WriteReady(plan, children);
    }
    if (::getppid() != parent) return 0;  // orphaned: our parent is gone
  }
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

  std::variant<UpPlan, int> planned = PlanFromFlags();
  if (const int* code = std::get_if<int>(&planned)) return *code;
  const UpPlan& plan = std::get<UpPlan>(planned);
  if (!plan.log_dir.empty()) std::filesystem::create_directories(plan.log_dir);
  std::vector<Child> children;
  if (!PlanChildren(plan, &children)) return 1;
  for (Child& c : children) {
    c.pid = Spawn(plan, c, children);
    c.started = Clock::now();
  }
  if (!WaitUntilServing(children, plan.log_dir)) {
    StopAll(children);
    return 1;
  }
  AnnounceReady(plan, children);
  const int code = Supervise(signals, parent, plan, children);
  StopAll(children);
  if (const std::string ready_file = absl::GetFlag(FLAGS_ready_file); !ready_file.empty()) {
    std::filesystem::remove(ready_file);
  }
  std::printf("arbor up: stopped\n");
  return code;
}

}  // namespace arbor::cli
