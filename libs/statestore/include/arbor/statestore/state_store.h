// Named, versioned byte values: where the planner checkpoints tasks so that a restarted planner
// resumes them. Two backends with one contract: InMemoryStateStore (the default) and
// RedisStateStore (hiredis, `redis://host:port/db`).
//
// Every key has a version: 1 when created, +1 on every write, gone with the key. CompareAndSet
// writes only when the caller's expected version is current (0 = the key must not exist), so
// two planners can never both win the same update.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace arbor::statestore {

struct VersionedValue {
  std::string value;
  int64_t version = 0;
};

// Limits on what a caller may store.
inline constexpr size_t kMaxKeyBytes = 512;
inline constexpr size_t kMaxValueBytes = 64u << 20;

class StateStore {
 public:
  virtual ~StateStore() = default;

  // Writes `value`; returns the new version.
  virtual absl::StatusOr<int64_t> Put(absl::string_view key, absl::string_view value) = 0;
  // NOT_FOUND if the key is absent.
  virtual absl::StatusOr<VersionedValue> Get(absl::string_view key) = 0;
  // NOT_FOUND if the key is absent.
  virtual absl::Status Delete(absl::string_view key) = 0;
  // Writes `value` if the key's version is `expected_version` (0: the key must not exist) and
  // returns the new version; ABORTED naming both versions otherwise, and nothing changes.
  virtual absl::StatusOr<int64_t> CompareAndSet(absl::string_view key, int64_t expected_version,
                                                absl::string_view value) = 0;
  // Keys starting with `prefix` and sorting after `start_after` ("": from the first), sorted, at
  // most `limit`: pass the last key of one page as the next page's `start_after` to list any
  // number of keys.
  virtual absl::StatusOr<std::vector<std::string>> ListKeys(absl::string_view prefix, int limit,
                                                            absl::string_view start_after) = 0;
  absl::StatusOr<std::vector<std::string>> ListKeys(absl::string_view prefix, int limit) {
    return ListKeys(prefix, limit, "");
  }
};

// INVALID_ARGUMENT naming the field when a key or value breaks the limits above (empty or too
// long key, value too large).
absl::Status ValidateKey(absl::string_view key);
absl::Status ValidateValue(absl::string_view value);

// Thread-safe map in memory; contents die with the process.
std::unique_ptr<StateStore> NewInMemoryStateStore();

struct RedisOptions {
  std::string url;       // redis://[:password@]host[:port][/db]
  std::string password;  // when set, used instead of the url's (kept out of command lines)
  std::string key_prefix = "arbor:";
  int timeout_ms = 2000;  // connect and per-command timeout
  // false: a server that cannot be reached at start is no error (a warning; calls fail
  // UNAVAILABLE until it answers), for a service that must start while Redis restarts.
  bool require_connection = true;
};

// Connects to Redis. INVALID_ARGUMENT for a malformed url, UNAVAILABLE (naming the url) when
// the server cannot be reached (unless !require_connection). A server still loading its data
// answers UNAVAILABLE too. Thread-safe (one connection, one mutex); a broken connection is
// re-opened on the next call, and calls made while the server is down fail with UNAVAILABLE.
absl::StatusOr<std::unique_ptr<StateStore>> NewRedisStateStore(const RedisOptions& options);

}  // namespace arbor::statestore
