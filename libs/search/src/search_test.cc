#include "arbor/search/search.h"

#include <map>
#include <tuple>

#include "gtest/gtest.h"

namespace arbor::search {
namespace {

// A deterministic world: child j of state S is "S.j"; its value is kByDigit[j] unless overridden;
// one state may be marked as the answer; a proposal's log-prob is logprobs[state] (else 0).
// Each proposal costs 10 tokens.
class FakeSource : public ThoughtSource {
 public:
  absl::StatusOr<std::vector<std::vector<Proposal>>> Propose(
      const std::vector<const SearchNode*>& parents, int n) override {
    ++propose_calls;
    asked.push_back(n);
    if (fail_propose) return absl::UnavailableError("router down");
    std::vector<std::vector<Proposal>> out;
    for (const SearchNode* p : parents) {
      out.emplace_back();
      for (int j = 0; j < n - drop; ++j) {
        Proposal q{.thought = "t" + std::to_string(j), .state = p->state + "." + std::to_string(j)};
        q.answer = q.state == answer_state;
        if (auto it = logprobs.find(q.state); it != logprobs.end()) q.logprob = it->second;
        if (q.answer) q.answer_text = "answer " + q.state;
        out.back().push_back(q);
        tokens += 10;
      }
    }
    if (wrong_count) out.pop_back();
    return out;
  }
  absl::StatusOr<std::vector<double>> Evaluate(
      const std::vector<const SearchNode*>& nodes) override {
    std::vector<double> v;
    for (const SearchNode* n : nodes) {
      auto it = values.find(n->state);
      v.push_back(it != values.end() ? it->second : kByDigit[n->state.back() - '0']);
    }
    return v;
  }
  int64_t tokens_used() const override { return tokens; }

  static constexpr double kByDigit[10] = {1, 3, 2, 0, 0, 0, 0, 0, 0, 0};
  std::map<std::string, double> values;
  std::map<std::string, double> logprobs;
  std::string answer_state;
  std::vector<int> asked;  // n of every Propose call
  int64_t tokens = 0;
  int propose_calls = 0;
  int drop = 0;  // proposals fewer than asked
  bool fail_propose = false, wrong_count = false;
};

struct Events {
  std::vector<int> created, scored, pruned, answers;
  SearchObserver observer() {
    return {.created = [this](const SearchNode& n) { created.push_back(n.id); },
            .scored = [this](const SearchNode& n) { scored.push_back(n.id); },
            .pruned = [this](const SearchNode& n) { pruned.push_back(n.id); },
            .answer = [this](const SearchNode& n) { answers.push_back(n.id); }};
  }
};

SearchSpec Spec(Strategy s, int breadth, int k, int depth) {
  SearchSpec spec;
  spec.strategy = s;
  spec.breadth = breadth;
  spec.proposals_per_node = k;
  spec.depth = depth;
  return spec;
}

std::vector<std::string> States(const SearchTree& t, const std::vector<int>& ids) {
  std::vector<std::string> out;
  for (int id : ids) out.push_back(t.node(id).state);
  return out;
}

TEST(SearchTest, BfsKeepsTheBestOfEachLevelAndPrunesTheRest) {
  FakeSource src;
  SearchTree tree("r");
  Events ev;
  auto r = RunSearch(Spec(Strategy::kBfs, 2, 3, 2), {}, src, tree, ev.observer());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(tree.size(), 10);
  // Level 1: r.0 (1), r.1 (3), r.2 (2) -> keep r.1, r.2. Level 2 expands r.1 first (ids 4-6),
  // then r.2 (7-9); the two 3s (r.1.1, r.2.1) survive.
  EXPECT_EQ(States(tree, {4, 5, 6, 7, 8, 9}),
            (std::vector<std::string>{"r.1.0", "r.1.1", "r.1.2", "r.2.0", "r.2.1", "r.2.2"}));
  EXPECT_EQ(ev.pruned, (std::vector<int>{1, 6, 9, 4, 7}));  // in order of value, then id
  EXPECT_EQ(ev.created.size(), 9u);
  EXPECT_EQ(ev.scored, ev.created);
  EXPECT_EQ(r->stop, StopReason::kExhausted);
  EXPECT_EQ(r->answer_node, -1);
  EXPECT_EQ(r->best_path, (std::vector<int>{0, 2, 5}));
  EXPECT_EQ(src.propose_calls, 2);  // one batched call per level
}

TEST(SearchTest, BeamRanksByThePathsValueWhereBfsRanksByTheNodes) {
  FakeSource src;
  src.values = {{"r.0", 5},   {"r.1", 1},   {"r.2", 0},   {"r.0.0", 0},
                {"r.0.1", 0}, {"r.0.2", 0}, {"r.1.0", 10}};
  auto survivors = [&](Strategy s) {
    FakeSource copy = src;
    SearchTree tree("r");
    EXPECT_TRUE(RunSearch(Spec(s, 2, 3, 2), {}, copy, tree).ok());
    std::vector<std::string> kept;
    for (int id = 0; id < tree.size(); ++id) {
      if (tree.node(id).depth == 2 && !tree.node(id).pruned) kept.push_back(tree.node(id).state);
    }
    return kept;
  };
  // Own values: r.1.0 (10), r.1.1 (3). Path sums: r.1.0 (11), r.0.0 (5, first of three 5s).
  EXPECT_EQ(survivors(Strategy::kBfs), (std::vector<std::string>{"r.1.0", "r.1.1"}));
  EXPECT_EQ(survivors(Strategy::kBeam), (std::vector<std::string>{"r.0.0", "r.1.0"}));
}

TEST(SearchTest, DfsBacktracksInValueOrderPrunesUnderTheThresholdAndStopsAtAnAnswer) {
  FakeSource src;
  src.answer_state = "r.2.1";
  SearchTree tree("r");
  Events ev;
  SearchSpec spec = Spec(Strategy::kDfs, 0, 3, 2);
  spec.value_threshold = 1.5;
  auto r = RunSearch(spec, {}, src, tree, ev.observer());
  ASSERT_TRUE(r.ok()) << r.status();
  // r -> r.1 (best) -> leaves; back to r.2 -> r.2.1 is the answer.
  ASSERT_EQ(tree.size(), 10);
  EXPECT_EQ(States(tree, {2, 3, 8}), (std::vector<std::string>{"r.1", "r.2", "r.2.1"}));
  EXPECT_EQ(ev.pruned, (std::vector<int>{1, 4}));  // r.0 and r.1.0 are valued 1 < 1.5
  EXPECT_EQ(ev.answers, (std::vector<int>{8}));
  EXPECT_EQ(r->stop, StopReason::kAnswer);
  EXPECT_EQ(r->answer_node, 8);
  EXPECT_EQ(r->best_path, (std::vector<int>{0, 3, 8}));
  EXPECT_EQ(tree.node(8).answer_text, "answer r.2.1");
}

TEST(SearchTest, MctsVisitCountsFollowUct) {
  FakeSource src;
  SearchTree tree("r");
  SearchSpec spec = Spec(Strategy::kMcts, 0, 2, 2);
  spec.uct_c = 0;  // greedy on the mean: the counts below follow by hand
  spec.rollouts = 4;
  auto r = RunSearch(spec, {}, src, tree);
  ASSERT_TRUE(r.ok()) << r.status();
  // 1: expand r -> r.0 (1), r.1 (3). 2: select r.1, expand -> r.1.0 (1), r.1.1 (3).
  // 3 and 4: select r.1 (mean 7/3 > 1) then r.1.1 (3 > 1), a leaf at the depth limit.
  ASSERT_EQ(tree.size(), 5);
  EXPECT_EQ(tree.node(0).visits, 6);
  EXPECT_EQ(tree.node(1).visits, 1);
  EXPECT_EQ(tree.node(2).visits, 5);
  EXPECT_EQ(tree.node(3).visits, 1);
  EXPECT_EQ(tree.node(4).visits, 3);
  EXPECT_DOUBLE_EQ(tree.node(2).value_sum, 13);
  EXPECT_EQ(r->best_path, (std::vector<int>{0, 2, 4}));
  EXPECT_EQ(r->stop, StopReason::kExhausted);

  // With exploration, the other branch gets visited too.
  FakeSource src2;
  SearchTree tree2("r");
  spec.uct_c = 10;
  ASSERT_TRUE(RunSearch(spec, {}, src2, tree2).ok());
  EXPECT_GT(tree2.node(1).visits, 1);
}

TEST(SearchTest, BudgetsStopTheSearch) {
  {
    FakeSource src;
    SearchTree tree("r");
    auto r = RunSearch(Spec(Strategy::kBfs, 2, 3, 3), {.max_nodes = 5}, src, tree);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->stop, StopReason::kNodeBudget);
    EXPECT_EQ(tree.size(), 5);
  }
  {
    FakeSource src;
    SearchTree tree("r");
    auto r = RunSearch(Spec(Strategy::kBfs, 2, 3, 3), {.max_tokens = 25}, src, tree);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->stop, StopReason::kTokenBudget);
    EXPECT_EQ(tree.size(), 4);  // one level of 3 proposals (30 tokens), then no more
  }
  {
    FakeSource src;
    SearchTree tree("r");
    Budget past;
    past.deadline = std::chrono::steady_clock::now() - std::chrono::seconds(1);
    auto r = RunSearch(Spec(Strategy::kDfs, 0, 3, 3), past, src, tree);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->stop, StopReason::kDeadline);
    EXPECT_EQ(tree.size(), 1);
    EXPECT_EQ(r->best_path, (std::vector<int>{0}));
  }
  {  // A source that runs dry ends the search as exhausted.
    FakeSource src;
    src.drop = 3;
    SearchTree tree("r");
    auto r = RunSearch(Spec(Strategy::kMcts, 0, 3, 3), {}, src, tree);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->stop, StopReason::kExhausted);
    EXPECT_EQ(tree.size(), 1);
  }
}

std::vector<std::tuple<int, std::string, double, bool>> Snapshot(const SearchTree& t) {
  std::vector<std::tuple<int, std::string, double, bool>> out;
  for (int id = 0; id < t.size(); ++id) {
    out.emplace_back(t.node(id).parent, t.node(id).state, t.node(id).score, t.node(id).pruned);
  }
  return out;
}

// A search cut short by its budget and run again on the same tree (what a restarted planner does
// with a checkpoint) replays what the tree holds without asking the source, then continues, and
// ends with exactly the tree of an uninterrupted run.
TEST(SearchTest, RerunningOnARestoredTreeReplaysThenContinues) {
  SearchSpec mcts = Spec(Strategy::kMcts, 0, 2, 3);
  mcts.rollouts = 12;
  SearchSpec dfs = Spec(Strategy::kDfs, 0, 3, 3);
  dfs.value_threshold = 1.5;
  for (const SearchSpec& spec :
       {Spec(Strategy::kBfs, 2, 3, 3), Spec(Strategy::kBeam, 2, 3, 3), dfs, mcts}) {
    FakeSource whole_src;
    SearchTree whole("r");
    auto want = RunSearch(spec, {}, whole_src, whole);
    ASSERT_TRUE(want.ok());

    FakeSource src;
    SearchTree tree("r");
    auto cut = RunSearch(spec, {.max_tokens = 40}, src, tree);
    ASSERT_TRUE(cut.ok());
    ASSERT_EQ(cut->stop, StopReason::kTokenBudget);
    ASSERT_LT(tree.size(), whole.size());
    const int before = tree.size();
    const int calls = src.propose_calls;
    Events ev;
    auto resumed = RunSearch(spec, {}, src, tree, ev.observer());
    ASSERT_TRUE(resumed.ok());
    EXPECT_EQ(Snapshot(tree), Snapshot(whole)) << static_cast<int>(spec.strategy);
    EXPECT_EQ(resumed->best_path, want->best_path);
    EXPECT_EQ(static_cast<int>(ev.created.size()), tree.size() - before);  // only new nodes
    EXPECT_EQ(src.propose_calls - calls, whole_src.propose_calls - calls);
  }
}

TEST(SearchTest, EqualValuesGoToThePathTheModelIsSurerOf) {
  FakeSource src;
  // Every node is worth 1: only the thoughts' log-probs tell them apart.
  for (const char* s : {"r.0", "r.1", "r.2", "r.0.0", "r.0.1", "r.0.2", "r.1.0", "r.1.1", "r.1.2",
                        "r.2.0", "r.2.1", "r.2.2"}) {
    src.values[s] = 1;
  }
  // Level 1: r.2 (-0.1) > r.1 (-0.5) > r.0 (-0.9). Paths at level 2: r.1.1 = -0.5 - 0.1 = -0.6
  // beats r.2.0 = -0.1 - 0.7 = -0.8, r.2.2 = -0.1 - 0.8 = -0.9 and the rest (-0.1 - 1 at best).
  src.logprobs = {{"r.0", -0.9},   {"r.1", -0.5}, {"r.2", -0.1}, {"r.1.1", -0.1}, {"r.2.0", -0.7},
                  {"r.2.2", -0.8}, {"r.1.0", -2}, {"r.1.2", -2}, {"r.2.1", -3}};
  SearchTree tree("r");
  auto r = RunSearch(Spec(Strategy::kBfs, 2, 3, 2), {}, src, tree);
  ASSERT_TRUE(r.ok()) << r.status();
  std::vector<std::string> kept;
  for (int id = 0; id < tree.size(); ++id) {
    if (!tree.node(id).pruned && id > 0) kept.push_back(tree.node(id).state);
  }
  EXPECT_EQ(kept, (std::vector<std::string>{"r.1", "r.2", "r.2.0", "r.1.1"}));  // by id
  EXPECT_DOUBLE_EQ(tree.node(r->best_node).path_logprob, -0.6);
  EXPECT_EQ(tree.node(r->best_node).state, "r.1.1");

  // Among answers of equal value, the surer path's answer is the one returned.
  SearchTree answers("r");
  struct AllAnswers : FakeSource {
    absl::StatusOr<std::vector<std::vector<Proposal>>> Propose(
        const std::vector<const SearchNode*>& parents, int n) override {
      auto out = FakeSource::Propose(parents, n);
      for (auto& list : *out) {
        for (Proposal& q : list) q.answer = true;
      }
      return out;
    }
  } all;
  all.values = src.values;
  all.logprobs = {{"r.0", -0.2}, {"r.1", -0.4}, {"r.2", -0.3}};
  auto a = RunSearch(Spec(Strategy::kBfs, 2, 3, 2), {}, all, answers);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(answers.node(a->answer_node).state, "r.0");  // -0.2 > -0.3 > -0.4, all worth 1
}

TEST(SearchTest, TheRootDrawsRootProposals) {
  FakeSource src;
  SearchSpec spec = Spec(Strategy::kBfs, 2, 3, 3);
  spec.root_proposals = 5;
  SearchTree tree("r");
  ASSERT_TRUE(RunSearch(spec, {}, src, tree).ok());
  EXPECT_EQ(src.asked, (std::vector<int>{5, 3, 3}));
  EXPECT_EQ(tree.node(0).children.size(), 5u);
  EXPECT_EQ(tree.size(), 1 + 5 + 2 * 3 + 2 * 3);

  // 0 means proposals_per_node, for every strategy; DFS and beam honour it too.
  for (Strategy s : {Strategy::kBfs, Strategy::kDfs, Strategy::kBeam}) {
    FakeSource plain, wide;
    SearchSpec a = Spec(s, 2, 3, 2), b = a;
    b.root_proposals = 7;
    SearchTree ta("r"), tb("r");
    ASSERT_TRUE(RunSearch(a, {}, plain, ta).ok());
    ASSERT_TRUE(RunSearch(b, {}, wide, tb).ok());
    EXPECT_EQ(plain.asked.front(), 3);
    EXPECT_EQ(wide.asked.front(), 7);
    EXPECT_EQ(tb.node(0).children.size(), 7u);
    for (size_t i = 1; i < wide.asked.size(); ++i) EXPECT_EQ(wide.asked[i], 3);
  }
}

TEST(SearchTest, BadSpecsAndSourceErrors) {
  FakeSource src;
  SearchTree tree("r");
  struct Case {
    SearchSpec spec;
    const char* needle;
  };
  SearchSpec mcts = Spec(Strategy::kMcts, 0, 2, 2);
  mcts.uct_c = -1;
  SearchSpec rollouts = Spec(Strategy::kMcts, 0, 2, 2);
  rollouts.rollouts = 0;
  SearchSpec root = Spec(Strategy::kBfs, 2, 2, 2);
  root.root_proposals = 65;
  for (const Case& c :
       {Case{Spec(Strategy::kBfs, 2, 0, 2), "proposals_per_node 0"},
        Case{Spec(Strategy::kBfs, 2, 2, 33), "depth 33"},
        Case{Spec(Strategy::kBfs, 65, 2, 2), "breadth 65"},
        Case{Spec(Strategy::kBeam, 0, 2, 2), "beam_width 0"}, Case{mcts, "uct_c -1"},
        Case{rollouts, "rollouts 0"}, Case{root, "root_proposals 65"}}) {
    auto r = RunSearch(c.spec, {}, src, tree);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.needle), absl::string_view::npos) << r.status();
  }
  EXPECT_EQ(src.propose_calls, 0);

  src.fail_propose = true;
  auto failed = RunSearch(Spec(Strategy::kBfs, 2, 2, 2), {}, src, tree);
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable);
  src.fail_propose = false;
  src.wrong_count = true;
  auto wrong = RunSearch(Spec(Strategy::kBfs, 2, 2, 2), {}, src, tree);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInternal) << wrong.status();
}

}  // namespace
}  // namespace arbor::search
