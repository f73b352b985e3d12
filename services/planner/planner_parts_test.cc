// The planner service's parts that need no mesh: the request plan, the checkpoint codec and
// restore, and the task registry. (planner_service_test.cc runs the whole service.)
#include "gtest/gtest.h"
#include "solve_request.h"
#include "stored_task.h"
#include "task_checkpoint.h"
#include "task_lease.h"
#include "task_registry.h"

namespace arbor::planner {
namespace {

v1::SolveRequest Game24Solve(const std::string& task_id) {
  v1::SolveRequest req;
  req.set_task_id(task_id);
  req.set_problem("4 9 10 13");
  req.set_preset("game24");
  v1::Bfs* bfs = req.mutable_search()->mutable_bfs();
  bfs->set_breadth(2);
  bfs->set_proposals_per_node(3);
  bfs->set_depth(3);
  return req;
}

TEST(SolveRequestTest, NamesTheFieldOutOfRange) {
  const std::map<std::string, search::Templates> presets = {
      {"game24", search::Templates{.propose = "p"}}};
  v1::SolveRequest req = Game24Solve("a");
  ASSERT_TRUE(PlanTask(req, presets, {}).ok());
  req.mutable_search()->mutable_bfs()->set_breadth(0);
  EXPECT_EQ(PlanTask(req, presets, {}).status().message(),
            "search.bfs.breadth 0 out of range [1, 64]");
  req = Game24Solve("a");
  req.mutable_budget()->set_max_nodes(2000000000);
  EXPECT_EQ(PlanTask(req, presets, {}).status().message(),
            "budget.max_nodes 2e+09 out of range [1, 100000]");
  req = Game24Solve("bad id!");
  EXPECT_EQ(PlanTask(req, presets, {}).status().code(), absl::StatusCode::kInvalidArgument);
  req = Game24Solve("a");
  req.set_preset("chess");
  EXPECT_EQ(PlanTask(req, presets, {}).status().message(),
            "preset \"chess\" unknown to this model");
  // Defaults fill what the request leaves 0.
  req = Game24Solve("a");
  absl::StatusOr<TaskPlan> plan = PlanTask(req, presets, {.max_nodes = 17});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->budget.max_nodes, 17);
  EXPECT_EQ(plan->source.max_thought_tokens, 64);
  EXPECT_EQ(plan->templates.propose, "p");
}

// A checkpoint of root -> {1, 2} -> {3 (scored), 4 (not scored: the crash cut the round)}.
v1::TaskCheckpoint SmallCheckpoint() {
  search::SearchTree tree("root");
  tree.AddChild(0, {.thought = "a", .state = "A", .handle = 11});
  tree.AddChild(0, {.thought = "b", .state = "B", .handle = 12});
  tree.AddChild(1, {.thought = "c", .state = "C", .handle = 13});
  tree.AddChild(2, {.thought = "d", .state = "D", .handle = 14});
  v1::TaskCheckpoint cp;
  cp.mutable_request()->set_task_id("t1");
  for (int i = 0; i < tree.size(); ++i) {
    search::SearchNode n = tree.node(i);
    n.scored = i != 4;
    n.expanded = i == 1 || i == 2 || i == 0;
    n.score = i;
    RecordNode(n, {100 + i, 200 + i}, &cp);
  }
  return cp;
}

TEST(TaskCheckpointTest, RestoreDropsTheRoundACrashCutShort) {
  v1::TaskCheckpoint cp = SmallCheckpoint();
  absl::StatusOr<search::SearchTree> tree = RestoreTree(&cp);
  ASSERT_TRUE(tree.ok()) << tree.status();
  ASSERT_EQ(tree->size(), 4);
  EXPECT_EQ(cp.nodes_size(), 4);
  EXPECT_EQ(tree->node(3).thought, "c");
  EXPECT_EQ(tree->node(3).handle, 13u);
  EXPECT_EQ(tree->node(3).score, 3);
  EXPECT_TRUE(tree->node(1).expanded);   // its child survived
  EXPECT_FALSE(tree->node(2).expanded);  // its only child was dropped: expand it again
  EXPECT_FALSE(cp.nodes(2).expanded());
  EXPECT_EQ(PathTokens(cp, *tree, 3), (std::vector<int>{100, 200, 101, 201, 103, 203}));
}

TEST(TaskCheckpointTest, ForgedTreesAreDataLossNotCrashes) {
  v1::TaskCheckpoint cp = SmallCheckpoint();
  cp.mutable_nodes(3)->mutable_node()->set_parent_id(7);
  absl::StatusOr<search::SearchTree> tree = RestoreTree(&cp);
  EXPECT_EQ(tree.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(tree.status().message(), "checkpoint nodes[3].node.parent_id 7 is not an earlier node");
  cp = SmallCheckpoint();
  cp.mutable_nodes(2)->mutable_node()->set_id(5);
  EXPECT_EQ(RestoreTree(&cp).status().code(), absl::StatusCode::kDataLoss);
  cp.clear_nodes();
  EXPECT_EQ(RestoreTree(&cp).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ParseCheckpoint("planner/task/x", "\xff\xff garbage").status().code(),
            absl::StatusCode::kDataLoss);
  // A checkpoint stored under another task's key.
  EXPECT_EQ(
      ParseCheckpoint("planner/task/x", SmallCheckpoint().SerializeAsString()).status().message(),
      "planner/task/x: request.task_id \"t1\" and request.tenant \"\" do not match the key");
}

std::shared_ptr<Task> NewTask(const std::string& id, const std::string& tenant) {
  auto t = std::make_shared<Task>();
  t->id = id;
  t->tenant = tenant;
  return t;
}

TEST(TaskRegistryTest, AdmitsWithinTheLimitsAndEvictsTheOldestFinished) {
  TaskRegistry r({.max_tasks = 3, .max_tasks_per_tenant = 2, .max_finished_tasks = 1});
  ASSERT_TRUE(r.Admit(NewTask("a1", "a")).ok());
  ASSERT_TRUE(r.Admit(NewTask("a2", "a")).ok());
  absl::StatusOr<TaskRegistry::Admitted> third = r.Admit(NewTask("a3", "a"));
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(third.status().message().find("--max_tasks_per_tenant"), std::string::npos);
  ASSERT_TRUE(r.Admit(NewTask("b1", "b")).ok());
  absl::StatusOr<TaskRegistry::Admitted> full = r.Admit(NewTask("c1", "c"));
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full.status().message().find("(--max_tasks)"), std::string::npos);
  // The same id attaches to the task that holds it, whatever the limits.
  absl::StatusOr<TaskRegistry::Admitted> again = r.Admit(NewTask("a1", "a"));
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->is_new);
  EXPECT_EQ(again->task, r.Find("a1"));
  // Cancelled and finished tasks do not count.
  r.Find("a1")->cancel = true;
  r.Find("a2")->Close(absl::OkStatus());
  r.Find("b1")->Close(absl::OkStatus());
  ASSERT_TRUE(r.Admit(NewTask("a3", "a")).ok());
  // Two finished, cap 1: the older (a2) went with that admission.
  EXPECT_EQ(r.Find("a2"), nullptr);
  EXPECT_NE(r.Find("b1"), nullptr);
  EXPECT_EQ(r.List("a").size(), 2u);  // a1 (cancelled, still running), a3
  EXPECT_EQ(r.List().size(), 3u);
}

TEST(TaskLeaseTest, KeysParseAndExpiryByObservation) {
  EXPECT_EQ(LeaseKeyOf(TaskKey("t1", "acme")), "planner/lease/acme/t1");
  EXPECT_EQ(TaskKeyOfLease("planner/lease/acme/t1"), TaskKey("t1", "acme"));
  EXPECT_EQ(TaskKeyOfLease(LeaseKeyOf(TaskKey("t2"))), TaskKey("t2"));
  EXPECT_EQ(TaskKeyOfLease("planner/task/x"), "");
  EXPECT_EQ(TaskKeyOfLease("planner/lease/"), "");

  v1::TaskLease lease;
  lease.set_holder("p1");
  lease.set_generation(3);
  absl::StatusOr<v1::TaskLease> parsed = ParseLease("k", lease.SerializeAsString());
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->generation(), 3);
  EXPECT_EQ(ParseLease("k", "\xff\xff").status().code(), absl::StatusCode::kDataLoss);
  absl::Status no_holder = ParseLease("k", v1::TaskLease().SerializeAsString()).status();
  EXPECT_EQ(no_holder.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(no_holder.message().find("k: "), std::string::npos);

  // Expired once the same version was seen for a whole lease, on the watcher's own clock.
  LeaseWatch watch(std::chrono::milliseconds(1000));
  const auto t0 = LeaseWatch::Clock::now();
  const auto ms = [](int n) { return std::chrono::milliseconds(n); };
  EXPECT_FALSE(watch.Expired("a", 5, t0));
  EXPECT_FALSE(watch.Expired("a", 5, t0 + ms(999)));
  EXPECT_TRUE(watch.Expired("a", 5, t0 + ms(1000)));
  EXPECT_FALSE(watch.Expired("a", 6, t0 + ms(1100)));  // renewed: counted from now
  EXPECT_FALSE(watch.Expired("a", 6, t0 + ms(2000)));
  EXPECT_TRUE(watch.Expired("a", 6, t0 + ms(2100)));
  watch.Sweep();  // "a" was seen since the last sweep: kept
  EXPECT_TRUE(watch.Expired("a", 6, t0 + ms(2200)));
  watch.Sweep();
  watch.Sweep();  // not seen since: forgotten, so observed afresh
  EXPECT_FALSE(watch.Expired("a", 6, t0 + ms(5000)));
}

TEST(StoredTaskTest, CheckpointsBecomeTheEventsTheyAdd) {
  v1::TaskCheckpoint cp;
  cp.mutable_request()->set_task_id("t");
  cp.mutable_request()->set_problem("4 9 10 13");
  cp.set_status(v1::TASK_STATUS_RUNNING);
  auto add = [&](int id, int parent, const std::string& thought) {
    v1::TaskCheckpoint::CheckpointNode* n = cp.add_nodes();
    n->mutable_node()->set_id(id);
    n->mutable_node()->set_parent_id(parent);
    n->mutable_node()->set_thought(thought);
    return n;
  };
  add(0, -1, "");
  add(1, 0, "4 + 9 = 13");
  cp.mutable_counts()->set_nodes(2);
  CheckpointFollower follower;
  auto kinds = [](const std::vector<v1::SolveEvent>& events) {
    std::string out;
    for (const v1::SolveEvent& e : events) {
      out += e.has_node_created()   ? "c"
             : e.has_node_scored()  ? "s"
             : e.has_node_pruned()  ? "p"
             : e.has_answer_found() ? "a"
             : e.has_progress()     ? "g"
                                    : "r";
    }
    return out;
  };
  EXPECT_EQ(kinds(follower.Follow(cp)), "ccg");
  EXPECT_EQ(kinds(follower.Follow(cp)), "");  // nothing new
  cp.mutable_nodes(1)->set_scored(true);
  cp.mutable_nodes(1)->mutable_node()->set_pruned(true);
  add(2, 0, "13 - 9 = 4");
  cp.mutable_counts()->set_nodes(3);
  EXPECT_EQ(kinds(follower.Follow(cp)), "spcg");
  // A task restored elsewhere grew node 2 anew: created again.
  cp.mutable_nodes(2)->mutable_node()->set_thought("10 + 13 = 23");
  cp.mutable_nodes(2)->set_answer(true);
  cp.mutable_nodes(2)->set_answer_text("(10 + 13) + 4 - 9... ");
  EXPECT_EQ(kinds(follower.Follow(cp)), "ca");
  EXPECT_FALSE(FinalStatusOf(cp).has_value());
  cp.set_status(v1::TASK_STATUS_SUCCEEDED);
  cp.mutable_result()->set_answer("x");
  EXPECT_EQ(kinds(follower.Follow(cp)), "r");
  EXPECT_EQ(kinds(follower.Follow(cp)), "");  // the result once
  EXPECT_TRUE(FinalStatusOf(cp)->ok());
  const v1::Task t = TaskOfCheckpoint(cp);
  EXPECT_EQ(t.nodes_size(), 3);
  EXPECT_EQ(t.result().answer(), "x");
  EXPECT_EQ(TaskOfCheckpoint(cp, false).nodes_size(), 0);
  cp.set_status(v1::TASK_STATUS_FAILED);
  cp.set_error("router away");
  EXPECT_EQ(FinalStatusOf(cp)->message(), "router away");
  cp.set_status(v1::TASK_STATUS_CANCELLED);
  EXPECT_EQ(FinalStatusOf(cp)->code(), absl::StatusCode::kCancelled);
}

}  // namespace
}  // namespace arbor::planner
