// Solve requests, checked and translated once: the range of every client-set field (planner.proto
// states them) and the request's search spec, budget, source options and templates as the
// search library and the thought source take them. Pure functions; thread-safe.
#pragma once

#include <chrono>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "arbor/rpc/tokens.h"
#include "arbor/search/search.h"
#include "arbor/search/task_language.h"
#include "arbor/v1/planner.pb.h"
#include "mesh_thought_source.h"

namespace arbor::planner {

// What a request leaves 0 and the planner fills in.
struct PlanDefaults {
  int max_nodes = 200;
  int64_t max_tokens = 200000;
};

// One task's plan: everything Run needs from the request, in the libraries' types.
struct TaskPlan {
  search::SearchSpec spec;
  search::Budget budget;  // without a deadline: Start sets it
  SourceOptions source;   // without a deadline: Start sets it
  search::Templates templates;
  int deadline_ms = 0;  // Budget.deadline_ms; 0 = none

  // Sets the budget's and the source's deadline `deadline_ms` from now.
  void Start();
};

// Whether `id` is 1..128 characters of [A-Za-z0-9_-].
bool ValidTaskId(const std::string& id);

// The request checked against planner.proto's ranges and translated. INVALID_ARGUMENT naming
// the field (e.g. "search.bfs.breadth 0 out of range [1, 64]") or the unknown preset.
absl::StatusOr<TaskPlan> PlanTask(const v1::SolveRequest& req,
                                  const std::map<std::string, search::Templates>& presets,
                                  const PlanDefaults& defaults);

// Caps `plan`'s budget by the quotas of `tenant` (from its token): a budget the request left 0
// takes the smaller of the default and the quota; one asked above the quota is
// RESOURCE_EXHAUSTED naming the field and the quota.
absl::Status ApplyQuota(const rpc::TenantQuota& quota, const std::string& tenant,
                        const v1::Budget& asked, TaskPlan* plan);

}  // namespace arbor::planner
