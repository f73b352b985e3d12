#include "remote_state_store.h"

#include "task_checkpoint.h"

namespace arbor::planner {
namespace {

class RemoteStateStore : public statestore::StateStore {
 public:
  explicit RemoteStateStore(mesh::KvStoreClient* kv) : kv_(kv) {}

  absl::StatusOr<int64_t> Put(absl::string_view key, absl::string_view value) override {
    return kv_->PutState(std::string(key), std::string(value), mesh::kNoDeadline,
                         TenantOfTaskKey(key));
  }
  absl::StatusOr<statestore::VersionedValue> Get(absl::string_view key) override {
    absl::StatusOr<v1::GetStateResponse> r = kv_->GetState(std::string(key), mesh::kNoDeadline);
    if (!r.ok()) return r.status();
    return statestore::VersionedValue{r->value(), r->version()};
  }
  absl::Status Delete(absl::string_view key) override {
    return kv_->DeleteState(std::string(key), mesh::kNoDeadline);
  }
  absl::StatusOr<int64_t> CompareAndSet(absl::string_view key, int64_t expected_version,
                                        absl::string_view value) override {
    return kv_->CompareAndSetState(std::string(key), expected_version, std::string(value),
                                   mesh::kNoDeadline, TenantOfTaskKey(key));
  }
  absl::StatusOr<std::vector<std::string>> ListKeys(absl::string_view prefix, int limit,
                                                    absl::string_view start_after) override {
    return kv_->ListState(std::string(prefix), limit, mesh::kNoDeadline, std::string(start_after));
  }

 private:
  mesh::KvStoreClient* kv_;
};

}  // namespace

std::unique_ptr<statestore::StateStore> NewRemoteStateStore(mesh::KvStoreClient* kv) {
  return std::make_unique<RemoteStateStore>(kv);
}

}  // namespace arbor::planner
