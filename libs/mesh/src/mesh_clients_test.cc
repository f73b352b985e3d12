// The mesh clients against services on loopback: the caller's deadline caps every call, errors
// name the call and its object, idempotent calls are retried while the service is UNAVAILABLE
// and the others are not, a stream's consumer can stop it, and the real kv-store answers
// through the typed client as through its stub.
#include <atomic>

#include "arbor/mesh/kvstore_client.h"
#include "arbor/mesh/router_client.h"
#include "arbor/rpc/server_host.h"
#include "arbor/statestore/state_store.h"
#include "gtest/gtest.h"
#include "kvstore_service.h"

namespace arbor::mesh {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

Deadline In(milliseconds d) { return std::chrono::system_clock::now() + d; }

// A kv-store that fails the first `failures` calls of GetPath and Fork with UNAVAILABLE.
class FlakyKvStore final : public v1::KvStore::CallbackService {
 public:
  explicit FlakyKvStore(int failures) : failures_(failures) {}
  grpc::ServerUnaryReactor* GetPath(grpc::CallbackServerContext* ctx, const v1::GetPathRequest* req,
                                    v1::GetPathResponse* resp) override {
    return Answer(ctx, get_path_calls_, [&] { resp->set_length(7); });
  }
  grpc::ServerUnaryReactor* Fork(grpc::CallbackServerContext* ctx, const v1::ForkRequest* req,
                                 v1::ForkResponse* resp) override {
    return Answer(ctx, fork_calls_, [&] { resp->add_sequence_ids(2); });
  }
  std::atomic<int> get_path_calls_{0}, fork_calls_{0};

 private:
  template <typename Fill>
  grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* ctx, std::atomic<int>& calls,
                                   Fill fill) {
    grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
    if (calls++ < failures_) {
      r->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "restarting"));
    } else {
      fill();
      r->Finish(grpc::Status::OK);
    }
    return r;
  }
  const int failures_;
};

TEST(MeshClientsTest, IdempotentCallsAreRetriedWhileUnavailableOthersAreNot) {
  FlakyKvStore flaky(2);
  auto host = *rpc::ServerHost::Start({}, {&flaky}, std::make_shared<prometheus::Registry>());
  KvStoreClient kv(NewChannel(host->address()), {.attempts = 3, .backoff = milliseconds(1)});
  absl::StatusOr<v1::GetPathResponse> path = kv.GetPath(1, false, In(seconds(10)));
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(path->length(), 7);
  EXPECT_EQ(flaky.get_path_calls_, 3);
  // A Fork is not repeated: a lost answer would leave children nobody knows of.
  absl::StatusOr<std::vector<uint64_t>> kids = kv.Fork(5, 1, In(seconds(10)));
  EXPECT_EQ(kids.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(kids.status().message(), "kv-store Fork of 5: restarting");
  EXPECT_EQ(flaky.fork_calls_, 1);
  host->Shutdown();
}

TEST(MeshClientsTest, RetriesStopAfterTheAttempts) {
  FlakyKvStore flaky(100);
  auto host = *rpc::ServerHost::Start({}, {&flaky}, std::make_shared<prometheus::Registry>());
  KvStoreClient kv(NewChannel(host->address()), {.attempts = 4, .backoff = milliseconds(1)});
  absl::StatusOr<v1::GetPathResponse> path = kv.GetPath(1, false, In(seconds(10)));
  EXPECT_EQ(path.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(path.status().message(), "kv-store GetPath: restarting");
  EXPECT_EQ(flaky.get_path_calls_, 4);
  host->Shutdown();
}

class RealKvStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tree_ = *kvcache::KvTree::Create({2, 2, 4, 4}, 64, {.max_fork = 8, .max_seq_tokens = 200});
    state_ = statestore::NewInMemoryStateStore();
    registry_ = std::make_shared<prometheus::Registry>();
    service_ = std::make_unique<kvstore::KvStoreService>(
        tree_.get(), state_.get(), kvstore::KvStoreLimits{.vocab_size = 100}, *registry_);
    host_ = *rpc::ServerHost::Start({}, {service_.get()}, registry_);
    kv_ = std::make_unique<KvStoreClient>(NewChannel(host_->address()),
                                          ClientOptions{.timeout = seconds(5)});
  }
  void TearDown() override { host_->Shutdown(); }

  std::unique_ptr<kvcache::KvTree> tree_;
  std::unique_ptr<statestore::StateStore> state_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<kvstore::KvStoreService> service_;
  std::unique_ptr<rpc::ServerHost> host_;
  std::unique_ptr<KvStoreClient> kv_;
};

TEST_F(RealKvStoreTest, CallsNameTheirObjectAndKeepTheCode) {
  v1::CreateSequenceRequest req;
  req.set_owner("test/owner");
  absl::StatusOr<v1::CreateSequenceResponse> seq = kv_->CreateSequence(req, kNoDeadline);
  ASSERT_TRUE(seq.ok()) << seq.status();
  absl::StatusOr<std::vector<uint64_t>> kids = kv_->Fork(seq->sequence_id(), 3, kNoDeadline);
  ASSERT_TRUE(kids.ok()) << kids.status();
  EXPECT_EQ(kids->size(), 3u);
  absl::StatusOr<std::vector<uint64_t>> none = kv_->Fork(999, 1, kNoDeadline);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(none.status().message().rfind("kv-store Fork of 999: ", 0), 0u)
      << none.status().message();
  EXPECT_TRUE(kv_->Release({(*kids)[0], 12345}, kNoDeadline).ok());  // unknown ids ignored
  absl::StatusOr<int> released = kv_->ReleaseOwner("test/owner", kNoDeadline);
  ASSERT_TRUE(released.ok()) << released.status();
  EXPECT_EQ(*released, 3);  // the root and the two forks left
  EXPECT_EQ(tree_->stats().live_sequences, 0);
  // The state store through the same client.
  absl::StatusOr<int64_t> v = kv_->PutState("k", "v1", kNoDeadline);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(kv_->CompareAndSetState("k", *v + 1, "v2", kNoDeadline).status().code(),
            absl::StatusCode::kAborted);
  ASSERT_TRUE(kv_->CompareAndSetState("k", *v, "v2", kNoDeadline).ok());
  EXPECT_EQ(kv_->GetState("k", kNoDeadline)->value(), "v2");
  EXPECT_EQ(kv_->ListState("", 10, kNoDeadline)->size(), 1u);
  ASSERT_TRUE(kv_->DeleteState("k", kNoDeadline).ok());
  EXPECT_EQ(kv_->GetState("k", kNoDeadline).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(RealKvStoreTest, TheCallersDeadlineCapsTheCall) {
  absl::StatusOr<v1::StatsResponse> stats =
      kv_->Stats(std::chrono::system_clock::now() - milliseconds(1));
  EXPECT_EQ(stats.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(stats.status().message().rfind("kv-store Stats: ", 0), 0u);
  EXPECT_TRUE(kv_->Stats(In(seconds(5))).ok());
}

TEST_F(RealKvStoreTest, AStreamsConsumerCanStopIt) {
  v1::CreateSequenceRequest req;
  absl::StatusOr<v1::CreateSequenceResponse> seq = kv_->CreateSequence(req, kNoDeadline);
  ASSERT_TRUE(seq.ok());
  v1::CommitRequest commit;
  commit.set_sequence_id(seq->sequence_id());
  commit.set_expected_version(1);  // a new sequence
  std::vector<float> data(20 * 32, 1.0f);
  for (int i = 0; i < 20; ++i) commit.add_token_ids(i);
  v1::Tensor* kv = commit.mutable_kv();
  kv->set_dtype(v1::DTYPE_F32);
  for (int64_t d : {20, 2, 2, 2, 4}) kv->add_shape(d);
  kv->set_data(std::string(reinterpret_cast<const char*>(data.data()), data.size() * 4));
  absl::StatusOr<uint64_t> committed = kv_->Commit(commit, kNoDeadline);
  ASSERT_TRUE(committed.ok()) << committed.status();
  absl::StatusOr<v1::GetPathResponse> path = kv_->GetPath(seq->sequence_id(), true, kNoDeadline);
  ASSERT_TRUE(path.ok());
  v1::ReadSegmentsRequest read;
  read.set_sequence_id(seq->sequence_id());
  for (const auto& s : path->segments()) {
    auto* r = read.add_segments();
    r->set_segment_id(s.segment_id());
    r->set_length(s.length());
  }
  int chunks = 0;
  EXPECT_TRUE(kv_->ReadSegments(read, kNoDeadline,
                                [&](const v1::SegmentChunk&) {
                                  ++chunks;
                                  return absl::OkStatus();
                                })
                  .ok());
  EXPECT_GE(chunks, 1);
  const absl::Status stopped = kv_->ReadSegments(
      read, kNoDeadline, [](const v1::SegmentChunk&) { return absl::DataLossError("bad chunk"); });
  EXPECT_EQ(stopped.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(stopped.message(), "bad chunk");
}

}  // namespace
}  // namespace arbor::mesh
