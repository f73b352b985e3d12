// One planner task as the service keeps it: the request and its plan, the events so far and the
// streams watching them, the outcome, and the checkpoint kept in step with the tree. Shared by
// the task's thread, the registry and every RPC that reads it; the mutable parts are guarded by
// `mu`, so every method is thread-safe.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "arbor/rpc/event_stream.h"
#include "arbor/v1/planner.pb.h"
#include "solve_request.h"

namespace arbor::planner {

struct Task : std::enable_shared_from_this<Task> {
  using Stream = rpc::EventStream<v1::SolveEvent>;

  // Set before the task is shared, then read-only.
  std::string id, tenant;
  std::string key;  // TaskKey(id, tenant): its checkpoint's key and its sequences' owner
  int64_t tokens_per_minute = 0;  // its tenant's quota when it started (0: none)
  int64_t tokens_counted = 0;     // of its tokens, those counted for the quota (its thread's)
  v1::SolveRequest request;       // with task_id set
  TaskPlan plan;                  // checked and translated once, at Solve or resume

  // The task's lease (task_lease.h): its holder (this planner's name) and generation, stamped on
  // every checkpoint it writes.
  std::string lease_holder;
  std::atomic<int64_t> lease_generation{0};

  // The kv-store shard its sequences are created on (-1: its key's first choice).
  std::atomic<int> kv_shard{-1};

  std::atomic<bool> cancel{false};
  std::atomic<int64_t> finished_at{0};  // steady clock ticks when it finished (for eviction)

  mutable absl::Mutex mu;
  v1::TaskStatus status ABSL_GUARDED_BY(mu) = v1::TASK_STATUS_RUNNING;
  std::string error ABSL_GUARDED_BY(mu);
  std::vector<v1::SolveEvent> events ABSL_GUARDED_BY(mu);
  std::vector<std::shared_ptr<Stream>> watchers ABSL_GUARDED_BY(mu);
  // Set once the task has ended (or, shutting down, stopped): what watchers are closed with.
  std::optional<absl::Status> final_status ABSL_GUARDED_BY(mu);
  v1::SolveResult result ABSL_GUARDED_BY(mu);
  // The outcome of a task that ended, until its checkpoint is stored: only then is it told to
  // the watchers (a planner that cannot store it may have lost the task to another, whose
  // outcome is the one that counts).
  std::optional<absl::Status> untold ABSL_GUARDED_BY(mu);
  // The tree as of the last round, and the sequences the task holds.
  v1::TaskCheckpoint checkpoint ABSL_GUARDED_BY(mu);

  // The stored checkpoint (PlannerService::WriteCheckpoint), one write at a time: every write is
  // a compare-and-set on the version this task last wrote or read, so a checkpoint someone else
  // wrote is never overwritten.
  absl::Mutex write_mu ABSL_ACQUIRED_AFTER(mu);
  int64_t stored_version ABSL_GUARDED_BY(write_mu) = 0;  // 0: none stored yet
  // Fingerprints of writes since stored_version whose outcome is unknown (the store was
  // unreachable or slow): one of them may have landed as stored_version + 1.
  std::vector<uint64_t> unsure_writes ABSL_GUARDED_BY(write_mu);
  bool unwritten ABSL_GUARDED_BY(write_mu) = false;  // the latest checkpoint is not stored yet
  // Another writer changed the checkpoint: the task is no longer this planner's to run.
  std::atomic<bool> fenced{false};

  // GetTask's view (nodes included).
  v1::Task Snapshot() const;
  bool finished() const;
  // Replays the events so far into `stream`, then keeps it watching (or closes it when the task
  // has ended).
  void Attach(std::shared_ptr<Stream> stream);
  // Whether a watcher is still attached (those whose clients went away are dropped).
  bool Watched();
  // Sends `event` to every watcher and keeps it for later ones.
  void Publish(v1::SolveEvent event);
  // Ends the task for its watchers: `status` closes them now and any that attach later.
  void Close(const absl::Status& status);
  // The checkpoint with the task's status and error, serialized.
  std::string CheckpointBytes();
};

}  // namespace arbor::planner
