// The state store as the planner sees it: the kv-store's PutState / GetState / ... RPCs behind
// the StateStore interface (the kv-store keeps it in Redis or in memory). Thread-safe.
#pragma once

#include <memory>
#include <vector>

#include "arbor/mesh/kvstore_client.h"
#include "arbor/statestore/state_store.h"

namespace arbor::planner {

// `kv` must outlive the store. Every call is bounded by the client's timeout; give it
// wait_for_ready so that a kv-store still starting is waited for.
std::unique_ptr<statestore::StateStore> NewRemoteStateStore(mesh::KvStoreClient* kv);
// Over several kv-store shards (all in front of the same state store): calls go to one until it
// is unreachable, then to the next (reads move on within the call; a write that failed is not
// repeated elsewhere, since it may have landed: its caller's next try goes to the next shard).
// Give the clients no wait_for_ready, so that a shard that is down fails fast.
std::unique_ptr<statestore::StateStore> NewRemoteStateStore(
    std::vector<mesh::KvStoreClient*> shards);

}  // namespace arbor::planner
