#include "arbor/mesh/planner_client.h"

#include "absl/strings/str_cat.h"

namespace arbor::mesh {

PlannerClient::PlannerClient(std::shared_ptr<grpc::Channel> channel, ClientOptions options)
    : stub_(v1::Planner::NewStub(std::move(channel))), policy_(options) {}

absl::Status PlannerClient::Solve(const v1::SolveRequest& req, Deadline deadline,
                                  const std::function<bool(const v1::SolveEvent&)>& on_event) {
  return policy_.Stream<v1::SolveEvent>(
      deadline,
      req.task_id().empty() ? "planner Solve" : absl::StrCat("planner Solve of ", req.task_id()),
      [&](grpc::ClientContext& ctx) { return stub_->Solve(&ctx, req); }, on_event);
}

absl::Status PlannerClient::WatchTask(const std::string& task_id, Deadline deadline,
                                      const std::function<bool(const v1::SolveEvent&)>& on_event) {
  v1::WatchTaskRequest req;
  req.set_task_id(task_id);
  return policy_.Stream<v1::SolveEvent>(
      deadline, absl::StrCat("planner WatchTask of ", task_id),
      [&](grpc::ClientContext& ctx) { return stub_->WatchTask(&ctx, req); }, on_event);
}

absl::StatusOr<v1::Task> PlannerClient::GetTask(const std::string& task_id, Deadline deadline) {
  v1::GetTaskRequest req;
  req.set_task_id(task_id);
  return policy_.Call<v1::Task>(
      Repeat::kIdempotent, deadline, absl::StrCat("planner GetTask of ", task_id),
      [&](grpc::ClientContext& ctx, auto* resp) { return stub_->GetTask(&ctx, req, resp); });
}

absl::StatusOr<v1::Task> PlannerClient::CancelTask(const std::string& task_id, Deadline deadline) {
  v1::CancelTaskRequest req;
  req.set_task_id(task_id);
  return policy_.Call<v1::Task>(
      Repeat::kIdempotent, deadline, absl::StrCat("planner CancelTask of ", task_id),
      [&](grpc::ClientContext& ctx, auto* resp) { return stub_->CancelTask(&ctx, req, resp); });
}

absl::StatusOr<v1::ListTasksResponse> PlannerClient::ListTasks(const v1::ListTasksRequest& req,
                                                               Deadline deadline) {
  return policy_.Call<v1::ListTasksResponse>(
      Repeat::kIdempotent, deadline, "planner ListTasks",
      [&](grpc::ClientContext& ctx, auto* resp) { return stub_->ListTasks(&ctx, req, resp); });
}

}  // namespace arbor::mesh
