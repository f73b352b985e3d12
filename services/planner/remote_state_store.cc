#include "remote_state_store.h"

#include "arbor/rpc/status.h"

// Returns the call's status as an absl::Status when it failed.
#define ARBOR_RPC_RETURN(call)                                                  \
  do {                                                                          \
    const grpc::Status arbor_rpc_status_ = (call);                              \
    if (!arbor_rpc_status_.ok()) return rpc::FromGrpcStatus(arbor_rpc_status_); \
  } while (0)

namespace arbor::planner {
namespace {

class RemoteStateStore : public statestore::StateStore {
 public:
  RemoteStateStore(v1::KvStore::Stub* kv, std::chrono::milliseconds timeout)
      : kv_(kv), timeout_(timeout) {}

  absl::StatusOr<int64_t> Put(absl::string_view key, absl::string_view value) override {
    v1::PutStateRequest req;
    req.set_key(std::string(key));
    req.set_value(std::string(value));
    v1::PutStateResponse resp;
    auto ctx = Context();
    ARBOR_RPC_RETURN(kv_->PutState(ctx.get(), req, &resp));
    return resp.version();
  }
  absl::StatusOr<statestore::VersionedValue> Get(absl::string_view key) override {
    v1::GetStateRequest req;
    req.set_key(std::string(key));
    v1::GetStateResponse resp;
    auto ctx = Context();
    ARBOR_RPC_RETURN(kv_->GetState(ctx.get(), req, &resp));
    return statestore::VersionedValue{resp.value(), resp.version()};
  }
  absl::Status Delete(absl::string_view key) override {
    v1::DeleteStateRequest req;
    req.set_key(std::string(key));
    v1::DeleteStateResponse resp;
    auto ctx = Context();
    return rpc::FromGrpcStatus(kv_->DeleteState(ctx.get(), req, &resp));
  }
  absl::StatusOr<int64_t> CompareAndSet(absl::string_view key, int64_t expected_version,
                                        absl::string_view value) override {
    v1::CompareAndSetStateRequest req;
    req.set_key(std::string(key));
    req.set_expected_version(expected_version);
    req.set_value(std::string(value));
    v1::CompareAndSetStateResponse resp;
    auto ctx = Context();
    ARBOR_RPC_RETURN(kv_->CompareAndSetState(ctx.get(), req, &resp));
    return resp.version();
  }
  absl::StatusOr<std::vector<std::string>> ListKeys(absl::string_view prefix, int limit) override {
    v1::ListStateRequest req;
    req.set_prefix(std::string(prefix));
    req.set_limit(limit);
    v1::ListStateResponse resp;
    auto ctx = Context();
    ARBOR_RPC_RETURN(kv_->ListState(ctx.get(), req, &resp));
    return std::vector<std::string>(resp.keys().begin(), resp.keys().end());
  }

 private:
  std::unique_ptr<grpc::ClientContext> Context() const {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + timeout_);
    ctx->set_wait_for_ready(true);  // a kv-store still starting is waited for, to the deadline
    return ctx;
  }

  v1::KvStore::Stub* kv_;
  std::chrono::milliseconds timeout_;
};

}  // namespace

std::unique_ptr<statestore::StateStore> NewRemoteStateStore(v1::KvStore::Stub* kv,
                                                            std::chrono::milliseconds timeout) {
  return std::make_unique<RemoteStateStore>(kv, timeout);
}

}  // namespace arbor::planner
