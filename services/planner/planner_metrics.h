// The planner's own metrics besides the per-RPC pair (rpc::RpcMetrics):
//   arbor_planner_running_tasks             gauge    tasks running now
//   arbor_planner_task_slots                gauge    --max_tasks: a Solve past it is refused
//                                                    (RESOURCE_EXHAUSTED); the planner queues none
//   arbor_planner_extends_in_flight         gauge    Extend calls sent to routers, unanswered
//   arbor_planner_tasks_total{status}       counter  tasks finished, by status
//   arbor_planner_solve_duration_seconds    histogram  a task's run on this planner, start (or
//                                                    adoption) to outcome
//   arbor_planner_nodes_total               counter  thoughts (tree nodes) of finished tasks
//   arbor_planner_tokens_total{kind}        counter  tokens of finished tasks
//   arbor_planner_task_heals_total          counter  running tasks healed after the mesh lost
//                                                    part of them (Heal)
//   arbor_planner_checkpoint_unwritten_total counter checkpoints the state store did not take
//                                                    (unreachable); written again when it is back
//   arbor_planner_tasks_fenced_total        counter  tasks stopped because another writer changed
//                                                    their checkpoint
// Thread-safe (prometheus-cpp families are).
#pragma once

#include "arbor/v1/planner.pb.h"
#include "mesh_thought_source.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace arbor::planner {

class PlannerMetrics {
 public:
  PlannerMetrics(prometheus::Registry& registry, int task_slots);

  void TaskStarted() { running_.Increment(); }
  // Stopped without an outcome (the planner shuts down; the task resumes at its restart).
  void TaskSuspended() { running_.Decrement(); }
  void TaskFinished(v1::TaskStatus status, const SourceCounts& counts, int nodes, double seconds);
  void TaskHealed() { heals_.Increment(); }
  void CheckpointUnwritten() { unwritten_.Increment(); }
  // Stopped because another writer owns the task now (not finished here).
  // `running`: it had not ended here (an ended one's outcome was refused).
  void TaskFenced(bool running) {
    if (running) running_.Decrement();
    fenced_.Increment();
  }
  // Taken over from another planner whose lease expired or was handed back.
  void TaskAdopted() { adopted_.Increment(); }
  // A round sent to another router than its task's own, which ran too many Extends.
  void RoundMovedForLoad() { moved_for_load_.Increment(); }
  // Leases this planner holds now.
  void LeasesHeld(size_t n) { leases_.Set(static_cast<double>(n)); }
  void ExtendsInFlight(int n) { extends_in_flight_.Set(static_cast<double>(n)); }

 private:
  prometheus::Gauge& running_;
  prometheus::Gauge& extends_in_flight_;
  prometheus::Family<prometheus::Counter>& tasks_;
  prometheus::Histogram& solve_seconds_;
  prometheus::Counter& nodes_;
  prometheus::Family<prometheus::Counter>& tokens_;
  prometheus::Counter& heals_;
  prometheus::Counter& unwritten_;
  prometheus::Counter& fenced_;
  prometheus::Counter& adopted_;
  prometheus::Gauge& leases_;
  prometheus::Counter& moved_for_load_;
};

}  // namespace arbor::planner
