#include "stored_task.h"

#include "absl/strings/str_cat.h"

namespace arbor::planner {

v1::Task TaskOfCheckpoint(const v1::TaskCheckpoint& cp, bool with_nodes) {
  v1::Task t;
  t.set_task_id(cp.request().task_id());
  t.set_tenant(cp.request().tenant());
  t.set_status(cp.status());
  t.set_problem(cp.request().problem());
  if (with_nodes) {
    for (const auto& n : cp.nodes()) *t.add_nodes() = n.node();
  }
  if (cp.status() == v1::TASK_STATUS_SUCCEEDED) *t.mutable_result() = cp.result();
  t.set_error(cp.error());
  return t;
}

std::optional<absl::Status> FinalStatusOf(const v1::TaskCheckpoint& cp) {
  switch (cp.status()) {
    case v1::TASK_STATUS_RUNNING:
      return std::nullopt;
    case v1::TASK_STATUS_SUCCEEDED:
      return absl::OkStatus();
    case v1::TASK_STATUS_CANCELLED:
      return absl::CancelledError(absl::StrCat("task ", cp.request().task_id(), " was cancelled"));
    default:
      return absl::AbortedError(cp.error().empty()
                                    ? absl::StrCat("task ", cp.request().task_id(), " failed")
                                    : cp.error());
  }
}

std::vector<v1::SolveEvent> CheckpointFollower::Follow(const v1::TaskCheckpoint& cp) {
  std::vector<v1::SolveEvent> events;
  if (static_cast<size_t>(cp.nodes_size()) > nodes_.size()) nodes_.resize(cp.nodes_size());
  for (int i = 0; i < cp.nodes_size(); ++i) {
    const auto& cn = cp.nodes(i);
    const v1::Node& node = cn.node();
    Seen& seen = nodes_[i];
    if (seen.parent != node.parent_id() || seen.thought != node.thought()) {
      seen = {.parent = node.parent_id(), .thought = node.thought()};
      v1::SolveEvent e;
      *e.mutable_node_created() = node;
      events.push_back(std::move(e));
    }
    if (cn.scored() && !seen.scored) {
      seen.scored = true;
      v1::SolveEvent e;
      *e.mutable_node_scored() = node;
      events.push_back(std::move(e));
    }
    if (node.pruned() && !seen.pruned) {
      seen.pruned = true;
      v1::SolveEvent e;
      *e.mutable_node_pruned() = node;
      events.push_back(std::move(e));
    }
    if (cn.answer() && !seen.answer) {
      seen.answer = true;
      v1::SolveEvent e;
      e.set_answer_found(cn.answer_text());
      events.push_back(std::move(e));
    }
  }
  if (std::string counts = cp.counts().SerializeAsString(); cp.has_counts() && counts != counts_) {
    counts_ = std::move(counts);
    v1::SolveEvent e;
    *e.mutable_progress() = cp.counts();
    events.push_back(std::move(e));
  }
  if (cp.status() == v1::TASK_STATUS_SUCCEEDED && !result_sent_) {
    result_sent_ = true;
    v1::SolveEvent e;
    *e.mutable_result() = cp.result();
    events.push_back(std::move(e));
  }
  return events;
}

}  // namespace arbor::planner
