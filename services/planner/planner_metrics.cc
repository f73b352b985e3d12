#include "planner_metrics.h"

namespace arbor::planner {

PlannerMetrics::PlannerMetrics(prometheus::Registry& registry)
    : running_(prometheus::BuildGauge()
                   .Name("arbor_planner_running_tasks")
                   .Help("tasks running now")
                   .Register(registry)
                   .Add({})),
      tasks_(prometheus::BuildCounter()
                 .Name("arbor_planner_tasks_total")
                 .Help("tasks finished, by status")
                 .Register(registry)),
      tokens_(prometheus::BuildCounter()
                  .Name("arbor_planner_tokens_total")
                  .Help("tokens of finished tasks: generated, prefilled, reused")
                  .Register(registry)) {}

void PlannerMetrics::TaskFinished(v1::TaskStatus status, const SourceCounts& counts) {
  tasks_.Add({{"status", v1::TaskStatus_Name(status)}}).Increment();
  tokens_.Add({{"kind", "generated"}}).Increment(static_cast<double>(counts.generated));
  tokens_.Add({{"kind", "prefilled"}}).Increment(static_cast<double>(counts.prefilled));
  tokens_.Add({{"kind", "reused"}}).Increment(static_cast<double>(counts.reused));
  running_.Decrement();
}

}  // namespace arbor::planner
