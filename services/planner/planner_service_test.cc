// The planner service in one process: the real planner, kv-store and router on loopback (the
// embedded model, experts on the CPU). Restoring a checkpointed tree whose sequences the
// kv-store lost, checkpoints that do not describe a task, and task admission with its limits.
// The parts that need no mesh are in planner_parts_test.cc.
#include "planner_service.h"

#include <map>
#include <set>
#include <thread>

#include "absl/algorithm/container.h"
#include "absl/strings/match.h"
#include "absl/synchronization/notification.h"
#include "arbor/common/clock.h"
#include "arbor/common/process.h"
#include "arbor/rpc/server_host.h"
#include "arbor/rpc/service_main.h"
#include "arbor/statestore/state_store.h"
#include "gtest/gtest.h"
#include "in_process_mesh_for_test.h"
#include "task_checkpoint.h"
#include "task_lease.h"

namespace arbor::planner {
namespace {

using std::chrono::seconds;

v1::SolveRequest Game24Solve(const std::string& task_id, const std::string& tenant = "") {
  v1::SolveRequest req;
  req.set_task_id(task_id);
  req.set_tenant(tenant);
  req.set_problem("4 9 10 13");
  req.set_preset("game24");
  v1::Bfs* bfs = req.mutable_search()->mutable_bfs();
  bfs->set_breadth(2);
  bfs->set_proposals_per_node(3);
  bfs->set_depth(3);
  req.mutable_search()->mutable_generation()->set_seed(7);
  return req;
}

// A planner on loopback over a mesh's channels and a state store.
class PlannerHost {
 public:
  PlannerHost(std::shared_ptr<grpc::Channel> kv, std::shared_ptr<grpc::Channel> router,
              statestore::StateStore* state, PlannerOptions options = {})
      : PlannerHost(std::move(kv), std::vector<std::shared_ptr<grpc::Channel>>{std::move(router)},
                    state, std::move(options)) {}
  PlannerHost(std::shared_ptr<grpc::Channel> kv,
              std::vector<std::shared_ptr<grpc::Channel>> routers, statestore::StateStore* state,
              PlannerOptions options = {}) {
    registry_ = std::make_shared<prometheus::Registry>();
    if (options.model_dir.empty()) options.model_dir = "models/game24-moe";
    options.io_threads = 8;
    auto service =
        PlannerService::Create({std::move(kv)}, std::move(routers), state, options, *registry_);
    EXPECT_TRUE(service.ok()) << service.status();
    if (!service.ok()) return;
    service_ = std::move(*service);
    EXPECT_TRUE(service_->WaitUntilReady(absl::Seconds(30)));
    host_ = *rpc::ServerHost::Start({}, {service_.get()}, registry_);
    stub_ = v1::Planner::NewStub(
        grpc::CreateChannel(host_->address(), grpc::InsecureChannelCredentials()));
  }
  ~PlannerHost() { Stop(); }
  // As the planner's main does: its tasks stop (and resume at a restart) before the drain.
  void Stop() {
    if (host_) host_->Shutdown([&] { service_->BeginShutdown(); });
    service_.reset();
    host_.reset();
  }
  v1::Planner::Stub& stub() { return *stub_; }
  // The value of counter `name` in the planner's registry (0 when absent).
  double Counter(const std::string& name) {
    for (const prometheus::MetricFamily& f : registry_->Collect()) {
      if (f.name == name && !f.metric.empty()) return f.metric[0].counter.value;
    }
    return 0;
  }

  // Solve to the end: the events and the final status.
  struct Solved {
    std::vector<v1::SolveEvent> events;
    grpc::Status status;
  };
  Solved Solve(const v1::SolveRequest& req) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(120));
    return ReadAll(*stub_->Solve(&ctx, req));
  }
  static Solved ReadAll(grpc::ClientReader<v1::SolveEvent>& reader) {
    Solved out;
    v1::SolveEvent e;
    while (reader.Read(&e)) out.events.push_back(e);
    out.status = reader.Finish();
    return out;
  }
  absl::StatusOr<v1::Task> GetTask(const std::string& id) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(10));
    v1::GetTaskRequest req;
    req.set_task_id(id);
    v1::Task t;
    grpc::Status st = stub_->GetTask(&ctx, req, &t);
    if (!st.ok())
      return absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
    return t;
  }
  Solved Watch(const std::string& id) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(120));
    v1::WatchTaskRequest req;
    req.set_task_id(id);
    return ReadAll(*stub_->WatchTask(&ctx, req));
  }
  grpc::Status Cancel(const std::string& id) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(10));
    v1::CancelTaskRequest req;
    req.set_task_id(id);
    v1::Task t;
    return stub_->CancelTask(&ctx, req, &t);
  }
  std::vector<v1::Task> List() {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(10));
    v1::ListTasksRequest req;
    v1::ListTasksResponse resp;
    EXPECT_TRUE(stub_->ListTasks(&ctx, req, &resp).ok());
    return {resp.tasks().begin(), resp.tasks().end()};
  }
  // Waits (bounded) until GetTask says the task is no longer RUNNING.
  absl::StatusOr<v1::Task> AwaitEnd(const std::string& id) {
    const auto until = std::chrono::steady_clock::now() + seconds(120);
    while (std::chrono::steady_clock::now() < until) {
      absl::StatusOr<v1::Task> t = GetTask(id);
      if (!t.ok() || t->status() != v1::TASK_STATUS_RUNNING) return t;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return absl::DeadlineExceededError(id + " still running");
  }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<PlannerService> service_;
  std::unique_ptr<rpc::ServerHost> host_;
  std::unique_ptr<v1::Planner::Stub> stub_;
};

// Polls `cond` every 20 ms for up to `timeout`.
bool Eventually(const std::function<bool()>& cond, std::chrono::seconds timeout) {
  for (const auto until = std::chrono::steady_clock::now() + timeout;
       std::chrono::steady_clock::now() < until;) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return cond();
}

// A state store in front of another that can be made unreachable (every call UNAVAILABLE, as
// a Redis or kv-store that went away) and can play a second writer: `rival_writes` > 0 makes
// that many CompareAndSets of checkpoints first change the key themselves, as another planner
// would.
class FlakyStateStore final : public statestore::StateStore {
 public:
  explicit FlakyStateStore(statestore::StateStore* inner) : inner_(inner) {}
  std::atomic<bool> down{false};
  std::atomic<int> rival_writes{0};
  std::atomic<int> refused{0};  // calls answered UNAVAILABLE

  absl::StatusOr<int64_t> Put(absl::string_view key, absl::string_view value) override {
    if (absl::Status st = Away(); !st.ok()) return st;
    return inner_->Put(key, value);
  }
  absl::StatusOr<statestore::VersionedValue> Get(absl::string_view key) override {
    if (absl::Status st = Away(); !st.ok()) return st;
    return inner_->Get(key);
  }
  absl::Status Delete(absl::string_view key) override {
    if (absl::Status st = Away(); !st.ok()) return st;
    return inner_->Delete(key);
  }
  absl::StatusOr<int64_t> CompareAndSet(absl::string_view key, int64_t expected,
                                        absl::string_view value) override {
    if (absl::Status st = Away(); !st.ok()) return st;
    if (absl::StartsWith(key, kTaskKeyPrefix) && rival_writes > 0 &&
        rival_writes.fetch_sub(1) > 0) {
      absl::StatusOr<statestore::VersionedValue> v = inner_->Get(key);
      v1::TaskCheckpoint rival;
      if (v.ok()) rival.ParseFromString(v->value);
      rival.set_status(v1::TASK_STATUS_RUNNING);
      rival.set_error("written by another planner");
      EXPECT_TRUE(inner_->Put(key, rival.SerializeAsString()).ok());
    }
    return inner_->CompareAndSet(key, expected, value);
  }
  absl::StatusOr<std::vector<std::string>> ListKeys(absl::string_view prefix, int limit,
                                                    absl::string_view start_after) override {
    if (absl::Status st = Away(); !st.ok()) return st;
    return inner_->ListKeys(prefix, limit, start_after);
  }

 private:
  absl::Status Away() {
    if (!down) return absl::OkStatus();
    ++refused;
    return absl::UnavailableError("state store away (test)");
  }
  statestore::StateStore* const inner_;
};

int LiveSequences(testing::InProcessMesh& mesh) { return mesh.kv_tree().stats().live_sequences; }

// A state store in front of another that records every write of a task checkpoint or lease:
// which planner (the checkpoint's lease holder, the lease's holder) wrote it under which lease
// generation, and whether the store took it.
class RecordingStateStore final : public statestore::StateStore {
 public:
  explicit RecordingStateStore(statestore::StateStore* inner) : inner_(inner) {}
  struct Write {
    std::string holder;
    int64_t generation = 0;
    v1::TaskStatus status = v1::TASK_STATUS_UNSPECIFIED;
    bool stored = false;
  };
  std::vector<Write> writes(const std::string& key) {
    absl::MutexLock lock(&mu_);
    return writes_[key];
  }

  absl::StatusOr<int64_t> Put(absl::string_view key, absl::string_view value) override {
    absl::StatusOr<int64_t> v = inner_->Put(key, value);
    Record(key, value, v.ok());
    return v;
  }
  absl::StatusOr<statestore::VersionedValue> Get(absl::string_view key) override {
    return inner_->Get(key);
  }
  absl::Status Delete(absl::string_view key) override { return inner_->Delete(key); }
  absl::StatusOr<int64_t> CompareAndSet(absl::string_view key, int64_t expected,
                                        absl::string_view value) override {
    absl::StatusOr<int64_t> v = inner_->CompareAndSet(key, expected, value);
    Record(key, value, v.ok());
    return v;
  }
  absl::StatusOr<std::vector<std::string>> ListKeys(absl::string_view prefix, int limit,
                                                    absl::string_view start_after) override {
    return inner_->ListKeys(prefix, limit, start_after);
  }

 private:
  void Record(absl::string_view key, absl::string_view value, bool stored) {
    Write w{.stored = stored};
    if (absl::StartsWith(key, kTaskKeyPrefix)) {
      v1::TaskCheckpoint cp;
      cp.ParseFromString(std::string(value));
      w.holder = cp.lease_holder();
      w.generation = cp.lease_generation();
      w.status = cp.status();
    } else {
      v1::TaskLease lease;  // a lease: its holder's claim (status stays UNSPECIFIED)
      lease.ParseFromString(std::string(value));
      w.holder = lease.holder();
      w.generation = lease.generation();
    }
    absl::MutexLock lock(&mu_);
    writes_[std::string(key)].push_back(w);
  }
  statestore::StateStore* const inner_;
  absl::Mutex mu_;
  std::map<std::string, std::vector<Write>> writes_ ABSL_GUARDED_BY(mu_);
};

// A search that runs for many rounds (seconds), so that the fleet tests act while it runs.
v1::SolveRequest LongSolve(const std::string& task_id) {
  v1::SolveRequest req = Game24Solve(task_id);
  v1::Bfs* bfs = req.mutable_search()->mutable_bfs();
  bfs->set_breadth(4);
  bfs->set_proposals_per_node(5);
  bfs->set_depth(4);
  return req;
}

int Results(const std::vector<v1::SolveEvent>& events) {
  return static_cast<int>(absl::c_count_if(events, [](const auto& e) { return e.has_result(); }));
}

// ---- with the mesh ----

class PlannerServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto mesh =
        testing::InProcessMesh::Start({.model_dir = "models/game24-moe", .tokenizer = true});
    ASSERT_TRUE(mesh.ok()) << mesh.status();
    mesh_ = std::move(*mesh);
  }
  // A depth-1 task `id` run to the end, its checkpoint cut back to the root and marked RUNNING,
  // as a crash after its first checkpoint would leave it (every sequence it named released).
  v1::TaskCheckpoint CrashedAtTheRoot(const std::string& id) {
    {
      PlannerHost first(mesh_->kvstore_channel(), mesh_->router_channel(), mesh_->state());
      v1::SolveRequest req = Game24Solve(id);
      req.mutable_search()->mutable_bfs()->set_depth(1);
      EXPECT_TRUE(first.Solve(req).status.ok());
    }
    v1::TaskCheckpoint cp;
    absl::StatusOr<statestore::VersionedValue> v = mesh_->state()->Get(TaskKey(id));
    EXPECT_TRUE(v.ok() && cp.ParseFromString(v->value)) << id;
    while (cp.nodes_size() > 1) cp.mutable_nodes()->RemoveLast();
    if (cp.nodes_size() > 0) cp.mutable_nodes(0)->set_expanded(false);
    cp.set_status(v1::TASK_STATUS_RUNNING);
    cp.clear_result();
    cp.clear_finished_unix_ms();
    return cp;
  }

  std::unique_ptr<testing::InProcessMesh> mesh_;
};

// A task run to the end, its checkpoint cut back to the first round (plus one node of the
// second that was never scored) and marked RUNNING, as a crash would leave it. Every sequence
// it names was released when it ended, so the planner that finds it must rebuild the ones the
// search still forks from their token ids, and the search must go on from there.
TEST_F(PlannerServiceTest, RestoresACheckpointedTreeWithLostSequences) {
  v1::TaskCheckpoint cp;
  {
    PlannerHost first(mesh_->kvstore_channel(), mesh_->router_channel(), mesh_->state());
    PlannerHost::Solved s = first.Solve(Game24Solve("resume-me"));
    ASSERT_TRUE(s.status.ok()) << s.status.error_message();
    absl::StatusOr<statestore::VersionedValue> v = mesh_->state()->Get(TaskKey("resume-me"));
    ASSERT_TRUE(v.ok());
    ASSERT_TRUE(cp.ParseFromString(v->value));
  }
  ASSERT_EQ(LiveSequences(*mesh_), 0);
  ASSERT_EQ(cp.status(), v1::TASK_STATUS_SUCCEEDED);
  int first_round = 1;
  while (first_round < cp.nodes_size() && cp.nodes(first_round).node().depth() == 1) {
    ++first_round;
  }
  ASSERT_GT(first_round, 1);
  ASSERT_LT(first_round, cp.nodes_size()) << "the search must have gone below the first round";
  // Keep the root, the first round, and one unscored node of the second round.
  while (cp.nodes_size() > first_round + 1) cp.mutable_nodes()->RemoveLast();
  cp.mutable_nodes(first_round)->set_scored(false);
  std::vector<std::string> restored_thoughts;
  for (int i = 0; i < first_round; ++i) {
    if (i > 0 && cp.nodes(i).node().parent_id() == 0) cp.mutable_nodes(i)->set_expanded(false);
    restored_thoughts.push_back(cp.nodes(i).node().thought());
  }
  cp.mutable_nodes(cp.nodes(first_round).node().parent_id())->set_expanded(true);
  cp.set_status(v1::TASK_STATUS_RUNNING);
  cp.clear_result();
  ASSERT_TRUE(mesh_->state()->Put(TaskKey("resume-me"), cp.SerializeAsString()).ok());

  PlannerHost second(mesh_->kvstore_channel(), mesh_->router_channel(), mesh_->state());
  absl::StatusOr<v1::Task> t = second.AwaitEnd("resume-me");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->status(), v1::TASK_STATUS_SUCCEEDED) << t->error();
  ASSERT_GT(t->nodes_size(), first_round);
  for (int i = 0; i < first_round; ++i) EXPECT_EQ(t->nodes(i).thought(), restored_thoughts[i]);
  // The search forked the restored, unpruned first-round nodes again: their sequences were
  // rebuilt (a fork of a released sequence fails the task).
  int below_restored = 0;
  for (const v1::Node& n : t->nodes()) {
    if (n.id() >= first_round && n.parent_id() > 0 && n.parent_id() < first_round) {
      ++below_restored;
    }
  }
  EXPECT_GT(below_restored, 0);
  EXPECT_TRUE(Eventually([&] { return LiveSequences(*mesh_) == 0; }, seconds(10)));  // all released
}

TEST_F(PlannerServiceTest, CheckpointsThatAreNoTaskFailOrAreSkipped) {
  // A tree whose node 3 names a parent that does not exist.
  v1::TaskCheckpoint forged;
  *forged.mutable_request() = Game24Solve("forged");
  for (int i = 0; i < 4; ++i) {
    v1::TaskCheckpoint::CheckpointNode* n = forged.add_nodes();
    n->mutable_node()->set_id(i);
    n->mutable_node()->set_parent_id(i - 1);
    n->set_scored(true);
  }
  forged.set_status(v1::TASK_STATUS_RUNNING);
  forged.mutable_nodes(3)->mutable_node()->set_parent_id(9);
  ASSERT_TRUE(mesh_->state()->Put(TaskKey("forged"), forged.SerializeAsString()).ok());
  v1::TaskCheckpoint huge = forged;
  *huge.mutable_request() = Game24Solve("huge");
  huge.mutable_nodes(3)->mutable_node()->set_parent_id(2);
  huge.mutable_request()->mutable_budget()->set_max_nodes(2000000000);
  huge.set_status(v1::TASK_STATUS_RUNNING);
  ASSERT_TRUE(mesh_->state()->Put(TaskKey("huge"), huge.SerializeAsString()).ok());
  ASSERT_TRUE(mesh_->state()->Put(TaskKey("garbage"), "\xff\x01 not a checkpoint").ok());

  PlannerHost planner(mesh_->kvstore_channel(), mesh_->router_channel(), mesh_->state());
  absl::StatusOr<v1::Task> t = planner.AwaitEnd("forged");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->status(), v1::TASK_STATUS_FAILED);
  EXPECT_EQ(t->error(),
            "planner/task/forged: checkpoint nodes[3].node.parent_id 9 is not an earlier node");
  t = planner.AwaitEnd("huge");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->status(), v1::TASK_STATUS_FAILED);
  EXPECT_NE(t->error().find("budget.max_nodes 2e+09 out of range"), std::string::npos)
      << t->error();
  EXPECT_EQ(planner.GetTask("garbage").status().code(), absl::StatusCode::kNotFound);
  // Nothing stored is lost: the bytes that are no checkpoint stay where they were.
  EXPECT_TRUE(mesh_->state()->Get(TaskKey("garbage")).ok());
  // And the planner serves.
  PlannerHost::Solved s = planner.Solve(Game24Solve("after"));
  EXPECT_TRUE(s.status.ok()) << s.status.error_message();
}

// However many checkpoints the state store holds, Resume pages through all of them: a running
// task whose key sorts after 2,500 finished ones still resumes. Finished checkpoints past the
// retention are deleted at start; a task that finishes now is deleted once its retention passes.
TEST_F(PlannerServiceTest, ResumeFindsEveryRunningTaskAndExpiresFinishedOnes) {
  const int64_t now = UnixMillis();
  for (int i = 0; i < 2500; ++i) {
    v1::TaskCheckpoint done;
    *done.mutable_request() = Game24Solve(absl::StrCat("done-", i));
    done.add_nodes()->mutable_node()->set_parent_id(-1);
    done.set_status(v1::TASK_STATUS_SUCCEEDED);
    // The first 2,000 finished two hours ago (past the 1 h retention), the rest a minute ago.
    done.set_finished_unix_ms(i < 2000 ? now - 7200 * 1000 : now - 60 * 1000);
    ASSERT_TRUE(
        mesh_->state()->Put(TaskKey(done.request().task_id()), done.SerializeAsString()).ok());
  }
  // A task cut back to its root and marked RUNNING, as a crash after its first checkpoint
  // would leave it (its key sorts after every other).
  v1::TaskCheckpoint running = CrashedAtTheRoot("zz-running");
  ASSERT_EQ(running.nodes_size(), 1);
  ASSERT_TRUE(mesh_->state()->Put(TaskKey("zz-running"), running.SerializeAsString()).ok());

  PlannerOptions options;
  options.finished_retention = std::chrono::seconds(3600);
  PlannerHost planner(mesh_->kvstore_channel(), mesh_->router_channel(), mesh_->state(), options);
  absl::StatusOr<v1::Task> t = planner.AwaitEnd("zz-running");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->status(), v1::TASK_STATUS_SUCCEEDED) << t->error();
  EXPECT_EQ(planner.GetTask("done-0").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(planner.GetTask("done-2499").ok());
  std::vector<std::string> left;
  std::string after;
  for (;;) {
    auto page = mesh_->state()->ListKeys(kTaskKeyPrefix, 1000, after);
    ASSERT_TRUE(page.ok());
    if (page->empty()) break;
    after = page->back();
    left.insert(left.end(), page->begin(), page->end());
  }
  EXPECT_EQ(left.size(), 500u + 1u);  // the recent finished ones and the resumed task
  planner.Stop();

  // A retention of 1 s: a task that finishes is gone (checkpoint and all) shortly after.
  options.finished_retention = std::chrono::seconds(1);
  PlannerHost quick(mesh_->kvstore_channel(), mesh_->router_channel(), mesh_->state(), options);
  PlannerHost::Solved s = quick.Solve(Game24Solve("short-lived"));
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_TRUE(quick.GetTask("short-lived").ok());
  const auto until = std::chrono::steady_clock::now() + seconds(30);
  while (quick.GetTask("short-lived").ok() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(quick.GetTask("short-lived").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(mesh_->state()->Get(TaskKey("short-lived")).status().code(),
            absl::StatusCode::kNotFound);
}

// A task resumed after a restart runs under its tenant's quotas from the tokens file, as a new
// one does: tenant a's budget is capped at max_nodes=4 (a task's stored request carries the
// budget it ran with), tenant b's tokens_per_minute=1 holds the task.
TEST_F(PlannerServiceTest, ResumedTasksKeepTheirTenantsQuotas) {
  rpc::TokenAuthenticator auth(
      *rpc::ParseTokens(absl::StrCat(rpc::TokenHash("tok-a"), " tenant=a max_nodes=4\n",
                                     rpc::TokenHash("tok-b"), " tenant=b tokens_per_minute=1\n"),
                        "tokens"));
  PlannerOptions options;
  options.auth = &auth;
  {  // a new task's checkpoint names the budget its quota gave it
    PlannerHost first(mesh_->kvstore_channel(), mesh_->router_channel(), mesh_->state(), options);
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer tok-a");
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(120));
    auto reader = first.stub().Solve(&ctx, Game24Solve("new-a"));
    v1::SolveEvent e;
    while (reader->Read(&e)) {
    }
    ASSERT_TRUE(reader->Finish().ok());
    absl::StatusOr<statestore::VersionedValue> v = mesh_->state()->Get(TaskKey("new-a", "a"));
    ASSERT_TRUE(v.ok()) << v.status();
    v1::TaskCheckpoint cp;
    ASSERT_TRUE(cp.ParseFromString(v->value));
    EXPECT_EQ(cp.request().budget().max_nodes(), 4);
    EXPECT_LE(cp.nodes_size(), 4);
  }
  // Two tasks as a crash leaves them, no budget named (the server's default of 200 nodes, were
  // there no quota).
  const v1::TaskCheckpoint root = CrashedAtTheRoot("seed");
  ASSERT_EQ(root.nodes_size(), 1);
  for (const std::string tenant : {"a", "b"}) {
    v1::TaskCheckpoint cp = root;
    *cp.mutable_request() = Game24Solve("resumed-" + tenant, tenant);
    ASSERT_TRUE(
        mesh_->state()->Put(TaskKey(cp.request().task_id(), tenant), cp.SerializeAsString()).ok());
  }
  auto checkpoint = [&](const std::string& tenant) {
    v1::TaskCheckpoint cp;
    absl::StatusOr<statestore::VersionedValue> v =
        mesh_->state()->Get(TaskKey("resumed-" + tenant, tenant));
    if (v.ok()) {
      EXPECT_TRUE(cp.ParseFromString(v->value));
    }
    return cp;
  };
  PlannerHost planner(mesh_->kvstore_channel(), mesh_->router_channel(), mesh_->state(), options);
  const auto until = std::chrono::steady_clock::now() + seconds(120);
  while (checkpoint("a").status() == v1::TASK_STATUS_RUNNING &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const v1::TaskCheckpoint a = checkpoint("a");
  EXPECT_NE(a.status(), v1::TASK_STATUS_RUNNING);
  EXPECT_LE(a.nodes_size(), 4);
  EXPECT_GT(a.nodes_size(), 1);
  // b's minute's token went on rebuilding its root's KV (or on its first round): it waits, where
  // unpaced the whole search takes about as long as a's did.
  const int b_nodes = checkpoint("b").nodes_size();
  std::this_thread::sleep_for(seconds(3));
  EXPECT_EQ(checkpoint("b").status(), v1::TASK_STATUS_RUNNING);
  EXPECT_EQ(checkpoint("b").nodes_size(), b_nodes);
  planner.Stop();  // ends the waiting task
}

// A router that is not there: the task waits for it (trying to heal) and fails once
// heal_timeout is over, saying what it could not reach.
TEST_F(PlannerServiceTest, ATaskGivesUpOnAServiceThatStaysAwayNamingIt) {
  PlannerOptions options;
  options.heal_timeout = std::chrono::seconds(2);
  PlannerHost planner(mesh_->kvstore_channel(),
                      grpc::CreateChannel(absl::StrCat("127.0.0.1:", FreeLoopbackPort()),
                                          grpc::InsecureChannelCredentials()),
                      mesh_->state(), options);
  const PlannerHost::Solved s = planner.Solve(Game24Solve("unreachable"));
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(s.status.error_message().find("the mesh stayed unreachable ("), std::string::npos)
      << s.status.error_message();
  EXPECT_NE(s.status.error_message().find("router"), std::string::npos) << s.status.error_message();
  EXPECT_EQ(LiveSequences(*mesh_), 0);
}

// The state store goes away while a task runs: the task runs on to its result, and its
// checkpoint, which the store could not take, is written once the store is back.
TEST_F(PlannerServiceTest, ATaskRunsOnWhileTheStateStoreIsAwayAndIsStoredWhenItIsBack) {
  FlakyStateStore store(mesh_->state());
  PlannerHost planner(mesh_->kvstore_channel(), mesh_->router_channel(), &store);
  store.down = true;
  PlannerHost::Solved s;
  std::atomic<bool> ended{false};
  std::thread solve([&] {
    s = planner.Solve(Game24Solve("no-store"));
    ended = true;
  });
  // The search ends while the store is away; its outcome is told once it is stored.
  ASSERT_TRUE(Eventually(
      [&] {
        absl::StatusOr<v1::Task> t = planner.GetTask("no-store");
        return t.ok() && t->status() == v1::TASK_STATUS_SUCCEEDED;
      },
      seconds(60)));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_GT(store.refused.load(), 0);
  EXPECT_TRUE(absl::IsNotFound(mesh_->state()->Get(TaskKey("no-store")).status()));
  EXPECT_FALSE(ended) << "the outcome was told before it was stored";
  store.down = false;
  solve.join();
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  ASSERT_FALSE(s.events.empty());
  EXPECT_TRUE(s.events.back().has_result());
  absl::StatusOr<statestore::VersionedValue> v = mesh_->state()->Get(TaskKey("no-store"));
  v1::TaskCheckpoint cp;
  ASSERT_TRUE(v.ok() && cp.ParseFromString(v->value));
  EXPECT_EQ(cp.status(), v1::TASK_STATUS_SUCCEEDED);
  EXPECT_EQ(cp.result().answer(), s.events.back().result().answer());
  EXPECT_GT(cp.nodes_size(), 1);
}

// A planner that starts while the state store is away does not serve (every call UNAVAILABLE)
// until it has loaded the checkpoints; then it serves the tasks they hold.
TEST_F(PlannerServiceTest, APlannerStartedWithoutItsStateStoreWaitsForIt) {
  {
    PlannerHost first(mesh_->kvstore_channel(), mesh_->router_channel(), mesh_->state());
    ASSERT_TRUE(first.Solve(Game24Solve("before")).status.ok());
  }
  FlakyStateStore store(mesh_->state());
  store.down = true;
  auto registry = std::make_shared<prometheus::Registry>();
  auto service = PlannerService::Create(mesh_->kvstore_channel(), mesh_->router_channel(), &store,
                                        {.model_dir = "models/game24-moe"}, *registry);
  ASSERT_TRUE(service.ok()) << service.status();
  EXPECT_FALSE((*service)->WaitUntilReady(absl::Milliseconds(600)));
  rpc::ServerHostOptions host_options;
  host_options.serving = false;
  auto host = *rpc::ServerHost::Start(host_options, {service->get()}, registry);
  (*service)->OnReady([h = host.get()] { h->SetServing(true); });
  auto stub = v1::Planner::NewStub(
      grpc::CreateChannel(host->address(), grpc::InsecureChannelCredentials()));
  auto get = [&] {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(10));
    v1::GetTaskRequest req;
    req.set_task_id("before");
    v1::Task t;
    grpc::Status st = stub->GetTask(&ctx, req, &t);
    return std::make_pair(st, t);
  };
  const auto [away, unused] = get();
  EXPECT_EQ(away.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(away.error_message().find("loading its tasks' checkpoints"), std::string::npos)
      << away.error_message();
  EXPECT_FALSE(rpc::HealthServing(host->address(), std::chrono::milliseconds(2000)));
  store.down = false;
  ASSERT_TRUE((*service)->WaitUntilReady(absl::Seconds(30)));
  EXPECT_TRUE(
      Eventually([&] { return rpc::HealthServing(host->address()); }, std::chrono::seconds(10)));
  const auto [st, task] = get();
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(task.status(), v1::TASK_STATUS_SUCCEEDED);
  host->Shutdown([&] { (*service)->BeginShutdown(); });
}

// Another writer changes a running task's checkpoint (another planner took the task over): this
// planner's next write is refused, the task stops ABORTED without touching the checkpoint or
// the KV, and the other writer's checkpoint stays.
TEST_F(PlannerServiceTest, AStaleCheckpointWriterIsRefusedAndStopsTheTask) {
  FlakyStateStore store(mesh_->state());
  PlannerHost planner(mesh_->kvstore_channel(), mesh_->router_channel(), &store);
  store.rival_writes = 1;
  const PlannerHost::Solved s = planner.Solve(Game24Solve("taken-over"));
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::ABORTED) << s.status.error_message();
  EXPECT_NE(s.status.error_message().find("run by another planner"), std::string::npos)
      << s.status.error_message();
  for (const v1::SolveEvent& e : s.events) EXPECT_FALSE(e.has_result());
  absl::StatusOr<statestore::VersionedValue> v = mesh_->state()->Get(TaskKey("taken-over"));
  ASSERT_TRUE(v.ok());
  v1::TaskCheckpoint cp;
  ASSERT_TRUE(cp.ParseFromString(v->value));
  EXPECT_EQ(cp.error(), "written by another planner");
  EXPECT_EQ(cp.status(), v1::TASK_STATUS_RUNNING);
  // Its sequences are the new owner's: this planner released none of them.
  EXPECT_GT(LiveSequences(*mesh_), 0);
}

// A router whose Extends hang until the test lets them go, so tasks stay running; then they
// fail with an error no healing waits out.
class HeldRouter final : public v1::Router::CallbackService {
 public:
  grpc::ServerWriteReactor<v1::ExtendEvent>* Extend(grpc::CallbackServerContext* ctx,
                                                    const v1::ExtendRequest* req) override {
    auto stream = rpc::EventStream<v1::ExtendEvent>::Create();
    absl::MutexLock lock(&mu_);
    if (released_) {
      stream->Close(absl::FailedPreconditionError("released"));
    } else {
      held_.push_back(stream);
    }
    return stream.get();
  }
  int held() {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(held_.size());
  }
  void ReleaseAll() {
    absl::MutexLock lock(&mu_);
    released_ = true;
    for (auto& s : held_) s->Close(absl::FailedPreconditionError("released"));
    held_.clear();
  }

 private:
  absl::Mutex mu_;
  std::vector<std::shared_ptr<rpc::EventStream<v1::ExtendEvent>>> held_ ABSL_GUARDED_BY(mu_);
  bool released_ ABSL_GUARDED_BY(mu_) = false;
};

TEST_F(PlannerServiceTest, AdmissionKeepsTheTaskAndTenantLimits) {
  HeldRouter held;
  auto held_host = *rpc::ServerHost::Start({}, {&held}, std::make_shared<prometheus::Registry>());
  PlannerHost planner(mesh_->kvstore_channel(),
                      grpc::CreateChannel(held_host->address(), grpc::InsecureChannelCredentials()),
                      mesh_->state(), {.max_tasks = 3, .max_tasks_per_tenant = 1});
  // Each admitted task's root Extend hangs at the held router: the task keeps running.
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  auto start = [&](const std::string& id, const std::string& tenant) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    return planner.stub().Solve(contexts.back().get(), Game24Solve(id, tenant));
  };
  auto a1 = start("a1", "a");
  auto b1 = start("b1", "b");
  const auto until = std::chrono::steady_clock::now() + seconds(30);
  while (held.held() < 2 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(held.held(), 2);
  v1::SolveEvent e;
  auto a2 = start("a2", "a");
  EXPECT_FALSE(a2->Read(&e));
  grpc::Status st = a2->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(st.error_message(), "tenant \"a\" runs 1 tasks, its limit (--max_tasks_per_tenant)");
  auto c1 = start("c1", "c");
  // Separate RPCs arrive in any order: c1 must be running before d1 asks.
  while (held.held() < 3 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(held.held(), 3);
  auto d1 = start("d1", "d");
  EXPECT_FALSE(d1->Read(&e));
  st = d1->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(st.error_message(), "the planner runs 3 tasks, its limit (--max_tasks); retry later");
  // A Solve of a running task's id attaches to it, whatever the limits.
  EXPECT_EQ(planner.GetTask("a1")->status(), v1::TASK_STATUS_RUNNING);
  auto again = start("a1", "a");
  // A cancelled task no longer counts against its tenant.
  {
    grpc::ClientContext ctx;
    v1::CancelTaskRequest req;
    req.set_task_id("a1");
    v1::Task resp;
    ASSERT_TRUE(planner.stub().CancelTask(&ctx, req, &resp).ok());
  }
  auto a3 = start("a3", "a");
  while (held.held() < 4 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(held.held(), 4);
  held.ReleaseAll();
  // Every task ends (the cancelled one CANCELLED, the others failing on the router), and the
  // attached stream ends with its task.
  EXPECT_EQ(planner.AwaitEnd("a1")->status(), v1::TASK_STATUS_CANCELLED);
  EXPECT_EQ(planner.AwaitEnd("b1")->status(), v1::TASK_STATUS_FAILED);
  EXPECT_EQ(planner.AwaitEnd("c1")->status(), v1::TASK_STATUS_FAILED);
  EXPECT_EQ(planner.AwaitEnd("a3")->status(), v1::TASK_STATUS_FAILED);
  while (again->Read(&e)) {
  }
  EXPECT_EQ(again->Finish().error_code(), grpc::StatusCode::CANCELLED);
  for (auto* s : {&a1, &b1, &c1, &a3}) {
    while ((*s)->Read(&e)) {
    }
    (*s)->Finish();
  }
  planner.Stop();
  held_host->Shutdown();
  EXPECT_EQ(LiveSequences(*mesh_), 0);
}

// ---- a fleet: several planners on one state store ----

constexpr std::chrono::milliseconds kTestLease{400};

// Any planner answers for any task: a task run by one planner is watched, read, listed,
// reattached to and cancelled through another, which follows its checkpoint in the state store.
TEST_F(PlannerServiceTest, EveryPlannerAnswersForEveryTask) {
  PlannerHost a(mesh_->kvstore_channel(), mesh_->router_channel(), mesh_->state(),
                {.name = "a", .lease = kTestLease});
  PlannerHost b(mesh_->kvstore_channel(), mesh_->router_channel(), mesh_->state(),
                {.name = "b", .lease = kTestLease});
  PlannerHost::Solved on_a;
  std::thread solve([&] { on_a = a.Solve(LongSolve("fleet-1")); });
  ASSERT_TRUE(Eventually([&] { return b.GetTask("fleet-1").ok(); }, seconds(30)));
  const PlannerHost::Solved watched = b.Watch("fleet-1");
  solve.join();
  ASSERT_TRUE(on_a.status.ok()) << on_a.status.error_message();
  ASSERT_TRUE(watched.status.ok()) << watched.status.error_message();
  ASSERT_EQ(Results(on_a.events), 1);
  ASSERT_EQ(Results(watched.events), 1);
  EXPECT_EQ(watched.events.back().result().SerializeAsString(),
            on_a.events.back().result().SerializeAsString());
  // Every node of the tree reached the watcher through B, and GetTask through B is A's view.
  absl::StatusOr<v1::Task> via_a = a.GetTask("fleet-1"), via_b = b.GetTask("fleet-1");
  ASSERT_TRUE(via_a.ok() && via_b.ok());
  EXPECT_EQ(via_b->status(), v1::TASK_STATUS_SUCCEEDED);
  EXPECT_EQ(via_b->nodes_size(), via_a->nodes_size());
  std::set<int> created;
  for (const v1::SolveEvent& e : watched.events) {
    if (e.has_node_created()) created.insert(e.node_created().id());
  }
  EXPECT_EQ(static_cast<int>(created.size()), via_a->nodes_size());
  const std::vector<v1::Task> listed = b.List();
  EXPECT_TRUE(absl::c_any_of(listed, [](const v1::Task& t) {
    return t.task_id() == "fleet-1" && t.status() == v1::TASK_STATUS_SUCCEEDED;
  }));
  // A Solve of the finished task's id through B reattaches: the same result, once.
  const PlannerHost::Solved again = b.Solve(LongSolve("fleet-1"));
  ASSERT_TRUE(again.status.ok()) << again.status.error_message();
  EXPECT_EQ(Results(again.events), 1);
  EXPECT_EQ(again.events.back().result().answer(), on_a.events.back().result().answer());

  // A CancelTask through B reaches the task on A (through its lease).
  PlannerHost::Solved cancelled;
  solve = std::thread([&] { cancelled = a.Solve(LongSolve("fleet-2")); });
  ASSERT_TRUE(Eventually(
      [&] {
        absl::StatusOr<v1::Task> t = b.GetTask("fleet-2");
        return t.ok() && t->nodes_size() > 1;
      },
      seconds(30)));
  ASSERT_TRUE(b.Cancel("fleet-2").ok());
  solve.join();
  EXPECT_EQ(cancelled.status.error_code(), grpc::StatusCode::CANCELLED)
      << cancelled.status.error_message();
  EXPECT_EQ(b.AwaitEnd("fleet-2")->status(), v1::TASK_STATUS_CANCELLED);
  EXPECT_TRUE(Eventually([&] { return LiveSequences(*mesh_) == 0; }, seconds(10)));
}

// Split brain: a planner cut off from the state store for longer than its lease (as a paused or
// partitioned one) loses its task to another, which adopts it from the checkpoint and finishes
// it; when the first can write again its writes are refused and it drops the task. No two
// planners ever write the checkpoint under the same lease generation.
TEST_F(PlannerServiceTest, APlannerCutOffPastItsLeaseLosesItsTaskAndItsWritesAreRefused) {
  RecordingStateStore recorded(mesh_->state());
  FlakyStateStore a_view(&recorded);
  PlannerHost a(mesh_->kvstore_channel(), mesh_->router_channel(), &a_view,
                {.name = "a", .lease = kTestLease});
  PlannerHost b(mesh_->kvstore_channel(), mesh_->router_channel(), &recorded,
                {.name = "b", .lease = kTestLease});
  const std::string key = TaskKey("split");
  PlannerHost::Solved on_a;
  std::thread solve([&] { on_a = a.Solve(LongSolve("split")); });
  auto written_by = [&](const std::string& holder) {
    return absl::c_count_if(recorded.writes(key), [&](const RecordingStateStore::Write& w) {
      return w.holder == holder && w.stored;
    });
  };
  ASSERT_TRUE(Eventually([&] { return written_by("a") >= 2; }, seconds(30)));
  a_view.down = true;  // A runs on, but can neither renew its lease nor write
  ASSERT_TRUE(Eventually([&] { return written_by("b") >= 1; }, seconds(30)))
      << "B never adopted the task";
  a_view.down = false;
  solve.join();
  // A's client learns that the task moved; A wrote nothing after B took it.
  EXPECT_EQ(on_a.status.error_code(), grpc::StatusCode::ABORTED) << on_a.status.error_message();
  EXPECT_EQ(Results(on_a.events), 0);
  absl::StatusOr<v1::Task> done = b.AwaitEnd("split");
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->status(), v1::TASK_STATUS_SUCCEEDED) << done->error();
  // Reattaching through A now reaches B's task: one result.
  const PlannerHost::Solved reattached = a.Solve(LongSolve("split"));
  ASSERT_TRUE(reattached.status.ok()) << reattached.status.error_message();
  EXPECT_EQ(Results(reattached.events), 1);

  const std::vector<RecordingStateStore::Write> writes = recorded.writes(key);
  std::map<int64_t, std::set<std::string>> writers;  // generation -> planners that stored
  bool b_wrote = false, a_refused_after_b = false, a_stored_after_b = false;
  int finals = 0;
  for (const RecordingStateStore::Write& w : writes) {
    if (w.stored) writers[w.generation].insert(w.holder);
    if (w.holder == "b" && w.stored) b_wrote = true;
    if (w.holder == "a" && b_wrote) (w.stored ? a_stored_after_b : a_refused_after_b) = true;
    finals += w.stored && w.status != v1::TASK_STATUS_RUNNING;
  }
  for (const auto& [generation, who] : writers) {
    EXPECT_EQ(who.size(), 1u) << "generation " << generation << " written by several planners";
  }
  EXPECT_EQ(writers.begin()->second, std::set<std::string>{"a"});
  EXPECT_EQ(writers.rbegin()->second, std::set<std::string>{"b"});
  EXPECT_FALSE(a_stored_after_b);
  EXPECT_EQ(finals, 1);
  // Once it could write again, A tried (its lease renewal, or its checkpoint) and was refused.
  bool b_leased = false;
  for (const RecordingStateStore::Write& w : recorded.writes(LeaseKeyOf(key))) {
    b_leased |= w.holder == "b" && w.stored;
    if (b_leased && w.holder == "a") {
      EXPECT_FALSE(w.stored) << "A renewed a lease B holds";
      a_refused_after_b = true;
    }
  }
  EXPECT_TRUE(a_refused_after_b) << "A never tried to write again";
}

// A planner that shuts down hands its tasks' leases back: another planner adopts them at once
// and finishes them from their checkpoints; the client reattaches through it.
TEST_F(PlannerServiceTest, APlannerThatStopsHandsItsTasksToAnother) {
  auto a = std::make_unique<PlannerHost>(mesh_->kvstore_channel(), mesh_->router_channel(),
                                         mesh_->state(),
                                         PlannerOptions{.name = "a", .lease = seconds(60)});
  PlannerHost b(mesh_->kvstore_channel(), mesh_->router_channel(), mesh_->state(),
                {.name = "b", .lease = seconds(60)});
  PlannerHost::Solved on_a;
  std::thread solve([&] { on_a = a->Solve(LongSolve("moving")); });
  ASSERT_TRUE(Eventually(
      [&] {
        absl::StatusOr<v1::Task> t = b.GetTask("moving");
        return t.ok() && t->nodes_size() > 1;
      },
      seconds(30)));
  a->Stop();
  solve.join();
  EXPECT_EQ(on_a.status.error_code(), grpc::StatusCode::UNAVAILABLE) << on_a.status.error_message();
  // The lease is a minute long: only the hand-back lets B take the task within this test.
  const PlannerHost::Solved reattached = b.Solve(LongSolve("moving"));
  ASSERT_TRUE(reattached.status.ok()) << reattached.status.error_message();
  EXPECT_EQ(Results(reattached.events), 1);
  EXPECT_EQ(b.GetTask("moving")->status(), v1::TASK_STATUS_SUCCEEDED);
  EXPECT_TRUE(Eventually([&] { return LiveSequences(*mesh_) == 0; }, seconds(10)));
}

// Bounded load: tasks keep to their own router until it runs more than 1.25 times the mean of the
// planner's Extends per router; then they go to the next router in their order. One router here
// holds every Extend (it never answers): only the first tasks that prefer it stay there, the rest
// run on the other router and complete.
TEST_F(PlannerServiceTest, TasksLeaveAnOverloadedRouter) {
  HeldRouter held;
  auto held_host = *rpc::ServerHost::Start({}, {&held}, std::make_shared<prometheus::Registry>());
  PlannerHost planner(
      mesh_->kvstore_channel(),
      {grpc::CreateChannel(held_host->address(), grpc::InsecureChannelCredentials()),
       mesh_->router_channel()},
      mesh_->state(), {.max_tasks = 16, .max_tasks_per_tenant = 16});
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::SolveEvent>>> streams;
  constexpr int kTasks = 8;
  int on_held = 0;
  for (int i = 0; i < kTasks; ++i) {
    v1::SolveRequest req = Game24Solve(absl::StrCat("load-", i));
    req.mutable_search()->mutable_bfs()->set_depth(1);
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    streams.push_back(planner.stub().Solve(contexts.back().get(), req));
    // Each task either hangs on the held router or completes on the other before the next.
    ASSERT_TRUE(Eventually(
        [&] {
          absl::StatusOr<v1::Task> t = planner.GetTask(absl::StrCat("load-", i));
          return held.held() > on_held || (t.ok() && t->status() != v1::TASK_STATUS_RUNNING);
        },
        seconds(30)));
    on_held = held.held();
  }
  // Two Extends on the held router already exceed 1.25 x the mean (1.25 x 3 / 2): the tasks
  // after those went to the other router.
  EXPECT_LE(on_held, 2);
  int succeeded = 0;
  for (int i = 0; i < kTasks; ++i) {
    absl::StatusOr<v1::Task> t = planner.GetTask(absl::StrCat("load-", i));
    succeeded += t.ok() && t->status() == v1::TASK_STATUS_SUCCEEDED;
  }
  EXPECT_EQ(succeeded, kTasks - on_held);
  EXPECT_GE(planner.Counter("arbor_planner_rounds_moved_for_load_total"), 1);
  for (auto& c : contexts) c->TryCancel();
  planner.Stop();
  held.ReleaseAll();
  held_host->Shutdown();
}

}  // namespace
}  // namespace arbor::planner
