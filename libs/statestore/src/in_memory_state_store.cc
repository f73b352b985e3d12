#include <map>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "arbor/common/status_macros.h"
#include "arbor/statestore/state_store.h"

namespace arbor::statestore {

absl::Status ValidateKey(absl::string_view key) {
  if (key.empty() || key.size() > kMaxKeyBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("key of ", key.size(), " bytes out of range [1, ", kMaxKeyBytes, "]"));
  }
  return absl::OkStatus();
}

absl::Status ValidateValue(absl::string_view value) {
  if (value.size() > kMaxValueBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("value of ", value.size(), " bytes exceeds ", kMaxValueBytes));
  }
  return absl::OkStatus();
}

namespace {

class InMemoryStateStore : public StateStore {
 public:
  absl::StatusOr<int64_t> Put(absl::string_view key, absl::string_view value) override {
    ARBOR_RETURN_IF_ERROR(ValidateKey(key));
    ARBOR_RETURN_IF_ERROR(ValidateValue(value));
    absl::MutexLock lock(&mu_);
    VersionedValue& v = map_[std::string(key)];
    v.value = std::string(value);
    return ++v.version;
  }

  absl::StatusOr<VersionedValue> Get(absl::string_view key) override {
    ARBOR_RETURN_IF_ERROR(ValidateKey(key));
    absl::MutexLock lock(&mu_);
    auto it = map_.find(std::string(key));
    if (it == map_.end()) return absl::NotFoundError(absl::StrCat("key \"", key, "\" not found"));
    return it->second;
  }

  absl::Status Delete(absl::string_view key) override {
    ARBOR_RETURN_IF_ERROR(ValidateKey(key));
    absl::MutexLock lock(&mu_);
    if (map_.erase(std::string(key)) == 0) {
      return absl::NotFoundError(absl::StrCat("key \"", key, "\" not found"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<int64_t> CompareAndSet(absl::string_view key, int64_t expected_version,
                                        absl::string_view value) override {
    ARBOR_RETURN_IF_ERROR(ValidateKey(key));
    ARBOR_RETURN_IF_ERROR(ValidateValue(value));
    absl::MutexLock lock(&mu_);
    auto it = map_.find(std::string(key));
    const int64_t current = it == map_.end() ? 0 : it->second.version;
    if (current != expected_version) {
      return absl::AbortedError(absl::StrCat("key \"", key, "\" is at version ", current,
                                             ", not the expected ", expected_version));
    }
    VersionedValue& v = map_[std::string(key)];
    v.value = std::string(value);
    return ++v.version;
  }

  absl::StatusOr<std::vector<std::string>> ListKeys(absl::string_view prefix, int limit,
                                                    absl::string_view start_after) override {
    absl::MutexLock lock(&mu_);
    std::vector<std::string> keys;
    auto first = map_.lower_bound(std::string(prefix));
    if (first != map_.end() && first->first <= start_after) {
      first = map_.upper_bound(std::string(start_after));
    }
    for (auto it = first; it != map_.end() && absl::StartsWith(it->first, prefix) &&
                          static_cast<int>(keys.size()) < limit;
         ++it) {
      keys.push_back(it->first);
    }
    return keys;
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, VersionedValue> map_ ABSL_GUARDED_BY(mu_);  // ordered for ListKeys
};

}  // namespace

std::unique_ptr<StateStore> NewInMemoryStateStore() {
  return std::make_unique<InMemoryStateStore>();
}

}  // namespace arbor::statestore
