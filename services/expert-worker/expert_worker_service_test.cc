// An expert worker over real gRPC on loopback, hosting part of the test model: its partial sums
// equal the in-process experts, it describes its shard, and bad requests name the field while
// the worker keeps serving.
#include "expert_worker_service.h"

#include <random>

#include "arbor/kernels/gpu.h"
#include "arbor/model/checkpoint.h"
#include "arbor/model/expert_spec.h"
#include "arbor/rpc/server_host.h"
#include "gtest/gtest.h"

namespace arbor::expert_worker {
namespace {

const std::string kModel = std::string(ARBOR_SOURCE_DIR) + "/models/test-moe";

class ExpertWorkerServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ckpt_ = *model::Checkpoint::Open(kModel);
    const auto shard = *model::ParseExpertSpec("0:0-1,1:2-3", 2, 4);
    shard_weights_ = *model::ModelWeights::Load(*ckpt_, {.non_expert = false, .experts = shard});
    all_weights_ = *model::ModelWeights::Load(*ckpt_, {.non_expert = false});
    registry_ = std::make_shared<prometheus::Registry>();
    service_ = *ExpertWorkerService::Create(shard_weights_.get(), "test-moe", {.max_rows = 64},
                                            *registry_);
    host_ = *rpc::ServerHost::Start({}, {service_.get()}, registry_);
    stub_ = v1::ExpertWorker::NewStub(
        grpc::CreateChannel(host_->address(), grpc::InsecureChannelCredentials()));
  }

  grpc::Status Run(const v1::RunExpertsRequest& req, v1::RunExpertsResponse* resp) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return stub_->RunExperts(&ctx, req, resp);
  }

  static v1::RunExpertsRequest Request(int layer, const std::vector<float>& rows, int n) {
    v1::RunExpertsRequest req;
    req.set_layer(layer);
    req.mutable_rows()->set_dtype(v1::DTYPE_F32);
    req.mutable_rows()->add_shape(n);
    req.mutable_rows()->add_shape(64);
    req.mutable_rows()->set_data(
        std::string(reinterpret_cast<const char*>(rows.data()), rows.size() * 4));
    return req;
  }

  std::unique_ptr<model::Checkpoint> ckpt_;
  std::unique_ptr<model::ModelWeights> shard_weights_, all_weights_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<ExpertWorkerService> service_;
  std::unique_ptr<rpc::ServerHost> host_;
  std::unique_ptr<v1::ExpertWorker::Stub> stub_;
};

TEST_F(ExpertWorkerServiceTest, PartialSumsEqualTheInProcessExperts) {
  const int n = 5;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> rows(n * 64);
  for (float& x : rows) x = nd(rng);
  auto req = Request(1, rows, n);
  // Rows 0, 2 and 4 go to expert 2; rows 2 and 3 to expert 3 (row 2 to both).
  auto* a = req.add_assignments();
  a->set_expert(2);
  for (int r : {0, 2, 4}) a->add_row_ids(r), a->add_weights(0.25f * (r + 1));
  auto* b = req.add_assignments();
  b->set_expert(3);
  for (int r : {2, 3}) b->add_row_ids(r), b->add_weights(0.5f);
  v1::RunExpertsResponse resp;
  const grpc::Status st = Run(req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(resp.output().data().size(), rows.size() * 4);

  auto local = *engine::CpuExpertBackend::Create(all_weights_.get(), 64);
  const int r2[] = {0, 2, 4}, r3[] = {2, 3};
  const float w2[] = {0.25f, 0.75f, 1.25f}, w3[] = {0.5f, 0.5f};
  const engine::ExpertGroup groups[] = {{2, r2, w2, 3}, {3, r3, w3, 2}};
  std::vector<float> want(rows.size(), 0.0f);
  ASSERT_TRUE(local->RunGroups(1, rows.data(), n, groups, want.data()).ok());
  const float* got = reinterpret_cast<const float*>(resp.output().data().data());
  for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-6) << i;
  for (int i = 64; i < 128; ++i) EXPECT_EQ(got[i], 0.0f);  // row 1 went to no expert
}

TEST_F(ExpertWorkerServiceTest, DescribeListsTheShard) {
  grpc::ClientContext ctx;
  v1::DescribeResponse d;
  ASSERT_TRUE(stub_->Describe(&ctx, v1::DescribeRequest(), &d).ok());
  EXPECT_EQ(d.model(), "test-moe");
  EXPECT_EQ(d.backend(), "cpu");
  ASSERT_EQ(d.experts_size(), 4);
  EXPECT_EQ(d.experts(2).layer(), 1);
  EXPECT_EQ(d.experts(2).expert(), 2);
  EXPECT_EQ(d.hidden_size(), 64);
}

TEST_F(ExpertWorkerServiceTest, BadRequestsNameTheFieldAndTheWorkerKeepsServing) {
  const std::vector<float> rows(2 * 64, 0.5f);
  auto with = [&](int layer, int expert, std::vector<int> ids, std::vector<float> w) {
    auto req = Request(layer, rows, 2);
    auto* a = req.add_assignments();
    a->set_expert(expert);
    for (int i : ids) a->add_row_ids(i);
    for (float x : w) a->add_weights(x);
    return req;
  };
  struct Case {
    v1::RunExpertsRequest req;
    grpc::StatusCode code;
    std::string needle;
  };
  std::vector<Case> cases;
  cases.push_back({with(5, 0, {0}, {1}), grpc::StatusCode::INVALID_ARGUMENT, "layer 5"});
  cases.push_back({with(0, 3, {0}, {1}), grpc::StatusCode::FAILED_PRECONDITION,
                   "expert (layer 0, expert 3) is not hosted here"});
  cases.push_back({with(0, 0, {0, 2}, {1, 1}), grpc::StatusCode::INVALID_ARGUMENT,
                   "assignments[0]: row id 2 out of range [0, 2)"});
  cases.push_back(
      {with(0, 0, {0, 1}, {1}), grpc::StatusCode::INVALID_ARGUMENT, "2 row_ids but 1 weights"});
  auto bad_shape = with(0, 0, {0}, {1});
  bad_shape.mutable_rows()->set_shape(1, 63);
  cases.push_back({bad_shape, grpc::StatusCode::INVALID_ARGUMENT, "rows.shape [2, 63]"});
  auto bad_bytes = with(0, 0, {0}, {1});
  bad_bytes.mutable_rows()->mutable_data()->resize(7);
  cases.push_back({bad_bytes, grpc::StatusCode::INVALID_ARGUMENT, "rows.data holds 7 bytes"});
  auto bad_dtype = with(0, 0, {0}, {1});
  bad_dtype.mutable_rows()->set_dtype(v1::DTYPE_UNSPECIFIED);
  cases.push_back({bad_dtype, grpc::StatusCode::INVALID_ARGUMENT, "rows.dtype"});
  auto bad_output = with(0, 0, {0}, {1});
  bad_output.set_output_dtype(v1::DTYPE_F16);
  cases.push_back({bad_output, grpc::StatusCode::INVALID_ARGUMENT,
                   "output_dtype DTYPE_F16 is not F32 or BF16"});
  for (const Case& c : cases) {
    v1::RunExpertsResponse resp;
    const grpc::Status st = Run(c.req, &resp);
    EXPECT_EQ(st.error_code(), c.code) << st.error_message();
    EXPECT_NE(st.error_message().find(c.needle), std::string::npos) << st.error_message();
  }
  // bf16 rows are accepted (converted), and the worker still serves.
  auto bf16 = with(0, 1, {1}, {1});
  std::string data(2 * 64 * 2, '\0');
  for (int i = 0; i < 128; ++i) {
    const uint16_t b = F32ToBF16(0.5f);
    std::memcpy(data.data() + 2 * i, &b, 2);
  }
  bf16.mutable_rows()->set_dtype(v1::DTYPE_BF16);
  bf16.mutable_rows()->set_data(data);
  v1::RunExpertsResponse resp;
  EXPECT_TRUE(Run(bf16, &resp).ok());
  v1::RunExpertsResponse f32resp;
  ASSERT_TRUE(Run(with(0, 1, {1}, {1}), &f32resp).ok());
  EXPECT_EQ(resp.output().data(), f32resp.output().data());  // 0.5 is exact in bf16
  // Sums asked for in bf16 are the f32 sums rounded to bf16, in half the bytes.
  auto half = with(0, 1, {1}, {1});
  half.set_output_dtype(v1::DTYPE_BF16);
  v1::RunExpertsResponse half_resp;
  ASSERT_TRUE(Run(half, &half_resp).ok());
  EXPECT_EQ(half_resp.output().dtype(), v1::DTYPE_BF16);
  ASSERT_EQ(half_resp.output().data().size(), f32resp.output().data().size() / 2);
  const auto* sums = reinterpret_cast<const float*>(f32resp.output().data().data());
  const auto* bits = reinterpret_cast<const uint16_t*>(half_resp.output().data().data());
  for (int i = 0; i < 128; ++i) EXPECT_EQ(bits[i], F32ToBF16(sums[i])) << i;
}

TEST_F(ExpertWorkerServiceTest, BackendIsChosenByNameAndCudaNeedsADevice) {
  prometheus::Registry reg;
  auto unknown = ExpertWorkerService::Create(shard_weights_.get(), "m", {.backend = "tpu"}, reg);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("tpu"), std::string::npos);
  auto autob = ExpertWorkerService::Create(shard_weights_.get(), "m", {.backend = "auto"}, reg);
  ASSERT_TRUE(autob.ok()) << autob.status();
  EXPECT_EQ((*autob)->backend_name(), kernels::CudaDeviceCount() > 0 ? "cuda" : "cpu");
  auto cuda = ExpertWorkerService::Create(shard_weights_.get(), "m", {.backend = "cuda"}, reg);
  if (kernels::CudaDeviceCount() == 0) {
    ASSERT_FALSE(cuda.ok());
    EXPECT_EQ(cuda.status().code(), absl::StatusCode::kFailedPrecondition) << cuda.status();
  } else {
    ASSERT_TRUE(cuda.ok()) << cuda.status();
    EXPECT_EQ((*cuda)->backend_name(), "cuda");
  }
}

// On a GPU machine: a cuda worker over gRPC returns the CPU worker's sums within bf16 tolerance.
TEST_F(ExpertWorkerServiceTest, CudaWorkerMatchesTheCpuWorker) {
  if (kernels::CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  auto reg = std::make_shared<prometheus::Registry>();
  auto cuda = ExpertWorkerService::Create(shard_weights_.get(), "test-moe",
                                          {.max_rows = 64, .backend = "cuda"}, *reg);
  ASSERT_TRUE(cuda.ok()) << cuda.status();
  auto host = *rpc::ServerHost::Start({}, {cuda->get()}, reg);
  auto stub = v1::ExpertWorker::NewStub(
      grpc::CreateChannel(host->address(), grpc::InsecureChannelCredentials()));
  std::mt19937 rng(9);
  std::normal_distribution<float> nd(0, 1);
  const int n = 40;
  std::vector<float> rows(n * 64);
  for (float& x : rows) x = nd(rng);
  auto req = Request(0, rows, n);
  for (int e : {0, 1}) {
    auto* a = req.add_assignments();
    a->set_expert(e);
    for (int r = e; r < n; r += 1 + e) a->add_row_ids(r), a->add_weights(0.5f + e);
  }
  v1::RunExpertsResponse want, got;
  ASSERT_TRUE(Run(req, &want).ok());
  grpc::ClientContext ctx;
  const grpc::Status st = stub->RunExperts(&ctx, req, &got);
  ASSERT_TRUE(st.ok()) << st.error_message();
  const float* w = reinterpret_cast<const float*>(want.output().data().data());
  const float* g = reinterpret_cast<const float*>(got.output().data().data());
  float max_ref = 0;
  for (int i = 0; i < n * 64; ++i) max_ref = std::max(max_ref, std::abs(w[i]));
  for (int i = 0; i < n * 64; ++i) ASSERT_NEAR(g[i], w[i], 2e-2 * max_ref) << i;
}

}  // namespace
}  // namespace arbor::expert_worker
