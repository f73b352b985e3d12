// Task leases (v1::TaskLease, key "planner/lease/<tenant>/<task_id>" in the state store): which
// planner of a fleet runs a task. A planner takes a task's lease with a compare-and-set before it
// runs it, renews it (a new version) every quarter of the lease, and deletes it once the task's
// final checkpoint is stored. Another planner takes it over when
//   - it was handed back (a planner that shuts down hands back every lease it holds),
//   - it names the other planner's own name from an earlier process (a restart), or
//   - its version stayed the same for a whole lease on the other planner's clock (its holder died,
//     hangs or is cut off): no two clocks are compared, so skew between machines does not matter.
// Leases decide who should run a task; the checkpoint's compare-and-set decides who may write it:
// whoever takes a lease writes the checkpoint at once (stamped with the lease's generation), so the
// previous holder's next write is refused and it drops the task.
#pragma once

#include <chrono>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "arbor/v1/planner.pb.h"

namespace arbor::planner {

inline constexpr char kLeaseKeyPrefix[] = "planner/lease/";

// The lease key of a task's checkpoint key, and back ("" when the key is not one).
std::string LeaseKeyOf(absl::string_view task_key);
std::string TaskKeyOfLease(absl::string_view lease_key);

// Parses the bytes stored under lease key `key`. DATA_LOSS naming the key when they are not a
// lease (no holder, a negative generation).
absl::StatusOr<v1::TaskLease> ParseLease(absl::string_view key, const std::string& bytes);

// What one planner has seen of other planners' leases: a lease has expired when its version stayed
// the same for `lease` since this planner first saw that version. Not thread-safe (one scanner).
class LeaseWatch {
 public:
  using Clock = std::chrono::steady_clock;
  explicit LeaseWatch(std::chrono::milliseconds lease) : lease_(lease) {}
  // Records `version` of `key` as seen at `now`; true when it has not changed for a whole lease.
  bool Expired(const std::string& key, int64_t version, Clock::time_point now);
  // Forgets keys not seen since the last Sweep (deleted leases).
  void Sweep();

 private:
  struct Seen {
    int64_t version = 0;
    Clock::time_point since;
    bool fresh = false;  // seen since the last Sweep
  };
  const std::chrono::milliseconds lease_;
  std::map<std::string, Seen> seen_;
};

}  // namespace arbor::planner
