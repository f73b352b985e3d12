// Admission by KV for the router's step loop: every admitted Extend holds an upper bound of the
// cache blocks it can ever use, so a step never runs out of KV under load; jobs that do not fit
// yet wait in arrival order (no overtaking, so a large job is not starved by small ones), and a
// job larger than the whole cache is refused at once. Knows nothing of engines or jobs' contents:
// `Job` is any handle. Not thread-safe (the step loop owns it).
#pragma once

#include <deque>
#include <functional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "arbor/kvcache/kv_tree.h"

namespace arbor::router {

// The most KV blocks one Extend can ever hold: its whole context (shared prefixes counted as if
// they were not), every token it may generate plus the one fed back (complete_kv), capped by the
// sequence limit, and a partial block at each end.
inline int BlocksNeeded(const kvcache::KvLayout& layout, int context_tokens, int max_new_tokens,
                        int max_seq_tokens) {
  const int longest = std::min(context_tokens + max_new_tokens + 1, max_seq_tokens);
  return layout.BlocksFor(longest) + 2;
}

template <typename Job>
class KvAdmission {
 public:
  explicit KvAdmission(int capacity_blocks) : capacity_(capacity_blocks) {}

  // Queues `job` needing `blocks`; returns the jobs that now fit, in order (maybe `job`).
  // RESOURCE_EXHAUSTED naming `what` when `blocks` exceed the whole cache (nothing queued).
  absl::Status Enqueue(Job job, int blocks, const std::string& what, int block_tokens) {
    if (blocks > capacity_) {
      return absl::ResourceExhaustedError(absl::StrCat(
          what, " may need ", blocks * block_tokens, " tokens of KV; the router's cache holds ",
          capacity_ * block_tokens, " (--kv_cache_tokens)"));
    }
    waiting_.push_back({std::move(job), blocks});
    return absl::OkStatus();
  }
  // Admits waiting jobs, in order, while their blocks fit; returns them (the caller places them).
  std::vector<Job> AdmitWaiting() {
    std::vector<Job> admitted;
    while (!waiting_.empty() && reserved_ + waiting_.front().second <= capacity_) {
      reserved_ += waiting_.front().second;
      admitted.push_back(std::move(waiting_.front().first));
      waiting_.pop_front();
    }
    return admitted;
  }
  // Returns an admitted job's blocks.
  void Release(int blocks) { reserved_ -= blocks; }
  // Removes and returns the waiting jobs for which `drop` is true (e.g. cancelled).
  std::vector<Job> RemoveWaiting(const std::function<bool(const Job&)>& drop) {
    std::vector<Job> removed;
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      if (drop(it->first)) {
        removed.push_back(std::move(it->first));
        it = waiting_.erase(it);
      } else {
        ++it;
      }
    }
    return removed;
  }

  int capacity() const { return capacity_; }
  int reserved() const { return reserved_; }
  int waiting() const { return static_cast<int>(waiting_.size()); }

 private:
  const int capacity_;
  int reserved_ = 0;
  std::deque<std::pair<Job, int>> waiting_;
};

}  // namespace arbor::router
