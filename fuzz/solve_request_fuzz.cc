// The planner's request validation (services/planner/solve_request.h): a SolveRequest from
// untrusted bytes is planned or refused naming the field, and a planned one stays inside every
// range planner.proto states, the budget within the tenant's quota.
#include "fuzz_helpers.h"
#include "solve_request.h"

namespace {

const std::map<std::string, arbor::search::Templates>& Presets() {
  static const auto* presets = new std::map<std::string, arbor::search::Templates>{
      {"game24",
       {.propose = "Input: {problem}\nSteps:\n{state}",
        .value = "Evaluate: {state}\n",
        .answer = "Answer for {problem}: {state}",
        .step_stop = "\n",
        .answer_prefix = "Answer:",
        .value_labels = {{"sure", 20}, {"likely", 1}, {"impossible", 0.001f}}}}};
  return *presets;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  arbor::v1::SolveRequest req;
  if (!req.ParseFromArray(data, static_cast<int>(size))) return 0;
  auto plan = arbor::planner::PlanTask(req, Presets(), {.max_nodes = 200, .max_tokens = 200000});
  arbor::fuzz::CheckRefusal(plan.status());
  if (!plan.ok()) return 0;
  if (plan->budget.max_nodes < 1 || plan->budget.max_nodes > 100000 ||
      plan->budget.max_tokens < 1 || plan->budget.max_tokens > 100000000 || plan->deadline_ms < 0 ||
      plan->deadline_ms > 3600000 || plan->templates.propose.empty()) {
    std::abort();
  }
  const arbor::rpc::TenantQuota quota{.max_nodes = 50, .max_tokens = 5000};
  const absl::Status capped = arbor::planner::ApplyQuota(quota, "t", req.budget(), &*plan);
  arbor::fuzz::CheckRefusal(capped);
  if (capped.ok() && (plan->budget.max_nodes > 50 || plan->budget.max_tokens > 5000)) std::abort();
  return 0;
}
