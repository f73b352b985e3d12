#include "task_registry.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace arbor::planner {

absl::StatusOr<TaskRegistry::Admitted> TaskRegistry::Admit(std::shared_ptr<Task> task,
                                                           int tenant_limit) {
  absl::MutexLock lock(&mu_);
  if (auto it = tasks_.find({task->tenant, task->id}); it != tasks_.end()) {
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
  const int limit = tenant_limit > 0 ? tenant_limit : limits_.max_tasks_per_tenant;
  if (tenant_running >= limit) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "tenant \"", task->tenant, "\" runs ", tenant_running, " tasks, its limit (",
        tenant_limit > 0 ? "max_tasks in the tokens file" : "--max_tasks_per_tenant", ")"));
  }
  tasks_[{task->tenant, task->id}] = task;
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
    tasks_.erase({finished[i]->tenant, finished[i]->id});
  }
}

void TaskRegistry::Restore(std::shared_ptr<Task> task) {
  absl::MutexLock lock(&mu_);
  Key key{task->tenant, task->id};
  tasks_[std::move(key)] = std::move(task);
}

void TaskRegistry::Remove(const std::string& tenant, const std::string& id) {
  absl::MutexLock lock(&mu_);
  tasks_.erase({tenant, id});
}

std::shared_ptr<Task> TaskRegistry::Find(const std::string& id,
                                         const std::optional<std::string>& tenant) const {
  absl::MutexLock lock(&mu_);
  if (tenant.has_value()) {
    auto it = tasks_.find({*tenant, id});
    return it == tasks_.end() ? nullptr : it->second;
  }
  for (const auto& [key, t] : tasks_) {
    if (key.second == id) return t;
  }
  return nullptr;
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
