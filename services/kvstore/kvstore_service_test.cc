// The kv-store over real gRPC on loopback: the KV tree's operations, atomic versioned commits,
// streamed segment reads, bad input that names the field while the service keeps serving, the
// state store on both backends, and the metrics endpoint.
#include "kvstore_service.h"

#include <cmath>
#include <limits>
#include <set>

#include "absl/algorithm/container.h"
#include "absl/strings/str_cat.h"
#include "arbor/mesh/kvstore_client.h"
#include "arbor/rpc/http_get_for_test.h"
#include "arbor/rpc/server_host.h"
#include "arbor/statestore/redis_server_for_test.h"
#include "gtest/gtest.h"

namespace arbor::kvstore {
namespace {

// 2 layers x K/V x 2 kv heads x head_dim 4 = 32 floats per token; 4-token blocks.
const kvcache::KvLayout kLayout{2, 2, 4, 4};
constexpr int kRow = 32;

class KvStoreServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(statestore::NewInMemoryStateStore()); }

  void Start(std::unique_ptr<statestore::StateStore> state) {
    state_ = std::move(state);
    tree_ = *kvcache::KvTree::Create(kLayout, 64, {.max_fork = 8, .max_seq_tokens = 200});
    registry_ = std::make_shared<prometheus::Registry>();
    service_ = std::make_unique<KvStoreService>(
        tree_.get(), state_.get(), KvStoreLimits{.vocab_size = 100, .read_chunk_tokens = 5},
        *registry_);
    host_ =
        *rpc::ServerHost::Start({.metrics_address = "127.0.0.1:0", .max_message_bytes = 1 << 20},
                                {service_.get()}, registry_);
    stub_ = v1::KvStore::NewStub(
        grpc::CreateChannel(host_->address(), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override { host_->Shutdown(); }

  template <typename Req, typename Resp, typename Method>
  grpc::Status Call(Method method, const Req& req, Resp* resp) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    return ((*stub_).*method)(&ctx, req, resp);
  }

  uint64_t NewSequence() {
    v1::CreateSequenceRequest req;
    v1::CreateSequenceResponse resp;
    EXPECT_TRUE(Call(&v1::KvStore::Stub::CreateSequence, req, &resp).ok());
    return resp.sequence_id();
  }

  static v1::CommitRequest CommitOf(uint64_t seq, uint64_t version, std::vector<int> tokens,
                                    float base) {
    v1::CommitRequest req;
    req.set_sequence_id(seq);
    req.set_expected_version(version);
    for (int t : tokens) req.add_token_ids(t);
    v1::Tensor* kv = req.mutable_kv();
    kv->set_dtype(v1::DTYPE_F32);
    for (int64_t d :
         {static_cast<int64_t>(tokens.size()), int64_t{2}, int64_t{2}, int64_t{2}, int64_t{4}}) {
      kv->add_shape(d);
    }
    std::vector<float> data(tokens.size() * kRow);
    for (size_t i = 0; i < data.size(); ++i) data[i] = base + static_cast<float>(i);
    kv->set_data(std::string(reinterpret_cast<const char*>(data.data()), data.size() * 4));
    return req;
  }

  std::vector<float> ReadAll(uint64_t seq) {
    v1::GetPathRequest preq;
    preq.set_sequence_id(seq);
    v1::GetPathResponse path;
    EXPECT_TRUE(Call(&v1::KvStore::Stub::GetPath, preq, &path).ok());
    v1::ReadSegmentsRequest req;
    req.set_sequence_id(seq);
    for (const auto& s : path.segments()) {
      auto* r = req.add_segments();
      r->set_segment_id(s.segment_id());
      r->set_length(s.length());
    }
    grpc::ClientContext ctx;
    auto reader = stub_->ReadSegments(&ctx, req);
    std::vector<float> kv;
    v1::SegmentChunk chunk;
    while (reader->Read(&chunk)) {
      EXPECT_LE(chunk.kv().shape(0), 5);  // read_chunk_tokens
      const float* f = reinterpret_cast<const float*>(chunk.kv().data().data());
      kv.insert(kv.end(), f, f + chunk.kv().data().size() / 4);
    }
    EXPECT_TRUE(reader->Finish().ok());
    return kv;
  }

  std::unique_ptr<statestore::StateStore> state_;
  std::unique_ptr<kvcache::KvTree> tree_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<KvStoreService> service_;
  std::unique_ptr<rpc::ServerHost> host_;
  std::unique_ptr<v1::KvStore::Stub> stub_;
};

// An owner tag follows forks, and ReleaseOwner drops every sequence carrying it, including
// ones whose ids the owner never recorded (what a crashed planner leaves behind).
TEST_F(KvStoreServiceTest, ReleaseOwnerDropsTheWholeFamily) {
  v1::CreateSequenceRequest create;
  create.set_owner("planner/task/t1");
  v1::CreateSequenceResponse root;
  ASSERT_TRUE(Call(&v1::KvStore::Stub::CreateSequence, create, &root).ok());
  const uint64_t other = NewSequence();  // no owner: untouched
  v1::ForkRequest fork;
  fork.set_sequence_id(root.sequence_id());
  fork.set_n(3);
  v1::ForkResponse kids;
  ASSERT_TRUE(Call(&v1::KvStore::Stub::Fork, fork, &kids).ok());
  fork.set_sequence_id(kids.sequence_ids(0));
  fork.set_n(2);
  v1::ForkResponse grandkids;
  ASSERT_TRUE(Call(&v1::KvStore::Stub::Fork, fork, &grandkids).ok());
  v1::ReleaseRequest one;
  one.add_sequence_ids(kids.sequence_ids(1));
  v1::ReleaseResponse released_one;
  ASSERT_TRUE(Call(&v1::KvStore::Stub::Release, one, &released_one).ok());
  EXPECT_EQ(tree_->stats().live_sequences, 1 + 1 + 3 + 2 - 1);

  v1::ReleaseOwnerRequest req;
  req.set_owner("planner/task/t1");
  v1::ReleaseOwnerResponse resp;
  ASSERT_TRUE(Call(&v1::KvStore::Stub::ReleaseOwner, req, &resp).ok());
  EXPECT_EQ(resp.released(), 1 + 3 + 2 - 1);
  EXPECT_EQ(tree_->stats().live_sequences, 1);
  EXPECT_EQ(tree_->Length(other), 0);
  ASSERT_TRUE(Call(&v1::KvStore::Stub::ReleaseOwner, req, &resp).ok());  // idempotent
  EXPECT_EQ(resp.released(), 0);
  req.set_owner("");
  EXPECT_EQ(Call(&v1::KvStore::Stub::ReleaseOwner, req, &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(KvStoreServiceTest, CommitForkReadAndRelease) {
  const uint64_t seq = NewSequence();
  v1::CommitResponse c;
  ASSERT_TRUE(
      Call(&v1::KvStore::Stub::Commit, CommitOf(seq, 1, {5, 6, 7, 8, 9, 10, 11}, 0), &c).ok());
  EXPECT_EQ(c.version(), 2u);
  EXPECT_EQ(c.length(), 7);

  v1::ForkRequest freq;
  freq.set_sequence_id(seq);
  freq.set_n(4);
  v1::ForkResponse kids;
  ASSERT_TRUE(Call(&v1::KvStore::Stub::Fork, freq, &kids).ok());
  ASSERT_EQ(kids.sequence_ids_size(), 4);
  // Every child reads back the parent's KV, streamed in chunks, without any copy on fork.
  std::vector<float> want(7 * kRow);
  for (size_t i = 0; i < want.size(); ++i) want[i] = static_cast<float>(i);
  for (uint64_t k : kids.sequence_ids()) EXPECT_EQ(ReadAll(k), want);
  {  // A range starting inside a segment: tokens [2, 6) of the frozen parent.
    v1::GetPathRequest preq;
    preq.set_sequence_id(kids.sequence_ids(1));
    v1::GetPathResponse path;
    ASSERT_TRUE(Call(&v1::KvStore::Stub::GetPath, preq, &path).ok());
    v1::ReadSegmentsRequest req;
    req.set_sequence_id(kids.sequence_ids(1));
    auto* r = req.add_segments();
    r->set_segment_id(path.segments(0).segment_id());
    r->set_first(2);
    r->set_length(4);
    grpc::ClientContext ctx;
    auto reader = stub_->ReadSegments(&ctx, req);
    std::vector<float> got;
    v1::SegmentChunk chunk;
    int next_first = 2;
    while (reader->Read(&chunk)) {
      EXPECT_EQ(chunk.first_token(), next_first);
      next_first += static_cast<int>(chunk.kv().shape(0));
      const float* f = reinterpret_cast<const float*>(chunk.kv().data().data());
      got.insert(got.end(), f, f + chunk.kv().data().size() / 4);
    }
    ASSERT_TRUE(reader->Finish().ok());
    EXPECT_EQ(got, std::vector<float>(want.begin() + 2 * kRow, want.begin() + 6 * kRow));
  }
  EXPECT_EQ(tree_->stats().kv_bytes_copied, 7 * kRow * 4);  // the one commit

  // A child extends on its own; its path is the frozen parent plus its leaf.
  ASSERT_TRUE(
      Call(&v1::KvStore::Stub::Commit, CommitOf(kids.sequence_ids(0), 1, {12, 13}, 1000), &c).ok());
  v1::GetPathRequest preq;
  preq.set_sequence_id(kids.sequence_ids(0));
  preq.set_include_token_ids(true);
  v1::GetPathResponse path;
  ASSERT_TRUE(Call(&v1::KvStore::Stub::GetPath, preq, &path).ok());
  ASSERT_EQ(path.segments_size(), 2);
  EXPECT_TRUE(path.segments(0).frozen());
  EXPECT_EQ(path.length(), 9);
  EXPECT_EQ(std::vector<int>(path.token_ids().begin(), path.token_ids().end()),
            (std::vector<int>{5, 6, 7, 8, 9, 10, 11, 12, 13}));
  EXPECT_EQ(path.version(), 2u);

  v1::ReleaseRequest rreq;
  rreq.add_sequence_ids(seq);
  for (uint64_t k : kids.sequence_ids()) rreq.add_sequence_ids(k);
  rreq.add_sequence_ids(424242);
  v1::ReleaseResponse rresp;
  ASSERT_TRUE(Call(&v1::KvStore::Stub::Release, rreq, &rresp).ok());
  ASSERT_EQ(rresp.unknown_ids_size(), 1);
  EXPECT_EQ(rresp.unknown_ids(0), 424242u);
  EXPECT_EQ(tree_->stats().live_sequences, 0);
}

TEST_F(KvStoreServiceTest, StaleCommitIsAbortedAndChangesNothing) {
  const uint64_t seq = NewSequence();
  v1::CommitResponse c;
  ASSERT_TRUE(Call(&v1::KvStore::Stub::Commit, CommitOf(seq, 1, {1, 2}, 0), &c).ok());
  const grpc::Status stale = Call(&v1::KvStore::Stub::Commit, CommitOf(seq, 1, {3}, 0), &c);
  EXPECT_EQ(stale.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_NE(stale.error_message().find("version 2, not the expected 1"), std::string::npos);
  EXPECT_EQ(tree_->Length(seq), 2);
}

TEST_F(KvStoreServiceTest, BadInputNamesTheFieldAndTheServiceKeepsServing) {
  const uint64_t seq = NewSequence();
  v1::CommitResponse c;
  struct Case {
    v1::CommitRequest req;
    grpc::StatusCode code;
    std::string needle;
  };
  std::vector<Case> cases;
  cases.push_back({CommitOf(999, 1, {1}, 0), grpc::StatusCode::NOT_FOUND, "sequence 999"});
  cases.push_back({CommitOf(seq, 1, {}, 0), grpc::StatusCode::INVALID_ARGUMENT, "token_ids"});
  cases.push_back(
      {CommitOf(seq, 1, {1, 100}, 0), grpc::StatusCode::INVALID_ARGUMENT, "token_ids[1] = 100"});
  auto bad_shape = CommitOf(seq, 1, {1, 2}, 0);
  bad_shape.mutable_kv()->set_shape(4, 8);
  cases.push_back({bad_shape, grpc::StatusCode::INVALID_ARGUMENT, "kv.shape [2, 2, 2, 2, 8]"});
  auto bad_data = CommitOf(seq, 1, {1, 2}, 0);
  bad_data.mutable_kv()->mutable_data()->resize(10);
  cases.push_back({bad_data, grpc::StatusCode::INVALID_ARGUMENT, "kv.data holds 10 bytes"});
  auto bad_dtype = CommitOf(seq, 1, {1}, 0);
  bad_dtype.mutable_kv()->set_dtype(v1::DTYPE_BF16);
  cases.push_back({bad_dtype, grpc::StatusCode::INVALID_ARGUMENT, "kv.dtype DTYPE_BF16"});
  cases.push_back({CommitOf(seq, 1, std::vector<int>(300, 1), 0), grpc::StatusCode::OUT_OF_RANGE,
                   "past max_seq_tokens 200"});
  for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity()}) {
    auto poisoned = CommitOf(seq, 1, {1, 2}, 0);
    reinterpret_cast<float*>(poisoned.mutable_kv()->mutable_data()->data())[37] = bad;
    cases.push_back({poisoned, grpc::StatusCode::INVALID_ARGUMENT,
                     "kv.data value 37 is " + std::string(std::isnan(bad) ? "nan" : "inf")});
  }
  auto huge = CommitOf(seq, 1, {1}, 0);
  huge.mutable_kv()->mutable_data()->resize(2 << 20);  // over the 1 MiB message limit
  cases.push_back({huge, grpc::StatusCode::RESOURCE_EXHAUSTED, ""});
  for (const Case& k : cases) {
    const grpc::Status st = Call(&v1::KvStore::Stub::Commit, k.req, &c);
    EXPECT_EQ(st.error_code(), k.code) << st.error_message();
    EXPECT_NE(st.error_message().find(k.needle), std::string::npos) << st.error_message();
  }
  v1::ForkRequest f;
  f.set_sequence_id(seq);
  f.set_n(9);
  v1::ForkResponse fr;
  const grpc::Status fork = Call(&v1::KvStore::Stub::Fork, f, &fr);
  EXPECT_EQ(fork.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(fork.error_message().find("n 9 out of range [1, 8]"), std::string::npos);
  f.set_sequence_id(12345);
  f.set_n(1);
  EXPECT_EQ(Call(&v1::KvStore::Stub::Fork, f, &fr).error_code(), grpc::StatusCode::NOT_FOUND);
  v1::ReadSegmentsRequest r;
  r.set_sequence_id(seq);
  r.add_segments()->set_segment_id(777);
  r.mutable_segments(0)->set_length(1);
  grpc::ClientContext ctx;
  auto reader = stub_->ReadSegments(&ctx, r);
  v1::SegmentChunk chunk;
  EXPECT_FALSE(reader->Read(&chunk));
  const grpc::Status rs = reader->Finish();
  EXPECT_EQ(rs.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(rs.error_message().find("segments[0]: segment 777 is not on sequence"),
            std::string::npos)
      << rs.error_message();
  for (auto [first, length, needle] :
       {std::tuple{-1, 1, "segments[0].first -1"}, std::tuple{0, 0, "segments[0].length 0"}}) {
    r.mutable_segments(0)->set_first(first);
    r.mutable_segments(0)->set_length(length);
    grpc::ClientContext bad_ctx;
    auto bad = stub_->ReadSegments(&bad_ctx, r);
    EXPECT_FALSE(bad->Read(&chunk));
    const grpc::Status bs = bad->Finish();
    EXPECT_EQ(bs.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(bs.error_message().find(needle), std::string::npos) << bs.error_message();
  }

  // Nothing was stored by the failures, and the service still works.
  EXPECT_EQ(tree_->Length(seq), 0);
  ASSERT_TRUE(Call(&v1::KvStore::Stub::Commit, CommitOf(seq, 1, {1, 2, 3}, 0), &c).ok());
  EXPECT_EQ(c.version(), 2u);
}

class KvStoreStateTest : public KvStoreServiceTest, public ::testing::WithParamInterface<bool> {
 protected:
  void SetUp() override {
    if (!GetParam()) {
      Start(statestore::NewInMemoryStateStore());
      return;
    }
    redis_ = *statestore::testing::RedisServerForTest::Start();
    Start(*statestore::NewRedisStateStore({.url = redis_->url()}));
  }
  std::unique_ptr<statestore::testing::RedisServerForTest> redis_;
};

TEST_P(KvStoreStateTest, StateRpcsStoreVersionedValues) {
  v1::CompareAndSetStateRequest cas;
  cas.set_key("task/t1");
  cas.set_expected_version(0);
  cas.set_value("checkpoint-1");
  v1::CompareAndSetStateResponse casr;
  ASSERT_TRUE(Call(&v1::KvStore::Stub::CompareAndSetState, cas, &casr).ok());
  EXPECT_EQ(casr.version(), 1);
  const grpc::Status lost = Call(&v1::KvStore::Stub::CompareAndSetState, cas, &casr);
  EXPECT_EQ(lost.error_code(), grpc::StatusCode::ABORTED);
  v1::GetStateRequest g;
  g.set_key("task/t1");
  v1::GetStateResponse gr;
  ASSERT_TRUE(Call(&v1::KvStore::Stub::GetState, g, &gr).ok());
  EXPECT_EQ(gr.value(), "checkpoint-1");
  v1::ListStateRequest l;
  l.set_prefix("task/");
  l.set_limit(10);
  v1::ListStateResponse lr;
  ASSERT_TRUE(Call(&v1::KvStore::Stub::ListState, l, &lr).ok());
  ASSERT_EQ(lr.keys_size(), 1);
  l.set_limit(0);
  EXPECT_EQ(Call(&v1::KvStore::Stub::ListState, l, &lr).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  v1::DeleteStateRequest d;
  d.set_key("task/t1");
  v1::DeleteStateResponse dr;
  ASSERT_TRUE(Call(&v1::KvStore::Stub::DeleteState, d, &dr).ok());
  EXPECT_EQ(Call(&v1::KvStore::Stub::GetState, g, &gr).error_code(), grpc::StatusCode::NOT_FOUND);
  v1::PutStateRequest p;
  v1::PutStateResponse pr;
  const grpc::Status empty_key = Call(&v1::KvStore::Stub::PutState, p, &pr);
  EXPECT_EQ(empty_key.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(empty_key.error_message().find("key of 0 bytes"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Backends, KvStoreStateTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Redis" : "InMemory"; });

TEST_F(KvStoreServiceTest, MetricsCountRequestsAndReportKvUsage) {
  const uint64_t seq = NewSequence();
  v1::CommitResponse c;
  ASSERT_TRUE(Call(&v1::KvStore::Stub::Commit, CommitOf(seq, 1, {1, 2, 3, 4, 5}, 0), &c).ok());
  (void)Call(&v1::KvStore::Stub::Commit, CommitOf(seq, 1, {1}, 0), &c);  // stale
  const std::string body = rpc::testing::HttpGet(host_->metrics_port(), "/metrics");
  EXPECT_NE(body.find("arbor_kvstore_requests_total{code=\"OK\",method=\"Commit\"} 1"),
            std::string::npos)
      << body;
  EXPECT_NE(body.find("arbor_kvstore_requests_total{code=\"ABORTED\",method=\"Commit\"} 1"),
            std::string::npos);
  EXPECT_NE(body.find("arbor_kvstore_kv_usage 0.03125"), std::string::npos);  // 2 of 64 blocks
  EXPECT_NE(body.find("arbor_kvstore_request_duration_seconds_bucket"), std::string::npos);
  EXPECT_NE(body.find("arbor_kvstore_committed_tokens_total 5"), std::string::npos);
}

// Tenants: tenant B names tenant A's sequence in every KV call and finds nothing (NOT_FOUND in
// the words an unknown id gets), changes nothing, and A's sequence still works; ids are random.
TEST_F(KvStoreServiceTest, ATenantCannotSeeOrTouchAnothersSequences) {
  v1::CreateSequenceRequest create;
  create.set_tenant("a");
  create.set_owner("planner/task/a/t1");
  v1::CreateSequenceResponse a;
  ASSERT_TRUE(Call(&v1::KvStore::Stub::CreateSequence, create, &a).ok());
  const uint64_t seq = a.sequence_id();
  auto commit = CommitOf(seq, 1, {1, 2, 3, 4, 5}, 0);
  commit.set_tenant("a");
  v1::CommitResponse c;
  ASSERT_TRUE(Call(&v1::KvStore::Stub::Commit, commit, &c).ok());
  const std::string unknown = absl::StrCat("sequence ", seq, " unknown or released");

  for (const std::string& tenant : {std::string("b"), std::string("")}) {
    v1::GetPathRequest path;
    path.set_sequence_id(seq);
    path.set_include_token_ids(true);
    path.set_tenant(tenant);
    v1::GetPathResponse pr;
    grpc::Status st = Call(&v1::KvStore::Stub::GetPath, path, &pr);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(st.error_message(), unknown);
    EXPECT_EQ(pr.token_ids_size(), 0);

    v1::ForkRequest fork;
    fork.set_sequence_id(seq);
    fork.set_n(2);
    fork.set_tenant(tenant);
    v1::ForkResponse fr;
    st = Call(&v1::KvStore::Stub::Fork, fork, &fr);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(st.error_message(), unknown);

    auto append = CommitOf(seq, 2, {9}, 0);
    append.set_tenant(tenant);
    st = Call(&v1::KvStore::Stub::Commit, append, &c);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(st.error_message(), unknown);

    v1::ReadSegmentsRequest read;
    read.set_sequence_id(seq);
    read.set_tenant(tenant);
    read.add_segments()->set_segment_id(1);
    read.mutable_segments(0)->set_length(1);
    grpc::ClientContext ctx;
    auto reader = stub_->ReadSegments(&ctx, read);
    v1::SegmentChunk chunk;
    EXPECT_FALSE(reader->Read(&chunk));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);

    v1::ReleaseRequest release;
    release.add_sequence_ids(seq);
    release.set_tenant(tenant);
    v1::ReleaseResponse rr;
    ASSERT_TRUE(Call(&v1::KvStore::Stub::Release, release, &rr).ok());
    ASSERT_EQ(rr.unknown_ids_size(), 1);

    v1::ReleaseOwnerRequest owner;
    owner.set_owner("planner/task/a/t1");
    owner.set_tenant(tenant);
    v1::ReleaseOwnerResponse orr;
    ASSERT_TRUE(Call(&v1::KvStore::Stub::ReleaseOwner, owner, &orr).ok());
    EXPECT_EQ(orr.released(), 0);
  }
  // Nothing changed: A's sequence is whole, and A can still use it.
  EXPECT_EQ(tree_->stats().live_sequences, 1);
  EXPECT_EQ(tree_->Length(seq), 5);
  v1::GetPathRequest path;
  path.set_sequence_id(seq);
  path.set_tenant("a");
  v1::GetPathResponse pr;
  ASSERT_TRUE(Call(&v1::KvStore::Stub::GetPath, path, &pr).ok());
  EXPECT_EQ(pr.version(), 2u);
  v1::ReleaseOwnerRequest owner;
  owner.set_owner("planner/task/a/t1");
  owner.set_tenant("a");
  v1::ReleaseOwnerResponse orr;
  ASSERT_TRUE(Call(&v1::KvStore::Stub::ReleaseOwner, owner, &orr).ok());
  EXPECT_EQ(orr.released(), 1);
}

// A path's segments are read through that path's own sequence only, and only as far as the path
// sees them: a sequence cannot read a sibling's leaf or past its fork point.
TEST_F(KvStoreServiceTest, ReadsStayOnTheNamedSequencesPath) {
  const uint64_t parent = NewSequence();
  v1::CommitResponse c;
  ASSERT_TRUE(Call(&v1::KvStore::Stub::Commit, CommitOf(parent, 1, {1, 2, 3}, 0), &c).ok());
  v1::ForkRequest fork;
  fork.set_sequence_id(parent);
  fork.set_n(2);
  v1::ForkResponse kids;
  ASSERT_TRUE(Call(&v1::KvStore::Stub::Fork, fork, &kids).ok());
  const uint64_t a = kids.sequence_ids(0), b = kids.sequence_ids(1);
  ASSERT_TRUE(Call(&v1::KvStore::Stub::Commit, CommitOf(a, 1, {4, 5}, 0), &c).ok());
  v1::GetPathRequest preq;
  preq.set_sequence_id(a);
  v1::GetPathResponse path;
  ASSERT_TRUE(Call(&v1::KvStore::Stub::GetPath, preq, &path).ok());
  ASSERT_EQ(path.segments_size(), 2);
  auto read = [&](uint64_t seq, uint64_t segment, int first, int length) {
    v1::ReadSegmentsRequest r;
    r.set_sequence_id(seq);
    auto* range = r.add_segments();
    range->set_segment_id(segment);
    range->set_first(first);
    range->set_length(length);
    grpc::ClientContext ctx;
    auto reader = stub_->ReadSegments(&ctx, r);
    v1::SegmentChunk chunk;
    while (reader->Read(&chunk)) {
    }
    return reader->Finish();
  };
  EXPECT_TRUE(read(a, path.segments(1).segment_id(), 0, 2).ok());
  EXPECT_EQ(read(b, path.segments(1).segment_id(), 0, 2).error_code(),
            grpc::StatusCode::NOT_FOUND);                          // a's leaf is not on b's path
  EXPECT_TRUE(read(b, path.segments(0).segment_id(), 0, 3).ok());  // the shared parent is
  EXPECT_EQ(read(b, path.segments(0).segment_id(), 1, 3).error_code(),
            grpc::StatusCode::OUT_OF_RANGE);
  v1::ReadSegmentsRequest none;
  none.add_segments()->set_segment_id(path.segments(0).segment_id());
  none.mutable_segments(0)->set_length(1);
  grpc::ClientContext ctx;
  auto reader = stub_->ReadSegments(&ctx, none);
  v1::SegmentChunk chunk;
  EXPECT_FALSE(reader->Read(&chunk));
  const grpc::Status st = reader->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("sequence_id is required"), std::string::npos);
}

// The prefix index is per tenant: B's identical prompt reuses nothing of A's KV (so A's prompt
// cannot be probed, or A's KV poisoned for B), while A's second sequence reuses it.
TEST_F(KvStoreServiceTest, PrefixReuseStaysWithinATenant) {
  const std::vector<int> prompt = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  auto create = [&](const std::string& tenant) {
    v1::CreateSequenceRequest req;
    req.set_tenant(tenant);
    for (int t : prompt) req.add_prompt_token_ids(t);
    v1::CreateSequenceResponse resp;
    EXPECT_TRUE(Call(&v1::KvStore::Stub::CreateSequence, req, &resp).ok());
    return resp;
  };
  const v1::CreateSequenceResponse first = create("a");
  EXPECT_EQ(first.reused_tokens(), 0);
  auto commit = CommitOf(first.sequence_id(), 1, prompt, 0);
  commit.set_tenant("a");
  v1::CommitResponse c;
  ASSERT_TRUE(Call(&v1::KvStore::Stub::Commit, commit, &c).ok());
  EXPECT_EQ(create("b").reused_tokens(), 0);
  EXPECT_EQ(create("").reused_tokens(), 0);
  EXPECT_EQ(create("a").reused_tokens(), 8);  // two whole 4-token blocks, never the last token
}

// A kv-store that restarts is a new incarnation (a random epoch in the top 16 bits of every id):
// a handle from before the restart, at the same address, is NOT_FOUND saying so, never one of
// the new process's sequences.
TEST(KvStoreEpochTest, AHandleFromAnEarlierIncarnationIsNotFound) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto state = statestore::NewInMemoryStateStore();
  auto old_tree = *kvcache::KvTree::Create(kLayout, 64, {.random_ids = true, .epoch = 0x1234});
  auto old_service = std::make_unique<KvStoreService>(old_tree.get(), state.get(),
                                                      KvStoreLimits{.vocab_size = 100}, *registry);
  auto old_host = *rpc::ServerHost::Start({}, {old_service.get()}, registry);
  const std::string address = old_host->address();
  auto stub =
      v1::KvStore::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  auto call = [&](auto method, const auto& req, auto* resp) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    ctx.set_wait_for_ready(true);
    return ((*stub).*method)(&ctx, req, resp);
  };
  v1::CreateSequenceRequest create;
  v1::CreateSequenceResponse before;
  ASSERT_TRUE(call(&v1::KvStore::Stub::CreateSequence, create, &before).ok());
  EXPECT_EQ(kvcache::EpochOfId(before.sequence_id()), 0x1234);

  // The restart: the same address, a new process state and epoch.
  old_host->Shutdown();
  old_service.reset();
  auto tree = *kvcache::KvTree::Create(kLayout, 64, {.random_ids = true, .epoch = 0x5678});
  auto registry2 = std::make_shared<prometheus::Registry>();
  KvStoreService service(tree.get(), state.get(), {.vocab_size = 100}, *registry2);
  rpc::ServerHostOptions at_same_address;
  at_same_address.address = address;
  auto host = rpc::ServerHost::Start(at_same_address, {&service}, registry2);
  ASSERT_TRUE(host.ok()) << host.status();
  v1::StatsResponse stats;
  ASSERT_TRUE(call(&v1::KvStore::Stub::Stats, v1::StatsRequest(), &stats).ok());
  EXPECT_EQ(stats.epoch(), 0x5678u);
  for (int i = 0; i < 50; ++i) {  // the new incarnation's ids all carry its epoch
    v1::CreateSequenceResponse after;
    ASSERT_TRUE(call(&v1::KvStore::Stub::CreateSequence, create, &after).ok());
    EXPECT_EQ(kvcache::EpochOfId(after.sequence_id()), 0x5678);
    EXPECT_NE(after.sequence_id() & 0xFFFFFFFFFFFFull, 0u);
  }
  v1::GetPathRequest get;
  get.set_sequence_id(before.sequence_id());
  v1::GetPathResponse path;
  const grpc::Status st = call(&v1::KvStore::Stub::GetPath, get, &path);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(st.error_message().find("another kv-store incarnation (epoch 4660; this one's is "
                                    "22136)"),
            std::string::npos)
      << st.error_message();
  v1::ForkRequest fork;
  fork.set_sequence_id(before.sequence_id());
  fork.set_n(1);
  v1::ForkResponse forked;
  EXPECT_EQ(call(&v1::KvStore::Stub::Fork, fork, &forked).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST(KvStoreTenantLimitsTest, LiveSequencesPerTenantAreBounded) {
  auto tree = *kvcache::KvTree::Create(kLayout, 64, {.random_ids = true});
  auto state = statestore::NewInMemoryStateStore();
  auto registry = std::make_shared<prometheus::Registry>();
  KvStoreService service(tree.get(), state.get(),
                         {.vocab_size = 100, .max_sequences_per_tenant = 3}, *registry);
  auto host = *rpc::ServerHost::Start({}, {&service}, registry);
  auto stub = v1::KvStore::NewStub(
      grpc::CreateChannel(host->address(), grpc::InsecureChannelCredentials()));
  auto call = [&](auto method, const auto& req, auto* resp) {
    grpc::ClientContext ctx;
    return ((*stub).*method)(&ctx, req, resp);
  };
  v1::CreateSequenceRequest create;
  create.set_tenant("a");
  v1::CreateSequenceResponse a;
  ASSERT_TRUE(call(&v1::KvStore::Stub::CreateSequence, create, &a).ok());
  v1::ForkRequest fork;
  fork.set_tenant("a");
  fork.set_sequence_id(a.sequence_id());
  fork.set_n(3);
  v1::ForkResponse fr;
  const grpc::Status over = call(&v1::KvStore::Stub::Fork, fork, &fr);
  EXPECT_EQ(over.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(over.error_message().find("--max_sequences_per_tenant=3"), std::string::npos)
      << over.error_message();
  fork.set_n(2);
  ASSERT_TRUE(call(&v1::KvStore::Stub::Fork, fork, &fr).ok());
  // Another tenant has its own room.
  create.set_tenant("b");
  v1::CreateSequenceResponse b;
  ASSERT_TRUE(call(&v1::KvStore::Stub::CreateSequence, create, &b).ok());
  // Ids are random 64-bit values: not 1, 2, 3, ...
  const std::set<uint64_t> ids = {a.sequence_id(), fr.sequence_ids(0), fr.sequence_ids(1),
                                  b.sequence_id()};
  EXPECT_EQ(ids.size(), 4u);
  EXPECT_GT(*ids.rbegin(), uint64_t{1} << 32);
  host->Shutdown();
}

// State values count against their tenant: a write that would pass --max_state_bytes_per_tenant
// is refused naming it and changes nothing; rewriting a key counts its new size only; a delete
// gives the bytes back; other tenants have their own room.
TEST(KvStoreTenantLimitsTest, StateBytesPerTenantAreBounded) {
  auto tree = *kvcache::KvTree::Create(kLayout, 64, {.random_ids = true});
  auto state = statestore::NewInMemoryStateStore();
  auto registry = std::make_shared<prometheus::Registry>();
  KvStoreService service(tree.get(), state.get(),
                         {.vocab_size = 100, .max_state_bytes_per_tenant = 100}, *registry);
  auto host = *rpc::ServerHost::Start({}, {&service}, registry);
  auto stub = v1::KvStore::NewStub(
      grpc::CreateChannel(host->address(), grpc::InsecureChannelCredentials()));
  auto put = [&](const std::string& key, int bytes, const std::string& tenant) {
    grpc::ClientContext ctx;
    v1::PutStateRequest req;
    req.set_key(key);
    req.set_value(std::string(bytes, 'x'));
    req.set_tenant(tenant);
    v1::PutStateResponse resp;
    return stub->PutState(&ctx, req, &resp);
  };
  auto cas = [&](const std::string& key, int64_t expected, int bytes, const std::string& tenant) {
    grpc::ClientContext ctx;
    v1::CompareAndSetStateRequest req;
    req.set_key(key);
    req.set_expected_version(expected);
    req.set_value(std::string(bytes, 'y'));
    req.set_tenant(tenant);
    v1::CompareAndSetStateResponse resp;
    return stub->CompareAndSetState(&ctx, req, &resp);
  };
  auto del = [&](const std::string& key) {
    grpc::ClientContext ctx;
    v1::DeleteStateRequest req;
    req.set_key(key);
    v1::DeleteStateResponse resp;
    return stub->DeleteState(&ctx, req, &resp);
  };
  ASSERT_TRUE(put("a/1", 60, "a").ok());
  const grpc::Status over = put("a/2", 50, "a");
  EXPECT_EQ(over.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(over.error_message().find("--max_state_bytes_per_tenant=100"), std::string::npos)
      << over.error_message();
  EXPECT_EQ(state->Get("a/2").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(cas("a/2", 0, 50, "a").error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  ASSERT_TRUE(put("a/1", 90, "a").ok());  // the key's new size replaces its old one
  EXPECT_EQ(put("a/1", 101, "a").error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(state->Get("a/1")->value.size(), 90u);  // the refused write changed nothing
  ASSERT_TRUE(put("b/1", 100, "b").ok());           // b has its own room
  ASSERT_TRUE(del("a/1").ok());
  ASSERT_TRUE(cas("a/2", 0, 100, "a").ok());
  EXPECT_EQ(put("a/3", 1, "a").error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  host->Shutdown();
}

// Shards: every id carries its kv-store's shard, the typed clients send each call to the shard of
// its sequence, a task's sequences go to the shard its key hashes to (evenly, and adding a shard
// moves only the keys that now prefer it), and a shard asked about another's sequence says so.
TEST(KvStoreShardTest, ClientsRouteEveryCallToTheShardOfItsSequence) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto state = statestore::NewInMemoryStateStore();
  std::vector<std::unique_ptr<kvcache::KvTree>> trees;
  std::vector<std::unique_ptr<KvStoreService>> services;
  std::vector<std::unique_ptr<rpc::ServerHost>> hosts;
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::shared_ptr<prometheus::Registry>> registries;  // one per shard, as processes
  for (uint8_t shard = 0; shard < 2; ++shard) {
    registries.push_back(std::make_shared<prometheus::Registry>());
    trees.push_back(*kvcache::KvTree::Create(
        kLayout, 256, {.random_ids = true, .epoch = 0x1234, .shard = shard}));
    services.push_back(std::make_unique<KvStoreService>(
        trees.back().get(), state.get(), KvStoreLimits{.vocab_size = 100}, *registries.back()));
    hosts.push_back(*rpc::ServerHost::Start({}, {services.back().get()}, registry));
    channels.push_back(
        grpc::CreateChannel(hosts.back()->address(), grpc::InsecureChannelCredentials()));
  }
  mesh::KvStoreShards shards(channels);
  int per_shard[2] = {0, 0};
  std::vector<uint64_t> roots;
  for (int i = 0; i < 64; ++i) {
    const std::string key = absl::StrCat("planner/task/t", i);
    v1::CreateSequenceRequest create;
    create.set_owner(key);
    create.add_prompt_token_ids(1);
    absl::StatusOr<v1::CreateSequenceResponse> created =
        shards.ForKey(key).CreateSequence(create, mesh::kNoDeadline);
    ASSERT_TRUE(created.ok()) << created.status();
    const size_t shard = shards.ShardForKey(key);
    EXPECT_EQ(kvcache::ShardOfId(created->sequence_id()), shard);
    ++per_shard[shard];
    roots.push_back(created->sequence_id());
  }
  EXPECT_GE(per_shard[0], 20);  // 64 keys, about half each
  EXPECT_GE(per_shard[1], 20);
  for (uint64_t root : roots) {
    absl::StatusOr<mesh::KvStoreClient*> kv = shards.ForSequence(root);
    ASSERT_TRUE(kv.ok());
    absl::StatusOr<std::vector<uint64_t>> kids = (*kv)->Fork(root, 2, mesh::kNoDeadline);
    ASSERT_TRUE(kids.ok()) << kids.status();
    for (uint64_t kid : *kids) EXPECT_EQ(kvcache::ShardOfId(kid), kvcache::ShardOfId(root));
  }
  v1::StatsResponse stats;
  ASSERT_TRUE(shards.shard(1).Stats(mesh::kNoDeadline).ok());
  EXPECT_EQ(shards.shard(1).Stats(mesh::kNoDeadline)->shard(), 1u);
  EXPECT_EQ(shards.shard(0).Stats(mesh::kNoDeadline)->live_sequences(), 3 * per_shard[0]);
  // Asked about another shard's sequence, a shard says whose it is.
  const uint64_t on_one =
      *absl::c_find_if(roots, [](uint64_t id) { return kvcache::ShardOfId(id) == 1; });
  absl::Status wrong = shards.shard(0).GetPath(on_one, false, mesh::kNoDeadline).status();
  EXPECT_EQ(wrong.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(wrong.message().find("belongs to kv-store shard 1; this is shard 0"), std::string::npos)
      << wrong;
  // An id naming a shard past the list.
  const uint64_t far = (uint64_t{0x1234} << 48) | (uint64_t{5} << 40) | 7;
  EXPECT_EQ(shards.ForSequence(far).status().code(), absl::StatusCode::kNotFound);
  // A third shard listed: a key either keeps its shard or moves to the new one.
  mesh::KvStoreShards three({channels[0], channels[1], channels[0]});
  int moved = 0;
  for (int i = 0; i < 1000; ++i) {
    const std::string key = absl::StrCat("planner/task/k", i);
    const size_t before = shards.ShardForKey(key), after = three.ShardForKey(key);
    if (after != before) {
      EXPECT_EQ(after, 2u) << key;
      ++moved;
    }
  }
  EXPECT_GT(moved, 250);  // about a third
  EXPECT_LT(moved, 420);
}

}  // namespace
}  // namespace arbor::kvstore
