#include "planner_metrics.h"

#include <algorithm>

#include "arbor/rpc/metric_families.h"

namespace arbor::planner {

PlannerMetrics::PlannerMetrics(prometheus::Registry& registry, int task_slots)
    : running_(rpc::Gauge(registry, "arbor_planner_running_tasks", "tasks running now")),
      extends_in_flight_(rpc::Gauge(registry, "arbor_planner_extends_in_flight",
                                    "Extend calls this planner sent to routers and awaits")),
      tasks_(
          rpc::CounterFamily(registry, "arbor_planner_tasks_total", "tasks finished, by status")),
      solve_seconds_(rpc::Histogram(registry, "arbor_planner_solve_duration_seconds",
                                    "a task's run on this planner, from its start (or adoption) "
                                    "to its outcome",
                                    {0.1, 0.3, 1, 3, 10, 30, 60, 120, 300, 600, 1800, 3600})),
      nodes_(rpc::Counter(registry, "arbor_planner_nodes_total",
                          "thoughts (search tree nodes) of finished tasks")),
      tokens_(rpc::CounterFamily(registry, "arbor_planner_tokens_total",
                                 "tokens of finished tasks: generated, prefilled, reused")),
      heals_(rpc::Counter(registry, "arbor_planner_task_heals_total",
                          "running tasks that went on after the kv-store or router lost part of "
                          "them")),
      unwritten_(rpc::Counter(registry, "arbor_planner_checkpoint_unwritten_total",
                              "task checkpoints the state store did not take (unreachable); each "
                              "is written again when it is back")),
      fenced_(rpc::Counter(registry, "arbor_planner_tasks_fenced_total",
                           "running tasks stopped because another writer changed their "
                           "checkpoint or lease")),
      adopted_(rpc::Counter(registry, "arbor_planner_tasks_adopted_total",
                            "running tasks taken over from another planner (its lease expired "
                            "or was handed back) or from this planner's previous process")),
      leases_(rpc::Gauge(registry, "arbor_planner_leases", "task leases this planner holds")),
      moved_for_load_(rpc::Counter(registry, "arbor_planner_rounds_moved_for_load_total",
                                   "rounds sent to another router than their task's own, which "
                                   "ran more than --router_load_factor times the mean load")) {
  rpc::Gauge(registry, "arbor_planner_task_slots",
             "tasks this planner runs at once (--max_tasks); a Solve past it is refused")
      .Set(task_slots);
  for (v1::TaskStatus s :
       {v1::TASK_STATUS_SUCCEEDED, v1::TASK_STATUS_FAILED, v1::TASK_STATUS_CANCELLED}) {
    tasks_.Add({{"status", v1::TaskStatus_Name(s)}});
  }
  for (const char* kind : {"generated", "prefilled", "reused"}) tokens_.Add({{"kind", kind}});
}

void PlannerMetrics::TaskFinished(v1::TaskStatus status, const SourceCounts& counts, int nodes,
                                  double seconds) {
  solve_seconds_.Observe(seconds);
  nodes_.Increment(static_cast<double>(std::max(0, nodes)));
  tasks_.Add({{"status", v1::TaskStatus_Name(status)}}).Increment();
  tokens_.Add({{"kind", "generated"}}).Increment(static_cast<double>(counts.generated));
  tokens_.Add({{"kind", "prefilled"}}).Increment(static_cast<double>(counts.prefilled));
  tokens_.Add({{"kind", "reused"}}).Increment(static_cast<double>(counts.reused));
  running_.Decrement();
}

}  // namespace arbor::planner
