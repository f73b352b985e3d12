// The planner's own metrics besides the per-RPC pair (rpc::RpcMetrics):
//   arbor_planner_running_tasks             gauge    tasks running now
//   arbor_planner_tasks_total{status}       counter  tasks finished, by status
//   arbor_planner_tokens_total{kind}        counter  tokens of finished tasks
//   arbor_planner_task_heals_total          counter  running tasks healed after the mesh lost
//                                                    part of them (Heal)
// Thread-safe (prometheus-cpp families are).
#pragma once

#include "arbor/v1/planner.pb.h"
#include "mesh_thought_source.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace arbor::planner {

class PlannerMetrics {
 public:
  explicit PlannerMetrics(prometheus::Registry& registry);

  void TaskStarted() { running_.Increment(); }
  // Stopped without an outcome (the planner shuts down; the task resumes at its restart).
  void TaskSuspended() { running_.Decrement(); }
  void TaskFinished(v1::TaskStatus status, const SourceCounts& counts);
  void TaskHealed() { heals_.Increment(); }

 private:
  prometheus::Gauge& running_;
  prometheus::Family<prometheus::Counter>& tasks_;
  prometheus::Family<prometheus::Counter>& tokens_;
  prometheus::Counter& heals_;
};

}  // namespace arbor::planner
