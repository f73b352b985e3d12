// The router's step loop: one thread that owns the engine and the generator, runs what the other
// threads post to it, drops cancelled jobs, and steps every live Extend together (continuous
// batching). The stages it runs are in router_service.cc.
#include <chrono>

#include "arbor/common/clock.h"
#include "extend_job.h"
#include "router_service.h"

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
  if (generator_->live() == 0) return;

  const engine::GeneratorStats before = generator_->stats();
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<int> live = generator_->Step();
  if (!live.ok()) {
    // The step changed nothing; every job in it fails (e.g. an expert with no live replica).
    metrics_.ObserveFailedStep(SecondsSince(t0));
    FailAll(live.status());
  } else {
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
  metrics_.Export(engine_->kv_tree().stats(), static_cast<int>(running_.size()));
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
