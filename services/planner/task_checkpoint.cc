#include "task_checkpoint.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace arbor::planner {

std::string TaskKey(const std::string& task_id, const std::string& tenant) {
  return tenant.empty() ? absl::StrCat(kTaskKeyPrefix, task_id)
                        : absl::StrCat(kTaskKeyPrefix, tenant, "/", task_id);
}

std::string TenantOfTaskKey(absl::string_view key) {
  if (!absl::ConsumePrefix(&key, kTaskKeyPrefix)) return "";
  const size_t slash = key.find('/');
  return slash == absl::string_view::npos ? "" : std::string(key.substr(0, slash));
}

v1::Node NodeToProto(const search::SearchNode& n) {
  v1::Node p;
  p.set_id(n.id);
  p.set_parent_id(n.parent);
  p.set_depth(n.depth);
  p.set_thought(n.thought);
  p.set_state(n.state);
  p.set_score(n.score);
  p.set_pruned(n.pruned);
  p.set_logprob(n.logprob);
  return p;
}

void RecordNode(const search::SearchNode& n, const std::vector<int>& own_token_ids,
                v1::TaskCheckpoint* cp) {
  while (cp->nodes_size() <= n.id) cp->add_nodes();
  v1::TaskCheckpoint::CheckpointNode* cn = cp->mutable_nodes(n.id);
  *cn->mutable_node() = NodeToProto(n);
  cn->set_sequence_id(n.pruned ? 0 : n.handle);
  cn->set_scored(n.scored);
  cn->set_answer(n.answer);
  cn->set_answer_text(n.answer_text);
  cn->set_expanded(n.expanded);
  if (cn->token_ids_size() == 0) {
    cn->mutable_token_ids()->Add(own_token_ids.begin(), own_token_ids.end());
  }
}

absl::StatusOr<v1::TaskCheckpoint> ParseCheckpoint(const std::string& key,
                                                   const std::string& bytes) {
  v1::TaskCheckpoint cp;
  if (!cp.ParseFromString(bytes)) {
    return absl::DataLossError(absl::StrCat(key, ": not a task checkpoint"));
  }
  if (cp.request().task_id().empty() ||
      TaskKey(cp.request().task_id(), cp.request().tenant()) != key) {
    return absl::DataLossError(absl::StrCat(key, ": request.task_id \"", cp.request().task_id(),
                                            "\" and request.tenant \"", cp.request().tenant(),
                                            "\" do not match the key"));
  }
  return cp;
}

absl::StatusOr<search::SearchTree> RestoreTree(v1::TaskCheckpoint* cp) {
  const int size = cp->nodes_size();
  if (size == 0) return absl::DataLossError("checkpoint has no root node");
  for (int i = 0; i < size; ++i) {
    const v1::Node& n = cp->nodes(i).node();
    if (n.id() != i) {
      return absl::DataLossError(absl::StrCat("checkpoint nodes[", i, "].node.id is ", n.id()));
    }
    if (i > 0 && (n.parent_id() < 0 || n.parent_id() >= i)) {
      return absl::DataLossError(absl::StrCat("checkpoint nodes[", i, "].node.parent_id ",
                                              n.parent_id(), " is not an earlier node"));
    }
  }
  int keep = size;
  for (int i = 1; i < size; ++i) {
    if (!cp->nodes(i).scored()) {
      keep = i;
      break;
    }
  }
  search::SearchTree tree("");
  for (int i = 0; i < keep; ++i) {
    const v1::TaskCheckpoint::CheckpointNode& cn = cp->nodes(i);
    if (i > 0) {
      tree.AddChild(cn.node().parent_id(), {.thought = cn.node().thought(),
                                            .state = cn.node().state(),
                                            .answer = cn.answer(),
                                            .answer_text = cn.answer_text(),
                                            .handle = cn.sequence_id(),
                                            .logprob = cn.node().logprob()});
    }
    search::SearchNode& n = tree.mutable_node(i);
    if (i == 0) {  // children got these from AddChild
      n.state = cn.node().state();
      n.handle = cn.sequence_id();
    }
    n.score = cn.node().score();
    n.scored = cn.scored();
    n.pruned = cn.node().pruned();
    n.expanded = cn.expanded();
  }
  for (int i = keep; i < size; ++i) {
    const int parent = cp->nodes(i).node().parent_id();
    if (parent < keep) {
      tree.mutable_node(parent).expanded = false;
      cp->mutable_nodes(parent)->set_expanded(false);
    }
  }
  while (cp->nodes_size() > keep) cp->mutable_nodes()->RemoveLast();
  return tree;
}

std::vector<int> PathTokens(const v1::TaskCheckpoint& cp, const search::SearchTree& tree, int id) {
  std::vector<int> tokens;
  for (int on_path : tree.PathTo(id)) {
    const auto& own = cp.nodes(on_path).token_ids();
    tokens.insert(tokens.end(), own.begin(), own.end());
  }
  return tokens;
}

absl::StatusOr<int> RebuildLostSequences(MeshThoughtSource& source, const std::string& owner,
                                         search::SearchTree& tree, v1::TaskCheckpoint* cp) {
  int rebuilt = 0;
  for (int i = 0; i < tree.size(); ++i) {
    const search::SearchNode& n = tree.node(i);
    if (n.pruned || n.answer || n.expanded) continue;  // only these are forked again
    absl::StatusOr<bool> exists = source.Exists(n.handle);
    if (!exists.ok()) return exists.status();
    if (*exists) continue;
    absl::StatusOr<uint64_t> seq = source.Rebuild(PathTokens(*cp, tree, i), owner);
    if (!seq.ok()) return seq.status();
    tree.mutable_node(i).handle = *seq;
    cp->mutable_nodes(i)->set_sequence_id(*seq);
    ++rebuilt;
  }
  return rebuilt;
}

}  // namespace arbor::planner
