// The planner through the real mesh (`arbor up` on loopback: kv-store, expert workers, router;
// the planner as its own process so it can be killed), on the test model's game24 preset:
// - BFS b=2 completes; events arrive in order and the counts add up; every sequence is released;
// - cancel mid-task: the stream ends CANCELLED and the kv-store's live sequences return to 0;
// - 100 tasks: nothing left behind;
// - kill -9 of the planner mid-task, restart on the same state store (a real redis-server behind
//   the kv-store): Solve with the same task id reattaches, the task completes once, with no
//   duplicate nodes, and nothing leaks;
// - kill -9 of the kv-store, or of the router, mid-task (`arbor up` restarts it): the planner
//   heals the task, which completes once; a handle from before the kv-store's restart is
//   NOT_FOUND;
// - SIGTERM to a planner whose kv-store hangs: it exits anyway, and its task resumes;
// - kill -9 of `arbor up`'s Redis mid-task: nothing is lost;
// - `arbor up` itself stopped mid-task and started again: the task resumes and completes once;
// - bad requests name the field.
#include <signal.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <thread>

#include "absl/algorithm/container.h"
#include "absl/strings/str_cat.h"
#include "arbor/common/process.h"
#include "arbor/rpc/service_main.h"
#include "arbor/search/task_language.h"
#include "arbor/statestore/redis_server_for_test.h"
#include "arbor/statestore/state_store.h"
#include "arbor/v1/kvstore.grpc.pb.h"
#include "arbor/v1/planner.grpc.pb.h"
#include "child_process.h"
#include "game24_requests.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace arbor {
namespace {

using testing::WaitFor;

const std::string kModel = std::string(ARBOR_SOURCE_DIR) + "/models/test-moe";

// `arbor up` without a planner, plus a planner process the test controls.
class PlannerMesh {
 public:
  // `state`: arbor up's --state ("memory", "redis" for its own, or a redis:// url).
  // `extra_router`: one more router address for the planner (after `arbor up`'s).
  explicit PlannerMesh(const std::string& state = "memory", const std::string& extra_router = "")
      : extra_router_(extra_router) {
    dir_ = ::testing::TempDir() + "arbor_planner_test_" + std::to_string(::getpid()) + "_" +
           std::to_string(counter_++);
    std::filesystem::create_directories(dir_);
    const std::string ready = dir_ + "/ready.json";
    up_ = std::make_unique<testing::ChildProcess>(
        std::vector<std::string>{ARBOR_CLI_BIN, "up", "--ports=auto", "--model=" + kModel,
                                 "--with_planner=false", "--ready_file=" + ready,
                                 "--log_dir=" + dir_, "--state=" + state, "--data_dir=" + dir_,
                                 "--insecure"},
        dir_ + "/up.log");
    if (!WaitFor([&] { return std::filesystem::exists(ready); }, std::chrono::seconds(90))) return;
    std::ifstream in(ready);
    const nlohmann::json j = nlohmann::json::parse(in);
    kvstore_ = j["kvstore"].get<std::string>();
    router_ = j["router"].get<std::string>();
    kv_ = v1::KvStore::NewStub(grpc::CreateChannel(kvstore_, grpc::InsecureChannelCredentials()));
    planner_address_ = absl::StrCat("127.0.0.1:", FreeLoopbackPort());
    ok_ = StartPlanner();
  }
  ~PlannerMesh() {
    planner_.reset();
    if (up_) up_->Signal(SIGTERM);
  }

  bool StartPlanner(const std::vector<std::string>& flags = {}) {
    planner_ = StartPlannerProcess(planner_address_, "planner", flags);
    if (planner_ == nullptr) return false;
    stub_ = v1::Planner::NewStub(
        grpc::CreateChannel(planner_address_, grpc::InsecureChannelCredentials()));
    return true;
  }
  // One more planner process on the same mesh and state store (logging to <log_name>.log), once
  // it serves; null if it does not.
  std::unique_ptr<testing::ChildProcess> StartPlannerProcess(
      const std::string& address, const std::string& log_name,
      const std::vector<std::string>& flags) {
    std::vector<std::string> argv = {
        ARBOR_PLANNER_BIN,
        "--model=" + kModel,
        "--address=" + address,
        absl::StrCat("--metrics_address=127.0.0.1:", FreeLoopbackPort()),
        "--kvstore=" + kvstore_,
        "--router=" + router_ + (extra_router_.empty() ? "" : "," + extra_router_),
        "--insecure"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    auto planner = std::make_unique<testing::ChildProcess>(argv, dir_ + "/" + log_name + ".log");
    if (!planner->WaitServing(address, std::chrono::seconds(60)).ok()) return nullptr;
    return planner;
  }
  std::string Log(const std::string& name) const {
    std::ifstream in(dir_ + "/" + name + ".log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  void KillPlanner() { planner_->Signal(SIGKILL); }
  // SIGTERM to the planner: its wait status once it exited, or -1 (after SIGKILL) when it is
  // still there after `timeout`.
  int StopPlanner(std::chrono::seconds timeout) {
    ::kill(planner_pid(), SIGTERM);
    return planner_->Wait(timeout);
  }
  pid_t planner_pid() const { return planner_->pid(); }
  // kill -9 of one of `arbor up`'s services ("kvstore", "router", "expert-0"), which `arbor up`
  // restarts: its pid and restarts from the ready file (-1, -1 when it is not there).
  std::pair<int, int> Service(const std::string& name) const {
    std::ifstream in(dir_ + "/ready.json");
    const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_discarded()) return {-1, -1};
    for (const auto& s : j["services"]) {
      if (s["name"] == name) return {s["pid"].get<int>(), s["restarts"].get<int>()};
    }
    return {-1, -1};
  }
  std::string ReadyField(const std::string& name) const {
    std::ifstream in(dir_ + "/ready.json");
    const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
    return j.is_discarded() || !j.contains(name) ? "" : j[name].get<std::string>();
  }
  bool Kill(const std::string& name) { return ::kill(Service(name).first, SIGKILL) == 0; }
  // Drops every kv-store sequence of a task, as a kv-store restart would.
  int ReleaseOwner(const std::string& owner) {
    v1::ReleaseOwnerRequest req;
    req.set_owner(owner);
    v1::ReleaseOwnerResponse resp;
    grpc::ClientContext ctx;
    EXPECT_TRUE(kv_->ReleaseOwner(&ctx, req, &resp).ok());
    return resp.released();
  }
  // A sequence of the test's own (no tenant), its handle.
  uint64_t CreateSequence() {
    v1::CreateSequenceRequest req;
    req.add_prompt_token_ids(1);
    v1::CreateSequenceResponse resp;
    grpc::ClientContext ctx;
    EXPECT_TRUE(kv_->CreateSequence(&ctx, req, &resp).ok());
    return resp.sequence_id();
  }
  void ReleaseSequence(uint64_t handle) {
    v1::ReleaseRequest req;
    req.add_sequence_ids(handle);
    v1::ReleaseResponse resp;
    grpc::ClientContext ctx;
    EXPECT_TRUE(kv_->Release(&ctx, req, &resp).ok());
  }
  v1::KvStore::Stub& kv() { return *kv_; }
  std::string PlannerLog() const { return Log("planner"); }

  bool ok() const { return ok_; }
  const std::string& dir() const { return dir_; }
  v1::Planner::Stub& planner() { return *stub_; }

  v1::StatsResponse Stats() {
    grpc::ClientContext ctx;
    v1::StatsResponse s;
    EXPECT_TRUE(kv_->Stats(&ctx, {}, &s).ok());
    return s;
  }

 private:
  static inline int counter_ = 0;
  std::string extra_router_, dir_, kvstore_, router_, planner_address_;
  bool ok_ = false;
  std::unique_ptr<testing::ChildProcess> up_, planner_;
  std::unique_ptr<v1::KvStore::Stub> kv_;
  std::unique_ptr<v1::Planner::Stub> stub_;
};

v1::SolveRequest Bfs(int breadth, int proposals, int depth, int thought_tokens = 8) {
  return testing::Game24Bfs(breadth, proposals, depth, thought_tokens);
}

struct Solved {
  grpc::Status status;
  std::vector<v1::SolveEvent> events;
};

Solved SolveAll(v1::Planner::Stub& planner, const v1::SolveRequest& req,
                const std::function<void(const v1::SolveEvent&)>& on_event = nullptr) {
  Solved out;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  auto stream = planner.Solve(&ctx, req);
  v1::SolveEvent e;
  while (stream->Read(&e)) {
    out.events.push_back(e);
    if (on_event) on_event(e);
  }
  out.status = stream->Finish();
  return out;
}

TEST(PlannerTest, BfsCompletesWithOrderedEventsAndReleasesItsKv) {
  PlannerMesh mesh;
  ASSERT_TRUE(mesh.ok()) << "see " << mesh.dir();
  const Solved s = SolveAll(mesh.planner(), Bfs(2, 3, 2));
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  std::set<int> created, scored;
  int progress = 0, results = 0, pruned = 0;
  for (size_t i = 0; i < s.events.size(); ++i) {
    const v1::SolveEvent& e = s.events[i];
    if (e.has_node_created()) {
      EXPECT_TRUE(created.insert(e.node_created().id()).second) << "duplicate node";
      EXPECT_TRUE(e.node_created().parent_id() == 0 || created.count(e.node_created().parent_id()));
      EXPECT_LT(e.node_created().logprob(), 0);  // the thought's mean log-prob under the model
    } else if (e.has_node_scored()) {
      EXPECT_TRUE(created.count(e.node_scored().id())) << "scored before created";
      scored.insert(e.node_scored().id());
    } else if (e.has_node_pruned()) {
      EXPECT_TRUE(scored.count(e.node_pruned().id())) << "pruned before scored";
      ++pruned;
    } else if (e.has_progress()) {
      ++progress;
    } else if (e.has_result()) {
      ++results;
      EXPECT_EQ(i + 1, s.events.size()) << "the result is last";
    }
  }
  // Level 1: 3 children, 1 pruned; level 2: 2 x 3 children, 4 pruned.
  EXPECT_EQ(created.size(), 9u);
  EXPECT_EQ(scored, created);
  EXPECT_EQ(pruned, 5);
  EXPECT_EQ(progress, 2);
  ASSERT_EQ(results, 1);
  const v1::SolveResult& r = s.events.back().result();
  EXPECT_EQ(r.counts().nodes(), 10);
  EXPECT_EQ(r.best_path_size(), 3);
  EXPECT_GT(r.counts().tokens_generated(), 0);
  EXPECT_GT(r.counts().tokens_reused(), r.counts().tokens_prefilled());  // forks share the prompt

  v1::GetTaskRequest get;
  get.set_task_id(r.task_id());
  v1::Task task;
  grpc::ClientContext ctx;
  ASSERT_TRUE(mesh.planner().GetTask(&ctx, get, &task).ok());
  EXPECT_EQ(task.status(), v1::TASK_STATUS_SUCCEEDED);
  EXPECT_EQ(task.nodes_size(), 10);
  EXPECT_EQ(mesh.Stats().live_sequences(), 0);  // every sequence of the task released

  // root_proposals widens the first level only: 5 + 2 x 3 nodes under the root.
  v1::SolveRequest wide = Bfs(2, 3, 2);
  wide.mutable_search()->mutable_bfs()->set_root_proposals(5);
  const Solved w = SolveAll(mesh.planner(), wide);
  ASSERT_TRUE(w.status.ok()) << w.status.error_message();
  int first_level = 0, second_level = 0;
  for (const v1::SolveEvent& e : w.events) {
    if (!e.has_node_created()) continue;
    (e.node_created().depth() == 1 ? first_level : second_level)++;
  }
  EXPECT_EQ(first_level, 5);
  EXPECT_EQ(second_level, 2 * 3);
}

// kill -9 of the kv-store (every sequence and, in memory, every checkpoint gone), then of the
// router (its Extends broken), after a task's first round: `arbor up` restarts the service, the
// planner heals the task from the tree it recorded (rebuilding lost sequences from their token
// ids, re-running the round that broke) and the task completes once, releasing what it holds.
TEST(PlannerTest, ATaskHealsWhenTheKvStoreOrTheRouterDiesMidSolve) {
  for (const std::string victim : {"kvstore", "router"}) {
    PlannerMesh mesh;
    ASSERT_TRUE(mesh.ok()) << "see " << mesh.dir();
    const uint64_t old_handle = mesh.CreateSequence();
    const uint32_t old_epoch = mesh.Stats().epoch();
    bool killed = false;
    const Solved s = SolveAll(mesh.planner(), Bfs(2, 3, 5, 16), [&](const v1::SolveEvent& e) {
      if (e.has_progress() && !killed) killed = mesh.Kill(victim);
    });
    ASSERT_TRUE(killed) << victim;
    ASSERT_TRUE(s.status.ok()) << victim << ": " << s.status.error_message();
    std::set<int> created;
    int results = 0;
    for (size_t i = 0; i < s.events.size(); ++i) {
      const v1::SolveEvent& e = s.events[i];
      if (e.has_node_created()) {
        EXPECT_TRUE(created.insert(e.node_created().id()).second) << victim << ": duplicate node";
      }
      if (e.has_result()) {
        ++results;
        EXPECT_EQ(i + 1, s.events.size()) << victim << ": the result is last";
      }
    }
    EXPECT_EQ(results, 1) << victim;
    EXPECT_GT(created.size(), 3u) << victim << ": the search went on past its first round";
    EXPECT_EQ(mesh.Service(victim).second, 1) << victim;
    EXPECT_NE(mesh.PlannerLog().find("restored its tree after"), std::string::npos)
        << victim << "; see " << mesh.dir();
    if (victim == "kvstore") {
      // The restarted kv-store is a new incarnation: a handle from before is NOT_FOUND, saying so.
      EXPECT_NE(mesh.Stats().epoch(), old_epoch);
      v1::GetPathRequest get;
      get.set_sequence_id(old_handle);
      v1::GetPathResponse path;
      grpc::ClientContext ctx;
      const grpc::Status st = mesh.kv().GetPath(&ctx, get, &path);
      EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
      EXPECT_NE(st.error_message().find("from another kv-store incarnation"), std::string::npos)
          << st.error_message();
    } else {
      EXPECT_EQ(mesh.Stats().epoch(), old_epoch);
      mesh.ReleaseSequence(old_handle);
    }
    EXPECT_EQ(mesh.Stats().live_sequences(), 0) << victim;
  }
}

// Values from labels: the value prompt on forks of every node, the first label the model writes
// mapped to its score (none: 0); with the task's own templates instead of a preset.
TEST(PlannerTest, LabelValuesWithRequestTemplates) {
  PlannerMesh mesh;
  ASSERT_TRUE(mesh.ok()) << "see " << mesh.dir();
  for (int mode : {0, 1, 2}) {  // greedy label, sampled labels, expected label
    const bool sampled = mode == 1, expected = mode == 2;
    v1::SolveRequest req = Bfs(2, 2, 2);
    req.clear_preset();
    v1::TaskTemplates* t = req.mutable_templates();
    t->set_propose("Numbers: {problem}\n");
    t->set_value("Judge: ");
    t->set_step_stop("\n");
    // Labels that start distinct tokens after "Judge: " (test-moe's pieces "▁s" and "▁b").
    (*t->mutable_value_labels())["s"] = 20;
    (*t->mutable_value_labels())["b"] = 1;
    if (sampled) {
      req.mutable_search()->mutable_value()->mutable_sampled()->set_samples(3);
    } else {
      req.mutable_search()->mutable_value()->mutable_label()->set_expected(expected);
    }
    const Solved s = SolveAll(mesh.planner(), req);
    ASSERT_TRUE(s.status.ok()) << s.status.error_message();
    int scored = 0;
    for (const v1::SolveEvent& e : s.events) {
      if (!e.has_node_scored()) continue;
      ++scored;
      const double v = e.node_scored().score();
      if (sampled || expected) {  // a mean of three scores; a weighted mean of 1 and 20, or 0
        EXPECT_GE(v, 0);
        EXPECT_LE(v, 20);
      } else {
        EXPECT_TRUE(v == 0 || v == 1 || v == 20) << v;
      }
    }
    EXPECT_EQ(scored, 2 + 4);
    EXPECT_EQ(mesh.Stats().live_sequences(), 0);  // value forks released too
  }
  // The expected value reads one token: labels that start alike cannot be told apart (here
  // both start with the piece "▁").
  v1::SolveRequest req = Bfs(2, 2, 2);
  req.clear_preset();
  v1::TaskTemplates* t = req.mutable_templates();
  t->set_propose("Numbers: {problem}\n");
  t->set_value("Judge: ");
  (*t->mutable_value_labels())["ab"] = 20;
  (*t->mutable_value_labels())["ax"] = 1;
  t->set_step_stop("\n");
  req.mutable_search()->mutable_value()->mutable_label()->set_expected(true);
  const Solved s = SolveAll(mesh.planner(), req);
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.status.error_message().find("\"ab\" and \"ax\" start with the same token"),
            std::string::npos)
      << s.status.error_message();
  EXPECT_TRUE(
      WaitFor([&] { return mesh.Stats().live_sequences() == 0; }, std::chrono::seconds(30)));
}

TEST(PlannerTest, CancelMidTaskReleasesItsKv) {
  PlannerMesh mesh;
  ASSERT_TRUE(mesh.ok()) << "see " << mesh.dir();
  std::string task_id;
  const Solved s = SolveAll(mesh.planner(), Bfs(4, 4, 32, 32), [&](const v1::SolveEvent& e) {
    if (e.has_progress() && task_id.empty()) {
      v1::ListTasksRequest list;
      v1::ListTasksResponse tasks;
      grpc::ClientContext lctx;
      ASSERT_TRUE(mesh.planner().ListTasks(&lctx, list, &tasks).ok());
      ASSERT_EQ(tasks.tasks_size(), 1);
      task_id = tasks.tasks(0).task_id();
      v1::CancelTaskRequest cancel;
      cancel.set_task_id(task_id);
      v1::Task t;
      grpc::ClientContext cctx;
      ASSERT_TRUE(mesh.planner().CancelTask(&cctx, cancel, &t).ok());
    }
  });
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::CANCELLED) << s.status.error_message();
  EXPECT_TRUE(WaitFor([&] { return mesh.Stats().live_sequences() == 0; }, std::chrono::seconds(30)))
      << mesh.Stats().live_sequences();
  v1::GetTaskRequest get;
  get.set_task_id(task_id);
  v1::Task task;
  grpc::ClientContext ctx;
  ASSERT_TRUE(mesh.planner().GetTask(&ctx, get, &task).ok());
  EXPECT_EQ(task.status(), v1::TASK_STATUS_CANCELLED);
}

// A Solve whose client goes away ends its task (CANCELLED, KV released) unless it asked to run
// detached; a detached task runs on for WatchTask to follow.
TEST(PlannerTest, AClientThatLeavesEndsItsTaskUnlessDetached) {
  PlannerMesh mesh;
  ASSERT_TRUE(mesh.ok()) << "see " << mesh.dir();
  auto leave_after_first_event = [&](v1::SolveRequest req) {
    grpc::ClientContext ctx;
    auto stream = mesh.planner().Solve(&ctx, req);
    v1::SolveEvent e;
    EXPECT_TRUE(stream->Read(&e));
    ctx.TryCancel();
    while (stream->Read(&e)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  };
  auto status_of = [&](const std::string& id) {
    v1::GetTaskRequest get;
    get.set_task_id(id);
    v1::Task task;
    grpc::ClientContext ctx;
    EXPECT_TRUE(mesh.planner().GetTask(&ctx, get, &task).ok());
    return task.status();
  };
  v1::SolveRequest req = Bfs(2, 4, 6, 48);
  req.set_task_id("leaver");
  leave_after_first_event(req);
  EXPECT_TRUE(WaitFor([&] { return status_of("leaver") == v1::TASK_STATUS_CANCELLED; },
                      std::chrono::seconds(60)));
  EXPECT_TRUE(
      WaitFor([&] { return mesh.Stats().live_sequences() == 0; }, std::chrono::seconds(30)));

  req = Bfs(1, 2, 2, 4);
  req.set_task_id("stayer");
  req.set_detached(true);
  leave_after_first_event(req);
  v1::WatchTaskRequest watch;
  watch.set_task_id("stayer");
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  auto stream = mesh.planner().WatchTask(&ctx, watch);
  v1::SolveEvent e, last;
  while (stream->Read(&e)) last = e;
  ASSERT_TRUE(stream->Finish().ok());
  EXPECT_TRUE(last.has_result());
  EXPECT_EQ(status_of("stayer"), v1::TASK_STATUS_SUCCEEDED);
}

TEST(PlannerTest, HundredTasksLeaveNothingBehind) {
  PlannerMesh mesh;
  ASSERT_TRUE(mesh.ok()) << "see " << mesh.dir();
  for (int i = 0; i < 100; ++i) {
    v1::SolveRequest req = Bfs(1, 2, 2, 4);
    req.set_problem(absl::StrCat(i % 13 + 1, " ", i % 7 + 2, " 3 4"));
    const Solved s = SolveAll(mesh.planner(), req);
    ASSERT_TRUE(s.status.ok()) << i << ": " << s.status.error_message();
  }
  const v1::StatsResponse st = mesh.Stats();
  EXPECT_EQ(st.live_sequences(), 0);
  EXPECT_EQ(st.segments(), st.cached_segments());  // only evictable prefix-cache entries remain
}

TEST(PlannerTest, KillNineAndRestartResumesTheTaskOnce) {
  auto redis = statestore::testing::RedisServerForTest::Start();
  ASSERT_TRUE(redis.ok()) << redis.status();
  PlannerMesh mesh((*redis)->url());
  ASSERT_TRUE(mesh.ok()) << "see " << mesh.dir();
  v1::SolveRequest req = Bfs(2, 4, 6, 48);
  req.set_task_id("resume-me");
  int progress = 0;
  const Solved first = SolveAll(mesh.planner(), req, [&](const v1::SolveEvent& e) {
    if (e.has_progress() && ++progress == 1) mesh.KillPlanner();
  });
  EXPECT_FALSE(first.status.ok());  // the planner died under the stream
  // And the task's KV is lost too: the restarted planner rebuilds what it needs from the
  // checkpointed token ids (the kv-store's prefix index still caches most of it).
  EXPECT_GT(mesh.ReleaseOwner("planner/task/resume-me"), 0);
  ASSERT_TRUE(mesh.StartPlanner()) << "see " << mesh.dir();

  // Solve again with the same id: it reattaches to the resumed task instead of starting anew.
  const Solved second = SolveAll(mesh.planner(), req);
  ASSERT_TRUE(second.status.ok()) << second.status.error_message();
  std::set<int> ids;
  int results = 0;
  for (const v1::SolveEvent& e : second.events) {
    if (e.has_node_created()) {
      EXPECT_TRUE(ids.insert(e.node_created().id()).second)
          << "node " << e.node_created().id() << " twice";
    }
    results += e.has_result();
  }
  EXPECT_EQ(results, 1);
  ASSERT_TRUE(second.events.back().has_result());
  // 1 + 4 + 5 levels of 2 x 4 children: the same tree as an uninterrupted run.
  EXPECT_EQ(second.events.back().result().counts().nodes(), 1 + 4 + 5 * 8);
  v1::ListTasksRequest list;
  v1::ListTasksResponse tasks;
  grpc::ClientContext lctx;
  ASSERT_TRUE(mesh.planner().ListTasks(&lctx, list, &tasks).ok());
  EXPECT_EQ(tasks.tasks_size(), 1);
  // The restored nodes keep their thoughts' log-probs (ties between values depend on them).
  v1::GetTaskRequest get;
  get.set_task_id("resume-me");
  v1::Task task;
  grpc::ClientContext gctx;
  ASSERT_TRUE(mesh.planner().GetTask(&gctx, get, &task).ok());
  ASSERT_EQ(task.nodes_size(), 1 + 4 + 5 * 8);
  for (int i = 1; i < task.nodes_size(); ++i) EXPECT_LT(task.nodes(i).logprob(), 0) << i;
  EXPECT_TRUE(WaitFor([&] { return mesh.Stats().live_sequences() == 0; }, std::chrono::seconds(30)))
      << mesh.Stats().live_sequences();
  const std::string log = mesh.PlannerLog();
  EXPECT_NE(log.find("sequences rebuilt from token ids"), std::string::npos) << log;
  EXPECT_EQ(log.find(" 0 sequences rebuilt"), std::string::npos) << log;
}

// Two planners on one Redis (1 s leases). Split brain: planner A is paused (SIGSTOP) past its
// lease mid-task; B adopts the task from its checkpoint; A resumes (SIGCONT), its writes are
// refused and it drops the task, whose client reattaches through B and gets one result. Then
// kill -9 of the planner running a task: the other adopts it within 1.25 leases and completes it.
TEST(PlannerTest, PlannersWithLeasesSurviveSplitBrainAndDeath) {
  auto redis = statestore::testing::RedisServerForTest::Start();
  ASSERT_TRUE(redis.ok()) << redis.status();
  PlannerMesh mesh((*redis)->url());
  ASSERT_TRUE(mesh.ok()) << "see " << mesh.dir();
  const std::vector<std::string> lease = {"--lease_ms=1000"};
  mesh.KillPlanner();  // the fixture's own; this test runs two of its own
  const std::string a_address = absl::StrCat("127.0.0.1:", FreeLoopbackPort());
  const std::string b_address = absl::StrCat("127.0.0.1:", FreeLoopbackPort());
  auto a = mesh.StartPlannerProcess(a_address, "planner-a", {"--name=a", lease[0]});
  auto b = mesh.StartPlannerProcess(b_address, "planner-b", {"--name=b", lease[0]});
  ASSERT_TRUE(a != nullptr && b != nullptr) << "see " << mesh.dir();
  auto a_stub =
      v1::Planner::NewStub(grpc::CreateChannel(a_address, grpc::InsecureChannelCredentials()));
  auto b_stub =
      v1::Planner::NewStub(grpc::CreateChannel(b_address, grpc::InsecureChannelCredentials()));
  auto get = [&](v1::Planner::Stub& stub, const std::string& id) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::GetTaskRequest req;
    req.set_task_id(id);
    v1::Task t;
    return stub.GetTask(&ctx, req, &t).ok() ? t : v1::Task();
  };

  v1::SolveRequest req = Bfs(2, 4, 6, 48);
  req.set_task_id("split-brain");
  std::chrono::steady_clock::time_point stopped;
  const Solved on_a = SolveAll(*a_stub, req, [&](const v1::SolveEvent& e) {
    if (!e.has_progress() || stopped != std::chrono::steady_clock::time_point()) return;
    ::kill(a->pid(), SIGSTOP);
    stopped = std::chrono::steady_clock::now();
    EXPECT_TRUE(
        WaitFor([&] { return mesh.Log("planner-b").find("adopted from a") != std::string::npos; },
                std::chrono::seconds(20)))
        << "B never adopted the task; see " << mesh.dir();
    ::kill(a->pid(), SIGCONT);
  });
  ASSERT_NE(stopped, std::chrono::steady_clock::time_point()) << "no progress event";
  EXPECT_EQ(on_a.status.error_code(), grpc::StatusCode::ABORTED) << on_a.status.error_message();
  for (const v1::SolveEvent& e : on_a.events) EXPECT_FALSE(e.has_result());
  EXPECT_NE(mesh.Log("planner-a").find("another planner runs it now; this one stops it"),
            std::string::npos)
      << "see " << mesh.dir();
  const Solved reattached = SolveAll(*b_stub, req);
  ASSERT_TRUE(reattached.status.ok()) << reattached.status.error_message();
  EXPECT_EQ(absl::c_count_if(reattached.events, [](const auto& e) { return e.has_result(); }), 1);
  EXPECT_EQ(get(*a_stub, "split-brain").status(), v1::TASK_STATUS_SUCCEEDED);

  // kill -9 of the planner running a task (whichever holds it): the other adopts it.
  req.set_task_id("orphan");
  req.set_detached(true);
  std::chrono::steady_clock::time_point killed;
  SolveAll(*a_stub, req, [&](const v1::SolveEvent& e) {
    if (e.has_progress() && killed == std::chrono::steady_clock::time_point()) {
      a->Signal(SIGKILL);
      killed = std::chrono::steady_clock::now();
    }
  });
  ASSERT_NE(killed, std::chrono::steady_clock::time_point()) << "no progress event";
  ASSERT_TRUE(WaitFor([&] { return get(*b_stub, "orphan").status() == v1::TASK_STATUS_SUCCEEDED; },
                      std::chrono::seconds(60)))
      << "see " << mesh.dir();
  const std::string b_log = mesh.Log("planner-b");
  EXPECT_NE(b_log.find("task=orphan adopted from a"), std::string::npos) << b_log;
  std::printf("adoption: the task finished on B %.1f s after A's kill -9 (lease 1 s)\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count());
  EXPECT_TRUE(WaitFor([&] { return mesh.Stats().live_sequences() == 0; }, std::chrono::seconds(30)))
      << mesh.Stats().live_sequences();
}

// Routers named by DNS (as a headless Kubernetes Service gives them): --router dns:HOST:PORT
// stands for every address HOST resolves to. localhost may resolve to ::1 too, where no router
// listens: the tasks that prefer it move to 127.0.0.1's and complete.
TEST(PlannerTest, RoutersFromADnsName) {
  PlannerMesh mesh;
  ASSERT_TRUE(mesh.ok()) << "see " << mesh.dir();
  mesh.KillPlanner();
  const std::string router = mesh.ReadyField("router");
  const std::string address = absl::StrCat("127.0.0.1:", FreeLoopbackPort());
  auto planner = mesh.StartPlannerProcess(
      address, "planner-dns", {"--router=dns:localhost:" + router.substr(router.rfind(':') + 1)});
  ASSERT_TRUE(planner != nullptr) << "see " << mesh.dir();
  EXPECT_NE(mesh.Log("planner-dns").find("--router dns:localhost:"), std::string::npos);
  EXPECT_NE(mesh.Log("planner-dns").find("resolves to 127.0.0.1:"), std::string::npos);
  auto stub =
      v1::Planner::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  for (int i = 0; i < 3; ++i) {
    v1::SolveRequest req = Bfs(2, 2, 2);
    req.set_task_id(absl::StrCat("dns-", i));
    const Solved s = SolveAll(*stub, req);
    ASSERT_TRUE(s.status.ok()) << s.status.error_message();
    EXPECT_TRUE(s.events.back().has_result());
  }
}

// SIGTERM to a planner whose kv-store hangs (SIGSTOP) mid-task: every call it has in flight is
// cancelled and it exits well within the 120 s its calls could wait; its task stays RUNNING in
// the checkpoint, and once the kv-store goes on, a restarted planner completes it.
TEST(PlannerTest, APlannerWhoseKvStoreHangsStillShutsDown) {
  PlannerMesh mesh;
  ASSERT_TRUE(mesh.ok()) << "see " << mesh.dir();
  v1::SolveRequest req = Bfs(2, 3, 5, 16);
  req.set_task_id("hung-kvstore");
  const int kv_pid = mesh.Service("kvstore").first;
  int exit_status = -2;
  const Solved first = SolveAll(mesh.planner(), req, [&](const v1::SolveEvent& e) {
    if (e.has_progress() && exit_status == -2) {
      ::kill(kv_pid, SIGSTOP);
      std::this_thread::sleep_for(std::chrono::milliseconds(300));  // calls now hang
      exit_status = mesh.StopPlanner(std::chrono::seconds(20));
    }
  });
  ::kill(kv_pid, SIGCONT);
  ASSERT_NE(exit_status, -2) << "no progress event";
  EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0)
      << "wait status " << exit_status << "; see " << mesh.dir();
  EXPECT_EQ(first.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << first.status.error_message();
  ASSERT_TRUE(mesh.StartPlanner()) << "see " << mesh.dir();
  const Solved second = SolveAll(mesh.planner(), req);
  ASSERT_TRUE(second.status.ok()) << second.status.error_message();
  int results = 0;
  for (const v1::SolveEvent& e : second.events) results += e.has_result();
  EXPECT_EQ(results, 1);
}

// `arbor up`'s own Redis (append-only) is the state store. kill -9 of Redis mid-task: `arbor up`
// restarts it on its data, the task runs on and completes; its final checkpoint reaches Redis
// (written again if Redis was away when it finished): a planner restarted after kill -9 serves
// the finished task from it, and resumes nothing.
TEST(PlannerTest, RedisKilledMidTaskLosesNothing) {
  PlannerMesh mesh("redis");
  ASSERT_TRUE(mesh.ok()) << "see " << mesh.dir();
  v1::SolveRequest req = Bfs(2, 3, 5, 16);
  req.set_task_id("redis-killed");
  bool killed = false;
  const Solved s = SolveAll(mesh.planner(), req, [&](const v1::SolveEvent& e) {
    if (e.has_progress() && !killed) killed = mesh.Kill("redis");
  });
  ASSERT_TRUE(killed);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  ASSERT_TRUE(s.events.back().has_result());
  EXPECT_TRUE(WaitFor([&] { return mesh.Service("redis").second == 1; }, std::chrono::seconds(20)));
  // The finished checkpoint is in Redis once it is back (within the sweeper's retries).
  std::string password;
  std::ifstream(mesh.dir() + "/redis/password") >> password;
  auto redis =
      statestore::NewRedisStateStore({.url = "redis://" + mesh.ReadyField("redis"),
                                      .password = password,
                                      .require_connection = false});  // it may still be restarting
  ASSERT_TRUE(redis.ok()) << redis.status();
  v1::TaskCheckpoint stored;
  EXPECT_TRUE(WaitFor(
      [&] {
        auto v = (*redis)->Get("planner/task/redis-killed");
        return v.ok() && stored.ParseFromString(v->value) &&
               stored.status() == v1::TASK_STATUS_SUCCEEDED;
      },
      std::chrono::seconds(20)));
  mesh.KillPlanner();
  ASSERT_TRUE(mesh.StartPlanner()) << "see " << mesh.dir();
  v1::GetTaskRequest get;
  get.set_task_id("redis-killed");
  v1::Task task;
  grpc::ClientContext ctx;
  ASSERT_TRUE(mesh.planner().GetTask(&ctx, get, &task).ok());
  EXPECT_EQ(task.status(), v1::TASK_STATUS_SUCCEEDED);
  EXPECT_EQ(task.result().answer(), s.events.back().result().answer());
  EXPECT_EQ(mesh.PlannerLog().find("resumes"), std::string::npos) << "see " << mesh.dir();
}

// `arbor up` itself stopped (SIGTERM) mid-task and started again on the same data folder: its
// own Redis kept the checkpoint (append-only), the new planner resumes the task, and Solve with
// the same id reattaches to it and sees it complete once.
TEST(PlannerTest, ATaskSurvivesARestartOfArborUpItself) {
  const std::string dir = ::testing::TempDir() + "arbor_up_restart_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  const std::string ready = dir + "/ready.json";
  auto start = [&] {
    std::filesystem::remove(ready);
    auto up = std::make_unique<testing::ChildProcess>(
        std::vector<std::string>{ARBOR_CLI_BIN, "up", "--ports=auto", "--model=" + kModel,
                                 "--ready_file=" + ready, "--log_dir=" + dir, "--data_dir=" + dir,
                                 "--insecure"},
        dir + "/up.log");
    EXPECT_TRUE(WaitFor([&] { return std::filesystem::exists(ready); }, std::chrono::seconds(90)))
        << "see " << dir;
    std::ifstream in(ready);
    const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
    const std::string planner = j.is_discarded() ? "" : j.value("planner", "");
    return std::make_pair(std::move(up), v1::Planner::NewStub(grpc::CreateChannel(
                                             planner, grpc::InsecureChannelCredentials())));
  };
  v1::SolveRequest req = Bfs(2, 3, 6, 24);
  req.set_task_id("outlives-arbor-up");
  auto first_up = start();
  std::unique_ptr<testing::ChildProcess> up = std::move(first_up.first);
  auto planner = std::move(first_up.second);
  ASSERT_NE(planner, nullptr);
  bool stopped = false;
  const Solved first = SolveAll(*planner, req, [&](const v1::SolveEvent& e) {
    if (e.has_progress() && !stopped) stopped = up->Signal(SIGTERM) >= 0;
  });
  ASSERT_TRUE(stopped);
  EXPECT_EQ(first.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << first.status.error_message();
  auto [up2, planner2] = start();
  ASSERT_NE(planner2, nullptr);
  const Solved second = SolveAll(*planner2, req);
  ASSERT_TRUE(second.status.ok()) << second.status.error_message() << "; see " << dir;
  int results = 0;
  for (const v1::SolveEvent& e : second.events) results += e.has_result();
  EXPECT_EQ(results, 1);
  std::ifstream log(dir + "/planner.log");
  const std::string text(std::istreambuf_iterator<char>(log), {});
  EXPECT_NE(text.find("task=outlives-arbor-up resumes"), std::string::npos) << "see " << dir;
  up2->Signal(SIGTERM);
}

// Two routers, one of which never answers (nothing listens at its address): each task keeps to
// one router by its id, and those that start on the dead one move to the live one after their
// first failure instead of waiting for it (which would end them after --heal_timeout_s).
TEST(PlannerTest, TasksMoveToAnotherRouterWhileTheirsIsAway) {
  PlannerMesh mesh("memory", absl::StrCat("127.0.0.1:", FreeLoopbackPort()));
  ASSERT_TRUE(mesh.ok()) << "see " << mesh.dir();
  for (int i = 0; i < 6; ++i) {
    v1::SolveRequest req = Bfs(2, 3, 2);
    req.set_task_id(absl::StrCat("two-routers-", i));
    const Solved s = SolveAll(mesh.planner(), req);
    ASSERT_TRUE(s.status.ok()) << req.task_id() << ": " << s.status.error_message();
    ASSERT_TRUE(s.events.back().has_result());
  }
  // Some of these ids prefer the dead router (the order is the same in every process): they
  // moved.
  EXPECT_NE(mesh.PlannerLog().find("lost part of the mesh"), std::string::npos)
      << "see " << mesh.dir();
  EXPECT_EQ(mesh.Stats().live_sequences(), 0);
}

TEST(PlannerTest, BadRequestsNameTheField) {
  PlannerMesh mesh;
  ASSERT_TRUE(mesh.ok()) << "see " << mesh.dir();
  struct Case {
    v1::SolveRequest req;
    std::string needle;
  };
  std::vector<Case> cases;
  v1::SolveRequest r = Bfs(2, 3, 2);
  r.set_problem("");
  cases.push_back({r, "problem of 0 bytes"});
  r = Bfs(65, 3, 2);
  cases.push_back({r, "search.bfs.breadth 65"});
  r = Bfs(2, 3, 33);
  cases.push_back({r, "search.bfs.depth 33"});
  r = Bfs(2, 3, 2);
  r.set_preset("chess");
  cases.push_back({r, "preset \"chess\""});
  r = Bfs(2, 3, 2);
  r.set_task_id("no spaces");
  cases.push_back({r, "task_id"});
  r = Bfs(2, 3, 2);
  r.mutable_budget()->set_max_nodes(200000);
  cases.push_back({r, "budget.max_nodes 200000"});
  r = Bfs(2, 3, 2);
  r.mutable_search()->clear_bfs();
  cases.push_back({r, "no strategy"});
  r = Bfs(2, 3, 2);
  r.mutable_search()->mutable_generation()->set_top_p(1.5);
  cases.push_back({r, "search.generation.top_p 1.5"});
  r = Bfs(2, 3, 2);
  r.mutable_search()->mutable_generation()->set_top_k(-1);
  cases.push_back({r, "search.generation.top_k -1"});
  r = Bfs(2, 3, 2);
  r.mutable_search()->mutable_bfs()->set_root_proposals(65);
  cases.push_back({r, "search.bfs.root_proposals 65"});
  for (const Case& c : cases) {
    const Solved s = SolveAll(mesh.planner(), c.req);
    EXPECT_EQ(s.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.needle;
    EXPECT_NE(s.status.error_message().find(c.needle), std::string::npos)
        << s.status.error_message();
  }
  // Still serving.
  EXPECT_TRUE(SolveAll(mesh.planner(), Bfs(1, 1, 1)).status.ok());
}

}  // namespace
}  // namespace arbor
