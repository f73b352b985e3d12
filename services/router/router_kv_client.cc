#include "router_kv_client.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "arbor/common/status_macros.h"

namespace arbor::router {

std::vector<FetchRange> SplitFetch(const std::vector<v1::PathSegment>& segments, int from, int to) {
  std::vector<FetchRange> ranges;
  for (const v1::PathSegment& s : segments) {
    const int lo = std::max(from, s.start()), hi = std::min(to, s.start() + s.length());
    if (lo >= hi) continue;
    ranges.push_back(
        {.segment_id = s.segment_id(), .first = lo - s.start(), .length = hi - lo, .position = lo});
  }
  return ranges;
}

absl::StatusOr<v1::CommitRequest> AssembleCommit(
    uint64_t seq, uint64_t version, const std::vector<int>& tokens, const kvcache::KvLayout& layout,
    const std::function<absl::Status(float* kv)>& read_kv) {
  v1::CommitRequest commit;
  commit.set_sequence_id(seq);
  commit.set_expected_version(version);
  commit.mutable_token_ids()->Add(tokens.begin(), tokens.end());
  const int count = static_cast<int>(tokens.size());
  if (count == 0) return commit;
  absl::Status st = read_kv(mesh::PrepareKv(layout, count, commit.mutable_kv()));
  if (!st.ok()) return st;
  return commit;
}

RouterKvClient::RouterKvClient(std::vector<std::shared_ptr<grpc::Channel>> shards,
                               std::chrono::milliseconds timeout)
    : kv_(std::move(shards), {.timeout = timeout}) {}

absl::StatusOr<KvPath> RouterKvClient::GetPath(uint64_t seq, const std::string& tenant,
                                               Deadline deadline) {
  ARBOR_ASSIGN_OR_RETURN(mesh::KvStoreClient * kv, kv_.ForSequence(seq));
  absl::StatusOr<v1::GetPathResponse> resp = kv->GetPath(seq, /*token_ids=*/true, deadline, tenant);
  if (!resp.ok()) return resp.status();
  KvPath path;
  path.segments.assign(resp->segments().begin(), resp->segments().end());
  path.length = resp->length();
  path.version = resp->version();
  path.tokens.assign(resp->token_ids().begin(), resp->token_ids().end());
  if (static_cast<int>(path.tokens.size()) != path.length) {
    return absl::InternalError(absl::StrCat("kv-store GetPath returned ", path.tokens.size(),
                                            " token ids for a path of length ", path.length));
  }
  return path;
}

absl::Status RouterKvClient::Fetch(uint64_t seq, const std::string& tenant,
                                   const std::vector<v1::PathSegment>& segments, int from, int to,
                                   const kvcache::KvLayout& layout, Deadline deadline, float* out) {
  const size_t row = layout.token_floats();
  const std::vector<FetchRange> ranges = SplitFetch(segments, from, to);
  v1::ReadSegmentsRequest req;
  req.set_sequence_id(seq);
  req.set_tenant(tenant);
  for (const FetchRange& f : ranges) {
    v1::ReadSegmentsRequest::Range* r = req.add_segments();
    r->set_segment_id(f.segment_id);
    r->set_first(f.first);
    r->set_length(f.length);
  }
  ARBOR_ASSIGN_OR_RETURN(mesh::KvStoreClient * kv, kv_.ForSequence(seq));
  int received = 0;
  size_t range = 0;
  absl::Status st = kv->ReadSegments(req, deadline, [&](const v1::SegmentChunk& chunk) {
    while (range < ranges.size() && ranges[range].segment_id != chunk.segment_id()) ++range;
    const absl::StatusOr<int> n = mesh::CheckKv(chunk.kv(), layout, -1, "kv");
    // chunk.first_token() counts from the segment's start.
    const int pos = range < ranges.size()
                        ? ranges[range].position - ranges[range].first + chunk.first_token()
                        : -1;
    if (range == ranges.size() || !n.ok() || pos < from || pos + *n > to) {
      return absl::InternalError(absl::StrCat(
          "kv-store sent a malformed chunk of segment ", chunk.segment_id(), " at token ",
          chunk.first_token(), n.ok() ? "" : ": ", n.ok() ? "" : n.status().message()));
    }
    mesh::CopyKvRows(chunk.kv(), out + (pos - from) * row);
    received += *n;
    return absl::OkStatus();
  });
  if (st.ok() && received != to - from) {
    st = absl::InternalError(
        absl::StrCat("kv-store sent ", received, " tokens of KV, not ", to - from));
  }
  return st;
}

absl::StatusOr<uint64_t> RouterKvClient::Commit(const v1::CommitRequest& req, Deadline deadline) {
  ARBOR_ASSIGN_OR_RETURN(mesh::KvStoreClient * kv, kv_.ForSequence(req.sequence_id()));
  return kv->Commit(req, deadline);
}

}  // namespace arbor::router
