// The state store as the planner sees it: the kv-store's PutState / GetState / ... RPCs behind
// the StateStore interface (the kv-store keeps it in Redis or in memory). Thread-safe.
#pragma once

#include <memory>

#include "arbor/mesh/kvstore_client.h"
#include "arbor/statestore/state_store.h"

namespace arbor::planner {

// `kv` must outlive the store. Every call is bounded by the client's timeout; give it
// wait_for_ready so that a kv-store still starting is waited for.
std::unique_ptr<statestore::StateStore> NewRemoteStateStore(mesh::KvStoreClient* kv);

}  // namespace arbor::planner
