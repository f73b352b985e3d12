// The planner's client commands. `arbor solve` sends the problem and streams the search: a
// progress line while it runs (on stderr), then the tree (indented, scores, pruned branches and
// the best path marked) and the answer; --json prints the final task as JSON instead.
#include "solve.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "arbor/mesh/planner_client.h"
#include "client_auth.h"
#include "game24.h"
#include "google/protobuf/util/json_util.h"

ABSL_FLAG(std::string, planner, "127.0.0.1:50081",
          "solve/tasks/watch/cancel: the planner's address");
ABSL_FLAG(std::string, preset, "game24", "solve: the task preset of the model");
ABSL_FLAG(std::string, strategy, "bfs", "solve: bfs, dfs, beam or mcts");
ABSL_FLAG(int, breadth, 2, "solve: states kept per level (bfs) or beam width (beam)");
ABSL_FLAG(int, proposals, 3, "solve: proposals per node");
ABSL_FLAG(int, root_proposals, 0,
          "solve: proposals for the root (bfs, dfs, beam); 0 = --proposals");
ABSL_FLAG(int, depth, 3, "solve: search depth");
ABSL_FLAG(double, value_threshold, 0, "solve: dfs prunes nodes valued below this");
ABSL_FLAG(double, uct_c, 1.0, "solve: mcts exploration constant");
ABSL_FLAG(int, rollouts, 16, "solve: mcts rollouts");
ABSL_FLAG(std::string, value, "logprob",
          "solve: logprob, label (greedy), expected (label scores weighted by probability) or "
          "sampled");
ABSL_FLAG(int, samples, 3, "solve: value samples with --value=sampled");
ABSL_FLAG(double, thought_temperature, 0.8, "solve: sampling temperature of thoughts");
ABSL_FLAG(int, thought_top_k, 0, "solve: thoughts keep the k most likely tokens; 0 = all");
ABSL_FLAG(double, thought_top_p, 1.0, "solve: nucleus mass thoughts sample from, (0, 1]");
ABSL_FLAG(int, max_thought_tokens, 48, "solve: tokens per thought at most");
ABSL_FLAG(uint64_t, search_seed, 0, "solve: sampling seed");
ABSL_FLAG(int, max_nodes, 0, "solve: node budget (0: the planner's default)");
ABSL_FLAG(int64_t, max_search_tokens, 0, "solve: token budget (0: the planner's default)");
ABSL_FLAG(int, deadline_ms, 0, "solve: time budget (0: none)");
ABSL_FLAG(std::string, task_id, "", "solve: a task id (a known one reattaches)");
ABSL_FLAG(std::string, tenant, "", "solve/tasks: the tenant");
ABSL_FLAG(bool, json, false,
          "solve/watch: print the final task as JSON; score: print the scores as JSON");

namespace arbor::cli {
namespace {

// Streams (Solve, Watch) run as long as the task; the other calls are quick.
mesh::PlannerClient Client() {
  absl::StatusOr<std::string> token = BearerToken();
  if (!token.ok()) {
    std::fprintf(stderr, "arbor: %s\n", std::string(token.status().message()).c_str());
    std::exit(2);
  }
  return mesh::PlannerClient(mesh::NewChannel(absl::GetFlag(FLAGS_planner)),
                             {.timeout = std::chrono::hours(24), .bearer_token = *token});
}
mesh::Deadline Quick() { return std::chrono::system_clock::now() + std::chrono::seconds(30); }

int RpcError(const char* what, const absl::Status& st) {
  std::fprintf(stderr, "arbor %s: planner %s: %s\n", what, absl::GetFlag(FLAGS_planner).c_str(),
               std::string(st.message()).c_str());
  return 1;
}

std::string OneLine(std::string s) {
  for (char& c : s) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  if (s.size() > 70) {
    size_t cut = 67;
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;  // UTF-8
    s = s.substr(0, cut) + "...";
  }
  return s;
}

// What a Solve/Watch stream told: the tree as its last events left each node, and the result.
struct Followed {
  std::map<int, v1::Node> nodes;
  v1::SolveResult result;
  bool have_result = false;
};

// Records `e` into `f`, showing progress on stderr (one line, redrawn on a terminal).
void Record(const v1::SolveEvent& e, bool tty, Followed& f) {
  switch (e.event_case()) {
    case v1::SolveEvent::kNodeCreated:
      f.nodes[e.node_created().id()] = e.node_created();
      break;
    case v1::SolveEvent::kNodeScored:
      f.nodes[e.node_scored().id()] = e.node_scored();
      break;
    case v1::SolveEvent::kNodePruned:
      f.nodes[e.node_pruned().id()] = e.node_pruned();
      break;
    case v1::SolveEvent::kProgress: {
      const v1::SearchCounts& c = e.progress();
      std::fprintf(stderr, "%s%d nodes, %lld tokens generated, %.1f tokens/s, %.1f s%s",
                   tty ? "\r" : "", c.nodes(), static_cast<long long>(c.tokens_generated()),
                   c.wall_seconds() > 0 ? c.tokens_generated() / c.wall_seconds() : 0.0,
                   c.wall_seconds(), tty ? "   " : "\n");
      break;
    }
    case v1::SolveEvent::kResult:
      f.result = e.result();
      f.have_result = true;
      break;
    default:
      break;
  }
}

// Prints the tree, the best path marked with '*'.
void PrintTree(const Followed& f) {
  if (f.nodes.empty()) return;
  std::map<int, std::vector<int>> children;
  for (const auto& [id, n] : f.nodes) {
    if (n.parent_id() >= 0) children[n.parent_id()].push_back(id);
  }
  const std::vector<int> best(f.result.best_path().begin(), f.result.best_path().end());
  std::function<void(int, int)> print = [&](int id, int indent) {
    if (id == 0) {
      std::printf("task %s\n", f.result.task_id().c_str());
    } else if (auto n = f.nodes.find(id); n != f.nodes.end()) {
      const bool on_best = std::find(best.begin(), best.end(), id) != best.end();
      std::printf("%*s%s [%d] %8.3f  %s%s\n", indent * 2, "", on_best ? "*" : "-", id,
                  n->second.score(), OneLine(n->second.thought()).c_str(),
                  n->second.pruned() ? "  (pruned)" : "");
    }
    for (int c : children[id]) print(c, indent + 1);
  };
  print(0, 0);
}

// Prints the answer, its judgement against `game24` (when given) and the counts.
void PrintResult(const v1::SolveResult& result, const std::vector<int>& game24) {
  const v1::SearchCounts& c = result.counts();
  std::printf("---\n%s: %s\n", result.solved() ? "answer" : "no answer; best state",
              OneLine(result.answer()).c_str());
  if (result.solved() && !game24.empty()) {
    std::printf(
        "judged: %s (exact rational arithmetic; the search did not use it)\n",
        game24::Check(result.answer(), game24) ? "right, uses each number once = 24" : "WRONG");
  }
  std::printf("best path: %s (score %.3f)\n", absl::StrJoin(result.best_path(), " -> ").c_str(),
              result.score());
  std::printf("nodes: %d; tokens: %lld generated, %lld prefilled, %lld reused; %.2f s\n", c.nodes(),
              static_cast<long long>(c.tokens_generated()),
              static_cast<long long>(c.tokens_prefilled()),
              static_cast<long long>(c.tokens_reused()), c.wall_seconds());
  if (c.tokens_prefilled() > 0) {
    std::printf("forks and the prefix cache saved %lld tokens of prefill (%.1fx fewer)\n",
                static_cast<long long>(c.tokens_reused()),
                static_cast<double>(c.tokens_reused() + c.tokens_prefilled()) /
                    static_cast<double>(c.tokens_prefilled()));
  }
}

// Reads a Solve/Watch stream (`open` runs it, handing each event to the callback) to its end,
// showing progress, then prints the tree and answer. With `game24` (the puzzle's numbers), the
// answer is also judged by exact rational arithmetic (the judge never takes part in the search).
using Opener =
    std::function<absl::Status(const std::function<bool(const v1::SolveEvent&)>& on_event)>;
int Follow(const char* what, const Opener& open, mesh::PlannerClient& client,
           const std::vector<int>& game24 = {}) {
  Followed f;
  const bool tty = isatty(fileno(stderr));
  const absl::Status st = open([&](const v1::SolveEvent& e) {
    Record(e, tty, f);
    return true;
  });
  if (tty) std::fprintf(stderr, "\n");
  if (!st.ok()) return RpcError(what, st);
  if (absl::GetFlag(FLAGS_json)) {
    absl::StatusOr<v1::Task> task = client.GetTask(f.result.task_id(), Quick());
    if (!task.ok()) return RpcError(what, task.status());
    std::string json;
    google::protobuf::util::JsonPrintOptions opts;
    opts.add_whitespace = true;
    (void)google::protobuf::util::MessageToJsonString(*task, &json, opts);
    std::printf("%s", json.c_str());
    return 0;
  }
  PrintTree(f);
  if (f.have_result) PrintResult(f.result, game24);
  return 0;
}

}  // namespace

bool SetValueAndGeneration(v1::SearchSpec& s) {
  const std::string value = absl::GetFlag(FLAGS_value);
  if (value == "label" || value == "expected") {
    s.mutable_value()->mutable_label()->set_expected(value == "expected");
  } else if (value == "sampled") {
    s.mutable_value()->mutable_sampled()->set_samples(absl::GetFlag(FLAGS_samples));
  } else if (value == "logprob") {
    s.mutable_value()->mutable_logprob();
  } else {
    return false;
  }
  s.mutable_generation()->set_temperature(absl::GetFlag(FLAGS_thought_temperature));
  s.mutable_generation()->set_top_k(absl::GetFlag(FLAGS_thought_top_k));
  s.mutable_generation()->set_top_p(static_cast<float>(absl::GetFlag(FLAGS_thought_top_p)));
  s.mutable_generation()->set_max_thought_tokens(absl::GetFlag(FLAGS_max_thought_tokens));
  s.mutable_generation()->set_seed(absl::GetFlag(FLAGS_search_seed));
  return true;
}

int Solve(const std::vector<std::string>& args) {
  if (args.size() != 1) {
    std::fprintf(stderr, "usage: arbor solve [flags] \"PROBLEM\"   (e.g. \"4 9 10 13\")\n");
    return 2;
  }
  v1::SolveRequest req;
  req.set_problem(args[0]);
  req.set_preset(absl::GetFlag(FLAGS_preset));
  req.set_task_id(absl::GetFlag(FLAGS_task_id));
  req.set_tenant(absl::GetFlag(FLAGS_tenant));
  v1::SearchSpec* s = req.mutable_search();
  const std::string strategy = absl::GetFlag(FLAGS_strategy);
  if (strategy == "bfs") {
    s->mutable_bfs()->set_breadth(absl::GetFlag(FLAGS_breadth));
    s->mutable_bfs()->set_proposals_per_node(absl::GetFlag(FLAGS_proposals));
    s->mutable_bfs()->set_root_proposals(absl::GetFlag(FLAGS_root_proposals));
    s->mutable_bfs()->set_depth(absl::GetFlag(FLAGS_depth));
  } else if (strategy == "dfs") {
    s->mutable_dfs()->set_proposals_per_node(absl::GetFlag(FLAGS_proposals));
    s->mutable_dfs()->set_root_proposals(absl::GetFlag(FLAGS_root_proposals));
    s->mutable_dfs()->set_depth(absl::GetFlag(FLAGS_depth));
    s->mutable_dfs()->set_value_threshold(absl::GetFlag(FLAGS_value_threshold));
  } else if (strategy == "beam") {
    s->mutable_beam()->set_beam_width(absl::GetFlag(FLAGS_breadth));
    s->mutable_beam()->set_proposals_per_node(absl::GetFlag(FLAGS_proposals));
    s->mutable_beam()->set_root_proposals(absl::GetFlag(FLAGS_root_proposals));
    s->mutable_beam()->set_depth(absl::GetFlag(FLAGS_depth));
  } else if (strategy == "mcts") {
    s->mutable_mcts()->set_uct_c(absl::GetFlag(FLAGS_uct_c));
    s->mutable_mcts()->set_rollouts(absl::GetFlag(FLAGS_rollouts));
    s->mutable_mcts()->set_depth(absl::GetFlag(FLAGS_depth));
  } else {
    std::fprintf(stderr, "arbor solve: --strategy must be bfs, dfs, beam or mcts\n");
    return 2;
  }
  if (!SetValueAndGeneration(*s)) {
    std::fprintf(stderr, "arbor solve: --value must be logprob, label, expected or sampled\n");
    return 2;
  }
  req.mutable_budget()->set_max_nodes(absl::GetFlag(FLAGS_max_nodes));
  req.mutable_budget()->set_max_tokens(absl::GetFlag(FLAGS_max_search_tokens));
  req.mutable_budget()->set_deadline_ms(absl::GetFlag(FLAGS_deadline_ms));
  mesh::PlannerClient client = Client();
  return Follow(
      "solve", [&](const auto& on_event) { return client.Solve(req, mesh::kNoDeadline, on_event); },
      client, req.preset() == "game24" ? game24::ParsePuzzle(req.problem()) : std::vector<int>{});
}

int Watch(const std::vector<std::string>& args) {
  if (args.size() != 1) {
    std::fprintf(stderr, "usage: arbor watch [flags] TASK_ID\n");
    return 2;
  }
  mesh::PlannerClient client = Client();
  return Follow(
      "watch",
      [&](const auto& on_event) { return client.WatchTask(args[0], mesh::kNoDeadline, on_event); },
      client);
}

int Cancel(const std::vector<std::string>& args) {
  if (args.size() != 1) {
    std::fprintf(stderr, "usage: arbor cancel [flags] TASK_ID\n");
    return 2;
  }
  absl::StatusOr<v1::Task> task = Client().CancelTask(args[0], Quick());
  if (!task.ok()) return RpcError("cancel", task.status());
  std::printf("task %s: cancelling (was %s)\n", task->task_id().c_str(),
              v1::TaskStatus_Name(task->status()).c_str());
  return 0;
}

int Tasks(const std::vector<std::string>& args) {
  v1::ListTasksRequest req;
  req.set_tenant(absl::GetFlag(FLAGS_tenant));
  req.set_limit(1000);
  absl::StatusOr<v1::ListTasksResponse> resp = Client().ListTasks(req, Quick());
  if (!resp.ok()) return RpcError("tasks", resp.status());
  for (const v1::Task& t : resp->tasks()) {
    std::printf("%-32s %-24s %-10s %s\n", t.task_id().c_str(),
                v1::TaskStatus_Name(t.status()).c_str(), t.tenant().c_str(),
                OneLine(t.problem()).c_str());
  }
  return 0;
}

}  // namespace arbor::cli
