// The server side of a server-streaming RPC fed from other threads: events queue up and are
// written one at a time; Close(status) finishes the call once the queue has drained. Any thread
// may Push or Close; after the client goes away both are no-ops. The stream keeps itself alive
// until gRPC's OnDone, so holders only need a shared_ptr. Thread-safe.
#pragma once

#include <grpcpp/grpcpp.h>

#include <deque>
#include <functional>
#include <memory>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "arbor/rpc/status.h"

namespace arbor::rpc {

template <typename Event>
class EventStream : public grpc::ServerWriteReactor<Event> {
 public:
  // `on_cancel` runs (on a gRPC thread; it must not block) when the client cancels or its
  // deadline passes. Return the raw pointer from the RPC method.
  static std::shared_ptr<EventStream> Create(std::function<void()> on_cancel = nullptr) {
    std::shared_ptr<EventStream> s(new EventStream(std::move(on_cancel)));
    absl::MutexLock lock(&s->mu_);
    s->self_ = s;
    return s;
  }

  void Push(Event event) {
    absl::MutexLock lock(&mu_);
    if (final_ || done_) return;
    queue_.push_back(std::move(event));
    MaybeWriteLocked();
  }
  // Finishes the call after the queued events; only the first Close counts.
  void Close(const absl::Status& status) {
    absl::MutexLock lock(&mu_);
    if (final_ || done_) return;
    final_ = ToGrpcStatus(status);
    MaybeWriteLocked();
  }
  bool closed() const {
    absl::MutexLock lock(&mu_);
    return final_.has_value() || done_;
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {  // the client is gone: nothing more can be written
      queue_.clear();
      if (!final_) final_ = grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
    }
    MaybeWriteLocked();
  }
  void OnCancel() override {
    if (on_cancel_) on_cancel_();
  }
  void OnDone() override {
    std::shared_ptr<EventStream> keep;  // may be the last reference: released on return
    absl::MutexLock lock(&mu_);
    done_ = true;
    keep = std::move(self_);
  }

 private:
  explicit EventStream(std::function<void()> on_cancel) : on_cancel_(std::move(on_cancel)) {}

  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finished_) return;
    if (!queue_.empty()) {
      current_ = std::move(queue_.front());
      queue_.pop_front();
      writing_ = true;
      this->StartWrite(&current_);
    } else if (final_) {
      finished_ = true;
      this->Finish(*final_);
    }
  }

  const std::function<void()> on_cancel_;
  mutable absl::Mutex mu_;
  std::shared_ptr<EventStream> self_ ABSL_GUARDED_BY(mu_);
  std::deque<Event> queue_ ABSL_GUARDED_BY(mu_);
  Event current_ ABSL_GUARDED_BY(mu_);
  std::optional<grpc::Status> final_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace arbor::rpc
