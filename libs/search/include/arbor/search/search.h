// Tree-of-thought search, independent of where thoughts come from. A strategy grows a
// SearchTree by asking a ThoughtSource to propose children of some nodes (all of one round in
// one call, so the source can batch them: forks in the kv-store, one Extend each, all sharing
// the router's steps) and to value new nodes, within a Budget. Strategies:
//   BFS   (Tree of Thoughts): per level, every frontier node proposes k children, all are
//         valued, the best `breadth` survive, the rest are pruned.
//   DFS   with backtracking: children in order of value, those under the threshold pruned; the
//         first answer ends the search.
//   Beam  like BFS, ranked by the path's summed value instead of the node's own.
//   MCTS  UCT selection from the root, expansion of the selected leaf, its children valued as
//         the rollout result, backed up the path; `rollouts` iterations.
// Ties between equal values go to the path the model is surer of (the summed mean log-probs of
// its thoughts), so a source whose values are coarse labels still ranks its nodes finely: a step
// with slipped arithmetic is usually one the model wrote with a less likely token.
// Every strategy stops at the first node the source marks as an answer, when the budget runs
// out, or when the tree is exhausted. Deterministic given a deterministic source, and resumable:
// run again on a tree restored from a checkpoint, a strategy replays the expansions it holds
// (without asking the source) and continues from where it stopped. Not thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace arbor::search {

struct SearchNode {
  int id = 0;
  int parent = -1;  // -1 for the root
  int depth = 0;
  std::string thought;  // the step that led here (empty for the root)
  std::string state;    // the problem state after it
  double score = 0;     // the node's value, once scored
  bool scored = false;
  bool pruned = false;
  bool answer = false;  // the source says this state answers the problem
  std::string answer_text;
  uint64_t handle = 0;  // from the Proposal (the root's is set by the caller)
  double logprob = 0;   // from the Proposal
  // The sum of `logprob` from the root to here: the model's confidence in the path. Among
  // nodes of equal score the search ranks the higher path_logprob first (then the lower id).
  double path_logprob = 0;
  // MCTS statistics (recomputed when a restored tree is replayed).
  int visits = 0;
  double value_sum = 0;
  std::vector<int> children;
  bool expanded = false;
};

// One proposed child.
struct Proposal {
  std::string thought;
  std::string state;
  bool answer = false;
  std::string answer_text;
  uint64_t handle = 0;  // the source's own reference (e.g. the node's kv-store sequence)
  double logprob = 0;   // the thought's mean token log-probability under the model, if known
};

class ThoughtSource {
 public:
  virtual ~ThoughtSource() = default;
  // Up to `n` proposals for each of `parents` (out[i] for parents[i]).
  virtual absl::StatusOr<std::vector<std::vector<Proposal>>> Propose(
      const std::vector<const SearchNode*>& parents, int n) = 0;
  // A value for each node (higher is better).
  virtual absl::StatusOr<std::vector<double>> Evaluate(
      const std::vector<const SearchNode*>& nodes) = 0;
  // Tokens generated so far (for the token budget).
  virtual int64_t tokens_used() const = 0;
};

enum class Strategy { kBfs, kDfs, kBeam, kMcts };

struct SearchSpec {
  Strategy strategy = Strategy::kBfs;
  int breadth = 2;  // BFS: nodes kept per level; Beam: beam width
  int proposals_per_node = 3;
  int root_proposals = 0;      // proposals for the root; 0 = proposals_per_node
  int depth = 3;               // the deepest level (the root is level 0)
  double value_threshold = 0;  // DFS: children valued below are pruned
  double uct_c = 1.0;          // MCTS exploration constant
  int rollouts = 32;           // MCTS iterations

  // INVALID_ARGUMENT naming the field out of its range (see planner.proto).
  absl::Status Validate() const;
};

struct Budget {
  int max_nodes = 1000;  // nodes in the tree, root included
  int64_t max_tokens = 1 << 20;
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

enum class StopReason { kAnswer, kExhausted, kNodeBudget, kTokenBudget, kDeadline };
const char* StopReasonName(StopReason r);

// What a strategy reports as the tree grows. `round` follows every expansion that added nodes
// (after they are valued): where a service checkpoints the tree.
struct SearchObserver {
  std::function<void(const SearchNode&)> created, scored, pruned, answer;
  std::function<void()> round;
};

class SearchTree {
 public:
  explicit SearchTree(std::string root_state);
  const SearchNode& node(int id) const { return nodes_[id]; }
  SearchNode& mutable_node(int id) { return nodes_[id]; }
  int size() const { return static_cast<int>(nodes_.size()); }
  int AddChild(int parent, const Proposal& p);
  // Node ids from the root to `id`.
  std::vector<int> PathTo(int id) const;

 private:
  std::vector<SearchNode> nodes_;
};

struct SearchResult {
  StopReason stop = StopReason::kExhausted;
  int answer_node = -1;  // the first answer found, or -1
  int best_node = 0;     // the answer, else the best-scored unpruned deepest node
  std::vector<int> best_path;
};

// Runs `spec` on `tree` (which holds at least the root). Errors from the source end the search
// and are returned; the tree keeps what was built.
absl::StatusOr<SearchResult> RunSearch(const SearchSpec& spec, const Budget& budget,
                                       ThoughtSource& source, SearchTree& tree,
                                       const SearchObserver& observer = {});

}  // namespace arbor::search
