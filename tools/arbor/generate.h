// `arbor generate`: load a model folder and generate from a prompt on the CPU engine, or through
// a running mesh; and the one-shot mesh generation it shares with `arbor eval`.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

#include "absl/status/statusor.h"
#include "arbor/mesh/kvstore_client.h"
#include "arbor/mesh/router_client.h"

namespace arbor::cli {

// Flags are parsed by main; returns the process exit code.
int Generate();

// Runs `req` (its sequence id is set here) on a new kv-store sequence through the router,
// calling `on_token` for every streamed token, and releases the sequence unless `keep`. The
// new sequence's id goes to `*sequence_id` when given. Errors say which call failed.
absl::StatusOr<v1::ExtendResult> ExtendNewSequence(
    mesh::KvStoreClient& kv, mesh::RouterClient& router, v1::ExtendRequest req,
    std::chrono::system_clock::time_point deadline, bool keep,
    const std::function<void(const v1::GeneratedToken&)>& on_token,
    uint64_t* sequence_id = nullptr);

}  // namespace arbor::cli
