#include "arbor/search/search.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "arbor/common/status_macros.h"

namespace arbor::search {

const char* StopReasonName(StopReason r) {
  switch (r) {
    case StopReason::kAnswer:
      return "answer";
    case StopReason::kExhausted:
      return "exhausted";
    case StopReason::kNodeBudget:
      return "node_budget";
    case StopReason::kTokenBudget:
      return "token_budget";
    case StopReason::kDeadline:
      return "deadline";
  }
  return "?";
}

absl::Status SearchSpec::Validate() const {
  auto range = [](const char* field, double v, double lo, double hi) -> absl::Status {
    if (!(v >= lo && v <= hi)) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, " ", v, " out of range [", lo, ", ", hi, "]"));
    }
    return absl::OkStatus();
  };
  ARBOR_RETURN_IF_ERROR(range("proposals_per_node", proposals_per_node, 1, 64));
  ARBOR_RETURN_IF_ERROR(range("root_proposals", root_proposals, 0, 64));
  ARBOR_RETURN_IF_ERROR(range("depth", depth, 1, 32));
  switch (strategy) {
    case Strategy::kBfs:
      return range("breadth", breadth, 1, 64);
    case Strategy::kBeam:
      return range("beam_width", breadth, 1, 64);
    case Strategy::kDfs:
      return range("value_threshold", value_threshold, -1e30, 1e30);
    case Strategy::kMcts:
      ARBOR_RETURN_IF_ERROR(range("uct_c", uct_c, 0, 100));
      return range("rollouts", rollouts, 1, 10000);
  }
  return absl::OkStatus();
}

SearchTree::SearchTree(std::string root_state) {
  SearchNode root;
  root.state = std::move(root_state);
  nodes_.push_back(std::move(root));
}

int SearchTree::AddChild(int parent, const Proposal& p) {
  SearchNode n;
  n.id = size();
  n.parent = parent;
  n.depth = nodes_[parent].depth + 1;
  n.thought = p.thought;
  n.state = p.state;
  n.answer = p.answer;
  n.answer_text = p.answer_text;
  n.handle = p.handle;
  n.logprob = p.logprob;
  n.path_logprob = nodes_[parent].path_logprob + p.logprob;
  nodes_[parent].children.push_back(n.id);
  nodes_.push_back(std::move(n));
  return nodes_.back().id;
}

std::vector<int> SearchTree::PathTo(int id) const {
  std::vector<int> path;
  for (int n = id; n >= 0; n = nodes_[n].parent) path.push_back(n);
  std::reverse(path.begin(), path.end());
  return path;
}

namespace {

class Searcher {
 public:
  Searcher(const SearchSpec& spec, const Budget& budget, ThoughtSource& source, SearchTree& tree,
           const SearchObserver& observer)
      : spec_(spec), budget_(budget), source_(source), tree_(tree), observer_(observer) {}

  absl::StatusOr<SearchResult> Run() {
    switch (spec_.strategy) {
      case Strategy::kBfs:
      case Strategy::kBeam:
        ARBOR_RETURN_IF_ERROR(Levels(spec_.strategy == Strategy::kBeam));
        break;
      case Strategy::kDfs:
        ARBOR_RETURN_IF_ERROR(Dfs(0));
        break;
      case Strategy::kMcts:
        for (int id = 0; id < tree_.size(); ++id) {  // a replay recomputes them
          tree_.mutable_node(id).visits = 0;
          tree_.mutable_node(id).value_sum = 0;
        }
        ARBOR_RETURN_IF_ERROR(Mcts());
        break;
    }
    SearchResult r;
    r.stop = stop_.value_or(StopReason::kExhausted);
    r.answer_node = answer_;
    r.best_node = answer_ >= 0 ? answer_ : Best();
    r.best_path = tree_.PathTo(r.best_node);
    return r;
  }

 private:
  bool stopped() const { return stop_.has_value(); }

  // Sets stop_ if a budget has run out.
  bool OutOfBudget() {
    if (stopped()) return true;
    if (tree_.size() >= budget_.max_nodes) {
      stop_ = StopReason::kNodeBudget;
    } else if (source_.tokens_used() >= budget_.max_tokens) {
      stop_ = StopReason::kTokenBudget;
    } else if (std::chrono::steady_clock::now() >= budget_.deadline) {
      stop_ = StopReason::kDeadline;
    }
    return stopped();
  }

  // Proposes children for `parents` (capped so the tree stays within max_nodes) and values them.
  // A parent expanded before (a tree restored from a checkpoint) keeps its children and their
  // values, without asking the source: re-running a strategy on a restored tree replays it to
  // where it stopped, then goes on. Returns the children in parent order; stops the search on
  // the best answer among them.
  absl::StatusOr<std::vector<int>> Expand(const std::vector<int>& parents) {
    std::vector<int> children;
    if (OutOfBudget()) return children;
    std::vector<int> fresh;
    for (int p : parents) {
      if (!tree_.node(p).expanded) fresh.push_back(p);
    }
    std::vector<int> created;
    bool capped = false;
    if (!fresh.empty()) {
      const int room = budget_.max_nodes - tree_.size();
      // The root is always expanded alone (it is the whole first level).
      const int wanted = fresh.size() == 1 && fresh[0] == 0 && spec_.root_proposals > 0
                             ? spec_.root_proposals
                             : spec_.proposals_per_node;
      // Ask only for what the node budget can keep: the first parents, in order, as many
      // proposals as there is room for (a round never generates thoughts past max_nodes). The
      // rest stay unexpanded.
      const int per_node = std::min(wanted, room);
      fresh.resize(std::min<size_t>(fresh.size(), (room + per_node - 1) / per_node));
      std::vector<const SearchNode*> ps;
      for (int p : fresh) ps.push_back(&tree_.node(p));
      ARBOR_ASSIGN_OR_RETURN(std::vector<std::vector<Proposal>> proposals,
                             source_.Propose(ps, per_node));
      if (proposals.size() != fresh.size()) {
        return absl::InternalError(absl::StrCat("thought source answered ", proposals.size(),
                                                " proposal lists for ", fresh.size(), " parents"));
      }
      for (size_t i = 0; i < fresh.size(); ++i) {
        tree_.mutable_node(fresh[i]).expanded = true;
        for (size_t j = 0; j < proposals[i].size() && j < size_t(per_node); ++j) {
          if (static_cast<int>(created.size()) == room) {
            capped = true;
            break;
          }
          const int id = tree_.AddChild(fresh[i], proposals[i][j]);
          created.push_back(id);
          if (observer_.created) observer_.created(tree_.node(id));
        }
      }
      if (!created.empty()) {
        std::vector<const SearchNode*> nodes;
        for (int id : created) nodes.push_back(&tree_.node(id));
        ARBOR_ASSIGN_OR_RETURN(std::vector<double> values, source_.Evaluate(nodes));
        if (values.size() != created.size()) {
          return absl::InternalError(absl::StrCat("thought source valued ", values.size(), " of ",
                                                  created.size(), " nodes"));
        }
        for (size_t i = 0; i < created.size(); ++i) {
          SearchNode& n = tree_.mutable_node(created[i]);
          n.score = values[i];
          n.scored = true;
          if (observer_.scored) observer_.scored(n);
        }
      }
    }
    for (int p : parents) {
      for (int c : tree_.node(p).children) children.push_back(c);
    }
    int best_answer = -1;
    for (int id : children) {
      const SearchNode& n = tree_.node(id);
      if (n.answer &&
          (best_answer < 0 || Before(id, n.score, best_answer, tree_.node(best_answer).score))) {
        best_answer = id;
      }
    }
    if (best_answer >= 0) {
      answer_ = best_answer;
      stop_ = StopReason::kAnswer;
      if (observer_.answer) observer_.answer(tree_.node(best_answer));
    }
    if (capped && !stopped()) stop_ = StopReason::kNodeBudget;
    if (!created.empty() && observer_.round) observer_.round();
    return children;
  }

  void Prune(int id) {
    SearchNode& n = tree_.mutable_node(id);
    if (n.pruned) return;
    n.pruned = true;
    if (observer_.pruned) observer_.pruned(n);
  }

  // Whether node a ranks before node b whose keys are ka and kb: the higher key, then the path
  // the model is surer of, then the lower id (so results never depend on sort stability).
  bool Before(int a, double ka, int b, double kb) const {
    if (ka != kb) return ka > kb;
    const double la = tree_.node(a).path_logprob, lb = tree_.node(b).path_logprob;
    if (la != lb) return la > lb;
    return a < b;
  }

  template <typename Key>
  void SortByKey(std::vector<int>& ids, Key key) const {
    std::sort(ids.begin(), ids.end(), [&](int a, int b) { return Before(a, key(a), b, key(b)); });
  }

  // BFS (rank by the node's value) and beam search (rank by the path's summed value).
  absl::Status Levels(bool beam) {
    std::vector<int> frontier = {0};
    std::vector<double> path_value(1, 0.0);
    auto key = [&](int id) { return beam ? path_value[id] : tree_.node(id).score; };
    for (int level = 1; level <= spec_.depth && !stopped(); ++level) {
      ARBOR_ASSIGN_OR_RETURN(std::vector<int> children, Expand(frontier));
      path_value.resize(tree_.size(), 0.0);
      for (int id : children) {
        path_value[id] = path_value[tree_.node(id).parent] + tree_.node(id).score;
      }
      if (children.empty() || stopped()) return absl::OkStatus();
      SortByKey(children, key);
      const size_t keep = std::min(children.size(), static_cast<size_t>(spec_.breadth));
      for (size_t i = keep; i < children.size(); ++i) Prune(children[i]);
      children.resize(keep);
      frontier = std::move(children);
    }
    return absl::OkStatus();
  }

  absl::Status Dfs(int id) {
    if (stopped() || tree_.node(id).depth >= spec_.depth) return absl::OkStatus();
    ARBOR_ASSIGN_OR_RETURN(std::vector<int> children, Expand({id}));
    if (stopped()) return absl::OkStatus();
    SortByKey(children, [&](int c) { return tree_.node(c).score; });
    for (int c : children) {
      if (tree_.node(c).score < spec_.value_threshold) Prune(c);
    }
    for (int c : children) {
      if (tree_.node(c).pruned) continue;
      ARBOR_RETURN_IF_ERROR(Dfs(c));
      if (stopped()) return absl::OkStatus();
    }
    return absl::OkStatus();
  }

  void Backup(int id, double value) {
    for (int n = id; n >= 0; n = tree_.node(n).parent) {
      SearchNode& s = tree_.mutable_node(n);
      ++s.visits;
      s.value_sum += value;
    }
  }

  double Uct(const SearchNode& parent, const SearchNode& child) const {
    if (child.visits == 0) return std::numeric_limits<double>::infinity();
    return child.value_sum / child.visits +
           spec_.uct_c * std::sqrt(std::log(static_cast<double>(parent.visits)) / child.visits);
  }

  absl::Status Mcts() {
    // Selection descends only through nodes expanded in this run, so that a replay on a restored
    // tree takes exactly the steps of the original run.
    std::vector<char> expanded(tree_.size(), 0);
    auto expanded_here = [&](int id) {
      return id < static_cast<int>(expanded.size()) && expanded[id] != 0;
    };
    for (int r = 0; r < spec_.rollouts && !OutOfBudget(); ++r) {
      int n = 0;
      while (expanded_here(n) && !tree_.node(n).children.empty()) {
        const SearchNode& parent = tree_.node(n);
        int best = parent.children.front();
        for (int c : parent.children) {
          if (Uct(parent, tree_.node(c)) > Uct(parent, tree_.node(best))) best = c;
        }
        n = best;
      }
      const SearchNode& leaf = tree_.node(n);
      if (expanded_here(n) || leaf.answer || leaf.depth >= spec_.depth) {
        Backup(n, leaf.score);  // terminal: its own value again
        continue;
      }
      ARBOR_ASSIGN_OR_RETURN(std::vector<int> children, Expand({n}));
      expanded.resize(tree_.size(), 0);
      expanded[n] = 1;
      if (children.empty()) {
        Backup(n, tree_.node(n).score);
        continue;
      }
      for (int c : children) Backup(c, tree_.node(c).score);
    }
    return absl::OkStatus();
  }

  // Without an answer: the best-valued unpruned node among the deepest reached (MCTS: follow the
  // most visited children from the root).
  int Best() const {
    if (spec_.strategy == Strategy::kMcts) {
      int n = 0;
      while (!tree_.node(n).children.empty()) {
        int best = -1;
        for (int c : tree_.node(n).children) {
          const SearchNode& s = tree_.node(c);
          if (s.visits == 0) continue;
          if (best < 0 || s.visits > tree_.node(best).visits) best = c;
        }
        if (best < 0) break;
        n = best;
      }
      return n;
    }
    int best = 0;
    for (int id = 1; id < tree_.size(); ++id) {
      const SearchNode& n = tree_.node(id);
      if (n.pruned || !n.scored) continue;
      const SearchNode& b = tree_.node(best);
      if (best == 0 || n.depth > b.depth ||
          (n.depth == b.depth && Before(id, n.score, best, b.score))) {
        best = id;
      }
    }
    return best;
  }

  const SearchSpec& spec_;
  const Budget& budget_;
  ThoughtSource& source_;
  SearchTree& tree_;
  const SearchObserver& observer_;
  std::optional<StopReason> stop_;
  int answer_ = -1;
};

}  // namespace

absl::StatusOr<SearchResult> RunSearch(const SearchSpec& spec, const Budget& budget,
                                       ThoughtSource& source, SearchTree& tree,
                                       const SearchObserver& observer) {
  ARBOR_RETURN_IF_ERROR(spec.Validate());
  if (budget.max_nodes < 1 || budget.max_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("budget max_nodes ", budget.max_nodes,
                                                   " and max_tokens ", budget.max_tokens,
                                                   " must be positive"));
  }
  if (tree.size() < 1) return absl::InvalidArgumentError("the tree has no root");
  return Searcher(spec, budget, source, tree, observer).Run();
}

}  // namespace arbor::search
