// PlannerService's start: every task checkpoint in the state store becomes a task again; the
// running ones go on from their restored trees (PlannerService::Restore), the finished ones
// answer GetTask and WatchTask.
#include "absl/strings/str_cat.h"
#include "arbor/common/clock.h"
#include "arbor/common/status_macros.h"
#include "planner_service.h"
#include "spdlog/spdlog.h"
#include "task_checkpoint.h"
#include "task_lease.h"

namespace arbor::planner {

absl::Status PlannerService::Resume() {
  const int64_t now = UnixMillis();
  const int64_t retention_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(options_.finished_retention).count();
  int resumed = 0, expired = 0;
  std::string after;
  for (;;) {  // page by page: every checkpoint, however many keys there are
    ARBOR_ASSIGN_OR_RETURN(std::vector<std::string> keys,
                           state_->ListKeys(kTaskKeyPrefix, 1000, after));
    if (keys.empty()) break;
    after = keys.back();
    for (const std::string& key : keys) {
      absl::StatusOr<statestore::VersionedValue> v = state_->Get(key);
      if (absl::IsNotFound(v.status())) continue;  // deleted since it was listed
      if (!v.ok()) return v.status();              // the store went away: tried again later
      absl::StatusOr<v1::TaskCheckpoint> cp = ParseCheckpoint(key, v->value);
      if (!cp.ok()) {
        spdlog::warn("{}; skipped", cp.status().ToString());
        continue;
      }
      if (cp->status() != v1::TASK_STATUS_RUNNING) {
        // Finished: kept until its retention passes (one from before finished_unix_ms existed
        // counts from now).
        const int64_t finished = cp->finished_unix_ms() > 0 ? cp->finished_unix_ms() : now;
        if (finished + retention_ms <= now) {
          state_->Delete(key).IgnoreError();
          ++expired;
          continue;
        }
        cp->set_finished_unix_ms(finished);
      }
      if (registry_.Find(cp->request().task_id(), cp->request().tenant()) != nullptr) {
        continue;  // loaded by an earlier try
      }
      if (cp->status() == v1::TASK_STATUS_RUNNING) {
        // Whoever holds its lease runs it: taken here when nobody does, when it was handed back
        // or held by this planner's previous process; the leaser adopts it if it expires.
        const std::string lease_key = LeaseKeyOf(key);
        absl::StatusOr<statestore::VersionedValue> lease = state_->Get(lease_key);
        if (absl::IsNotFound(lease.status())) {
          v1::TaskLease none;
          none.set_generation(cp->lease_generation());
          Adopt(lease_key, none, 0);
        } else if (!lease.ok()) {
          return lease.status();
        } else if (absl::StatusOr<v1::TaskLease> l = ParseLease(lease_key, lease->value);
                   l.ok() && TakeableAtOnce(*l)) {
          Adopt(lease_key, *l, lease->version);
        }
        ++resumed;
        continue;
      }
      ResumeOne(key, *cp, v->version);
      ++resumed;
    }
  }
  if (resumed + expired > 0) {
    spdlog::info("{} task checkpoints loaded, {} past their retention deleted", resumed, expired);
  }
  return absl::OkStatus();
}

void PlannerService::ResumeOne(const std::string& key, const v1::TaskCheckpoint& cp,
                               int64_t version, int64_t generation, bool cancel) {
  auto task = std::make_shared<Task>();
  task->id = cp.request().task_id();
  task->tenant = cp.request().tenant();
  task->key = key;  // ParseCheckpoint checked it is the task's
  task->lease_holder = name_;
  task->lease_generation = generation;
  task->cancel = cancel;
  task->request = cp.request();
  // The stored request is checked as a new one is: a checkpoint is untrusted bytes.
  absl::StatusOr<TaskPlan> plan = PlanTask(cp.request(), presets_, defaults());
  if (plan.ok() && options_.auth != nullptr) {
    // The tenant's quotas as the tokens file says now: they cap the budget (which the stored
    // request carries) and pace the tokens, as for a new task.
    if (std::optional<rpc::TenantQuota> quota = options_.auth->QuotaOf(task->tenant)) {
      ApplyQuota(*quota, task->tenant, v1::Budget(), &*plan).IgnoreError();  // nothing asked: caps
      task->tokens_per_minute = quota->tokens_per_minute;
    }
  }
  if (plan.ok()) {
    task->plan = *std::move(plan);
    task->plan.source.tenant = task->tenant;
  }
  bool run = cp.status() == v1::TASK_STATUS_RUNNING;
  const bool refused = run && !plan.ok();
  {
    absl::MutexLock lock(&task->write_mu);
    task->stored_version = version;
  }
  {
    absl::MutexLock lock(&task->mu);
    task->status = cp.status();
    task->error = cp.error();
    task->result = cp.result();
    task->checkpoint = cp;
    // What a watcher of the resumed task sees first: the tree as restored.
    for (const auto& cn : cp.nodes()) {
      v1::SolveEvent e;
      *e.mutable_node_created() = cn.node();
      task->events.push_back(e);
    }
    if (cp.status() == v1::TASK_STATUS_SUCCEEDED) {
      v1::SolveEvent e;
      *e.mutable_result() = cp.result();
      task->events.push_back(e);
    }
    if (refused) {
      task->status = v1::TASK_STATUS_FAILED;
      task->error =
          absl::StrCat(key, ": the checkpointed request is invalid: ", plan.status().message());
      spdlog::warn("{}", task->error);
      run = false;
    }
    if (!run) {
      task->final_status = task->status == v1::TASK_STATUS_SUCCEEDED
                               ? absl::OkStatus()
                               : absl::Status(absl::StatusCode::kAborted, task->error);
    }
  }
  registry_.Restore(task);
  if (!run) {
    const int64_t finished = cp.finished_unix_ms() > 0 ? cp.finished_unix_ms() : UnixMillis();
    if (refused) {
      absl::MutexLock lock(&task->mu);
      task->checkpoint.set_finished_unix_ms(finished);
    }
    ExpireLater(*task, finished);
  }
  if (run || refused) {
    // The lease Adopt took is the task's now (renewed while it runs; dropped when it ends).
    absl::MutexLock lock(&leases_mu_);
    if (auto it = held_.find(LeaseKeyOf(key)); it != held_.end()) it->second.task = task;
  }
  if (run) {
    spdlog::info("task={} resumes", task->id);
    Start(std::move(task), cp);
  } else if (refused) {
    const bool stored = WriteCheckpoint(*task) == Written::kStored;
    // Whatever KV it held goes, as with any task that fails.
    HomeOf(task->key, cp.has_kv_shard() ? cp.kv_shard() : -1)
        .ReleaseOwner(task->key, mesh::kNoDeadline, task->tenant)
        .IgnoreError();
    if (stored) DropLease(*task, /*delete_key=*/true);
  }
}

}  // namespace arbor::planner
