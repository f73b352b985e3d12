// The kv-store's typed client: the KV tree's calls and the state store's, each bounded by the
// caller's deadline and this client's timeout, the idempotent ones (reads, releases, deletes)
// retried while the kv-store is UNAVAILABLE, every error naming the call and its object. Not
// retried: CreateSequence and Fork (a lost answer would leak sequences), Commit (versioned: a
// repeat after success is ABORTED), PutState and CompareAndSetState. Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "arbor/mesh/call.h"
#include "arbor/v1/kvstore.grpc.pb.h"

namespace arbor::mesh {

class KvStoreClient {
 public:
  explicit KvStoreClient(std::shared_ptr<grpc::Channel> channel, ClientOptions options = {});

  // `tenant` (kvstore.proto): the tenant a call acts for; a sequence of another is NOT_FOUND.
  // Requests passed whole (CreateSequence, ReadSegments, Commit) carry it in their field.
  absl::StatusOr<v1::CreateSequenceResponse> CreateSequence(const v1::CreateSequenceRequest& req,
                                                            Deadline deadline);
  // The children's sequence ids.
  absl::StatusOr<std::vector<uint64_t>> Fork(uint64_t seq, int n, Deadline deadline,
                                             const std::string& tenant = "");
  // Unknown ids are ignored. Sent in batches of at most 1024.
  absl::Status Release(const std::vector<uint64_t>& seqs, Deadline deadline,
                       const std::string& tenant = "");
  // Waits for a kv-store still starting (to the deadline). Returns how many were released.
  absl::StatusOr<int> ReleaseOwner(const std::string& owner, Deadline deadline,
                                   const std::string& tenant = "");
  absl::StatusOr<v1::GetPathResponse> GetPath(uint64_t seq, bool token_ids, Deadline deadline,
                                              const std::string& tenant = "");
  // Streams the ranges' KV; `on_chunk` may stop the stream by returning an error (returned).
  absl::Status ReadSegments(const v1::ReadSegmentsRequest& req, Deadline deadline,
                            const std::function<absl::Status(const v1::SegmentChunk&)>& on_chunk);
  // The sequence's new version. ABORTED when it moved past `req.expected_version()`.
  absl::StatusOr<uint64_t> Commit(const v1::CommitRequest& req, Deadline deadline);
  absl::StatusOr<v1::StatsResponse> Stats(Deadline deadline);

  // The state store. Versions as in statestore::StateStore. A value is kept for `tenant` ("" =
  // the caller's own), whose bytes the kv-store may bound.
  absl::StatusOr<int64_t> PutState(const std::string& key, const std::string& value,
                                   Deadline deadline, const std::string& tenant = "");
  absl::StatusOr<v1::GetStateResponse> GetState(const std::string& key, Deadline deadline);
  absl::Status DeleteState(const std::string& key, Deadline deadline);
  absl::StatusOr<int64_t> CompareAndSetState(const std::string& key, int64_t expected_version,
                                             const std::string& value, Deadline deadline,
                                             const std::string& tenant = "");
  absl::StatusOr<std::vector<std::string>> ListState(const std::string& prefix, int limit,
                                                     Deadline deadline,
                                                     const std::string& start_after = "");

 private:
  std::unique_ptr<v1::KvStore::Stub> stub_;
  CallPolicy policy_;
};

// The shard bits of a kv-store id (KvTreeOptions::shard: bits 40-47).
inline int ShardOfSequence(uint64_t id) { return static_cast<int>((id >> 40) & 0xff); }

// The kv-store as its shards: shard i is the i-th of the list every router and planner is given
// (--kvstore A,B,...). A task's sequences live on one shard, chosen by rendezvous hashing on its
// key (adding a shard moves about 1/N of the tasks); every id a shard hands out carries the
// shard, so a call about a sequence goes where it lives. With one shard, every call goes to it.
// Thread-safe.
class KvStoreShards {
 public:
  KvStoreShards(std::vector<std::shared_ptr<grpc::Channel>> channels, ClientOptions options = {});

  size_t size() const { return shards_.size(); }
  KvStoreClient& shard(size_t i) { return *shards_[i]; }
  // The shard that holds the sequences of `key` (a task's owner key).
  size_t ShardForKey(std::string_view key) const;
  KvStoreClient& ForKey(std::string_view key) { return *shards_[ShardForKey(key)]; }
  // The shard of sequence `id`: NOT_FOUND naming it when the id names a shard past the list.
  absl::StatusOr<KvStoreClient*> ForSequence(uint64_t id);

 private:
  std::vector<std::unique_ptr<KvStoreClient>> shards_;
};

}  // namespace arbor::mesh
