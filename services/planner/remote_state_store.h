// The state store as the planner sees it: the kv-store's PutState / GetState / ... RPCs behind
// the StateStore interface (the kv-store keeps it in Redis or in memory). Thread-safe.
#pragma once

#include <chrono>
#include <memory>

#include "arbor/statestore/state_store.h"
#include "arbor/v1/kvstore.grpc.pb.h"

namespace arbor::planner {

// `kv` must outlive the store; every call gets `timeout` as its deadline.
std::unique_ptr<statestore::StateStore> NewRemoteStateStore(
    v1::KvStore::Stub* kv, std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace arbor::planner
