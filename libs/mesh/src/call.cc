#include "arbor/mesh/call.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "arbor/rpc/tls.h"

namespace arbor::mesh {

std::shared_ptr<grpc::Channel> NewChannel(const std::string& address,
                                          const ChannelOptions& options) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  // (GRPC_ARG_MIN_RECONNECT_BACKOFF_MS is also the least time a connection attempt, TLS
  // handshake included, is given: left at its default of 20 s.)
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  if (const std::string name = rpc::DefaultServerName(); !name.empty()) {
    args.SetSslTargetNameOverride(name);
  }
  return grpc::CreateCustomChannel(address, rpc::DefaultChannelCredentials(), args);
}

void CallCanceller::CancelAll() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  for (grpc::ClientContext* ctx : live_) ctx->TryCancel();
}

bool CallCanceller::Add(grpc::ClientContext* ctx) {
  absl::MutexLock lock(&mu_);
  if (cancelled_) return false;
  live_.insert(ctx);
  return true;
}

void CallCanceller::Remove(grpc::ClientContext* ctx) {
  absl::MutexLock lock(&mu_);
  live_.erase(ctx);
}

absl::Status CallPolicy::Cancelled(const std::string& what) {
  return absl::CancelledError(absl::StrCat(what, ": cancelled (the caller is shutting down)"));
}

absl::Status CallPolicy::Run(Repeat repeat, Deadline caller, const std::string& what,
                             const std::function<grpc::Status(grpc::ClientContext&)>& attempt,
                             bool wait_for_ready) const {
  const Deadline deadline = DeadlineFor(caller);
  std::chrono::milliseconds backoff = options_.backoff;
  for (int i = 1;; ++i) {
    grpc::ClientContext ctx;
    Prepare(ctx, deadline, wait_for_ready);
    const Tracked tracked(options_.canceller, &ctx);
    if (!tracked.ok()) return Cancelled(what);
    const grpc::Status st = attempt(ctx);
    if (st.ok()) return absl::OkStatus();
    const bool again = repeat == Repeat::kIdempotent &&
                       st.error_code() == grpc::StatusCode::UNAVAILABLE && i < options_.attempts &&
                       std::chrono::system_clock::now() + backoff < deadline;
    if (!again) return rpc::FromGrpcStatus(st, what);
    std::this_thread::sleep_for(backoff);
    backoff *= 2;
  }
}

}  // namespace arbor::mesh
