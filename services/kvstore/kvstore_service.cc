#include "kvstore_service.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "arbor/common/clock.h"
#include "arbor/common/status_macros.h"
#include "arbor/mesh/kv_wire.h"
#include "arbor/rpc/metric_families.h"
#include "arbor/rpc/status.h"
#include "spdlog/spdlog.h"

namespace arbor::kvstore {
namespace {

// `options`: this kv-store's incarnation (epoch; 0: none) and shard.
absl::Status UnknownSeq(kvcache::SeqId seq, const kvcache::KvTreeOptions& options) {
  const uint16_t epoch = options.epoch;
  if (epoch != 0 && kvcache::ShardOfId(seq) != options.shard) {
    return absl::NotFoundError(
        absl::StrCat("sequence ", seq, " belongs to kv-store shard ", kvcache::ShardOfId(seq),
                     "; this is shard ", options.shard,
                     " (every client must list the shards in the same order: --kvstore)"));
  }
  if (epoch != 0 && kvcache::EpochOfId(seq) != epoch) {
    return absl::NotFoundError(absl::StrCat(
        "sequence ", seq, " is from another kv-store incarnation (epoch ", kvcache::EpochOfId(seq),
        "; this one's is ", epoch, "): its KV is gone; rebuild it from its tokens"));
  }
  return absl::NotFoundError(absl::StrCat("sequence ", seq, " unknown or released"));
}

absl::Status CheckTenantField(const std::string& tenant) {
  if (tenant.size() > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("tenant of ", tenant.size(), " bytes, at most 64"));
  }
  return absl::OkStatus();
}

// Owners are per tenant: the same tag of two tenants names two sets of sequences.
std::string OwnerKey(const std::string& tenant, const std::string& owner) {
  return absl::StrCat(tenant.size(), ":", tenant, owner);
}

}  // namespace

KvStoreService::KvStoreService(kvcache::KvTree* tree, statestore::StateStore* state,
                               const KvStoreLimits& limits, prometheus::Registry& registry)
    : tree_(tree),
      state_(state),
      limits_(limits),
      rpc_metrics_("kvstore", registry, v1::KvStore::service_full_name()),
      kv_usage_(
          rpc::Gauge(registry, "arbor_kvstore_kv_usage", "fraction of KV blocks in use, 0-1")),
      live_sequences_(
          rpc::Gauge(registry, "arbor_kvstore_live_sequences", "sequences not yet released")),
      forks_(rpc::Counter(registry, "arbor_kvstore_forks_total", "Fork calls that succeeded")),
      reused_tokens_(rpc::Counter(registry, "arbor_kvstore_prefix_reused_tokens_total",
                                  "prompt tokens served from the prefix index")),
      committed_tokens_(rpc::Counter(registry, "arbor_kvstore_committed_tokens_total",
                                     "tokens appended by Commit")),
      pool_(limits.threads) {}

KvStoreService::~KvStoreService() = default;

void KvStoreService::Record(const char* method, const absl::Status& status, double seconds) {
  rpc_metrics_.Record(method, status, seconds);
  if (!status.ok() && status.code() != absl::StatusCode::kNotFound) {
    spdlog::debug("kvstore method={} code={} error=\"{}\"", method,
                  absl::StatusCodeToString(status.code()), std::string(status.message()));
  }
}

void KvStoreService::UpdateGauges() {
  const kvcache::KvTreeStats s = tree_->stats();
  kv_usage_.Set(s.blocks_capacity > 0 ? static_cast<double>(s.blocks_in_use) / s.blocks_capacity
                                      : 0.0);
  live_sequences_.Set(s.live_sequences);
}

absl::Status KvStoreService::CheckCaller(const grpc::CallbackServerContext& ctx,
                                         const char* method) const {
  using rpc::Role;
  if (absl::EndsWith(method, "State")) return limits_.peers.Check(ctx, {Role::kPlanner}, method);
  return limits_.peers.Check(ctx, {Role::kRouter, Role::kPlanner, Role::kOperator}, method);
}

template <typename Fn>
grpc::ServerUnaryReactor* KvStoreService::Run(grpc::CallbackServerContext* ctx, const char* method,
                                              Fn fn) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  if (absl::Status st = CheckCaller(*ctx, method); !st.ok()) {
    Record(method, st, 0);
    reactor->Finish(rpc::ToGrpcStatus(st));
    return reactor;
  }
  pool_.Schedule([this, ctx, reactor, method, fn = std::move(fn)]() mutable {
    const auto t0 = std::chrono::steady_clock::now();
    absl::Status status =
        ctx->IsCancelled() ? absl::CancelledError(absl::StrCat(method, ": cancelled")) : fn();
    Record(method, status, SecondsSince(t0));
    reactor->Finish(rpc::ToGrpcStatus(status));
  });
  return reactor;
}

absl::Status KvStoreService::CheckTokens(const google::protobuf::RepeatedField<int32_t>& ids,
                                         const char* field) const {
  for (int i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= limits_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, "[", i, "] = ", ids[i], " outside the vocabulary [0, ", limits_.vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status KvStoreService::CheckOwn(kvcache::SeqId seq, const std::string& tenant) const {
  auto it = tenant_of_.find(seq);
  if (it == tenant_of_.end() || it->second != tenant) return UnknownSeq(seq, tree_->options());
  return absl::OkStatus();
}

absl::Status KvStoreService::CheckRoom(const std::string& tenant, int more) const {
  if (limits_.max_sequences_per_tenant <= 0) return absl::OkStatus();
  auto it = live_of_tenant_.find(tenant);
  const int live = it == live_of_tenant_.end() ? 0 : it->second;
  if (live + more > limits_.max_sequences_per_tenant) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "tenant \"", tenant, "\" holds ", live, " live sequences; ", more,
        " more would pass its limit (--max_sequences_per_tenant=", limits_.max_sequences_per_tenant,
        ")"));
  }
  return absl::OkStatus();
}

void KvStoreService::Adopt(kvcache::SeqId seq, const std::string& tenant,
                           const std::string& owner_key) {
  versions_[seq] = 1;
  tenant_of_[seq] = tenant;
  ++live_of_tenant_[tenant];
  if (!owner_key.empty()) {
    owner_of_[seq] = owner_key;
    owned_[owner_key].insert(seq);
  }
}

uint64_t KvStoreService::SaltOf(const std::string& tenant) const {
  return limits_.share_prefix_across_tenants ? 0 : kvcache::PrefixSalt(tenant);
}

grpc::ServerUnaryReactor* KvStoreService::CreateSequence(grpc::CallbackServerContext* ctx,
                                                         const v1::CreateSequenceRequest* req,
                                                         v1::CreateSequenceResponse* resp) {
  return Run(ctx, "CreateSequence", [this, req, resp]() -> absl::Status {
    ARBOR_RETURN_IF_ERROR(CheckTokens(req->prompt_token_ids(), "prompt_token_ids"));
    if (req->owner().size() > 256) {
      return absl::InvalidArgumentError(
          absl::StrCat("owner of ", req->owner().size(), " bytes, at most 256"));
    }
    ARBOR_RETURN_IF_ERROR(CheckTenantField(req->tenant()));
    absl::MutexLock lock(&mu_);
    ARBOR_RETURN_IF_ERROR(CheckRoom(req->tenant(), 1));
    ARBOR_ASSIGN_OR_RETURN(
        kvcache::KvTree::Created created,
        tree_->CreateSequence(
            absl::MakeConstSpan(req->prompt_token_ids().data(), req->prompt_token_ids().size()),
            SaltOf(req->tenant())));
    Adopt(created.seq, req->tenant(),
          req->owner().empty() ? "" : OwnerKey(req->tenant(), req->owner()));
    resp->set_sequence_id(created.seq);
    resp->set_reused_tokens(created.reused_tokens);
    resp->set_version(1);
    reused_tokens_.Increment(created.reused_tokens);
    UpdateGauges();
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* KvStoreService::Fork(grpc::CallbackServerContext* ctx,
                                               const v1::ForkRequest* req, v1::ForkResponse* resp) {
  return Run(ctx, "Fork", [this, req, resp]() -> absl::Status {
    if (req->n() < 1 || req->n() > tree_->options().max_fork) {
      return absl::InvalidArgumentError(
          absl::StrCat("n ", req->n(), " out of range [1, ", tree_->options().max_fork, "]"));
    }
    ARBOR_RETURN_IF_ERROR(CheckTenantField(req->tenant()));
    std::vector<kvcache::SeqId> kids(req->n());
    absl::MutexLock lock(&mu_);
    ARBOR_RETURN_IF_ERROR(CheckOwn(req->sequence_id(), req->tenant()));
    ARBOR_RETURN_IF_ERROR(CheckRoom(req->tenant(), req->n()));
    ARBOR_RETURN_IF_ERROR(tree_->Fork(req->sequence_id(), req->n(), kids.data()));
    auto it = owner_of_.find(req->sequence_id());
    const std::string owner_key = it == owner_of_.end() ? "" : it->second;
    for (kvcache::SeqId k : kids) Adopt(k, req->tenant(), owner_key);
    for (kvcache::SeqId k : kids) resp->add_sequence_ids(k);
    forks_.Increment();
    UpdateGauges();
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* KvStoreService::Release(grpc::CallbackServerContext* ctx,
                                                  const v1::ReleaseRequest* req,
                                                  v1::ReleaseResponse* resp) {
  return Run(ctx, "Release", [this, req, resp]() -> absl::Status {
    if (req->sequence_ids_size() < 1 || req->sequence_ids_size() > limits_.max_release_ids) {
      return absl::InvalidArgumentError(absl::StrCat("sequence_ids holds ",
                                                     req->sequence_ids_size(), " ids, allowed [1, ",
                                                     limits_.max_release_ids, "]"));
    }
    ARBOR_RETURN_IF_ERROR(CheckTenantField(req->tenant()));
    absl::MutexLock lock(&mu_);
    for (kvcache::SeqId id : req->sequence_ids()) {
      if (!CheckOwn(id, req->tenant()).ok() || !tree_->Release(id).ok()) {
        resp->add_unknown_ids(id);
        continue;
      }
      Disown(id);
    }
    UpdateGauges();
    return absl::OkStatus();
  });
}

void KvStoreService::Disown(kvcache::SeqId seq) {
  versions_.erase(seq);
  if (auto t = tenant_of_.find(seq); t != tenant_of_.end()) {
    if (auto n = live_of_tenant_.find(t->second); n != live_of_tenant_.end() && --n->second <= 0) {
      live_of_tenant_.erase(n);
    }
    tenant_of_.erase(t);
  }
  auto it = owner_of_.find(seq);
  if (it == owner_of_.end()) return;
  auto set = owned_.find(it->second);
  if (set != owned_.end()) {
    set->second.erase(seq);
    if (set->second.empty()) owned_.erase(set);
  }
  owner_of_.erase(it);
}

grpc::ServerUnaryReactor* KvStoreService::ReleaseOwner(grpc::CallbackServerContext* ctx,
                                                       const v1::ReleaseOwnerRequest* req,
                                                       v1::ReleaseOwnerResponse* resp) {
  return Run(ctx, "ReleaseOwner", [this, req, resp]() -> absl::Status {
    if (req->owner().empty() || req->owner().size() > 256) {
      return absl::InvalidArgumentError(
          absl::StrCat("owner of ", req->owner().size(), " bytes out of range [1, 256]"));
    }
    ARBOR_RETURN_IF_ERROR(CheckTenantField(req->tenant()));
    absl::MutexLock lock(&mu_);
    auto it = owned_.find(OwnerKey(req->tenant(), req->owner()));
    if (it == owned_.end()) return absl::OkStatus();
    const std::vector<kvcache::SeqId> seqs(it->second.begin(), it->second.end());
    int released = 0;
    for (kvcache::SeqId seq : seqs) {
      released += tree_->Release(seq).ok();
      Disown(seq);
    }
    resp->set_released(released);
    UpdateGauges();
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* KvStoreService::GetPath(grpc::CallbackServerContext* ctx,
                                                  const v1::GetPathRequest* req,
                                                  v1::GetPathResponse* resp) {
  return Run(ctx, "GetPath", [this, req, resp]() -> absl::Status {
    // Under the commit lock: path, tokens and version are one snapshot.
    ARBOR_RETURN_IF_ERROR(CheckTenantField(req->tenant()));
    absl::MutexLock lock(&mu_);
    ARBOR_RETURN_IF_ERROR(CheckOwn(req->sequence_id(), req->tenant()));
    std::vector<kvcache::PathEntry> path;
    ARBOR_RETURN_IF_ERROR(tree_->Path(req->sequence_id(), &path));
    for (const kvcache::PathEntry& e : path) {
      v1::PathSegment* s = resp->add_segments();
      s->set_segment_id(e.segment);
      s->set_start(e.start);
      s->set_length(e.length);
      s->set_frozen(e.frozen);
    }
    resp->set_length(tree_->Length(req->sequence_id()));
    if (req->include_token_ids()) {
      ARBOR_ASSIGN_OR_RETURN(std::vector<int> tokens, tree_->Tokens(req->sequence_id()));
      resp->mutable_token_ids()->Add(tokens.begin(), tokens.end());
    }
    auto it = versions_.find(req->sequence_id());
    resp->set_version(it == versions_.end() ? 0 : it->second);
    return absl::OkStatus();
  });
}

// Streams the requested segment ranges in chunks of at most read_chunk_tokens tokens.
class KvStoreService::SegmentReader : public grpc::ServerWriteReactor<v1::SegmentChunk> {
 public:
  SegmentReader(KvStoreService* service, const v1::ReadSegmentsRequest* req,
                const absl::Status& caller)
      : service_(service), req_(req), t0_(std::chrono::steady_clock::now()) {
    if (!caller.ok()) {
      Done(caller);
      return;
    }
    if (req->segments_size() < 1 || req->segments_size() > service->limits_.max_read_ranges) {
      Done(absl::InvalidArgumentError(absl::StrCat("segments holds ", req->segments_size(),
                                                   " ranges, allowed [1, ",
                                                   service->limits_.max_read_ranges, "]")));
      return;
    }
    for (int i = 0; i < req->segments_size(); ++i) {
      const auto& r = req->segments(i);
      if (r.first() < 0) {
        Done(absl::InvalidArgumentError(
            absl::StrCat("segments[", i, "].first ", r.first(), " is negative")));
        return;
      }
      if (r.length() < 1) {
        Done(absl::InvalidArgumentError(
            absl::StrCat("segments[", i, "].length ", r.length(), " is not positive")));
        return;
      }
    }
    if (absl::Status st = service->CheckReadable(*req); !st.ok()) {
      Done(st);
      return;
    }
    Next();
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Done(absl::CancelledError("ReadSegments: the client went away"));
      return;
    }
    Next();
  }
  void OnDone() override { delete this; }

 private:
  void Next() {
    while (range_ < req_->segments_size() &&
           offset_ >= req_->segments(range_).length()) {  // next range
      ++range_;
      offset_ = 0;
    }
    if (range_ == req_->segments_size()) {
      Done(absl::OkStatus());
      return;
    }
    const auto& r = req_->segments(range_);
    const int count = std::min(service_->limits_.read_chunk_tokens, r.length() - offset_);
    chunk_.Clear();
    chunk_.set_segment_id(r.segment_id());
    chunk_.set_first_token(r.first() + offset_);
    float* rows = mesh::PrepareKv(service_->tree_->layout(), count, chunk_.mutable_kv());
    const absl::Status st =
        service_->tree_->ReadSegment(r.segment_id(), r.first() + offset_, count, rows);
    if (!st.ok()) {
      Done(absl::Status(st.code(), absl::StrCat("segments[", range_, "]: ", st.message())));
      return;
    }
    offset_ += count;
    StartWrite(&chunk_);
  }
  void Done(const absl::Status& status) {
    service_->Record("ReadSegments", status, SecondsSince(t0_));
    Finish(rpc::ToGrpcStatus(status));
  }

  KvStoreService* service_;
  const v1::ReadSegmentsRequest* req_;
  std::chrono::steady_clock::time_point t0_;
  int range_ = 0, offset_ = 0;
  v1::SegmentChunk chunk_;
};

grpc::ServerWriteReactor<v1::SegmentChunk>* KvStoreService::ReadSegments(
    grpc::CallbackServerContext* ctx, const v1::ReadSegmentsRequest* req) {
  return new SegmentReader(this, req, CheckCaller(*ctx, "ReadSegments"));
}

absl::Status KvStoreService::CheckReadable(const v1::ReadSegmentsRequest& req) {
  ARBOR_RETURN_IF_ERROR(CheckTenantField(req.tenant()));
  if (req.sequence_id() == 0) {
    return absl::InvalidArgumentError("sequence_id is required (the sequence whose path is read)");
  }
  absl::MutexLock lock(&mu_);
  ARBOR_RETURN_IF_ERROR(CheckOwn(req.sequence_id(), req.tenant()));
  std::vector<kvcache::PathEntry> path;
  ARBOR_RETURN_IF_ERROR(tree_->Path(req.sequence_id(), &path));
  for (int i = 0; i < req.segments_size(); ++i) {
    const auto& r = req.segments(i);
    auto on_path = std::find_if(path.begin(), path.end(), [&](const kvcache::PathEntry& e) {
      return e.segment == r.segment_id();
    });
    if (on_path == path.end()) {
      return absl::NotFoundError(absl::StrCat("segments[", i, "]: segment ", r.segment_id(),
                                              " is not on sequence ", req.sequence_id(),
                                              "'s path"));
    }
    if (static_cast<int64_t>(r.first()) + r.length() > on_path->length) {
      return absl::OutOfRangeError(absl::StrCat(
          "segments[", i, "]: tokens [", r.first(), ", ",
          static_cast<int64_t>(r.first()) + r.length(), ") pass the ", on_path->length,
          " tokens of segment ", r.segment_id(), " on sequence ", req.sequence_id(), "'s path"));
    }
  }
  return absl::OkStatus();
}

absl::Status KvStoreService::DoCommit(const v1::CommitRequest& req, v1::CommitResponse* resp) {
  const kvcache::KvLayout& l = tree_->layout();
  const int n = req.token_ids_size();
  if (n < 1) return absl::InvalidArgumentError("token_ids is empty");
  ARBOR_RETURN_IF_ERROR(CheckTokens(req.token_ids(), "token_ids"));
  ARBOR_RETURN_IF_ERROR(CheckTenantField(req.tenant()));
  ARBOR_RETURN_IF_ERROR(mesh::CheckKv(req.kv(), l, n, "kv").status());
  ARBOR_RETURN_IF_ERROR(mesh::CheckKvFinite(req.kv(), "kv"));
  absl::MutexLock lock(&mu_);
  ARBOR_RETURN_IF_ERROR(CheckOwn(req.sequence_id(), req.tenant()));
  auto it = versions_.find(req.sequence_id());
  if (it == versions_.end()) return UnknownSeq(req.sequence_id(), tree_->options());
  if (it->second != req.expected_version()) {
    return absl::AbortedError(absl::StrCat("sequence ", req.sequence_id(), " is at version ",
                                           it->second, ", not the expected ",
                                           req.expected_version()));
  }
  // All or nothing: Append reserves room first and fails before writing anything. It copies
  // straight from the request's rows (kv_wire.h).
  ARBOR_RETURN_IF_ERROR(tree_->Append(req.sequence_id(),
                                      absl::MakeConstSpan(req.token_ids().data(), n),
                                      mesh::KvRowBytes(req.kv())));
  resp->set_version(++it->second);
  resp->set_length(tree_->Length(req.sequence_id()));
  committed_tokens_.Increment(n);
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* KvStoreService::Commit(grpc::CallbackServerContext* ctx,
                                                 const v1::CommitRequest* req,
                                                 v1::CommitResponse* resp) {
  return Run(ctx, "Commit", [this, req, resp]() -> absl::Status {
    const absl::Status st = DoCommit(*req, resp);
    UpdateGauges();
    return st;
  });
}

grpc::ServerUnaryReactor* KvStoreService::Stats(grpc::CallbackServerContext* ctx,
                                                const v1::StatsRequest*, v1::StatsResponse* resp) {
  return Run(ctx, "Stats", [this, resp]() -> absl::Status {
    const kvcache::KvTreeStats s = tree_->stats();
    resp->set_blocks_in_use(s.blocks_in_use);
    resp->set_blocks_capacity(s.blocks_capacity);
    resp->set_kv_usage(
        s.blocks_capacity > 0 ? static_cast<double>(s.blocks_in_use) / s.blocks_capacity : 0.0);
    resp->set_live_sequences(s.live_sequences);
    resp->set_epoch(tree_->options().epoch);
    resp->set_shard(tree_->options().shard);
    resp->set_segments(s.segments);
    resp->set_cached_segments(s.cached_segments);
    resp->set_forks(s.forks);
    resp->set_prefix_hits(s.prefix_hits);
    resp->set_reused_tokens(s.reused_tokens);
    resp->set_evicted_segments(s.evicted_segments);
    return absl::OkStatus();
  });
}

absl::StatusOr<int64_t> KvStoreService::WriteState(
    const std::string& key, const std::string& tenant, size_t value_bytes,
    const std::function<absl::StatusOr<int64_t>()>& write) {
  ARBOR_RETURN_IF_ERROR(CheckTenantField(tenant));
  const int64_t limit = limits_.max_state_bytes_per_tenant;
  if (limit <= 0) return write();
  absl::MutexLock lock(&state_mu_);
  const auto old = state_sizes_.find(key);
  const int64_t held = state_bytes_of_tenant_[tenant];
  const int64_t freed =
      old != state_sizes_.end() && old->second.first == tenant ? old->second.second : 0;
  const int64_t bytes = static_cast<int64_t>(value_bytes);
  if (held - freed + bytes > limit) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "tenant \"", tenant, "\" holds ", held, " bytes of state; ", bytes, " more at ", key,
        " would pass its limit (--max_state_bytes_per_tenant=", limit, ")"));
  }
  ARBOR_ASSIGN_OR_RETURN(int64_t version, write());
  if (old != state_sizes_.end()) state_bytes_of_tenant_[old->second.first] -= old->second.second;
  state_bytes_of_tenant_[tenant] += bytes;
  state_sizes_[key] = {tenant, bytes};
  return version;
}

grpc::ServerUnaryReactor* KvStoreService::PutState(grpc::CallbackServerContext* ctx,
                                                   const v1::PutStateRequest* req,
                                                   v1::PutStateResponse* resp) {
  return Run(ctx, "PutState", [this, req, resp]() -> absl::Status {
    ARBOR_ASSIGN_OR_RETURN(int64_t version,
                           WriteState(req->key(), req->tenant(), req->value().size(),
                                      [&] { return state_->Put(req->key(), req->value()); }));
    resp->set_version(version);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* KvStoreService::GetState(grpc::CallbackServerContext* ctx,
                                                   const v1::GetStateRequest* req,
                                                   v1::GetStateResponse* resp) {
  return Run(ctx, "GetState", [this, req, resp]() -> absl::Status {
    ARBOR_ASSIGN_OR_RETURN(statestore::VersionedValue v, state_->Get(req->key()));
    resp->set_value(std::move(v.value));
    resp->set_version(v.version);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* KvStoreService::DeleteState(grpc::CallbackServerContext* ctx,
                                                      const v1::DeleteStateRequest* req,
                                                      v1::DeleteStateResponse*) {
  return Run(ctx, "DeleteState", [this, req]() -> absl::Status {
    if (limits_.max_state_bytes_per_tenant <= 0) return state_->Delete(req->key());
    absl::MutexLock lock(&state_mu_);
    ARBOR_RETURN_IF_ERROR(state_->Delete(req->key()));
    if (auto it = state_sizes_.find(req->key()); it != state_sizes_.end()) {
      state_bytes_of_tenant_[it->second.first] -= it->second.second;
      state_sizes_.erase(it);
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* KvStoreService::CompareAndSetState(
    grpc::CallbackServerContext* ctx, const v1::CompareAndSetStateRequest* req,
    v1::CompareAndSetStateResponse* resp) {
  return Run(ctx, "CompareAndSetState", [this, req, resp]() -> absl::Status {
    ARBOR_ASSIGN_OR_RETURN(
        int64_t version, WriteState(req->key(), req->tenant(), req->value().size(), [&] {
          return state_->CompareAndSet(req->key(), req->expected_version(), req->value());
        }));
    resp->set_version(version);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* KvStoreService::ListState(grpc::CallbackServerContext* ctx,
                                                    const v1::ListStateRequest* req,
                                                    v1::ListStateResponse* resp) {
  return Run(ctx, "ListState", [this, req, resp]() -> absl::Status {
    if (req->limit() < 1 || req->limit() > limits_.max_list_keys) {
      return absl::InvalidArgumentError(
          absl::StrCat("limit ", req->limit(), " out of range [1, ", limits_.max_list_keys, "]"));
    }
    ARBOR_ASSIGN_OR_RETURN(auto keys,
                           state_->ListKeys(req->prefix(), req->limit(), req->start_after()));
    for (auto& k : keys) resp->add_keys(std::move(k));
    return absl::OkStatus();
  });
}

}  // namespace arbor::kvstore
