#include "remote_state_store.h"

#include <atomic>

#include "task_checkpoint.h"

namespace arbor::planner {
namespace {

// Every kv-store shard fronts the same state store: calls go to one shard until it is
// unreachable, then to the next. Reads move on at once; writes (not idempotent: one may have
// landed) return the failure and their next try goes to the next shard.
class RemoteStateStore : public statestore::StateStore {
 public:
  explicit RemoteStateStore(std::vector<mesh::KvStoreClient*> shards)
      : shards_(std::move(shards)) {}

  absl::StatusOr<int64_t> Put(absl::string_view key, absl::string_view value) override {
    return Write<int64_t>([&](mesh::KvStoreClient& kv) {
      return kv.PutState(std::string(key), std::string(value), mesh::kNoDeadline,
                         TenantOfTaskKey(key));
    });
  }
  absl::StatusOr<statestore::VersionedValue> Get(absl::string_view key) override {
    return Read<statestore::VersionedValue>(
        [&](mesh::KvStoreClient& kv) -> absl::StatusOr<statestore::VersionedValue> {
          absl::StatusOr<v1::GetStateResponse> r = kv.GetState(std::string(key), mesh::kNoDeadline);
          if (!r.ok()) return r.status();
          return statestore::VersionedValue{r->value(), r->version()};
        });
  }
  absl::Status Delete(absl::string_view key) override {
    return Read<bool>([&](mesh::KvStoreClient& kv) -> absl::StatusOr<bool> {
             absl::Status st = kv.DeleteState(std::string(key), mesh::kNoDeadline);
             if (!st.ok()) return st;
             return true;
           })
        .status();
  }
  absl::StatusOr<int64_t> CompareAndSet(absl::string_view key, int64_t expected_version,
                                        absl::string_view value) override {
    return Write<int64_t>([&](mesh::KvStoreClient& kv) {
      return kv.CompareAndSetState(std::string(key), expected_version, std::string(value),
                                   mesh::kNoDeadline, TenantOfTaskKey(key));
    });
  }
  absl::StatusOr<std::vector<std::string>> ListKeys(absl::string_view prefix, int limit,
                                                    absl::string_view start_after) override {
    return Read<std::vector<std::string>>([&](mesh::KvStoreClient& kv) {
      return kv.ListState(std::string(prefix), limit, mesh::kNoDeadline, std::string(start_after));
    });
  }

 private:
  static bool Unreachable(const absl::Status& st) {
    return absl::IsUnavailable(st) || absl::IsDeadlineExceeded(st);
  }
  template <typename T, typename Fn>
  absl::StatusOr<T> Read(Fn fn) {
    absl::StatusOr<T> r = absl::UnavailableError("no kv-store shard");
    for (size_t tries = 0; tries < shards_.size(); ++tries) {
      size_t at = current_.load();
      r = fn(*shards_[at % shards_.size()]);
      if (!Unreachable(r.status())) return r;
      current_.compare_exchange_strong(at, at + 1);
    }
    return r;
  }
  template <typename T, typename Fn>
  absl::StatusOr<T> Write(Fn fn) {
    size_t at = current_.load();
    absl::StatusOr<T> r = fn(*shards_[at % shards_.size()]);
    if (Unreachable(r.status())) current_.compare_exchange_strong(at, at + 1);
    return r;
  }

  const std::vector<mesh::KvStoreClient*> shards_;
  std::atomic<size_t> current_{0};  // the shard calls go to (modulo their number)
};

}  // namespace

std::unique_ptr<statestore::StateStore> NewRemoteStateStore(mesh::KvStoreClient* kv) {
  return NewRemoteStateStore(std::vector<mesh::KvStoreClient*>{kv});
}

std::unique_ptr<statestore::StateStore> NewRemoteStateStore(
    std::vector<mesh::KvStoreClient*> shards) {
  return std::make_unique<RemoteStateStore>(std::move(shards));
}

}  // namespace arbor::planner
