#include "planner_service.h"

#include <algorithm>
#include <set>
#include <thread>

#include "absl/algorithm/container.h"
#include "absl/hash/hash.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "arbor/common/clock.h"
#include "arbor/common/random_id.h"
#include "arbor/common/rendezvous.h"
#include "arbor/common/status_macros.h"
#include "arbor/rpc/status.h"
#include "arbor/search/search.h"
#include "spdlog/spdlog.h"
#include "stored_task.h"
#include "task_checkpoint.h"

namespace arbor::planner {
namespace {

using Clock = std::chrono::steady_clock;

v1::SearchCounts CountsOf(const search::SearchTree& tree, const SourceCounts& tokens,
                          double seconds) {
  v1::SearchCounts c;
  c.set_nodes(tree.size());
  c.set_tokens_generated(tokens.generated);
  c.set_tokens_prefilled(tokens.prefilled);
  c.set_tokens_reused(tokens.reused);
  c.set_wall_seconds(seconds);
  return c;
}

v1::SolveResult ResultOf(const std::string& task_id, const search::SearchTree& tree,
                         const search::SearchResult& r, const v1::SearchCounts& counts) {
  const search::SearchNode& best = tree.node(r.best_node);
  v1::SolveResult result;
  result.set_task_id(task_id);
  result.set_solved(r.answer_node >= 0);
  result.set_answer(r.answer_node >= 0 ? best.answer_text : best.state);
  for (int id : r.best_path) result.add_best_path(id);
  result.set_score(best.score);
  *result.mutable_counts() = counts;
  return result;
}

}  // namespace

absl::StatusOr<std::unique_ptr<PlannerService>> PlannerService::Create(
    std::shared_ptr<grpc::Channel> kvstore, std::shared_ptr<grpc::Channel> router,
    statestore::StateStore* state, const PlannerOptions& options, prometheus::Registry& registry) {
  return Create(std::vector<std::shared_ptr<grpc::Channel>>{std::move(kvstore)},
                std::vector<std::shared_ptr<grpc::Channel>>{std::move(router)}, state, options,
                registry);
}

absl::StatusOr<std::unique_ptr<PlannerService>> PlannerService::Create(
    std::vector<std::shared_ptr<grpc::Channel>> kvstores,
    std::vector<std::shared_ptr<grpc::Channel>> routers, statestore::StateStore* state,
    const PlannerOptions& options, prometheus::Registry& registry) {
  if (routers.empty()) return absl::InvalidArgumentError("the planner needs a router");
  if (kvstores.empty() || kvstores.size() > 256) {
    return absl::InvalidArgumentError("the planner needs 1 to 256 kv-store shards");
  }
  std::unique_ptr<PlannerService> s(
      new PlannerService(std::move(kvstores), std::move(routers), state, options, registry));
  ARBOR_ASSIGN_OR_RETURN(s->presets_, search::LoadPresets(options.model_dir));
  s->sweeper_ = std::thread([p = s.get()] { p->SweepExpired(); });
  s->resumer_ = std::thread([p = s.get()] { p->ResumeUntilReady(); });
  s->leaser_ = std::thread([p = s.get()] { p->LeaseLoop(); });
  return s;
}

PlannerService::PlannerService(std::vector<std::shared_ptr<grpc::Channel>> kvstores,
                               std::vector<std::shared_ptr<grpc::Channel>> routers,
                               statestore::StateStore* state, const PlannerOptions& options,
                               prometheus::Registry& registry)
    : kv_(std::move(kvstores), {.timeout = options.call_timeout, .canceller = &canceller_}),
      state_(state),
      options_(options),
      rpc_metrics_("planner", registry, v1::Planner::service_full_name()),
      metrics_(registry, options.max_tasks),
      registry_({.max_tasks = options.max_tasks,
                 .max_tasks_per_tenant = options.max_tasks_per_tenant,
                 .max_finished_tasks = options.max_finished_tasks}),
      name_(options.name.empty() ? absl::StrCat("planner-", RandomHex(6)) : options.name),
      incarnation_(RandomHex(8)),
      lease_watch_(options.lease),
      io_(options.io_threads, options.io_threads_per_tenant > 0
                                  ? options.io_threads_per_tenant
                                  : std::max(1, options.io_threads - options.io_threads / 8)) {
  {
    absl::MutexLock lock(&shards_mu_);
    shard_tasks_.assign(kv_.size(), 0);
  }
  absl::MutexLock lock(&routers_mu_);
  for (size_t i = 0; i < routers.size(); ++i) {
    // Named routers rank by their names (the same in every planner, whatever the list's order);
    // unnamed ones by their position.
    const uint64_t member = options.router_names.size() == routers.size()
                                ? Fnv1a(options.router_names[i])
                                : static_cast<uint64_t>(i);
    AddRouterLocked(std::move(routers[i]), member);
  }
}

mesh::KvStoreClient& PlannerService::HomeOf(const std::string& key, int shard) {
  return shard >= 0 && static_cast<size_t>(shard) < kv_.size() ? kv_.shard(shard) : kv_.ForKey(key);
}

int PlannerService::ShardForNewTask(const Task& task) {
  const size_t n = kv_.size();
  if (n == 1) return 0;
  const std::vector<size_t> order = RendezvousOrder(task.key, n);
  absl::MutexLock lock(&shards_mu_);
  return static_cast<int>(FirstWithinLoad(order, shard_tasks_, options_.router_load_factor));
}

void PlannerService::AddRouterLocked(std::shared_ptr<grpc::Channel> channel, uint64_t member) {
  routers_.push_back({.client = std::make_unique<mesh::RouterClient>(
                          std::move(channel), mesh::ClientOptions{.timeout = options_.call_timeout,
                                                                  .canceller = &canceller_}),
                      .member = member});
}

bool PlannerService::AddRouter(std::shared_ptr<grpc::Channel> channel, const std::string& name) {
  const uint64_t member = Fnv1a(name);
  absl::MutexLock lock(&routers_mu_);
  for (const Router& r : routers_) {
    if (r.member == member) return false;
  }
  AddRouterLocked(std::move(channel), member);
  spdlog::info("router {} added ({} routers)", name, routers_.size());
  return true;
}

mesh::RouterClient* PlannerService::RouterFor(const Task& task, int skip) {
  absl::MutexLock lock(&routers_mu_);
  const size_t n = routers_.size();
  if (n == 1) return routers_[0].client.get();
  // Rendezvous order: adding or losing a router moves only the tasks that preferred it. (Round
  // robin: the order starts at the next router in turn.)
  std::vector<uint64_t> members;
  for (const Router& r : routers_) members.push_back(r.member);
  std::vector<size_t> order = RendezvousOrder(task.key, members);
  if (!options_.router_affinity) {
    const size_t first = next_router_++ % n;
    for (size_t i = 0; i < n; ++i) order[i] = (first + i) % n;
  }
  std::vector<size_t> up;
  const auto now = Clock::now();
  for (size_t i : order) {
    if (routers_[i].away_until <= now) up.push_back(i);
  }
  if (up.empty()) up = order;
  if (skip == 0 && options_.router_affinity && up.size() > 1) {
    // Bounded loads: the first router in the task's order whose Extends in flight (this
    // planner's) stay within the factor of the mean.
    std::vector<int> loads;
    for (const Router& r : routers_) loads.push_back(r.client->in_flight());
    const size_t i = FirstWithinLoad(up, loads, options_.router_load_factor);
    if (i != up[0]) metrics_.RoundMovedForLoad();
    return routers_[i].client.get();
  }
  return routers_[up[static_cast<size_t>(skip) % up.size()]].client.get();
}

void PlannerService::MarkRouterAway(const mesh::RouterClient* router) {
  absl::MutexLock lock(&routers_mu_);
  for (Router& r : routers_) {
    if (r.client.get() == router) r.away_until = Clock::now() + std::chrono::seconds(5);
  }
}

PlannerService::~PlannerService() {
  BeginShutdown();
  {
    absl::MutexLock lock(&expiry_mu_);
    sweeper_stop_ = true;
  }
  if (sweeper_.joinable()) sweeper_.join();
  if (resumer_.joinable()) resumer_.join();
  if (leaser_.joinable()) leaser_.join();
  {
    absl::MutexLock lock(&mirrors_mu_);
    mirrors_mu_.Await(absl::Condition(
        +[](int* live) { return *live == 0; }, &live_mirrors_));
  }
  absl::MutexLock lock(&threads_mu_);
  threads_mu_.Await(absl::Condition(
      +[](int* live) { return *live == 0; }, &live_threads_));
}

void PlannerService::BeginShutdown() {
  if (stopping_.exchange(true)) return;
  for (const auto& t : registry_.List()) t->cancel = true;
  canceller_.CancelAll();
  {
    // A task that finished just now stores its outcome (else a restart would run it again).
    absl::MutexLock lock(&threads_mu_);
    threads_mu_.AwaitWithTimeout(absl::Condition(
                                     +[](int* live) { return *live == 0; }, &live_threads_),
                                 absl::FromChrono(options_.shutdown_writes));
  }
  {
    // The suspended tasks move to other planners at once (bounded: the store may hang).
    auto handed_back = std::make_shared<absl::Notification>();
    std::thread([this, handed_back] {
      HandBackLeases();
      handed_back->Notify();
    }).detach();
    handed_back->WaitForNotificationWithTimeout(absl::FromChrono(options_.shutdown_writes));
    if (options_.state_canceller != nullptr) options_.state_canceller->CancelAll();
    handed_back->WaitForNotification();  // its calls are cancelled now
  }
}

void PlannerService::OnReady(std::function<void()> fn) {
  {
    absl::MutexLock lock(&ready_mu_);
    if (!ready_) {
      on_ready_ = std::move(fn);
      return;
    }
  }
  fn();
}

bool PlannerService::WaitUntilReady(absl::Duration timeout) {
  absl::MutexLock lock(&ready_mu_);
  auto is_ready = [this] { return ready_.load(); };
  return ready_mu_.AwaitWithTimeout(absl::Condition(&is_ready), timeout);
}

void PlannerService::ResumeUntilReady() {
  std::chrono::milliseconds backoff(250);
  for (int tries = 1; !stopping_; ++tries) {
    const absl::Status st = Resume();
    if (st.ok()) {
      std::function<void()> fn;
      {
        absl::MutexLock lock(&ready_mu_);
        ready_ = true;
        fn = std::move(on_ready_);
      }
      if (tries > 1) spdlog::info("task checkpoints loaded after {} tries; serving", tries);
      if (fn) fn();
      return;
    }
    spdlog::warn("cannot load the task checkpoints ({}); not serving, retrying in {} ms",
                 st.ToString(), backoff.count());
    for (auto until = Clock::now() + backoff; Clock::now() < until && !stopping_;) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    backoff = std::min(2 * backoff, std::chrono::milliseconds(4000));
  }
}

absl::StatusOr<PlannerService::Caller> PlannerService::Authorize(
    const grpc::CallbackServerContext& ctx) const {
  if (stopping_) return absl::UnavailableError("the planner is shutting down");
  if (!ready_) {
    return absl::UnavailableError(
        "the planner is loading its tasks' checkpoints (the state store is unreachable); retry");
  }
  if (options_.auth == nullptr) return Caller{};
  absl::StatusOr<rpc::Identity> id = options_.auth->Authenticate(ctx.client_metadata());
  if (!id.ok()) return id.status();
  return Caller{.authenticated = true, .tenant = id->tenant, .quota = id->quota};
}

PlanDefaults PlannerService::defaults() const {
  return {.max_nodes = options_.default_max_nodes, .max_tokens = options_.default_max_tokens};
}

PlannerService::Written PlannerService::WriteCheckpoint(Task& task) {
  if (task.fenced) return Written::kFenced;
  absl::MutexLock lock(&task.write_mu);
  const std::string bytes = task.CheckpointBytes();
  const uint64_t fingerprint = absl::HashOf(bytes);
  auto unwritten = [&](const absl::Status& st) ABSL_EXCLUSIVE_LOCKS_REQUIRED(task.write_mu) {
    if (!task.unwritten) {
      spdlog::warn(
          "task={} checkpoint not stored ({}); the task goes on and it is written again "
          "when the state store is back",
          task.id, st.ToString());
      metrics_.CheckpointUnwritten();
    }
    task.unwritten = true;
    absl::MutexLock expiry(&expiry_mu_);
    if (unwritten_.empty()) sweeper_wake_ = true;  // the sweeper retries within a second
    unwritten_.push_back(task.weak_from_this());
    return Written::kUnwritten;
  };
  for (int attempt = 0; attempt < 3; ++attempt) {
    absl::StatusOr<int64_t> v = state_->CompareAndSet(task.key, task.stored_version, bytes);
    if (v.ok()) {
      if (task.unwritten) spdlog::info("task={} checkpoint stored again", task.id);
      task.stored_version = *v;
      task.unsure_writes.clear();
      task.unwritten = false;
      return Written::kStored;
    }
    if (!absl::IsAborted(v.status())) {
      // Unreachable, or no answer: the write may still have landed.
      if (!absl::IsInvalidArgument(v.status()) && !absl::IsResourceExhausted(v.status())) {
        task.unsure_writes.push_back(fingerprint);
      }
      return unwritten(v.status());
    }
    // The stored version is not ours: lost by the store, one of our own writes whose answer
    // was lost, a finished task's whose id a new task reuses, or someone else's.
    absl::StatusOr<statestore::VersionedValue> stored = state_->Get(task.key);
    if (absl::IsNotFound(stored.status())) {
      task.stored_version = 0;
    } else if (!stored.ok()) {
      return unwritten(stored.status());
    } else if (stored->version == task.stored_version + 1 &&
               absl::c_linear_search(task.unsure_writes, absl::HashOf(stored->value))) {
      task.stored_version = stored->version;
    } else if (v1::TaskCheckpoint cp; task.stored_version == 0 &&
                                      cp.ParseFromString(stored->value) &&
                                      cp.status() != v1::TASK_STATUS_RUNNING) {
      task.stored_version = stored->version;
    } else {
      Fence(task, absl::StrCat("its checkpoint changed under this planner (version ",
                               stored->version, ", expected ", task.stored_version, ")"));
      return Written::kFenced;
    }
    task.unsure_writes.clear();
  }
  return unwritten(absl::AbortedError("the checkpoint's version kept changing"));
}

grpc::ServerWriteReactor<v1::SolveEvent>* PlannerService::Solve(grpc::CallbackServerContext* ctx,
                                                                const v1::SolveRequest* req) {
  // The task this call started, once it has one: a client that goes away (or whose deadline
  // passes) cancels it unless it runs detached. Reattaching calls never cancel.
  // `keep` owns the task for the callback; `started` publishes it once set.
  auto started = std::make_shared<std::atomic<Task*>>(nullptr);
  auto keep = std::make_shared<std::shared_ptr<Task>>();
  auto stream = Task::Stream::Create([started, keep] {
    if (Task* t = started->load()) t->cancel = true;
  });
  const auto t0 = Clock::now();
  auto fail = [&](const absl::Status& st) {
    rpc_metrics_.Record("Solve", st, SecondsSince(t0));
    stream->Close(st);
    return stream.get();
  };
  absl::StatusOr<Caller> caller = Authorize(*ctx);
  if (!caller.ok()) return fail(caller.status());
  auto task = std::make_shared<Task>();
  task->request = *req;
  if (caller->authenticated) {
    if (!req->tenant().empty() && req->tenant() != caller->tenant) {
      return fail(absl::PermissionDeniedError(
          "tenant: a call's tenant is its token's; leave the field empty"));
    }
    task->request.set_tenant(caller->tenant);
  }
  absl::StatusOr<TaskPlan> plan = PlanTask(task->request, presets_, defaults());
  if (!plan.ok()) return fail(plan.status());
  if (absl::Status st = ApplyQuota(caller->quota, caller->tenant, req->budget(), &*plan);
      !st.ok()) {
    return fail(st);
  }
  task->tenant = task->request.tenant();
  plan->source.tenant = task->tenant;
  // The stored request (the checkpoint's) carries the budget the task runs with, quota applied,
  // so that a resumed task keeps it.
  task->request.mutable_budget()->set_max_nodes(plan->budget.max_nodes);
  task->request.mutable_budget()->set_max_tokens(plan->budget.max_tokens);
  if (!req->task_id().empty()) {
    if (auto existing = registry_.Find(req->task_id(), task->tenant)) {  // attach to it
      existing->Attach(stream);
      return stream.get();
    }
    // Another planner's task (or one this planner's predecessor ran): follow its checkpoint.
    if (absl::StatusOr<v1::TaskCheckpoint> cp = StoredTask(*caller, req->task_id()); cp.ok()) {
      const std::string& tenant = cp->request().tenant();
      Follow(TaskKey(req->task_id(), tenant), tenant, req->task_id())->Attach(stream);
      return stream.get();
    }
  }
  if (const int64_t quota = caller->quota.tokens_per_minute; quota > 0) {
    if (const int64_t used = TokensLastMinute(task->tenant); used >= quota) {
      return fail(absl::ResourceExhaustedError(
          absl::StrCat("tenant \"", task->tenant, "\" used ", used,
                       " tokens in the last minute, its quota (tokens_per_minute=", quota,
                       " in the tokens file); retry later")));
    }
    task->tokens_per_minute = quota;
  }
  // Unguessable unless the client names it: a task id is also how a client reattaches.
  task->id = req->task_id().empty() ? absl::StrCat("t", RandomHex(12)) : req->task_id();
  task->key = TaskKey(task->id, task->tenant);
  task->request.set_task_id(task->id);
  task->plan = *std::move(plan);
  if (task->plan.deadline_ms == 0 && !req->detached()) {
    // deadline_ms 0 is the Solve's own deadline.
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        ctx->deadline() - std::chrono::system_clock::now());
    if (left.count() < 3600000) {
      task->plan.deadline_ms = static_cast<int>(std::max<int64_t>(1, left.count()));
    }
  }
  absl::StatusOr<TaskRegistry::Admitted> admitted = registry_.Admit(task, caller->quota.max_tasks);
  if (!admitted.ok()) return fail(admitted.status());
  if (admitted->is_new && !TakeNewLease(*task)) {
    // Another planner started a task of this id first: follow that one.
    registry_.Remove(task->tenant, task->id);
    task->Close(absl::AbortedError(
        absl::StrCat("task ", task->id, " is run by another planner; reattach")));
    Follow(task->key, task->tenant, task->id)->Attach(stream);
    return stream.get();
  }
  admitted->task->Attach(stream);  // a Solve of the same id may have won the race
  if (admitted->is_new) {
    if (!req->detached()) {
      *keep = task;
      started->store(task.get());
      if (ctx->IsCancelled()) task->cancel = true;  // gone before we got here
    }
    Start(std::move(task), {});
  }
  return stream.get();
}

void PlannerService::Start(std::shared_ptr<Task> task, v1::TaskCheckpoint checkpoint) {
  metrics_.TaskStarted();
  {
    absl::MutexLock lock(&threads_mu_);
    ++live_threads_;
  }
  std::thread([this, task = std::move(task), cp = std::move(checkpoint)]() mutable {
    Run(std::move(task), std::move(cp));
    absl::MutexLock lock(&threads_mu_);  // the thread's last touch of the service
    --live_threads_;
  }).detach();
}

void PlannerService::Run(std::shared_ptr<Task> task, v1::TaskCheckpoint restored) {
  const auto t0 = Clock::now();
  const v1::SolveRequest& req = task->request;
  TaskPlan plan = task->plan;
  plan.Start();
  MeshThoughtSource source(&kv_, RouterFor(*task, 0), &io_, req.problem(), plan.templates,
                           plan.source, [task] { return task->cancel.load(); });
  // Its kv-store shard: as checkpointed, or (a new task) by bounded-load consistent hashing.
  int shard = restored.has_kv_shard() ? restored.kv_shard() : -1;
  if (restored.nodes_size() == 0) shard = ShardForNewTask(*task);
  if (shard < 0 || static_cast<size_t>(shard) >= kv_.size()) {
    shard = static_cast<int>(kv_.ShardForKey(task->key));
  }
  task->kv_shard = shard;
  source.set_shard(static_cast<size_t>(shard));
  restored.set_kv_shard(shard);  // a resumed task's checkpoint is `restored`
  {
    absl::MutexLock lock(&task->mu);
    task->checkpoint.set_kv_shard(shard);
  }
  {
    absl::MutexLock lock(&shards_mu_);
    ++shard_tasks_[shard];
  }
  struct Leave {
    PlannerService* s;
    int shard;
    ~Leave() {
      absl::MutexLock lock(&s->shards_mu_);
      --s->shard_tasks_[shard];
    }
  } leave{this, shard};
  source.set_before_expand([&] {
    CountRound(*task, source);
    return Throttle(*task, plan.budget.deadline);
  });
  search::SearchTree tree("");
  HealState heal;
  // Starting waits out a kv-store or router that is away, as the search does (Heal).
  auto start = [&] {
    return restored.nodes_size() > 0 ? Restore(*task, source, restored, tree)
                                     : CreateRoot(*task, source, tree);
  };
  absl::Status status = start();
  for (absl::Status failure = status; !status.ok() && WaitToHeal(*task, plan, heal, &status);
       failure = status) {
    AvoidFailedRouter(*task, source, failure);
    status = start();
  }

  // Events, and the checkpoint kept in step with the tree.
  auto record = [&](const search::SearchNode& n) {
    absl::MutexLock lock(&task->mu);
    RecordNode(n, source.token_ids(n.handle), &task->checkpoint);
  };
  auto publish = [&](const search::SearchNode& n, v1::Node* (v1::SolveEvent::*field)()) {
    v1::SolveEvent e;
    *(e.*field)() = NodeToProto(n);
    task->Publish(std::move(e));
  };
  auto counts = [&] { return CountsOf(tree, source.counts(), SecondsSince(t0)); };
  const search::SearchObserver observer{.created =
                                            [&](const search::SearchNode& n) {
                                              record(tree.node(n.parent));  // now expanded
                                              record(n);
                                              publish(n, &v1::SolveEvent::mutable_node_created);
                                            },
                                        .scored =
                                            [&](const search::SearchNode& n) {
                                              record(n);
                                              publish(n, &v1::SolveEvent::mutable_node_scored);
                                            },
                                        .pruned =
                                            [&](const search::SearchNode& n) {
                                              record(n);
                                              publish(n, &v1::SolveEvent::mutable_node_pruned);
                                              source.Release({n.handle}).IgnoreError();
                                            },
                                        .answer =
                                            [&](const search::SearchNode& n) {
                                              v1::SolveEvent e;
                                              e.set_answer_found(n.answer_text);
                                              task->Publish(std::move(e));
                                            },
                                        .round =
                                            [&] {
                                              heal = {};  // the mesh works again
                                              // Back to the task's own router (its cache).
                                              source.set_router(RouterFor(*task, 0));
                                              CountRound(*task, source);
                                              // Every change of the round is recorded already (a
                                              // parent's expanded flag with its first child).
                                              {
                                                absl::MutexLock lock(&task->mu);
                                                *task->checkpoint.mutable_counts() = counts();
                                              }
                                              WriteCheckpoint(*task);
                                              v1::SolveEvent e;
                                              *e.mutable_progress() = counts();
                                              task->Publish(std::move(e));
                                            }};

  v1::SolveResult result;
  if (status.ok()) {
    record(tree.node(0));
    {
      absl::MutexLock lock(&task->mu);
      *task->checkpoint.mutable_request() = req;
    }
    WriteCheckpoint(*task);
    absl::StatusOr<search::SearchResult> r =
        search::RunSearch(plan.spec, plan.budget, source, tree, observer);
    for (status = r.status(); !r.ok() && Heal(*task, source, tree, plan, heal, &status);
         status = r.status()) {
      r = search::RunSearch(plan.spec, plan.budget, source, tree, observer);
    }
    if (r.ok()) {
      result = ResultOf(task->id, tree, *r, counts());
      spdlog::info("task={} done: {} nodes, stop={}, solved={}", task->id, tree.size(),
                   search::StopReasonName(r->stop), result.solved());
    }
  }
  CountRound(*task, source);
  Finish(*task, source, status, result, SecondsSince(t0));
}

absl::Status PlannerService::CreateRoot(Task& task, MeshThoughtSource& source,
                                        search::SearchTree& tree) {
  absl::StatusOr<uint64_t> root = source.CreateRoot(task.key);
  if (!root.ok()) return root.status();
  tree.mutable_node(0).handle = *root;
  return absl::OkStatus();
}

absl::Status PlannerService::Restore(Task& task, MeshThoughtSource& source,
                                     v1::TaskCheckpoint& restored, search::SearchTree& tree) {
  // The tree as checkpointed (sequences a crash left unrecorded carry the task's owner tag and
  // go when the task ends).
  source.set_counts({restored.counts().tokens_generated(), restored.counts().tokens_prefilled(),
                     restored.counts().tokens_reused()});
  absl::StatusOr<search::SearchTree> restored_tree = RestoreTree(&restored);
  if (!restored_tree.ok()) {
    return absl::Status(restored_tree.status().code(),
                        absl::StrCat(task.key, ": ", restored_tree.status().message()));
  }
  tree = *std::move(restored_tree);
  // Nodes the search may still expand need their sequences; any the kv-store lost (it
  // restarted, or evicted them) are rebuilt from the checkpointed token ids.
  absl::StatusOr<int> rebuilt = RebuildLostSequences(source, task.key, tree, &restored);
  if (!rebuilt.ok()) return rebuilt.status();
  {
    absl::MutexLock lock(&task.mu);
    task.checkpoint = restored;
  }
  spdlog::info("task={} resumed with {} nodes, {} sequences rebuilt from token ids", task.id,
               tree.size(), *rebuilt);
  return absl::OkStatus();
}

bool PlannerService::WaitToHeal(Task& task, const TaskPlan& plan, HealState& state,
                                absl::Status* status) {
  const absl::Status& st = *status;
  if (!(absl::IsUnavailable(st) || absl::IsNotFound(st) || absl::IsAborted(st) ||
        absl::IsDeadlineExceeded(st)) ||
      task.cancel) {
    return false;
  }
  if (state.tries == 0) {
    state.since = std::chrono::steady_clock::now();
    state.backoff = std::chrono::milliseconds(250);
  }
  const auto give_up = std::min(plan.budget.deadline, state.since + options_.heal_timeout);
  if (std::chrono::steady_clock::now() + state.backoff >= give_up) {
    // Without a try (the task's own deadline is at hand) the failure stays what it was.
    if (state.tries > 0) {
      *status = absl::Status(st.code(), absl::StrCat("the mesh stayed unreachable (", state.tries,
                                                     " tries to heal the task): ", st.message()));
    }
    return false;
  }
  spdlog::warn("task={} lost part of the mesh ({}); healing in {} ms", task.id, st.ToString(),
               state.backoff.count());
  for (auto until = std::chrono::steady_clock::now() + state.backoff;
       std::chrono::steady_clock::now() < until;) {
    if (task.cancel) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ++state.tries;
  state.backoff = std::min(2 * state.backoff, std::chrono::milliseconds(4000));
  return true;
}

void PlannerService::AvoidFailedRouter(const Task& task, MeshThoughtSource& source,
                                       const absl::Status& failure) {
  {
    absl::MutexLock lock(&routers_mu_);
    if (routers_.size() < 2) return;
  }
  if (!absl::StrContains(failure.message(), "router ")) return;
  MarkRouterAway(source.router());
  source.set_router(RouterFor(task, 0));
}

bool PlannerService::Heal(Task& task, MeshThoughtSource& source, search::SearchTree& tree,
                          const TaskPlan& plan, HealState& state, absl::Status* status) {
  for (absl::Status failure = *status; WaitToHeal(task, plan, state, status); failure = *status) {
    AvoidFailedRouter(task, source, failure);
    // The tree as last recorded (the failed round's nodes included), its lost sequences rebuilt;
    // the tokens counted so far stay counted.
    v1::TaskCheckpoint recorded;
    {
      absl::MutexLock lock(&task.mu);
      recorded = task.checkpoint;
    }
    const SourceCounts counts = source.counts();
    *status = Restore(task, source, recorded, tree);
    source.set_counts(counts);
    if (status->ok()) {
      metrics_.TaskHealed();
      spdlog::info("task={} restored its tree after {} tries to heal", task.id, state.tries);
      return true;
    }
  }
  return false;
}

void PlannerService::Finish(Task& task, MeshThoughtSource& source, absl::Status status,
                            const v1::SolveResult& result, double seconds) {
  const bool cancelled = task.cancel.load() && !task.fenced;
  if (task.fenced) return StopFenced(task, /*was_running=*/true);
  if (stopping_ && (cancelled || !status.ok())) {
    // The planner is shutting down: leave the checkpoint RUNNING so a restart resumes the task.
    metrics_.TaskSuspended();
    task.Close(
        absl::UnavailableError("the planner is shutting down; the task resumes when it restarts"));
    return;
  }
  v1::TaskStatus final_status;
  if (status.ok()) {
    final_status = v1::TASK_STATUS_SUCCEEDED;
  } else if (cancelled || status.code() == absl::StatusCode::kCancelled) {
    final_status = v1::TASK_STATUS_CANCELLED;
    status = absl::CancelledError(absl::StrCat("task ", task.id, " was cancelled"));
  } else {
    final_status = v1::TASK_STATUS_FAILED;
    spdlog::warn("task={} failed: {}", task.id, status.ToString());
  }
  const int64_t finished_ms = UnixMillis();
  {
    absl::MutexLock lock(&task.mu);
    task.status = final_status;
    task.error = status.ok() ? "" : std::string(status.message());
    task.result = result;
    *task.checkpoint.mutable_result() = result;
    task.checkpoint.set_finished_unix_ms(finished_ms);
    task.untold = status;
  }
  // The outcome first, then the KV (a crash in between leaves the lease, whose adopter finds the
  // task finished and releases what is left), then the lease, then the watchers. An outcome the
  // store did not take is written by the sweeper, which then does the rest (unless another
  // planner took the task meanwhile: then the KV is that planner's, and so is the outcome).
  const Written written = WriteCheckpoint(task);
  if (written == Written::kFenced) return StopFenced(task, /*was_running=*/true);
  metrics_.TaskFinished(final_status, source.counts(), result.counts().nodes(), seconds);
  rpc_metrics_.Record("Solve", status, seconds);
  if (written == Written::kStored) {
    ReleaseFinished(task);
    ExpireLater(task, finished_ms);
    Tell(task);
  }
}

void PlannerService::Tell(Task& task) {
  std::optional<absl::Status> status;
  v1::SolveResult result;
  {
    absl::MutexLock lock(&task.mu);
    status.swap(task.untold);
    result = task.result;
  }
  if (!status) return;
  if (status->ok()) {
    v1::SolveEvent e;
    *e.mutable_result() = std::move(result);
    task.Publish(std::move(e));
  }
  task.Close(*status);
}

void PlannerService::StopFenced(Task& task, bool was_running) {
  metrics_.TaskFenced(was_running);
  DropLease(task, /*delete_key=*/false);
  registry_.Remove(task.tenant, task.id);
  {
    absl::MutexLock lock(&task.mu);
    task.untold.reset();
  }
  task.Close(absl::AbortedError(
      absl::StrCat("task ", task.id, " is run by another planner now; reattach")));
}

void PlannerService::ReleaseFinished(const Task& task) {
  if (absl::Status st = HomeOf(task.key, task.kv_shard)
                            .ReleaseOwner(task.key, mesh::kNoDeadline, task.tenant)
                            .status();
      !st.ok()) {
    spdlog::warn("task={} could not release its sequences: {}", task.id, st.ToString());
  }
  DropLease(task, /*delete_key=*/true);
}

void PlannerService::CountTokens(const std::string& tenant, int64_t tokens) {
  if (tokens <= 0) return;
  const int64_t second = UnixMillis() / 1000;
  absl::MutexLock lock(&usage_mu_);
  auto& q = usage_[tenant];
  if (!q.empty() && q.back().first == second) {
    q.back().second += tokens;
  } else {
    q.emplace_back(second, tokens);
  }
  while (!q.empty() && q.front().first <= second - 60) q.pop_front();
}

int64_t PlannerService::TokensLastMinute(const std::string& tenant) {
  const int64_t second = UnixMillis() / 1000;
  absl::MutexLock lock(&usage_mu_);
  auto it = usage_.find(tenant);
  if (it == usage_.end()) return 0;
  while (!it->second.empty() && it->second.front().first <= second - 60) it->second.pop_front();
  int64_t sum = 0;
  for (const auto& [s, n] : it->second) sum += n;
  if (it->second.empty()) usage_.erase(it);
  return sum;
}

void PlannerService::CountRound(Task& task, const MeshThoughtSource& source) {
  const SourceCounts& counts = source.counts();
  const int64_t used = counts.generated + counts.prefilled;
  CountTokens(task.tenant, used - task.tokens_counted);
  task.tokens_counted = used;
}

bool PlannerService::Throttle(Task& task, std::chrono::steady_clock::time_point deadline) {
  // Holds the next expansion while the tenant is over its quota (a cancel and the task's
  // deadline still end the wait; false when the deadline did).
  if (task.tokens_per_minute <= 0) return true;
  while (TokensLastMinute(task.tenant) >= task.tokens_per_minute) {
    if (task.cancel) return true;  // the expansion's own cancel check ends it
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return true;
}

void PlannerService::ExpireLater(const Task& task, int64_t finished_unix_ms) {
  const int64_t at =
      finished_unix_ms +
      std::chrono::duration_cast<std::chrono::milliseconds>(options_.finished_retention).count();
  absl::MutexLock lock(&expiry_mu_);
  if (expiring_.empty() || at < expiring_.begin()->first) sweeper_wake_ = true;  // sooner
  expiring_.emplace(at, Expiry{task.key, task.tenant, task.id});
}

void PlannerService::SweepExpired() {
  expiry_mu_.Lock();
  while (!sweeper_stop_) {
    const int64_t now = UnixMillis();
    while (!expiring_.empty() && expiring_.begin()->first <= now) {
      const Expiry e = expiring_.begin()->second;
      expiring_.erase(expiring_.begin());
      expiry_mu_.Unlock();  // the state store call may take a while
      if (absl::Status st = state_->Delete(e.key); !st.ok() && !absl::IsNotFound(st)) {
        spdlog::warn("{}: could not delete the expired checkpoint: {}", e.key, st.ToString());
      }
      registry_.Remove(e.tenant, e.id);
      expiry_mu_.Lock();
    }
    // Checkpoints the state store did not take: each is written again (it re-queues itself
    // while the store stays away).
    std::vector<std::weak_ptr<Task>> unwritten;
    unwritten.swap(unwritten_);
    if (!unwritten.empty()) {
      expiry_mu_.Unlock();
      std::set<Task*> seen;
      for (const std::weak_ptr<Task>& w : unwritten) {
        std::shared_ptr<Task> task = w.lock();
        if (task == nullptr || !seen.insert(task.get()).second) continue;
        bool pending;
        {
          absl::MutexLock lock(&task->write_mu);
          pending = task->unwritten;
        }
        if (!pending || stopping_) continue;
        const Written written = WriteCheckpoint(*task);
        int64_t finished_ms;
        bool untold;
        {
          absl::MutexLock lock(&task->mu);
          untold = task->untold.has_value();
          finished_ms = task->checkpoint.finished_unix_ms();
        }
        if (!untold) continue;  // still running: its next round goes on as usual
        if (written == Written::kStored) {
          ReleaseFinished(*task);
          ExpireLater(*task, finished_ms);
          Tell(*task);
        } else if (written == Written::kFenced) {
          StopFenced(*task, /*was_running=*/false);
        }
      }
      expiry_mu_.Lock();
    }
    int64_t next = expiring_.empty() ? now + 60000 : expiring_.begin()->first;
    if (!unwritten_.empty()) next = std::min(next, now + 1000);
    sweeper_wake_ = false;
    auto woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(expiry_mu_) {
      return sweeper_stop_ || sweeper_wake_;
    };
    expiry_mu_.AwaitWithTimeout(absl::Condition(&woken),
                                absl::Milliseconds(std::clamp<int64_t>(next - now, 10, 60000)));
  }
  expiry_mu_.Unlock();
}

grpc::ServerUnaryReactor* PlannerService::GetTask(grpc::CallbackServerContext* ctx,
                                                  const v1::GetTaskRequest* req, v1::Task* resp) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  absl::StatusOr<Caller> caller = Authorize(*ctx);
  absl::Status st = caller.status();
  if (caller.ok()) {
    if (std::shared_ptr<Task> task = registry_.Find(req->task_id(), caller->scope())) {
      *resp = task->Snapshot();
    } else if (absl::StatusOr<v1::TaskCheckpoint> cp = StoredTask(*caller, req->task_id());
               cp.ok()) {
      *resp = TaskOfCheckpoint(*cp);
    } else {
      st = cp.status();
    }
  }
  reactor->Finish(rpc::ToGrpcStatus(st));
  return reactor;
}

grpc::ServerWriteReactor<v1::SolveEvent>* PlannerService::WatchTask(
    grpc::CallbackServerContext* ctx, const v1::WatchTaskRequest* req) {
  auto stream = Task::Stream::Create();
  absl::StatusOr<Caller> caller = Authorize(*ctx);
  if (!caller.ok()) {
    stream->Close(caller.status());
  } else if (std::shared_ptr<Task> task = registry_.Find(req->task_id(), caller->scope())) {
    task->Attach(stream);
  } else if (absl::StatusOr<v1::TaskCheckpoint> cp = StoredTask(*caller, req->task_id()); cp.ok()) {
    Follow(TaskKey(req->task_id(), cp->request().tenant()), cp->request().tenant(), req->task_id())
        ->Attach(stream);
  } else {
    stream->Close(cp.status());
  }
  return stream.get();
}

grpc::ServerUnaryReactor* PlannerService::CancelTask(grpc::CallbackServerContext* ctx,
                                                     const v1::CancelTaskRequest* req,
                                                     v1::Task* resp) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  absl::StatusOr<Caller> caller = Authorize(*ctx);
  absl::Status st = caller.status();
  if (caller.ok()) {
    if (std::shared_ptr<Task> task = registry_.Find(req->task_id(), caller->scope())) {
      task->cancel = true;  // the task's thread stops at its next call and releases its KV
      *resp = task->Snapshot();
    } else if (absl::StatusOr<v1::TaskCheckpoint> cp = StoredTask(*caller, req->task_id());
               !cp.ok()) {
      st = cp.status();
    } else {
      // Another planner runs it: its lease carries the cancel to it (or to whoever adopts it).
      if (cp->status() == v1::TASK_STATUS_RUNNING) {
        st = CancelStored(TaskKey(req->task_id(), cp->request().tenant()));
      }
      *resp = TaskOfCheckpoint(*cp);
    }
  }
  reactor->Finish(rpc::ToGrpcStatus(st));
  return reactor;
}

grpc::ServerUnaryReactor* PlannerService::ListTasks(grpc::CallbackServerContext* ctx,
                                                    const v1::ListTasksRequest* req,
                                                    v1::ListTasksResponse* resp) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  absl::StatusOr<Caller> caller = Authorize(*ctx);
  if (!caller.ok()) {
    reactor->Finish(rpc::ToGrpcStatus(caller.status()));
    return reactor;
  }
  if (caller->authenticated && !req->tenant().empty() && req->tenant() != caller->tenant) {
    reactor->Finish(rpc::ToGrpcStatus(absl::PermissionDeniedError(
        "tenant: a caller lists its own token's tenant's tasks; leave the field empty")));
    return reactor;
  }
  const int limit = req->limit() == 0 ? 100 : req->limit();
  if (limit < 1 || limit > 1000) {
    reactor->Finish(rpc::ToGrpcStatus(absl::InvalidArgumentError(
        absl::StrCat("limit ", req->limit(), " out of range [1, 1000]"))));
    return reactor;
  }
  // This planner's tasks, and those the state store holds of other planners (their
  // checkpoints), by tenant and id.
  const std::string tenant = caller->authenticated ? caller->tenant : req->tenant();
  std::map<std::pair<std::string, std::string>, v1::Task> tasks;
  for (const std::shared_ptr<Task>& t : registry_.List(tenant)) {
    v1::Task snap = t->Snapshot();
    snap.clear_nodes();  // the list stays small; GetTask has the tree
    tasks.emplace(std::make_pair(snap.tenant(), snap.task_id()), std::move(snap));
  }
  const std::string prefix =
      tenant.empty() ? std::string(kTaskKeyPrefix) : absl::StrCat(kTaskKeyPrefix, tenant, "/");
  absl::StatusOr<std::vector<std::string>> keys = state_->ListKeys(prefix, limit, "");
  if (!keys.ok()) {
    spdlog::warn("ListTasks lists this planner's tasks only: {}", keys.status().ToString());
  }
  for (const std::string& key : keys.ok() ? *keys : std::vector<std::string>()) {
    absl::StatusOr<statestore::VersionedValue> v = state_->Get(key);
    if (!v.ok()) continue;
    absl::StatusOr<v1::TaskCheckpoint> cp = ParseCheckpoint(key, v->value);
    if (!cp.ok()) continue;
    tasks.emplace(std::make_pair(cp->request().tenant(), cp->request().task_id()),
                  TaskOfCheckpoint(*cp, /*with_nodes=*/false));
  }
  for (auto& [id, t] : tasks) {
    if (resp->tasks_size() == limit) break;
    *resp->add_tasks() = std::move(t);
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace arbor::planner
