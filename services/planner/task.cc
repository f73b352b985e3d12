#include "task.h"

#include <chrono>

namespace arbor::planner {

v1::Task Task::Snapshot() const {
  absl::MutexLock lock(&mu);
  v1::Task t;
  t.set_task_id(id);
  t.set_tenant(tenant);
  t.set_status(status);
  t.set_problem(request.problem());
  for (const auto& n : checkpoint.nodes()) *t.add_nodes() = n.node();
  if (status == v1::TASK_STATUS_SUCCEEDED) *t.mutable_result() = result;
  t.set_error(error);
  return t;
}

bool Task::finished() const {
  absl::MutexLock lock(&mu);
  return final_status.has_value();
}

void Task::Attach(std::shared_ptr<Stream> stream) {
  absl::MutexLock lock(&mu);
  for (const v1::SolveEvent& e : events) stream->Push(e);
  if (final_status) {
    stream->Close(*final_status);
  } else {
    watchers.push_back(std::move(stream));
  }
}

bool Task::Watched() {
  absl::MutexLock lock(&mu);
  std::erase_if(watchers, [](const std::shared_ptr<Stream>& w) { return w->closed(); });
  return !watchers.empty();
}

void Task::Publish(v1::SolveEvent event) {
  absl::MutexLock lock(&mu);
  for (auto& w : watchers) w->Push(event);
  events.push_back(std::move(event));
}

void Task::Close(const absl::Status& st) {
  absl::MutexLock lock(&mu);
  final_status = st;
  finished_at = std::chrono::steady_clock::now().time_since_epoch().count();
  for (auto& w : watchers) w->Close(st);
  watchers.clear();
}

std::string Task::CheckpointBytes() {
  absl::MutexLock lock(&mu);
  checkpoint.set_status(status);
  checkpoint.set_error(error);
  checkpoint.set_lease_holder(lease_holder);
  checkpoint.set_lease_generation(lease_generation);
  return checkpoint.SerializeAsString();
}

}  // namespace arbor::planner
