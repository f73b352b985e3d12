// A task as its checkpoint in the state store shows it: how a planner answers for a task that
// another planner of the fleet runs (or ran). GetTask and ListTasks read the checkpoint once;
// WatchTask and a reattaching Solve follow it, turning what each newer checkpoint adds into the
// events the running planner sent (one batch per round, as checkpoints are written per round).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "arbor/v1/planner.pb.h"

namespace arbor::planner {

// GetTask's view of a checkpoint (`with_nodes` false: ListTasks's, without the tree).
v1::Task TaskOfCheckpoint(const v1::TaskCheckpoint& cp, bool with_nodes = true);

// What a finished checkpoint closes its watchers with (OK, or the failure or cancellation it
// records); nullopt while the task runs.
std::optional<absl::Status> FinalStatusOf(const v1::TaskCheckpoint& cp);

// Turns successive checkpoints of one task into events. Not thread-safe.
class CheckpointFollower {
 public:
  // The events that `cp` adds to the checkpoints followed so far: nodes created (again, when a
  // restored task grew a node of the same id anew), scored and pruned, the answer, the counts,
  // and the result once it succeeded.
  std::vector<v1::SolveEvent> Follow(const v1::TaskCheckpoint& cp);

 private:
  struct Seen {
    int parent = -2;
    std::string thought;
    bool scored = false, pruned = false, answer = false;
  };
  std::vector<Seen> nodes_;
  std::string counts_;  // the last counts sent, serialized
  bool result_sent_ = false;
};

}  // namespace arbor::planner
