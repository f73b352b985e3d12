// The planner service: tree-of-thought search as a service. Solve starts a task (or, for a known
// task_id, attaches to it) and streams its events: nodes created, scored and pruned, the answer
// when found, progress after every expansion round, and the result last. Each task runs on its
// own thread: a search strategy (libs/search) over a MeshThoughtSource (kv-store forks, router
// Extends). After every round the task is checkpointed to the state store (task_checkpoint.h); a
// planner started on the same state store resumes the tasks still running there (the strategy
// replays the restored tree and continues) and releases any kv-store sequence a crash left
// behind. A task that ends, fails or is cancelled releases all its KV.
//
// The parts: solve_request.h checks and translates a request once; task_registry.h admits,
// finds, lists and evicts tasks; task.h is one task's events, watchers and checkpoint;
// task_checkpoint.h is the checkpoint codec and the restore; this file wires them together.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "arbor/common/thread_pool.h"
#include "arbor/mesh/kvstore_client.h"
#include "arbor/mesh/router_client.h"
#include "arbor/rpc/rpc_metrics.h"
#include "arbor/rpc/tokens.h"
#include "arbor/search/task_language.h"
#include "arbor/statestore/state_store.h"
#include "arbor/v1/planner.grpc.pb.h"
#include "planner_metrics.h"
#include "prometheus/registry.h"
#include "task.h"
#include "task_lease.h"
#include "task_registry.h"

namespace arbor::planner {

struct PlannerOptions {
  std::string model_dir;         // presets are read from <model_dir>/presets/<name>.json
  int max_tasks = 64;            // running tasks, over all tenants
  int max_tasks_per_tenant = 4;  // running tasks of one tenant
  int default_max_nodes = 200;   // Budget.max_nodes 0
  int64_t default_max_tokens = 200000;
  int io_threads = 64;  // concurrent Extend calls, over all tasks
  // Concurrent Extend calls of one tenant (0 = io_threads less an eighth): the rest stay free for
  // other tenants' next calls while one tenant's round waits on the router.
  int io_threads_per_tenant = 0;
  std::chrono::milliseconds call_timeout{120000};  // every kv-store and router call
  int max_finished_tasks = 1000;  // finished tasks kept for GetTask/ListTasks (oldest dropped)
  // How long a finished task's checkpoint stays in the state store (then it is deleted, and the
  // task is unknown).
  std::chrono::seconds finished_retention{86400};
  // How long a running task keeps trying to heal when the mesh loses what it needs (a kv-store or
  // router that restarted, sequences gone), when its own deadline does not end it sooner.
  std::chrono::seconds heal_timeout{300};
  // Checks every call's bearer token; the tenant and its quotas come from the token. Null
  // (--insecure): no authentication, the tenant is whatever a request names, and every task is
  // visible to every caller. Must outlive the service.
  rpc::TokenAuthenticator* auth = nullptr;
  // The canceller of the state store's client (if it has one): BeginShutdown ends its calls last,
  // once the tasks have had shutdown_writes to store their final checkpoints.
  mesh::CallCanceller* state_canceller = nullptr;
  std::chrono::milliseconds shutdown_writes{3000};
  // This planner's name in its fleet, which task leases name as their holder (task_lease.h):
  // unique among the planners sharing a state store, and the same across the planner's restarts
  // (a restarted planner takes its own tasks back at once). Empty: a random one.
  std::string name;
  // How long a task's lease lasts unrenewed: the tasks of a planner that died (or hangs, or lost
  // the state store) are adopted by another between one and one and a quarter leases after its
  // last renewal.
  std::chrono::milliseconds lease{10000};
  // With several routers: true keeps each task on its own router (prefix affinity); false sends
  // each round of every task to the next router in turn (round robin: the benchmarks' baseline).
  bool router_affinity = true;
  // Bounded load: a task's round leaves its own router for the next in its order while that one
  // runs more than this factor times the mean of this planner's Extends in flight per router.
  double router_load_factor = 1.25;
  // The routers' names (addresses), in the order of Create's channels: they rank by name, so
  // every planner orders them alike whatever its list's order (and AddRouter may add more).
  // Empty: they rank by position.
  std::vector<std::string> router_names;
};

class PlannerService final : public v1::Planner::CallbackService {
 public:
  // Reads the presets and starts loading the tasks checkpointed in `state` (which must outlive
  // the service) on a thread of its own, retried with backoff while the state store is
  // unreachable; until they are loaded every RPC is UNAVAILABLE (ready()). INVALID_ARGUMENT
  // naming a preset file that does not parse.
  static absl::StatusOr<std::unique_ptr<PlannerService>> Create(
      std::shared_ptr<grpc::Channel> kvstore, std::shared_ptr<grpc::Channel> router,
      statestore::StateStore* state, const PlannerOptions& options, prometheus::Registry& registry);
  // With several kv-store shards and routers: each task's sequences live on one shard
  // (mesh::KvStoreShards), and it keeps to one router (rendezvous hashing on the task, so its
  // prompt prefix stays in that router's KV cache), moving to the next in its order while its
  // router is away.
  static absl::StatusOr<std::unique_ptr<PlannerService>> Create(
      std::vector<std::shared_ptr<grpc::Channel>> kvstores,
      std::vector<std::shared_ptr<grpc::Channel>> routers, statestore::StateStore* state,
      const PlannerOptions& options, prometheus::Registry& registry);
  // BeginShutdown, then waits for the task threads to end.
  ~PlannerService() override;

  // Adds a router (one a DNS name resolves to now); false when one of that name is there
  // already. Tasks whose rendezvous order puts it first move to it at their next round.
  bool AddRouter(std::shared_ptr<grpc::Channel> channel, const std::string& name);

  // Whether the checkpointed tasks are loaded and the service answers.
  bool ready() const { return ready_; }
  // Calls `fn` once the service is ready (now, if it is); at most one callback.
  void OnReady(std::function<void()> fn);
  // Waits up to `timeout` for ready().
  bool WaitUntilReady(absl::Duration timeout);
  // Stops the service's work, whatever its peers do: new calls are refused, running tasks stop
  // with their checkpoints RUNNING (a restart resumes them) and every kv-store and router call in
  // flight is cancelled; tasks that finished meanwhile get up to shutdown_writes to store their
  // outcome, then the state store's calls are cancelled too. Call before the server drains (so
  // attached clients learn their task resumes instead of seeing it cancelled). Idempotent.
  void BeginShutdown();

  grpc::ServerWriteReactor<v1::SolveEvent>* Solve(grpc::CallbackServerContext* ctx,
                                                  const v1::SolveRequest* req) override;
  grpc::ServerUnaryReactor* GetTask(grpc::CallbackServerContext* ctx, const v1::GetTaskRequest* req,
                                    v1::Task* resp) override;
  grpc::ServerWriteReactor<v1::SolveEvent>* WatchTask(grpc::CallbackServerContext* ctx,
                                                      const v1::WatchTaskRequest* req) override;
  grpc::ServerUnaryReactor* CancelTask(grpc::CallbackServerContext* ctx,
                                       const v1::CancelTaskRequest* req, v1::Task* resp) override;
  grpc::ServerUnaryReactor* ListTasks(grpc::CallbackServerContext* ctx,
                                      const v1::ListTasksRequest* req,
                                      v1::ListTasksResponse* resp) override;

  const std::map<std::string, search::Templates>& presets() const { return presets_; }

 private:
  PlannerService(std::vector<std::shared_ptr<grpc::Channel>> kvstores,
                 std::vector<std::shared_ptr<grpc::Channel>> routers, statestore::StateStore* state,
                 const PlannerOptions& options, prometheus::Registry& registry);
  // The router for `task`'s calls: the `skip`-th in the task's rendezvous order of the routers
  // not marked away (all of them when every one is).
  mesh::RouterClient* RouterFor(const Task& task, int skip);
  // Marks `router` away for a few seconds (a task's round failed on it).
  void MarkRouterAway(const mesh::RouterClient* router);
  // The kv-store shard of a task's sequences: `shard` when it is one, else its key's first
  // choice.
  mesh::KvStoreClient& HomeOf(const std::string& key, int shard);
  // A new task's shard: the first in its key's rendezvous order whose running tasks (this
  // planner's) stay within router_load_factor times the mean (bounded loads, as for routers).
  int ShardForNewTask(const Task& task);
  void AddRouterLocked(std::shared_ptr<grpc::Channel> channel, uint64_t member)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(routers_mu_);
  // After `failure` (a router's, by its message), marks the source's router away and moves the
  // source to the task's next router.
  void AvoidFailedRouter(const Task& task, MeshThoughtSource& source, const absl::Status& failure);

  PlanDefaults defaults() const;
  // Who calls: with a token authenticator, the tenant of the call's bearer token (UNAUTHENTICATED
  // without a valid one); without (--insecure), nobody in particular.
  struct Caller {
    bool authenticated = false;
    std::string tenant;
    rpc::TenantQuota quota;
    // The tenant whose tasks the caller may see: its own, or (--insecure) any.
    std::optional<std::string> scope() const {
      return authenticated ? std::optional<std::string>(tenant) : std::nullopt;
    }
  };
  absl::StatusOr<Caller> Authorize(const grpc::CallbackServerContext& ctx) const;
  // Starts a task's thread (new, or resumed from `checkpoint`). The thread is detached and
  // counted; the destructor waits for the count to reach zero.
  void Start(std::shared_ptr<Task> task, v1::TaskCheckpoint checkpoint);
  void Run(std::shared_ptr<Task> task, v1::TaskCheckpoint checkpoint);
  // A new task's root: its kv-store sequence holding the rendered propose prompt.
  absl::Status CreateRoot(Task& task, MeshThoughtSource& source, search::SearchTree& tree);
  // The tree of a resumed task, with every sequence it may still fork alive again.
  absl::Status Restore(Task& task, MeshThoughtSource& source, v1::TaskCheckpoint& restored,
                       search::SearchTree& tree);
  // Ends a task: releases every sequence it holds (by owner, so whatever a crash left behind
  // too), records the outcome in the task and its checkpoint, and tells the watchers. While the
  // planner shuts down a cancelled task keeps its checkpoint RUNNING instead.
  // After a search failed with `*status`: when the failure is the mesh's (UNAVAILABLE, a lost
  // sequence, a call that timed out or was aborted), waits with backoff, within the task's
  // deadline and heal_timeout, until the tree as last recorded is restored (lost sequences
  // rebuilt from their token ids); true: the search goes on. false: `*status` is the task's
  // failure, saying what could not be reached.
  // `state` spans the tries since the task last completed a round (Run resets it then), so a
  // service that stays down is given up on after heal_timeout however often the tree is
  // restored in between.
  struct HealState {
    std::chrono::steady_clock::time_point since;
    std::chrono::milliseconds backoff{0};
    int tries = 0;
  };
  bool Heal(Task& task, MeshThoughtSource& source, search::SearchTree& tree, const TaskPlan& plan,
            HealState& state, absl::Status* status);
  // Heal's wait: false (and `*status` the task's failure) when `*status` is not the mesh's,
  // the task is cancelled, or its time to heal is over; true after the next backoff.
  bool WaitToHeal(Task& task, const TaskPlan& plan, HealState& state, absl::Status* status);
  void Finish(Task& task, MeshThoughtSource& source, absl::Status status,
              const v1::SolveResult& result, double seconds);
  // Stores the task's checkpoint with a compare-and-set on the version it last stored or read.
  // kUnwritten: the state store is unreachable (or its answer was lost); the sweeper writes the
  // latest checkpoint when it is back, and the task runs on meanwhile. kFenced: another writer
  // changed the checkpoint, so the task is no longer this planner's (task.fenced; it stops
  // without touching the task's KV or checkpoint). A write whose outcome was unknown is
  // recognized when it landed, and a checkpoint the store lost (NOT_FOUND) is written anew.
  enum class Written { kStored, kUnwritten, kFenced };
  Written WriteCheckpoint(Task& task);
  // Once a finished task's outcome is stored: releases its KV (every sequence of its owner tag)
  // and deletes its lease.
  void ReleaseFinished(const Task& task);
  // Tells the watchers a finished task's outcome (task.untold) once it is stored.
  void Tell(Task& task);
  // Ends a task another planner took over (task.fenced): its KV and checkpoint are left to that
  // planner; lookups here read the checkpoint it writes. `was_running`: it had not ended here.
  void StopFenced(Task& task, bool was_running);
  // Loads every task checkpoint of the state store (page by page, however many): the finished
  // ones (deleting those past their retention) answer GetTask and WatchTask; a running one is
  // taken when its lease allows (none, handed back, or this planner's name's from before a
  // restart; the leaser adopts the others if their holders stop renewing them).
  absl::Status Resume();
  // A task from its checkpoint (stored at `version`): a running one starts under lease
  // `generation` (cancelled at once when `cancel`), a finished one is kept for lookups.
  void ResumeOne(const std::string& key, const v1::TaskCheckpoint& cp, int64_t version,
                 int64_t generation = 0, bool cancel = false);

  // ---- leases (task_lease.h) ----
  // Takes a new task's lease (generation 1). false: another planner holds it (it started a task
  // of the same id first). With the state store unreachable the task runs and the leaser takes
  // the lease when the store is back.
  bool TakeNewLease(Task& task);
  // The leaser thread: every quarter lease, renews the leases held and adopts expired ones.
  void LeaseLoop();
  void RenewLeases();
  void AdoptExpired();
  // Takes over the lease at `lease_key` (`current`, stored at `version`; version 0: none stored),
  // rewrites the task's checkpoint under the new generation, and runs the task from it.
  void Adopt(const std::string& lease_key, const v1::TaskLease& current, int64_t version);
  // Whether this planner may take `lease` now, without waiting for it to expire.
  bool TakeableAtOnce(const v1::TaskLease& lease) const;
  // Stops `task`: its lease is someone else's now (task.fenced; its KV and checkpoint are left).
  void Fence(Task& task, const std::string& why);
  // The task is done with its lease: forgotten, and deleted from the store when `delete_key`.
  void DropLease(const Task& task, bool delete_key);
  // At shutdown: every lease still held is marked released, so other planners adopt at once.
  void HandBackLeases();
  v1::TaskLease NewLease(int64_t generation, bool cancel) const;

  // ---- tasks other planners run, as their checkpoints show them (stored_task.h) ----
  // The stored checkpoint of the caller's task `id`: NOT_FOUND (as unknown) when there is none.
  absl::StatusOr<v1::TaskCheckpoint> StoredTask(const Caller& caller, const std::string& id);
  // A local stand-in for a task another planner runs: it follows the task's checkpoint in the
  // state store (every 200 ms) and publishes what each new one adds, until the task ends or
  // nobody watches. One per task, shared by its watchers.
  std::shared_ptr<Task> Follow(const std::string& key, const std::string& tenant,
                               const std::string& id);
  void FollowLoop(std::shared_ptr<Task> mirror);
  // CancelTask for a task this planner does not run: sets `cancel` in its lease, which its
  // holder (or whoever adopts it) obeys.
  absl::Status CancelStored(const std::string& key);
  // The resumer thread: Resume until it succeeds (backoff 250 ms doubling to 4 s) or shutdown.
  void ResumeUntilReady();
  // Deletes `task`'s checkpoint (and forgets the task) at `finished_unix_ms` + retention.
  void ExpireLater(const Task& task, int64_t finished_unix_ms);
  void SweepExpired();  // the sweeper thread's loop

  mesh::CallCanceller canceller_;  // kv_'s and router_'s calls
  mesh::KvStoreShards kv_;
  // Routers are only ever added (their clients' addresses stay valid for the tasks using them).
  struct Router {
    std::unique_ptr<mesh::RouterClient> client;
    uint64_t member = 0;  // its rendezvous identity
    std::chrono::steady_clock::time_point away_until;
  };
  absl::Mutex routers_mu_;
  std::vector<Router> routers_ ABSL_GUARDED_BY(routers_mu_);
  std::atomic<size_t> next_router_{0};  // round robin (router_affinity false)
  absl::Mutex shards_mu_;
  std::vector<int> shard_tasks_ ABSL_GUARDED_BY(shards_mu_);  // running tasks per kv-store shard
  statestore::StateStore* state_;
  PlannerOptions options_;
  std::map<std::string, search::Templates> presets_;
  rpc::RpcMetrics rpc_metrics_;
  PlannerMetrics metrics_;
  TaskRegistry registry_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> ready_{false};
  absl::Mutex ready_mu_;
  std::function<void()> on_ready_ ABSL_GUARDED_BY(ready_mu_);
  std::thread resumer_;

  absl::Mutex threads_mu_;
  int live_threads_ ABSL_GUARDED_BY(threads_mu_) = 0;  // task threads not yet ended

  // Tokens (generated and prefilled) each tenant used, in one-second buckets over the last
  // minute: the tokens_per_minute quota.
  void CountTokens(const std::string& tenant, int64_t tokens);
  int64_t TokensLastMinute(const std::string& tenant);
  // Counts the task's tokens since the last count for its tenant; before an expansion, waits
  // while the tenant is over its tokens_per_minute quota.
  void CountRound(Task& task, const MeshThoughtSource& source);
  bool Throttle(Task& task, std::chrono::steady_clock::time_point deadline);
  absl::Mutex usage_mu_;
  std::map<std::string, std::deque<std::pair<int64_t, int64_t>>> usage_
      ABSL_GUARDED_BY(usage_mu_);  // tenant -> (second, tokens), oldest first

  struct Expiry {
    std::string key, tenant, id;
  };
  absl::Mutex expiry_mu_;
  std::multimap<int64_t, Expiry> expiring_ ABSL_GUARDED_BY(expiry_mu_);  // by deadline, unix ms
  bool sweeper_stop_ ABSL_GUARDED_BY(expiry_mu_) = false;
  bool sweeper_wake_ ABSL_GUARDED_BY(expiry_mu_) = false;  // something is due sooner
  // Tasks whose latest checkpoint is not stored (the state store was unreachable): the sweeper
  // writes them again every second.
  std::vector<std::weak_ptr<Task>> unwritten_ ABSL_GUARDED_BY(expiry_mu_);
  std::thread sweeper_;

  // Leases this planner holds, by lease key. version 0: not taken yet (the state store was
  // unreachable when the task started).
  struct Held {
    std::weak_ptr<Task> task;
    int64_t version = 0;
    v1::TaskLease lease;
  };
  std::string name_, incarnation_;
  absl::Mutex leases_mu_;
  std::map<std::string, Held> held_ ABSL_GUARDED_BY(leases_mu_);
  LeaseWatch lease_watch_;  // the leaser thread's
  std::thread leaser_;

  absl::Mutex mirrors_mu_;
  std::map<std::string, std::shared_ptr<Task>> mirrors_ ABSL_GUARDED_BY(mirrors_mu_);  // by key
  int live_mirrors_ ABSL_GUARDED_BY(mirrors_mu_) = 0;  // FollowLoop threads not yet ended

  ThreadPool io_;
};

}  // namespace arbor::planner
