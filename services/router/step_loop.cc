// The router's step loop: one thread that owns the engine and the generator, runs what the other
// threads post to it, drops cancelled jobs, and steps every live Extend together (continuous
// batching). The stages it runs are in router_service.cc.
#include <algorithm>
#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "arbor/common/clock.h"
#include "extend_job.h"
#include "router_service.h"
#include "spdlog/spdlog.h"

namespace arbor::router {
void RouterService::Post(std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  inbox_.push_back(std::move(fn));
}

void RouterService::FailAll(const absl::Status& status) {
  std::vector<std::shared_ptr<Job>> all;
  for (const auto& [id, job] : running_) all.push_back(job);
  for (const auto& job : all) Fail(job, status);
}

void RouterService::StepOnce() {
  // Drop what was cancelled.
  std::vector<std::shared_ptr<Job>> cancelled;
  for (const auto& [id, job] : running_) {
    if (job->cancelled || stop_) cancelled.push_back(job);
  }
  for (const auto& job : cancelled) Fail(job, Interrupted(*job));
  for (const auto& job : admission_->RemoveWaiting(
           [this](const std::shared_ptr<Job>& j) { return j->cancelled || stop_; })) {
    Fail(job, Interrupted(*job));
  }
  if (generator_->live() == 0) {
    ExportMetrics();
    return;
  }
  ShareStep();

  const engine::GeneratorStats before = generator_->stats();
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<int> live = generator_->Step();
  if (!live.ok()) {
    // The step changed nothing. An expert with no live replica (UNAVAILABLE) may come back (a
    // worker restarting): the step is tried again until expert_wait has passed since it first
    // failed (a job whose client gives up meanwhile is dropped above); then every job in it
    // fails.
    metrics_.ObserveFailedStep(SecondsSince(t0));
    const auto now = std::chrono::steady_clock::now();
    if (absl::IsUnavailable(live.status()) && options_.expert_wait.count() > 0) {
      if (failing_since_ == std::chrono::steady_clock::time_point()) {
        failing_since_ = now;
        spdlog::warn("step failed ({}); trying it again for up to {} ms", live.status().ToString(),
                     options_.expert_wait.count());
      }
      if (now - failing_since_ < options_.expert_wait) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        return;
      }
    }
    failing_since_ = {};
    FailAll(live.status());
  } else {
    failing_since_ = {};
    const engine::GeneratorStats& after = generator_->stats();
    metrics_.ObserveStep(SecondsSince(t0), after.prefill_tokens - before.prefill_tokens,
                         after.decode_tokens - before.decode_tokens);
    std::vector<std::shared_ptr<Job>> done;
    for (const auto& [id, job] : running_) {
      if (generator_->finished(id)) {
        done.push_back(job);
      } else {
        Emit(*job, /*finished=*/false);
      }
    }
    for (const auto& job : done) Complete(job);
  }
  ExportMetrics();
}

void RouterService::ExportMetrics() {
  metrics_.Export(engine_->kv_tree().stats(), static_cast<int>(running_.size()),
                  pending_ - static_cast<int>(running_.size()));
}

void RouterService::ShareStep() {
  auto lift = [this] {
    if (!sharing_) return;
    for (const auto& [gen_id, job] : running_) generator_->SetStepTokens(gen_id, -1);
    sharing_ = false;
    turn_.clear();
  };
  const int total = options_.shared_step_tokens;
  // Most steps have one tenant: found without building anything, every step.
  const std::string* first_tenant = nullptr;
  bool several = false;
  for (const auto& [gen_id, job] : running_) {
    if (generator_->finished(gen_id)) continue;
    if (first_tenant == nullptr) {
      first_tenant = &job->request.tenant();
    } else if (job->request.tenant() != *first_tenant) {
      several = true;
      break;
    }
  }
  if (total <= 0 || !several) return lift();
  // The running Extends by tenant, in job order (ids grow with arrival).
  std::map<std::string, std::vector<std::pair<uint64_t, int>>> by_tenant;  // (job id, gen id)
  for (const auto& [gen_id, job] : running_) {
    if (!generator_->finished(gen_id)) {
      by_tenant[job->request.tenant()].push_back({job->id, gen_id});
    }
  }
  // What each tenant could feed this step: one token per decoding Extend, the prompt left (up to
  // a prefill chunk) per prefilling one.
  auto want = [this](int gen_id) {
    const int left = generator_->prompt_tokens_left(gen_id);
    return left > 0 ? std::min(left, std::max(1, options_.prefill_chunk)) : 1;
  };
  using Tenant = decltype(by_tenant)::value_type;
  std::vector<std::pair<int64_t, Tenant*>> demand;
  for (Tenant& t : by_tenant) {
    std::sort(t.second.begin(), t.second.end());
    int64_t d = 0;
    for (const auto& [id, gen_id] : t.second) d += want(gen_id);
    demand.push_back({d, &t});
  }
  // Held to `total` only while some tenant needs no more than its fair part of it (a small
  // tenant beside large ones); when every tenant wants more, every Extend is fed, for
  // throughput.
  std::sort(demand.begin(), demand.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  if (demand.front().first > std::max(1, total / static_cast<int>(demand.size()))) return lift();
  sharing_ = true;
  // Water-filling: the smallest demands are met first; the rest split what is left evenly.
  int left = total;
  for (size_t i = 0; i < demand.size(); ++i) {
    const auto& [tenant, jobs] = *demand[i].second;
    const int fair = std::max(1, left / static_cast<int>(demand.size() - i));
    int part = static_cast<int>(std::min<int64_t>(demand[i].first, fair));
    left = std::max(0, left - part);
    // Within the tenant, Extends take turns: the walk starts where the last step's stopped.
    const size_t n = jobs.size();
    uint64_t& turn = turn_[tenant];
    const size_t start = turn % n;
    size_t fed = 0;
    for (size_t k = 0; k < n; ++k) {
      const int gen_id = jobs[(start + k) % n].second;
      const int w = want(gen_id);
      const int give = part >= w ? w : (fed == 0 ? std::max(1, part) : 0);  // never none at all
      generator_->SetStepTokens(gen_id, give);
      part -= std::min(part, give);
      fed += give > 0;
    }
    turn += std::max<size_t>(1, fed);
  }
}

void RouterService::Loop() {
  for (;;) {
    std::deque<std::function<void()>> work;
    {
      absl::MutexLock lock(&mu_);
      if (generator_->live() == 0) {
        // Idle: sleep until something arrives (or a cancellation sweep is due).
        mu_.AwaitWithTimeout(absl::Condition(
                                 +[](RouterService* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) {
                                   return !s->inbox_.empty() || s->stopping_;
                                 },
                                 this),
                             absl::Milliseconds(100));
      }
      work.swap(inbox_);
      // Shutting down: every stage fails its job, so pending_ drains to 0.
      if (stopping_ && work.empty() && pending_ == 0) break;
    }
    for (auto& fn : work) fn();
    StepOnce();
  }
}

}  // namespace arbor::router
