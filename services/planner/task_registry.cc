#include "task_registry.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace arbor::planner {

absl::StatusOr<TaskRegistry::Admitted> TaskRegistry::Admit(std::shared_ptr<Task> task) {
  absl::MutexLock lock(&mu_);
  if (auto it = tasks_.find(task->id); it != tasks_.end()) {
    return Admitted{.task = it->second, .is_new = false};
  }
  int running = 0, tenant_running = 0;
  for (const auto& [id, t] : tasks_) {
    if (t->cancel || t->finished()) continue;
    ++running;
    tenant_running += t->tenant == task->tenant;
  }
  if (running >= limits_.max_tasks) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the planner runs ", running, " tasks, its limit (--max_tasks); retry later"));
  }
  if (tenant_running >= limits_.max_tasks_per_tenant) {
    return absl::ResourceExhaustedError(absl::StrCat("tenant \"", task->tenant, "\" runs ",
                                                     tenant_running,
                                                     " tasks, its limit (--max_tasks_per_tenant)"));
  }
  tasks_[task->id] = task;
  EvictFinished();
  return Admitted{.task = std::move(task), .is_new = true};
}

void TaskRegistry::EvictFinished() {
  std::vector<std::shared_ptr<Task>> finished;
  for (const auto& [id, t] : tasks_) {
    if (t->finished()) finished.push_back(t);
  }
  if (static_cast<int>(finished.size()) <= limits_.max_finished_tasks) return;
  std::sort(finished.begin(), finished.end(),
            [](const auto& a, const auto& b) { return a->finished_at < b->finished_at; });
  for (size_t i = 0; i + limits_.max_finished_tasks < finished.size(); ++i) {
    tasks_.erase(finished[i]->id);
  }
}

void TaskRegistry::Restore(std::shared_ptr<Task> task) {
  absl::MutexLock lock(&mu_);
  tasks_[task->id] = std::move(task);
}

std::shared_ptr<Task> TaskRegistry::Find(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  auto it = tasks_.find(id);
  return it == tasks_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<Task>> TaskRegistry::List(const std::string& tenant) const {
  absl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<Task>> out;
  for (const auto& [id, t] : tasks_) {
    if (tenant.empty() || t->tenant == tenant) out.push_back(t);
  }
  return out;
}

}  // namespace arbor::planner
