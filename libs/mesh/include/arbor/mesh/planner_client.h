// The planner's typed client: Solve and WatchTask streamed to a callback; GetTask, CancelTask and
// ListTasks (retried while the planner is UNAVAILABLE: each is safe to repeat). Errors name the
// call and the task. Thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "arbor/mesh/call.h"
#include "arbor/v1/planner.grpc.pb.h"

namespace arbor::mesh {

class PlannerClient {
 public:
  explicit PlannerClient(std::shared_ptr<grpc::Channel> channel, ClientOptions options = {});

  // The task's events to their end; `on_event` returning false stops watching (CANCELLED; the
  // task goes on, as it does when any watcher leaves).
  absl::Status Solve(const v1::SolveRequest& req, Deadline deadline,
                     const std::function<bool(const v1::SolveEvent&)>& on_event);
  absl::Status WatchTask(const std::string& task_id, Deadline deadline,
                         const std::function<bool(const v1::SolveEvent&)>& on_event);
  absl::StatusOr<v1::Task> GetTask(const std::string& task_id, Deadline deadline);
  absl::StatusOr<v1::Task> CancelTask(const std::string& task_id, Deadline deadline);
  absl::StatusOr<v1::ListTasksResponse> ListTasks(const v1::ListTasksRequest& req,
                                                  Deadline deadline);

 private:
  std::unique_ptr<v1::Planner::Stub> stub_;
  CallPolicy policy_;
};

}  // namespace arbor::mesh
