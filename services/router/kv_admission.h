// Admission by KV for the router's step loop: every admitted Extend holds an upper bound of the
// cache blocks it can ever use, so a step never runs out of KV under load; jobs that do not fit
// yet wait, tenants taking turns (below), and a job larger than the whole cache is refused at
// once. Knows nothing of engines or jobs' contents:
// `Job` is any handle. Not thread-safe (the step loop owns it).
#pragma once

#include <deque>
#include <functional>
#include <iterator>
#include <map>
#include <string>
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

// Waiting jobs form one queue per tenant, served in turn (round robin over the tenants with
// jobs waiting), so one tenant's round of thousands of Extends cannot hold another tenant's
// Extend behind it; within a tenant jobs keep their order. When the next job in turn does not
// fit, admission waits for it (nothing overtakes it, so a large job is not starved by small
// ones). At most `max_running` jobs are admitted at once (the step's sequence slots), so the
// turn-taking decides who runs, not a queue further on.
template <typename Job>
class KvAdmission {
 public:
  explicit KvAdmission(int capacity_blocks, int max_running = 1 << 30)
      : capacity_(capacity_blocks), max_running_(max_running) {}

  // Queues `job` of `tenant` needing `blocks`. RESOURCE_EXHAUSTED naming `what` when `blocks`
  // exceed the whole cache (nothing queued).
  absl::Status Enqueue(Job job, int blocks, const std::string& what, int block_tokens,
                       const std::string& tenant = "") {
    if (blocks > capacity_) {
      return absl::ResourceExhaustedError(absl::StrCat(
          what, " may need ", blocks * block_tokens, " tokens of KV; the router's cache holds ",
          capacity_ * block_tokens, " (--kv_cache_tokens)"));
    }
    waiting_[tenant].push_back({std::move(job), blocks});
    ++waiting_count_;
    return absl::OkStatus();
  }
  // Admits waiting jobs, tenants in turn, while the next one fits; returns them (the caller
  // places them).
  std::vector<Job> AdmitWaiting() {
    std::vector<Job> admitted;
    while (waiting_count_ > 0 && running_ < max_running_) {
      auto next = waiting_.upper_bound(last_tenant_);  // the tenant after the last one served
      if (next == waiting_.end()) next = waiting_.begin();
      auto& [job, blocks] = next->second.front();
      if (reserved_ + blocks > capacity_) break;
      reserved_ += blocks;
      ++running_;
      admitted.push_back(std::move(job));
      next->second.pop_front();
      --waiting_count_;
      last_tenant_ = next->first;
      if (next->second.empty()) waiting_.erase(next);
    }
    return admitted;
  }
  // Returns an admitted job's blocks and slot.
  void Release(int blocks) {
    reserved_ -= blocks;
    --running_;
  }
  // Removes and returns the waiting jobs for which `drop` is true (e.g. cancelled).
  std::vector<Job> RemoveWaiting(const std::function<bool(const Job&)>& drop) {
    std::vector<Job> removed;
    for (auto q = waiting_.begin(); q != waiting_.end();) {
      for (auto it = q->second.begin(); it != q->second.end();) {
        if (drop(it->first)) {
          removed.push_back(std::move(it->first));
          it = q->second.erase(it);
          --waiting_count_;
        } else {
          ++it;
        }
      }
      q = q->second.empty() ? waiting_.erase(q) : std::next(q);
    }
    return removed;
  }

  int capacity() const { return capacity_; }
  int reserved() const { return reserved_; }
  int running() const { return running_; }
  int waiting() const { return waiting_count_; }

 private:
  const int capacity_, max_running_;
  int reserved_ = 0, running_ = 0, waiting_count_ = 0;
  std::map<std::string, std::deque<std::pair<Job, int>>> waiting_;  // by tenant, non-empty
  std::string last_tenant_;  // served last; the turn passes to the next tenant after it
};

}  // namespace arbor::router
