// A task checkpoint read back from the state store (services/planner/task_checkpoint.h): bytes
// that are a checkpoint of the key's task restore into a tree whose every node's parent comes
// before it, or are refused naming the key and the field; the request inside is planned as a new
// one would be. Nothing here may crash the planner at start.
#include "fuzz_helpers.h"
#include "solve_request.h"
#include "task_checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(arbor::fuzz::Text(data, size));
  arbor::v1::TaskCheckpoint peek;
  const std::string key =
      peek.ParseFromString(bytes)
          ? arbor::planner::TaskKey(peek.request().task_id(), peek.request().tenant())
          : "planner/task/x";
  absl::StatusOr<arbor::v1::TaskCheckpoint> cp = arbor::planner::ParseCheckpoint(key, bytes);
  arbor::fuzz::CheckRefusal(cp.status());
  if (!cp.ok()) return 0;
  absl::StatusOr<arbor::search::SearchTree> tree = arbor::planner::RestoreTree(&*cp);
  arbor::fuzz::CheckRefusal(tree.status());
  if (tree.ok()) {
    if (tree->size() != cp->nodes_size()) std::abort();
    for (int i = 1; i < tree->size(); ++i) {
      const int parent = tree->node(i).parent;
      if (parent < 0 || parent >= i) std::abort();
      arbor::planner::PathTokens(*cp, *tree, i);
    }
  }
  auto plan = arbor::planner::PlanTask(cp->request(), {}, {});
  arbor::fuzz::CheckRefusal(plan.status());
  return 0;
}
