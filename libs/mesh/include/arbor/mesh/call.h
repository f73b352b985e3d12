// How Arbor's mesh clients call: every call's deadline is the caller's, capped by the client's
// own per-call timeout; calls that are safe to repeat are retried, with backoff, while the
// service is UNAVAILABLE and time remains; every error names the service, the method and the
// object ("kv-store Fork of sequence 12: ..."). The typed clients (kvstore_client.h,
// router_client.h, expert_client.h, planner_client.h) are the only code that builds a
// grpc::ClientContext. Thread-safe.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "arbor/rpc/status.h"
#include "grpcpp/grpcpp.h"

namespace arbor::mesh {

using Deadline = std::chrono::system_clock::time_point;
// For calls that must run whatever the caller's deadline (e.g. releasing KV after a task's
// deadline passed): only the client's own timeout applies.
inline constexpr Deadline kNoDeadline = Deadline::max();

// Ends, at once, the calls of every client that shares it (a service shutting down while a peer
// hangs): calls in flight end CANCELLED and later ones fail CANCELLED without being sent, so no
// thread waits out a call's timeout. Thread-safe.
class CallCanceller {
 public:
  void CancelAll();

  // Registers `ctx` for the duration of one call; false (nothing registered) once cancelled.
  bool Add(grpc::ClientContext* ctx);
  void Remove(grpc::ClientContext* ctx);

 private:
  absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<grpc::ClientContext*> live_ ABSL_GUARDED_BY(mu_);
};

struct ClientOptions {
  std::chrono::milliseconds timeout{30000};  // a call's own limit; the caller's deadline caps it
  int attempts = 3;  // tries of a call safe to repeat while the service is UNAVAILABLE
  std::chrono::milliseconds backoff{100};  // before the second try; doubles after each
  // Wait for a service that is still starting (to the deadline) instead of failing at once.
  bool wait_for_ready = false;
  // Sent as "authorization: Bearer <token>" on every call (the planner's public API); empty:
  // none.
  std::string bearer_token;
  // Shared by the clients whose calls a shutdown must be able to end (not owned; must outlive
  // them); null: calls end only by their deadlines.
  CallCanceller* canceller = nullptr;
};

struct ChannelOptions {
  int max_message_bytes = 64 << 20;  // both directions
};

// A channel to `address` (host:port) that reconnects within a second after its peer restarts
// (gRPC's default backoff grows to two minutes), with the message limits set, checking the
// peer's certificate against rpc::DefaultServerName() when it is set.
std::shared_ptr<grpc::Channel> NewChannel(const std::string& address,
                                          const ChannelOptions& options = {});

enum class Repeat { kNo, kIdempotent };

class CallPolicy {
 public:
  explicit CallPolicy(ClientOptions options) : options_(options) {}

  // The deadline of a call the caller bounds by `caller`.
  Deadline DeadlineFor(Deadline caller) const {
    const Deadline own = std::chrono::system_clock::now() + options_.timeout;
    return std::min(caller, own);
  }
  // Sets up one attempt's context.
  void Prepare(grpc::ClientContext& ctx, Deadline deadline, bool wait_for_ready) const {
    ctx.set_deadline(deadline);
    ctx.set_wait_for_ready(wait_for_ready || options_.wait_for_ready);
    if (!options_.bearer_token.empty()) {
      ctx.AddMetadata("authorization", "Bearer " + options_.bearer_token);
    }
  }

  // Runs `attempt` (one try with a fresh context) until it succeeds, fails for good, or (when
  // `repeat`) the service stays UNAVAILABLE for every try or the deadline. Errors carry `what`.
  absl::Status Run(Repeat repeat, Deadline caller, const std::string& what,
                   const std::function<grpc::Status(grpc::ClientContext&)>& attempt,
                   bool wait_for_ready = false) const;

  // Run for a call that fills a response: the response, or the error.
  template <typename Resp>
  absl::StatusOr<Resp> Call(Repeat repeat, Deadline caller, const std::string& what,
                            const std::function<grpc::Status(grpc::ClientContext&, Resp*)>& attempt,
                            bool wait_for_ready = false) const {
    Resp resp;
    const absl::Status st = Run(
        repeat, caller, what, [&](grpc::ClientContext& ctx) { return attempt(ctx, &resp); },
        wait_for_ready);
    if (!st.ok()) return st;
    return resp;
  }

  // A server stream read to its end: `on_event` for each event (returning false cancels the
  // call, which then ends CANCELLED). Never retried: events already seen cannot be taken back.
  template <typename Event>
  absl::Status Stream(
      Deadline caller, const std::string& what,
      const std::function<std::unique_ptr<grpc::ClientReader<Event>>(grpc::ClientContext&)>& open,
      const std::function<bool(const Event&)>& on_event) const {
    grpc::ClientContext ctx;
    Prepare(ctx, DeadlineFor(caller), false);
    const Tracked tracked(options_.canceller, &ctx);
    if (!tracked.ok()) return Cancelled(what);
    std::unique_ptr<grpc::ClientReader<Event>> reader = open(ctx);
    Event e;
    while (reader->Read(&e)) {
      if (!on_event(e)) {
        ctx.TryCancel();
        while (reader->Read(&e)) {
        }
        break;
      }
    }
    return rpc::FromGrpcStatus(reader->Finish(), what);
  }

  const ClientOptions& options() const { return options_; }

 private:
  // `ctx` registered with `canceller` (if any) while it lives.
  class Tracked {
   public:
    Tracked(CallCanceller* canceller, grpc::ClientContext* ctx)
        : canceller_(canceller), ctx_(ctx), ok_(canceller == nullptr || canceller->Add(ctx)) {}
    ~Tracked() {
      if (canceller_ != nullptr && ok_) canceller_->Remove(ctx_);
    }
    Tracked(const Tracked&) = delete;
    Tracked& operator=(const Tracked&) = delete;
    bool ok() const { return ok_; }

   private:
    CallCanceller* const canceller_;
    grpc::ClientContext* const ctx_;
    const bool ok_;
  };
  static absl::Status Cancelled(const std::string& what);

  ClientOptions options_;
};

}  // namespace arbor::mesh
