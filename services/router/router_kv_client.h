// The router's side of the kv-store: a sequence's path (tokens, segments, version) in one
// snapshot, the KV of a range of its positions fetched from the segments that hold them (every
// streamed chunk checked), and the commit of an Extend's new tokens with their KV. The range
// split and the commit's assembly are pure functions, tested alone. Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "arbor/kvcache/kv_tree.h"
#include "arbor/mesh/kv_wire.h"
#include "arbor/mesh/kvstore_client.h"

namespace arbor::router {

using mesh::Deadline;

// A kv-store sequence as GetPath saw it.
struct KvPath {
  std::vector<v1::PathSegment> segments;
  std::vector<int> tokens;  // [length]
  int length = 0;
  uint64_t version = 0;
};

// One ReadSegments range: `length` tokens of segment `segment_id` from its token `first`;
// `position` is the path position of that first token.
struct FetchRange {
  uint64_t segment_id = 0;
  int first = 0, length = 0, position = 0;
};

// The ranges of `segments` that hold path positions [from, to), in path order (a range may start
// and end inside a segment).
std::vector<FetchRange> SplitFetch(const std::vector<v1::PathSegment>& segments, int from, int to);

// The Commit of `tokens` (the sequence's new tokens, appended after its `version`), their KV
// ([tokens, layers, 2, kv_heads, head_dim], f32) written by `read_kv` into the request.
absl::StatusOr<v1::CommitRequest> AssembleCommit(
    uint64_t seq, uint64_t version, const std::vector<int>& tokens, const kvcache::KvLayout& layout,
    const std::function<absl::Status(float* kv)>& read_kv);

class RouterKvClient {
 public:
  // The kv-store's shards, in shard order (mesh::KvStoreShards): each call goes to the shard of
  // its sequence. Every call is bounded by the Extend's deadline and `timeout`.
  RouterKvClient(std::vector<std::shared_ptr<grpc::Channel>> shards,
                 std::chrono::milliseconds timeout);

  // The path of `tenant`'s sequence `seq` with its token ids. The kv-store's status, with
  // context, on failure; INTERNAL when its answer is inconsistent.
  absl::StatusOr<KvPath> GetPath(uint64_t seq, const std::string& tenant, Deadline deadline);
  // The KV of positions [from, to) of the path `segments` of `tenant`'s sequence `seq` into
  // `out` ([to - from, layout.token_floats()]). INTERNAL naming the segment and token of a chunk
  // that is not what was asked for.
  absl::Status Fetch(uint64_t seq, const std::string& tenant,
                     const std::vector<v1::PathSegment>& segments, int from, int to,
                     const kvcache::KvLayout& layout, Deadline deadline, float* out);
  // Returns the sequence's new version. ABORTED when someone else extended it meanwhile.
  absl::StatusOr<uint64_t> Commit(const v1::CommitRequest& req, Deadline deadline);

 private:
  mesh::KvStoreShards kv_;
};

}  // namespace arbor::router
