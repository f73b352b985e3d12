#include "arbor/common/thread_pool.h"

namespace arbor {

ThreadPool::ThreadPool(int threads) {
  for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { Work(); });
}

ThreadPool::~ThreadPool() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : threads_) t.join();
}

void ThreadPool::Schedule(std::function<void()> fn, const std::string& group) {
  absl::MutexLock lock(&mu_);
  queues_[group].push_back(std::move(fn));
}

void ThreadPool::Work() {
  while (true) {
    std::function<void()> fn;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](ThreadPool* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) {
            return p->stopping_ || !p->queues_.empty();
          },
          this));
      if (queues_.empty()) return;  // stopping and drained
      auto next = queues_.upper_bound(last_group_);
      if (next == queues_.end()) next = queues_.begin();
      fn = std::move(next->second.front());
      next->second.pop_front();
      last_group_ = next->first;
      if (next->second.empty()) queues_.erase(next);
    }
    fn();
  }
}

}  // namespace arbor
