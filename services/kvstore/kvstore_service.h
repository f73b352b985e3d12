// The kv-store service: the KV tree (create with prefix reuse, O(1) fork, release, paths,
// streamed reads of segment KV, atomic versioned commits) and the planner's state store, over
// gRPC. A thin shell: validation and status mapping here, the work in libs/kvcache and
// libs/statestore. Handlers run on an owned thread pool, never on gRPC's callback threads.
//
// Tenants (kvstore.proto): every sequence records the tenant that created it; a call naming
// another tenant finds nothing (NOT_FOUND, the same words as an unknown id). Prompt prefixes
// are reused within a tenant only (the tree's prefix salt), unless limits say to share them.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "arbor/common/thread_pool.h"
#include "arbor/kvcache/kv_tree.h"
#include "arbor/rpc/rpc_metrics.h"
#include "arbor/rpc/tls.h"
#include "arbor/statestore/state_store.h"
#include "arbor/v1/kvstore.grpc.pb.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace arbor::kvstore {

struct KvStoreLimits {
  int vocab_size = 32000;       // token ids must lie in [0, vocab_size)
  int max_release_ids = 1024;   // ids in one Release
  int max_read_ranges = 1024;   // ranges in one ReadSegments
  int read_chunk_tokens = 256;  // tokens per streamed SegmentChunk
  int max_list_keys = 10000;    // ListState limit
  int threads = 4;              // handler pool
  // Live sequences one tenant may hold at once; 0 = no limit beyond the KV pool.
  int max_sequences_per_tenant = 0;
  // Bytes of state-store values one tenant may hold (PutState/CompareAndSetState's tenant);
  // 0 = no limit. Counted since this process started (see docs/SECURITY.md).
  int64_t max_state_bytes_per_tenant = 0;
  // Reuse prompt prefixes across tenants (a single-tenant deployment): one salt for all.
  bool share_prefix_across_tenants = false;
  // With mTLS, who may call (tls.h): KV and Stats routers, planners and operators, the state
  // store planners only.
  rpc::PeerRoles peers;
};

class KvStoreService final : public arbor::v1::KvStore::CallbackService {
 public:
  // `tree` and `state` must outlive the service; metrics go to `registry`.
  KvStoreService(kvcache::KvTree* tree, statestore::StateStore* state, const KvStoreLimits& limits,
                 prometheus::Registry& registry);
  ~KvStoreService() override;

  grpc::ServerUnaryReactor* CreateSequence(grpc::CallbackServerContext* ctx,
                                           const v1::CreateSequenceRequest* req,
                                           v1::CreateSequenceResponse* resp) override;
  grpc::ServerUnaryReactor* Fork(grpc::CallbackServerContext* ctx, const v1::ForkRequest* req,
                                 v1::ForkResponse* resp) override;
  grpc::ServerUnaryReactor* Release(grpc::CallbackServerContext* ctx, const v1::ReleaseRequest* req,
                                    v1::ReleaseResponse* resp) override;
  grpc::ServerUnaryReactor* ReleaseOwner(grpc::CallbackServerContext* ctx,
                                         const v1::ReleaseOwnerRequest* req,
                                         v1::ReleaseOwnerResponse* resp) override;
  grpc::ServerUnaryReactor* GetPath(grpc::CallbackServerContext* ctx, const v1::GetPathRequest* req,
                                    v1::GetPathResponse* resp) override;
  grpc::ServerWriteReactor<v1::SegmentChunk>* ReadSegments(
      grpc::CallbackServerContext* ctx, const v1::ReadSegmentsRequest* req) override;
  grpc::ServerUnaryReactor* Commit(grpc::CallbackServerContext* ctx, const v1::CommitRequest* req,
                                   v1::CommitResponse* resp) override;
  grpc::ServerUnaryReactor* Stats(grpc::CallbackServerContext* ctx, const v1::StatsRequest* req,
                                  v1::StatsResponse* resp) override;
  grpc::ServerUnaryReactor* PutState(grpc::CallbackServerContext* ctx,
                                     const v1::PutStateRequest* req,
                                     v1::PutStateResponse* resp) override;
  grpc::ServerUnaryReactor* GetState(grpc::CallbackServerContext* ctx,
                                     const v1::GetStateRequest* req,
                                     v1::GetStateResponse* resp) override;
  grpc::ServerUnaryReactor* DeleteState(grpc::CallbackServerContext* ctx,
                                        const v1::DeleteStateRequest* req,
                                        v1::DeleteStateResponse* resp) override;
  grpc::ServerUnaryReactor* CompareAndSetState(grpc::CallbackServerContext* ctx,
                                               const v1::CompareAndSetStateRequest* req,
                                               v1::CompareAndSetStateResponse* resp) override;
  grpc::ServerUnaryReactor* ListState(grpc::CallbackServerContext* ctx,
                                      const v1::ListStateRequest* req,
                                      v1::ListStateResponse* resp) override;

 private:
  class SegmentReader;
  // Runs `fn` (returning absl::Status) on the pool, then finishes the call with its status and
  // records the request's metrics.
  template <typename Fn>
  grpc::ServerUnaryReactor* Run(grpc::CallbackServerContext* ctx, const char* method, Fn fn);
  void Record(const char* method, const absl::Status& status, double seconds);
  // OK when the caller's certificate role may call `method`.
  absl::Status CheckCaller(const grpc::CallbackServerContext& ctx, const char* method) const;
  void UpdateGauges();

  absl::Status DoCommit(const v1::CommitRequest& req, v1::CommitResponse* resp);
  // OK when every range of `req` lies on its sequence's path and the sequence is its tenant's.
  absl::Status CheckReadable(const v1::ReadSegmentsRequest& req);
  absl::Status CheckTokens(const google::protobuf::RepeatedField<int32_t>& ids,
                           const char* field) const;
  // OK when `seq` is live and `tenant`'s; NOT_FOUND otherwise, in the same words either way.
  absl::Status CheckOwn(kvcache::SeqId seq, const std::string& tenant) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // RESOURCE_EXHAUSTED when `tenant` cannot hold `more` more live sequences.
  absl::Status CheckRoom(const std::string& tenant, int more) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void Adopt(kvcache::SeqId seq, const std::string& tenant, const std::string& owner_key)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t SaltOf(const std::string& tenant) const;

  kvcache::KvTree* tree_;
  statestore::StateStore* state_;
  const KvStoreLimits limits_;

  // Per-sequence versions: 1 when created, +1 per commit. Commits hold mu_ from the version
  // check to the new version, so they are atomic per sequence.
  absl::Mutex mu_;
  absl::flat_hash_map<kvcache::SeqId, uint64_t> versions_ ABSL_GUARDED_BY(mu_);
  // The tenant of every live sequence, and how many each tenant holds.
  absl::flat_hash_map<kvcache::SeqId, std::string> tenant_of_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, int> live_of_tenant_ ABSL_GUARDED_BY(mu_);
  // Owner tags, per tenant (OwnerKey): sequence -> owner key, owner key -> its live sequences.
  absl::flat_hash_map<kvcache::SeqId, std::string> owner_of_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, absl::flat_hash_set<kvcache::SeqId>> owned_ ABSL_GUARDED_BY(mu_);
  // Forgets a released sequence: its version, tenant and owner.
  void Disown(kvcache::SeqId seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // State writes with --max_state_bytes_per_tenant: `write` (the store's Put or CompareAndSet)
  // runs under state_mu_ once the tenant's bytes, with `value_bytes` at `key` in place of what
  // the key held, are within the limit; the counts follow what was written.
  absl::StatusOr<int64_t> WriteState(const std::string& key, const std::string& tenant,
                                     size_t value_bytes,
                                     const std::function<absl::StatusOr<int64_t>()>& write);
  absl::Mutex state_mu_;
  // Every key written since start: its tenant and value bytes; and bytes per tenant.
  absl::flat_hash_map<std::string, std::pair<std::string, int64_t>> state_sizes_
      ABSL_GUARDED_BY(state_mu_);
  absl::flat_hash_map<std::string, int64_t> state_bytes_of_tenant_ ABSL_GUARDED_BY(state_mu_);

  rpc::RpcMetrics rpc_metrics_;
  prometheus::Gauge& kv_usage_;
  prometheus::Gauge& live_sequences_;
  prometheus::Counter& forks_;
  prometheus::Counter& reused_tokens_;
  prometheus::Counter& committed_tokens_;

  ThreadPool pool_;  // last: destroyed (drained) first
};

}  // namespace arbor::kvstore
