// What one Extend carries through the router's pipeline (router_service.h): the request, the
// kv-store path it extends, its place in the router's KV cache and generator, and what it will
// commit. Private to the router service.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <vector>

#include "arbor/engine/engine.h"
#include "arbor/engine/generator.h"
#include "arbor/rpc/event_stream.h"
#include "arbor/v1/kvstore.pb.h"
#include "arbor/v1/router.pb.h"
#include "router_service.h"

namespace arbor::router {

// Everything one Extend carries through its stages. Fields up to `stream` are set by the gRPC
// handler; the rest belong to whichever stage holds the job (one at a time).
struct RouterService::Job {
  uint64_t id = 0;
  uint64_t seq = 0;
  v1::ExtendRequest request;
  engine::GenerationParams params;
  std::chrono::system_clock::time_point client_deadline;
  std::chrono::steady_clock::time_point t0;
  std::chrono::steady_clock::time_point last_token;  // when the last tokens were sent
  std::shared_ptr<rpc::EventStream<v1::ExtendEvent>> stream;
  std::atomic<bool> cancelled{false};
  std::atomic<bool> ended{false};

  std::vector<int> input;    // tokens to append
  std::vector<int> context;  // path tokens + input
  std::vector<v1::PathSegment> path;
  int path_len = 0;
  uint64_t version = 0;
  engine::SeqId local = 0;
  int reserved_blocks = 0;           // KV blocks held against the router's cache
  bool admitted = false;             // holds reserved_blocks
  int cached = 0;                    // context tokens found in the local cache
  int fetch_from = 0, fetch_to = 0;  // context positions whose KV comes from the kv-store
  std::vector<float> fetched;
  int gen_id = -1;
  size_t sent_tokens = 0, sent_bytes = 0;
  v1::CommitRequest commit;
  v1::ExtendResult result;
};

}  // namespace arbor::router
