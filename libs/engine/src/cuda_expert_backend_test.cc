// The CUDA expert backend against the CPU one: per-call outputs within bf16 tolerance (2e-2 of
// the largest output), and whole-engine greedy tokens equal to the PyTorch reference's on the
// checked-in models. Skips without a device.
#include "arbor/engine/cuda_expert_backend.h"

#include <cmath>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "arbor/common/test_names.h"
#include "arbor/engine/local_model.h"
#include "arbor/kernels/gpu.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace arbor::engine {
namespace {

class CudaExpertBackendTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (kernels::CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
    EngineOptions opts;
    opts.max_batch_tokens = 64;
    opts.max_seqs = 8;
    opts.max_seq_tokens = 256;
    opts.kv_cache_tokens = 2048;
    auto m = LocalModel::Load(std::string(ARBOR_SOURCE_DIR) + "/" + GetParam(), opts);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
    auto b = CudaExpertBackend::Create(model_->weights.get(), {.max_tokens = 64});
    ASSERT_TRUE(b.ok()) << b.status();
    cuda_ = std::move(*b);
  }

  std::unique_ptr<LocalModel> model_;
  std::unique_ptr<CudaExpertBackend> cuda_;
};

void ExpectClose(const std::vector<float>& got, const std::vector<float>& want,
                 const std::string& what) {
  double max_ref = 0, max_diff = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    max_ref = std::max(max_ref, std::abs(static_cast<double>(want[i])));
    max_diff = std::max(max_diff, std::abs(static_cast<double>(got[i]) - want[i]));
  }
  EXPECT_LE(max_diff, 2e-2 * max_ref) << what;
}

TEST_P(CudaExpertBackendTest, RunAndRunGroupsMatchTheCpuBackend) {
  const model::ModelConfig& c = model_->weights->config();
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0, 1);
  for (int n : {1, 7, 64}) {
    for (int layer = 0; layer < c.num_hidden_layers; ++layer) {
      std::vector<float> x(static_cast<size_t>(n) * c.hidden_size), base(x.size());
      for (float& v : x) v = nd(rng);
      for (float& v : base) v = nd(rng);
      std::vector<int> ids(n * c.num_experts_per_tok);
      std::vector<float> w(ids.size());
      for (int t = 0; t < n; ++t) {
        for (int j = 0; j < c.num_experts_per_tok; ++j) {
          // Expert 0 for every token when n == 64: one heavy expert, the rest light or empty.
          ids[t * c.num_experts_per_tok + j] =
              (n == 64 && j == 0) ? 0 : (t + j * 3 + 1) % c.num_local_experts;
          w[t * c.num_experts_per_tok + j] = 1.0f / (j + 1);
        }
        if (c.num_experts_per_tok > 1 &&
            ids[t * c.num_experts_per_tok] == ids[t * c.num_experts_per_tok + 1]) {
          ids[t * c.num_experts_per_tok + 1] =
              (ids[t * c.num_experts_per_tok] + 1) % c.num_local_experts;
        }
      }
      RoutedTokens in{layer, x.data(), n, c.num_experts_per_tok, ids.data(), w.data()};
      std::vector<float> want = base, got = base;
      ASSERT_TRUE(model_->experts->Run(in, want.data()).ok());
      const absl::Status st = cuda_->Run(in, got.data());
      ASSERT_TRUE(st.ok()) << st;
      ExpectClose(got, want, "Run n=" + std::to_string(n) + " layer " + std::to_string(layer));

      // The same rows as an expert worker gets them: one group per expert, rows repeated.
      std::vector<std::vector<int>> rows(c.num_local_experts);
      std::vector<std::vector<float>> rw(c.num_local_experts);
      for (size_t i = 0; i < ids.size(); ++i) {
        rows[ids[i]].push_back(static_cast<int>(i) / c.num_experts_per_tok);
        rw[ids[i]].push_back(w[i]);
      }
      std::vector<ExpertGroup> groups;
      for (int e = 0; e < c.num_local_experts; ++e) {
        groups.push_back({e, rows[e].data(), rw[e].data(), static_cast<int>(rows[e].size())});
      }
      std::vector<float> want_g = base, got_g = base;
      ASSERT_TRUE(model_->experts->RunGroups(layer, x.data(), n, groups, want_g.data()).ok());
      ASSERT_TRUE(cuda_->RunGroups(layer, x.data(), n, groups, got_g.data()).ok());
      ExpectClose(got_g, want_g, "RunGroups n=" + std::to_string(n));
    }
  }
}

TEST_P(CudaExpertBackendTest, BadRoutingIsRejectedBeforeTheDevice) {
  const model::ModelConfig& c = model_->weights->config();
  std::vector<float> x(c.hidden_size), out(c.hidden_size);
  std::vector<int> ids(c.num_experts_per_tok, c.num_local_experts);  // out of range
  std::vector<float> w(ids.size(), 1.0f);
  RoutedTokens in{0, x.data(), 1, c.num_experts_per_tok, ids.data(), w.data()};
  EXPECT_EQ(cuda_->Run(in, out.data()).code(), absl::StatusCode::kInvalidArgument);
  in.n_tokens = 65;
  EXPECT_EQ(cuda_->Run(in, out.data()).code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(CudaExpertBackendTest, EngineWithCudaExpertsGivesTheReferenceGreedyTokens) {
  std::ifstream in(std::string(ARBOR_SOURCE_DIR) + "/" + GetParam() + "/reference.json");
  const auto ref = nlohmann::json::parse(in);
  EngineOptions opts;
  opts.max_batch_tokens = 64;
  opts.max_seqs = 8;
  opts.max_seq_tokens = 256;
  opts.kv_cache_tokens = 2048;
  auto engine = Engine::Create(model_->weights.get(), cuda_.get(), opts);
  ASSERT_TRUE(engine.ok()) << engine.status();
  const int vocab = model_->weights->config().vocab_size;
  for (const auto& s : ref["sequences"]) {
    const std::vector<int> prompt = s["prompt_ids"], greedy = s["greedy_ids"];
    const SeqId seq = (*engine)->AddSequence();
    StepInput step{seq, prompt, true};
    std::vector<int> got;
    for (size_t i = 0; i < greedy.size(); ++i) {
      ASSERT_TRUE((*engine)->Step({&step, 1}).ok());
      const float* l = (*engine)->logits(0);
      got.push_back(static_cast<int>(std::max_element(l, l + vocab) - l));
      step = {seq, {&got.back(), 1}, true};
    }
    EXPECT_EQ(got, greedy) << s["prompt"];
    ASSERT_TRUE((*engine)->Release(seq).ok());
  }
}

INSTANTIATE_TEST_SUITE_P(Models, CudaExpertBackendTest,
                         ::testing::Values("models/test-moe", "models/game24-moe"),
                         [](const auto& info) { return ModelTestName(info.param); });

}  // namespace
}  // namespace arbor::engine
