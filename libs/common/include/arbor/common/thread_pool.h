// A fixed set of worker threads running scheduled closures: where services move blocking or
// heavy work so that gRPC callbacks never block. Closures run in FIFO order within a group, and
// groups (e.g. tenants) take turns, so one group's thousand closures do not hold another's one
// behind them; a group may also be kept to fewer threads than the pool has, so that threads stay
// free for the others' next closures even while one group's closures block. Thread-safe. The
// destructor runs everything already scheduled, then joins.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace arbor {

class ThreadPool {
 public:
  // `max_per_group`: the most closures of one group running at once (0 = every thread).
  explicit ThreadPool(int threads, int max_per_group = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void Schedule(std::function<void()> fn) { Schedule(std::move(fn), std::string()); }
  void Schedule(std::function<void()> fn, const std::string& group);

 private:
  void Work();
  // The next group in turn with a closure to run and a thread to spare, or queues_.end().
  std::map<std::string, std::deque<std::function<void()>>>::iterator NextGroup()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int max_per_group_;
  absl::Mutex mu_;
  // Non-empty queues by group; the turn passes to the group after `last_group_`.
  std::map<std::string, std::deque<std::function<void()>>> queues_ ABSL_GUARDED_BY(mu_);
  std::string last_group_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> running_ ABSL_GUARDED_BY(mu_);  // closures running, by group (> 0)
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace arbor
