// The planner's tasks by tenant and id: admission against the running-task limits (all tenants, and
// per tenant), lookup, listing, and the eviction of the oldest finished tasks beyond a cap. Holds
// no threads and never blocks on one: a task's thread is the service's business. Thread-safe.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "task.h"

namespace arbor::planner {

struct RegistryLimits {
  int max_tasks = 64;             // running tasks, over all tenants
  int max_tasks_per_tenant = 4;   // running tasks of one tenant
  int max_finished_tasks = 1000;  // finished tasks kept (the oldest dropped first)
};

class TaskRegistry {
 public:
  explicit TaskRegistry(const RegistryLimits& limits) : limits_(limits) {}

  struct Admitted {
    std::shared_ptr<Task> task;  // `task` itself, or the task already holding its id
    bool is_new = false;         // false: attach to `task` instead of starting it
  };
  // Adds `task` unless its tenant has a task of its id (returned instead, is_new false). A
  // cancelled or finished task does not count as running. `tenant_limit` is the running tasks
  // the tenant may have when its token sets one (0: --max_tasks_per_tenant). RESOURCE_EXHAUSTED
  // naming the limit (--max_tasks, --max_tasks_per_tenant, the tokens file's max_tasks) when
  // one is reached. Evicts the oldest finished tasks beyond the cap.
  absl::StatusOr<Admitted> Admit(std::shared_ptr<Task> task, int tenant_limit = 0);
  // Adds a task restored from its checkpoint, whatever the limits (it ran before).
  void Restore(std::shared_ptr<Task> task);
  // `tenant`'s task of `id`, or null; with no tenant (an --insecure planner), any tenant's.
  std::shared_ptr<Task> Find(const std::string& id,
                             const std::optional<std::string>& tenant = std::nullopt) const;
  // Forgets `tenant`'s task `id` (its checkpoint's retention has passed).
  void Remove(const std::string& tenant, const std::string& id);
  // Every task (of `tenant`, when not empty), in id order.
  std::vector<std::shared_ptr<Task>> List(const std::string& tenant = "") const;

 private:
  void EvictFinished() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const RegistryLimits limits_;
  mutable absl::Mutex mu_;
  using Key = std::pair<std::string, std::string>;  // tenant, id
  std::map<Key, std::shared_ptr<Task>> tasks_ ABSL_GUARDED_BY(mu_);
};

}  // namespace arbor::planner
