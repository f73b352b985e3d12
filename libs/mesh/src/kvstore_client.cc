#include "arbor/mesh/kvstore_client.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "arbor/common/rendezvous.h"
#include "arbor/common/status_macros.h"

namespace arbor::mesh {

KvStoreClient::KvStoreClient(std::shared_ptr<grpc::Channel> channel, ClientOptions options)
    : stub_(v1::KvStore::NewStub(std::move(channel))), policy_(options) {}

absl::StatusOr<v1::CreateSequenceResponse> KvStoreClient::CreateSequence(
    const v1::CreateSequenceRequest& req, Deadline deadline) {
  return policy_.Call<v1::CreateSequenceResponse>(
      Repeat::kNo, deadline, "kv-store CreateSequence",
      [&](grpc::ClientContext& ctx, auto* resp) { return stub_->CreateSequence(&ctx, req, resp); });
}

absl::StatusOr<std::vector<uint64_t>> KvStoreClient::Fork(uint64_t seq, int n, Deadline deadline,
                                                          const std::string& tenant) {
  v1::ForkRequest req;
  req.set_tenant(tenant);
  req.set_sequence_id(seq);
  req.set_n(n);
  ARBOR_ASSIGN_OR_RETURN(
      const v1::ForkResponse resp,
      policy_.Call<v1::ForkResponse>(
          Repeat::kNo, deadline, absl::StrCat("kv-store Fork of ", seq),
          [&](grpc::ClientContext& ctx, auto* resp) { return stub_->Fork(&ctx, req, resp); }));
  return std::vector<uint64_t>(resp.sequence_ids().begin(), resp.sequence_ids().end());
}

absl::Status KvStoreClient::Release(const std::vector<uint64_t>& seqs, Deadline deadline,
                                    const std::string& tenant) {
  for (size_t i = 0; i < seqs.size(); i += 1024) {
    v1::ReleaseRequest req;
    req.set_tenant(tenant);
    for (size_t j = i; j < std::min(seqs.size(), i + 1024); ++j) req.add_sequence_ids(seqs[j]);
    ARBOR_RETURN_IF_ERROR(
        policy_
            .Call<v1::ReleaseResponse>(
                Repeat::kIdempotent, deadline,
                absl::StrCat("kv-store Release of ", req.sequence_ids_size(), " sequences"),
                [&](grpc::ClientContext& ctx, auto* resp) {
                  return stub_->Release(&ctx, req, resp);
                })
            .status());
  }
  return absl::OkStatus();
}

absl::StatusOr<int> KvStoreClient::ReleaseOwner(const std::string& owner, Deadline deadline,
                                                const std::string& tenant) {
  v1::ReleaseOwnerRequest req;
  req.set_tenant(tenant);
  req.set_owner(owner);
  ARBOR_ASSIGN_OR_RETURN(
      const v1::ReleaseOwnerResponse resp,
      policy_.Call<v1::ReleaseOwnerResponse>(
          Repeat::kIdempotent, deadline, absl::StrCat("kv-store ReleaseOwner of \"", owner, "\""),
          [&](grpc::ClientContext& ctx, auto* resp) {
            return stub_->ReleaseOwner(&ctx, req, resp);
          },
          /*wait_for_ready=*/true));
  return resp.released();
}

absl::StatusOr<v1::GetPathResponse> KvStoreClient::GetPath(uint64_t seq, bool token_ids,
                                                           Deadline deadline,
                                                           const std::string& tenant) {
  v1::GetPathRequest req;
  req.set_tenant(tenant);
  req.set_sequence_id(seq);
  req.set_include_token_ids(token_ids);
  return policy_.Call<v1::GetPathResponse>(
      Repeat::kIdempotent, deadline, "kv-store GetPath",
      [&](grpc::ClientContext& ctx, auto* resp) { return stub_->GetPath(&ctx, req, resp); });
}

absl::Status KvStoreClient::ReadSegments(
    const v1::ReadSegmentsRequest& req, Deadline deadline,
    const std::function<absl::Status(const v1::SegmentChunk&)>& on_chunk) {
  absl::Status stopped;
  absl::Status st = policy_.Stream<v1::SegmentChunk>(
      deadline, "kv-store ReadSegments",
      [&](grpc::ClientContext& ctx) { return stub_->ReadSegments(&ctx, req); },
      [&](const v1::SegmentChunk& chunk) {
        stopped = on_chunk(chunk);
        return stopped.ok();
      });
  return stopped.ok() ? st : stopped;
}

absl::StatusOr<uint64_t> KvStoreClient::Commit(const v1::CommitRequest& req, Deadline deadline) {
  ARBOR_ASSIGN_OR_RETURN(
      const v1::CommitResponse resp,
      policy_.Call<v1::CommitResponse>(
          Repeat::kNo, deadline, "kv-store Commit",
          [&](grpc::ClientContext& ctx, auto* resp) { return stub_->Commit(&ctx, req, resp); }));
  return resp.version();
}

absl::StatusOr<v1::StatsResponse> KvStoreClient::Stats(Deadline deadline) {
  return policy_.Call<v1::StatsResponse>(Repeat::kIdempotent, deadline, "kv-store Stats",
                                         [&](grpc::ClientContext& ctx, auto* resp) {
                                           return stub_->Stats(&ctx, v1::StatsRequest(), resp);
                                         });
}

absl::StatusOr<int64_t> KvStoreClient::PutState(const std::string& key, const std::string& value,
                                                Deadline deadline, const std::string& tenant) {
  v1::PutStateRequest req;
  req.set_key(key);
  req.set_value(value);
  req.set_tenant(tenant);
  ARBOR_ASSIGN_OR_RETURN(
      const v1::PutStateResponse resp,
      policy_.Call<v1::PutStateResponse>(
          Repeat::kNo, deadline, absl::StrCat("kv-store PutState of ", key),
          [&](grpc::ClientContext& ctx, auto* resp) { return stub_->PutState(&ctx, req, resp); }));
  return resp.version();
}

absl::StatusOr<v1::GetStateResponse> KvStoreClient::GetState(const std::string& key,
                                                             Deadline deadline) {
  v1::GetStateRequest req;
  req.set_key(key);
  return policy_.Call<v1::GetStateResponse>(
      Repeat::kIdempotent, deadline, absl::StrCat("kv-store GetState of ", key),
      [&](grpc::ClientContext& ctx, auto* resp) { return stub_->GetState(&ctx, req, resp); });
}

absl::Status KvStoreClient::DeleteState(const std::string& key, Deadline deadline) {
  v1::DeleteStateRequest req;
  req.set_key(key);
  return policy_
      .Call<v1::DeleteStateResponse>(
          Repeat::kIdempotent, deadline, absl::StrCat("kv-store DeleteState of ", key),
          [&](grpc::ClientContext& ctx, auto* resp) { return stub_->DeleteState(&ctx, req, resp); })
      .status();
}

absl::StatusOr<int64_t> KvStoreClient::CompareAndSetState(const std::string& key,
                                                          int64_t expected_version,
                                                          const std::string& value,
                                                          Deadline deadline,
                                                          const std::string& tenant) {
  v1::CompareAndSetStateRequest req;
  req.set_key(key);
  req.set_expected_version(expected_version);
  req.set_value(value);
  req.set_tenant(tenant);
  ARBOR_ASSIGN_OR_RETURN(
      const v1::CompareAndSetStateResponse resp,
      policy_.Call<v1::CompareAndSetStateResponse>(
          Repeat::kNo, deadline, absl::StrCat("kv-store CompareAndSetState of ", key),
          [&](grpc::ClientContext& ctx, auto* resp) {
            return stub_->CompareAndSetState(&ctx, req, resp);
          }));
  return resp.version();
}

absl::StatusOr<std::vector<std::string>> KvStoreClient::ListState(const std::string& prefix,
                                                                  int limit, Deadline deadline,
                                                                  const std::string& start_after) {
  v1::ListStateRequest req;
  req.set_start_after(start_after);
  req.set_prefix(prefix);
  req.set_limit(limit);
  ARBOR_ASSIGN_OR_RETURN(
      const v1::ListStateResponse resp,
      policy_.Call<v1::ListStateResponse>(
          Repeat::kIdempotent, deadline, absl::StrCat("kv-store ListState of ", prefix),
          [&](grpc::ClientContext& ctx, auto* resp) { return stub_->ListState(&ctx, req, resp); }));
  return std::vector<std::string>(resp.keys().begin(), resp.keys().end());
}

KvStoreShards::KvStoreShards(std::vector<std::shared_ptr<grpc::Channel>> channels,
                             ClientOptions options) {
  for (auto& channel : channels) {
    shards_.push_back(std::make_unique<KvStoreClient>(std::move(channel), options));
  }
}

size_t KvStoreShards::ShardForKey(std::string_view key) const {
  return shards_.size() == 1 ? 0 : RendezvousOrder(key, shards_.size())[0];
}

absl::StatusOr<KvStoreClient*> KvStoreShards::ForSequence(uint64_t id) {
  if (shards_.size() == 1) return shards_[0].get();
  const size_t shard = static_cast<size_t>(ShardOfSequence(id));
  if (shard >= shards_.size()) {
    return absl::NotFoundError(absl::StrCat("sequence ", id, " belongs to kv-store shard ", shard,
                                            ", past the ", shards_.size(), " shards listed"));
  }
  return shards_[shard].get();
}

}  // namespace arbor::mesh
