#include "arbor/common/thread_pool.h"

namespace arbor {

ThreadPool::ThreadPool(int threads, int max_per_group)
    : max_per_group_(max_per_group > 0 ? max_per_group : std::max(1, threads)) {
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

std::map<std::string, std::deque<std::function<void()>>>::iterator ThreadPool::NextGroup() {
  auto next = queues_.upper_bound(last_group_);  // the group after the last one served
  for (size_t i = 0; i < queues_.size(); ++i, ++next) {
    if (next == queues_.end()) next = queues_.begin();
    auto r = running_.find(next->first);
    if (r == running_.end() || r->second < max_per_group_) return next;
  }
  return queues_.end();
}

void ThreadPool::Work() {
  while (true) {
    std::function<void()> fn;
    std::string group;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](ThreadPool* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) {
            return (p->stopping_ && p->queues_.empty()) || p->NextGroup() != p->queues_.end();
          },
          this));
      auto next = NextGroup();
      if (next == queues_.end()) return;  // stopping and drained
      fn = std::move(next->second.front());
      next->second.pop_front();
      group = last_group_ = next->first;
      ++running_[group];
      if (next->second.empty()) queues_.erase(next);
    }
    fn();
    absl::MutexLock lock(&mu_);
    if (auto r = running_.find(group); --r->second == 0) running_.erase(r);
  }
}

}  // namespace arbor
