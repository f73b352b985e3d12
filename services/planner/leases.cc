// PlannerService's fleet side: task leases (task_lease.h), which make any number of planners on
// one state store run each task exactly once and adopt the tasks of one that died; and the tasks
// other planners run, answered from their checkpoints (stored_task.h).
#include <algorithm>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "planner_service.h"
#include "spdlog/spdlog.h"
#include "stored_task.h"
#include "task_checkpoint.h"

namespace arbor::planner {
namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

v1::TaskLease PlannerService::NewLease(int64_t generation, bool cancel) const {
  v1::TaskLease lease;
  lease.set_holder(name_);
  lease.set_incarnation(incarnation_);
  lease.set_generation(generation);
  lease.set_cancel(cancel);
  return lease;
}

bool PlannerService::TakeableAtOnce(const v1::TaskLease& lease) const {
  // Handed back, or this planner's own from before a restart. (One of this very process that it
  // does not hold, a task that ended without deleting it, expires like any other.)
  return lease.released() || (lease.holder() == name_ && lease.incarnation() != incarnation_);
}

bool PlannerService::TakeNewLease(Task& task) {
  const std::string key = LeaseKeyOf(task.key);
  const v1::TaskLease lease = NewLease(1, false);
  task.lease_holder = name_;
  task.lease_generation = 1;
  absl::StatusOr<int64_t> v = state_->CompareAndSet(key, 0, lease.SerializeAsString());
  if (absl::IsAborted(v.status())) {
    // Held already: by another planner (that one runs the task), or left by a task of this id
    // that ended without deleting it (taken over).
    absl::StatusOr<statestore::VersionedValue> stored = state_->Get(key);
    absl::StatusOr<v1::TaskLease> current = stored.ok()
                                                ? ParseLease(key, stored->value)
                                                : absl::StatusOr<v1::TaskLease>(v1::TaskLease());
    if (!stored.ok() || !current.ok() || current->holder() != name_) return false;
    task.lease_generation = current->generation() + 1;
    v1::TaskLease mine = NewLease(task.lease_generation, false);
    v = state_->CompareAndSet(key, stored->version, mine.SerializeAsString());
    if (absl::IsAborted(v.status())) return false;
    absl::MutexLock lock(&leases_mu_);
    held_[key] = {.task = task.weak_from_this(), .version = v.ok() ? *v : 0, .lease = mine};
    return true;
  }
  if (!v.ok()) {
    spdlog::warn("task={} lease not taken yet ({}); the task runs and takes it when it can",
                 task.id, v.status().ToString());
  }
  absl::MutexLock lock(&leases_mu_);
  held_[key] = {.task = task.weak_from_this(), .version = v.ok() ? *v : 0, .lease = lease};
  return true;
}

void PlannerService::Fence(Task& task, const std::string& why) {
  if (task.fenced.exchange(true)) return;
  spdlog::error("task={}: {}: another planner runs it now; this one stops it", task.id, why);
  task.cancel = true;
}

void PlannerService::DropLease(const Task& task, bool delete_key) {
  const std::string key = LeaseKeyOf(task.key);
  {
    absl::MutexLock lock(&leases_mu_);
    auto it = held_.find(key);
    if (it == held_.end() || it->second.task.lock().get() != &task) return;
    held_.erase(it);
  }
  if (delete_key) {
    if (absl::Status st = state_->Delete(key); !st.ok() && !absl::IsNotFound(st)) {
      spdlog::warn("task={} lease not deleted ({}); it expires", task.id, st.ToString());
    }
  }
}

void PlannerService::LeaseLoop() {
  // A quarter lease (at most a second: a handed-back lease is taken within one).
  const auto tick = std::clamp(options_.lease / 4, std::chrono::milliseconds(50),
                               std::chrono::milliseconds(1000));
  while (!stopping_) {
    for (auto until = Clock::now() + tick; Clock::now() < until && !stopping_;) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (stopping_) break;
    if (!ready_) continue;  // the resumer claims what it can first
    RenewLeases();
    AdoptExpired();
    {
      absl::MutexLock lock(&routers_mu_);
      int in_flight = 0;
      for (const Router& r : routers_) in_flight += r.client->in_flight();
      metrics_.ExtendsInFlight(in_flight);
    }
    absl::MutexLock lock(&leases_mu_);
    metrics_.LeasesHeld(held_.size());
  }
}

void PlannerService::RenewLeases() {
  std::vector<std::pair<std::string, Held>> held;
  {
    absl::MutexLock lock(&leases_mu_);
    held.assign(held_.begin(), held_.end());
  }
  for (auto& [key, h] : held) {
    if (stopping_) return;
    std::shared_ptr<Task> task = h.task.lock();
    if (task == nullptr) {  // an adoption that did not start its task
      absl::MutexLock lock(&leases_mu_);
      if (auto it = held_.find(key); it != held_.end() && it->second.task.expired()) {
        held_.erase(it);
      }
      continue;
    }
    absl::StatusOr<int64_t> v = state_->CompareAndSet(key, h.version, h.lease.SerializeAsString());
    if (absl::IsAborted(v.status())) {
      // Changed by someone else: a cancel through another planner (still ours), or taken.
      absl::StatusOr<statestore::VersionedValue> stored = state_->Get(key);
      if (absl::IsNotFound(stored.status())) {
        // Lost by the store (an in-memory one restarted): taken anew. (Had another planner
        // taken the task and ended it meanwhile, the checkpoint's next write is refused.)
        h.version = 0;
        v = state_->CompareAndSet(key, 0, h.lease.SerializeAsString());
        if (v.ok() || !absl::IsAborted(v.status())) {
          absl::MutexLock lock(&leases_mu_);
          if (auto it = held_.find(key); it != held_.end()) it->second.version = v.ok() ? *v : 0;
          continue;
        }
        stored = state_->Get(key);
      }
      if (!stored.ok()) continue;  // next tick
      absl::StatusOr<v1::TaskLease> now = ParseLease(key, stored->value);
      if (now.ok() && now->holder() == name_ && now->incarnation() == incarnation_ &&
          now->generation() == h.lease.generation()) {
        if (now->cancel() && !h.lease.cancel()) {
          spdlog::info("task={} cancelled through another planner", task->id);
          task->cancel = true;
        }
        h.lease = *now;
        v = stored->version;
      } else {
        Fence(*task, absl::StrCat("its lease ", now.ok() ? absl::StrCat("is ", now->holder(), "'s")
                                                         : std::string(now.status().message())));
        absl::MutexLock lock(&leases_mu_);
        held_.erase(key);
        continue;
      }
    }
    if (!v.ok()) continue;  // the store is away: renewed when it is back (else adopted, fenced)
    absl::MutexLock lock(&leases_mu_);
    if (auto it = held_.find(key); it != held_.end() && it->second.version == h.version) {
      it->second.version = *v;
      it->second.lease = h.lease;
    }
  }
}

void PlannerService::AdoptExpired() {
  std::string after;
  std::mt19937_64 shuffle(std::random_device{}());
  for (;;) {
    absl::StatusOr<std::vector<std::string>> keys = state_->ListKeys(kLeaseKeyPrefix, 1000, after);
    if (!keys.ok() || keys->empty()) break;
    after = keys->back();
    // In random order: planners adopting at the same time share a dead one's tasks.
    std::shuffle(keys->begin(), keys->end(), shuffle);
    for (const std::string& key : *keys) {
      if (stopping_) return;
      {
        absl::MutexLock lock(&leases_mu_);
        if (held_.contains(key)) continue;
        if (held_.size() >= static_cast<size_t>(options_.max_tasks)) return;  // full
      }
      absl::StatusOr<statestore::VersionedValue> v = state_->Get(key);
      if (!v.ok()) continue;
      absl::StatusOr<v1::TaskLease> lease = ParseLease(key, v->value);
      if (!lease.ok()) spdlog::warn("{}; taken over once it expires", lease.status().ToString());
      const bool expired = lease_watch_.Expired(key, v->version, Clock::now());
      if (expired || (lease.ok() && TakeableAtOnce(*lease))) {
        Adopt(key, lease.ok() ? *lease : v1::TaskLease(), v->version);
      }
    }
  }
  lease_watch_.Sweep();
}

void PlannerService::Adopt(const std::string& lease_key, const v1::TaskLease& current,
                           int64_t version) {
  const std::string key = TaskKeyOfLease(lease_key);
  if (key.empty()) return;
  const v1::TaskLease mine = NewLease(current.generation() + 1, current.cancel());
  absl::StatusOr<int64_t> lease_version =
      state_->CompareAndSet(lease_key, version, mine.SerializeAsString());
  if (!lease_version.ok()) return;  // someone was quicker (or the store went away)
  {
    absl::MutexLock lock(&leases_mu_);
    held_[lease_key] = {.version = *lease_version, .lease = mine};
  }
  auto forget = [&](bool delete_key) {
    {
      absl::MutexLock lock(&leases_mu_);
      held_.erase(lease_key);
    }
    if (delete_key) state_->Delete(lease_key).IgnoreError();
  };
  // The checkpoint, rewritten under the new generation at once: from now on the previous
  // holder's writes are refused.
  for (int attempt = 0; attempt < 3; ++attempt) {
    absl::StatusOr<statestore::VersionedValue> v = state_->Get(key);
    if (absl::IsNotFound(v.status())) return forget(true);  // its task never got a checkpoint
    if (!v.ok()) return forget(false);                      // taken again once it expires
    absl::StatusOr<v1::TaskCheckpoint> cp = ParseCheckpoint(key, v->value);
    if (!cp.ok()) {
      spdlog::warn("{}; not adopted", cp.status().ToString());
      return forget(true);
    }
    if (cp->status() != v1::TASK_STATUS_RUNNING) {
      // Its planner stored the outcome and died before releasing the KV and the lease.
      HomeOf(key, cp->has_kv_shard() ? cp->kv_shard() : -1)
          .ReleaseOwner(key, mesh::kNoDeadline, cp->request().tenant())
          .IgnoreError();
      return forget(true);
    }
    cp->set_lease_holder(name_);
    cp->set_lease_generation(mine.generation());
    absl::StatusOr<int64_t> written =
        state_->CompareAndSet(key, v->version, cp->SerializeAsString());
    if (absl::IsAborted(written.status())) continue;  // its previous holder wrote meanwhile
    if (!written.ok()) return forget(false);
    spdlog::info("task={} adopted from {} (lease generation {}){}", cp->request().task_id(),
                 current.holder().empty() ? "nobody" : current.holder(), mine.generation(),
                 mine.cancel() ? ", to cancel it" : "");
    if (std::shared_ptr<Task> stale =
            registry_.Find(cp->request().task_id(), cp->request().tenant())) {
      registry_.Remove(stale->tenant, stale->id);  // a stopped run of this planner's
    }
    metrics_.TaskAdopted();
    ResumeOne(key, *cp, *written, mine.generation(), mine.cancel());
    return;
  }
  forget(false);
}

void PlannerService::HandBackLeases() {
  std::vector<std::pair<std::string, Held>> held;
  {
    absl::MutexLock lock(&leases_mu_);
    held.assign(held_.begin(), held_.end());
    held_.clear();
  }
  int handed = 0;
  for (auto& [key, h] : held) {
    v1::TaskLease lease = h.lease;
    lease.set_released(true);
    int64_t version = h.version;
    for (int attempt = 0; attempt < 2; ++attempt) {
      absl::StatusOr<int64_t> v = state_->CompareAndSet(key, version, lease.SerializeAsString());
      if (v.ok()) {
        ++handed;
        break;
      }
      if (!absl::IsAborted(v.status())) break;
      // A renewal or a cancel changed it: hand it back if it is still ours.
      absl::StatusOr<statestore::VersionedValue> stored = state_->Get(key);
      if (!stored.ok()) break;
      absl::StatusOr<v1::TaskLease> now = ParseLease(key, stored->value);
      if (!now.ok() || now->incarnation() != incarnation_) break;
      lease.set_cancel(now->cancel());
      version = stored->version;
    }
  }
  if (!held.empty()) spdlog::info("{} of {} task leases handed back", handed, held.size());
}

// ---- tasks other planners run ----

absl::StatusOr<v1::TaskCheckpoint> PlannerService::StoredTask(const Caller& caller,
                                                              const std::string& id) {
  const std::string key = TaskKey(id, caller.authenticated ? caller.tenant : "");
  absl::StatusOr<statestore::VersionedValue> v = state_->Get(key);
  if (absl::IsNotFound(v.status())) {
    return absl::NotFoundError(absl::StrCat("task \"", id, "\" unknown"));
  }
  if (!v.ok()) return v.status();
  absl::StatusOr<v1::TaskCheckpoint> cp = ParseCheckpoint(key, v->value);
  if (!cp.ok()) {
    // As at load: bytes that are no checkpoint are no task (and stay where they are).
    spdlog::warn("{}; answered as unknown", cp.status().ToString());
    return absl::NotFoundError(absl::StrCat("task \"", id, "\" unknown"));
  }
  return cp;
}

std::shared_ptr<Task> PlannerService::Follow(const std::string& key, const std::string& tenant,
                                             const std::string& id) {
  absl::MutexLock lock(&mirrors_mu_);
  std::shared_ptr<Task>& mirror = mirrors_[key];
  if (mirror != nullptr) return mirror;
  mirror = std::make_shared<Task>();
  mirror->id = id;
  mirror->tenant = tenant;
  mirror->key = key;
  ++live_mirrors_;
  std::thread([this, mirror] {
    FollowLoop(mirror);
    absl::MutexLock lock(&mirrors_mu_);
    if (auto it = mirrors_.find(mirror->key); it != mirrors_.end() && it->second == mirror) {
      mirrors_.erase(it);
    }
    --live_mirrors_;  // the thread's last touch of the service
  }).detach();
  return mirror;
}

void PlannerService::FollowLoop(std::shared_ptr<Task> mirror) {
  CheckpointFollower follower;
  int64_t version = -1;
  auto watched_at = Clock::now();
  while (!stopping_) {
    absl::StatusOr<statestore::VersionedValue> v = state_->Get(mirror->key);
    if (absl::IsNotFound(v.status())) {
      return mirror->Close(absl::NotFoundError(
          absl::StrCat("task \"", mirror->id, "\" unknown (its checkpoint is gone)")));
    }
    if (v.ok() && v->version != version) {
      version = v->version;
      absl::StatusOr<v1::TaskCheckpoint> cp = ParseCheckpoint(mirror->key, v->value);
      if (!cp.ok()) return mirror->Close(cp.status());
      for (v1::SolveEvent& e : follower.Follow(*cp)) mirror->Publish(std::move(e));
      if (std::optional<absl::Status> final_status = FinalStatusOf(*cp)) {
        return mirror->Close(*final_status);
      }
    }
    // Nobody watches (the clients went away): stop following.
    if (mirror->Watched()) {
      watched_at = Clock::now();
    } else if (Clock::now() - watched_at > std::chrono::seconds(5)) {
      return mirror->Close(absl::CancelledError("nobody watches"));
    }
    for (auto until = Clock::now() + std::chrono::milliseconds(200);
         Clock::now() < until && !stopping_;) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  mirror->Close(absl::UnavailableError(
      "the planner is shutting down; the task runs on: reattach through another planner"));
}

absl::Status PlannerService::CancelStored(const std::string& key) {
  const std::string lease_key = LeaseKeyOf(key);
  for (int attempt = 0; attempt < 5; ++attempt) {
    absl::StatusOr<statestore::VersionedValue> v = state_->Get(lease_key);
    int64_t version = 0;
    v1::TaskLease lease;
    if (v.ok()) {
      absl::StatusOr<v1::TaskLease> parsed = ParseLease(lease_key, v->value);
      if (parsed.ok()) lease = *parsed;
      version = v->version;
    } else if (absl::IsNotFound(v.status())) {
      // Running without a lease (its planner died before taking one): whoever adopts it
      // cancels it.
      lease.set_holder("nobody");
      lease.set_released(true);
    } else {
      return v.status();
    }
    if (lease.cancel()) return absl::OkStatus();
    lease.set_cancel(true);
    absl::StatusOr<int64_t> written =
        state_->CompareAndSet(lease_key, version, lease.SerializeAsString());
    if (written.ok()) return absl::OkStatus();
    if (!absl::IsAborted(written.status())) return written.status();
  }
  return absl::AbortedError("the task's lease kept changing; retry the cancel");
}

}  // namespace arbor::planner
