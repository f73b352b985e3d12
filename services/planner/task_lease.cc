#include "task_lease.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "task_checkpoint.h"

namespace arbor::planner {

std::string LeaseKeyOf(absl::string_view task_key) {
  absl::ConsumePrefix(&task_key, kTaskKeyPrefix);
  return absl::StrCat(kLeaseKeyPrefix, task_key);
}

std::string TaskKeyOfLease(absl::string_view lease_key) {
  if (!absl::ConsumePrefix(&lease_key, kLeaseKeyPrefix) || lease_key.empty()) return "";
  return absl::StrCat(kTaskKeyPrefix, lease_key);
}

absl::StatusOr<v1::TaskLease> ParseLease(absl::string_view key, const std::string& bytes) {
  v1::TaskLease lease;
  if (!lease.ParseFromString(bytes)) {
    return absl::DataLossError(absl::StrCat(key, ": not a task lease (", bytes.size(), " bytes)"));
  }
  if (lease.holder().empty()) {
    return absl::DataLossError(absl::StrCat(key, ": task lease without a holder"));
  }
  if (lease.generation() < 0) {
    return absl::DataLossError(
        absl::StrCat(key, ": task lease generation ", lease.generation(), " is negative"));
  }
  return lease;
}

bool LeaseWatch::Expired(const std::string& key, int64_t version, Clock::time_point now) {
  Seen& s = seen_[key];
  s.fresh = true;
  if (s.version != version || s.since == Clock::time_point()) {
    s.version = version;
    s.since = now;
    return false;
  }
  return now - s.since >= lease_;
}

void LeaseWatch::Sweep() {
  for (auto it = seen_.begin(); it != seen_.end();) {
    if (!it->second.fresh) {
      it = seen_.erase(it);
    } else {
      it->second.fresh = false;
      ++it;
    }
  }
}

}  // namespace arbor::planner
