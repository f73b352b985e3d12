// The engine with backend "cuda" (attention, norms, RoPE, gating and LM head on the GPU, KV in
// a bf16 device mirror) against the PyTorch reference and against the CPU engine: the same
// greedy tokens, logits within 2e-2 of the largest reference logit (bf16 KV and queries), forks
// that equal independent sequences, and KV appended from outside (a kv-store's segments)
// continuing exactly as KV computed in place. Skips without a device.
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "arbor/common/test_names.h"
#include "arbor/engine/cuda_expert_backend.h"
#include "arbor/engine/local_model.h"
#include "arbor/kernels/gpu.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace arbor::engine {
namespace {

EngineOptions Options(const std::string& backend) {
  EngineOptions o;
  o.max_batch_tokens = 64;
  o.max_seqs = 8;
  o.max_seq_tokens = 256;
  o.kv_cache_tokens = 2048;
  o.kv_block_tokens = 4;  // most prompts end in a partly filled block
  o.backend = backend;
  return o;
}

double MaxAbsDiffOverMax(const float* got, const float* want, int n) {
  double mx = 0, diff = 0;
  for (int i = 0; i < n; ++i) {
    mx = std::max(mx, std::abs(static_cast<double>(want[i])));
    diff = std::max(diff, std::abs(static_cast<double>(got[i]) - want[i]));
  }
  return diff / mx;
}

int Argmax(const float* x, int n) { return static_cast<int>(std::max_element(x, x + n) - x); }

class CudaEngineTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (kernels::CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
    dir_ = std::string(ARBOR_SOURCE_DIR) + "/" + GetParam();
    auto m = LocalModel::Load(dir_, Options("cuda"));
    ASSERT_TRUE(m.ok()) << m.status();
    gpu_ = std::move(*m);
    auto c = LocalModel::Load(dir_, Options("cpu"));
    ASSERT_TRUE(c.ok()) << c.status();
    cpu_ = std::move(*c);
    std::ifstream in(dir_ + "/reference.json");
    ref_ = nlohmann::json::parse(in);
  }

  std::string dir_;
  std::unique_ptr<LocalModel> gpu_, cpu_;
  nlohmann::json ref_;
};

TEST_P(CudaEngineTest, GreedyTokensEqualTheReferenceAndLogitsTheCpuEngine) {
  Engine& g = *gpu_->engine;
  Engine& c = *cpu_->engine;
  const int vocab = g.config().vocab_size;
  for (const auto& s : ref_["sequences"]) {
    const std::vector<int> prompt = s["prompt_ids"], greedy = s["greedy_ids"];
    const SeqId gs = g.AddSequence(), cs = c.AddSequence();
    StepInput gin{gs, prompt, true}, cin{cs, prompt, true};
    std::vector<int> got;
    for (size_t i = 0; i < greedy.size(); ++i) {
      ASSERT_TRUE(g.Step({&gin, 1}).ok());
      ASSERT_TRUE(c.Step({&cin, 1}).ok());
      EXPECT_LE(MaxAbsDiffOverMax(g.logits(0), c.logits(0), vocab), 2e-2) << "step " << i;
      got.push_back(Argmax(g.logits(0), vocab));
      gin = {gs, {&got.back(), 1}, true};
      cin = {cs, {&greedy[i], 1}, true};
    }
    EXPECT_EQ(got, greedy) << s["prompt"];
    ASSERT_TRUE(g.Release(gs).ok());
    ASSERT_TRUE(c.Release(cs).ok());
  }
}

TEST_P(CudaEngineTest, ForksAndAppendedKvContinueLikeTheCpuEngine) {
  Engine& g = *gpu_->engine;
  Engine& c = *cpu_->engine;
  const int vocab = g.config().vocab_size;
  const std::vector<int> prompt = ref_["sequences"][0]["prompt_ids"];
  // CPU: prompt, then copy its KV out; GPU: a new sequence gets that KV by Append.
  const SeqId cs = c.AddSequence();
  StepInput cin{cs, prompt, false};
  ASSERT_TRUE(c.Step({&cin, 1}).ok());
  const size_t row = c.kv_tree().layout().token_floats();
  std::vector<float> kv(prompt.size() * row);
  ASSERT_TRUE(c.kv_tree().ReadKv(cs, 0, static_cast<int>(prompt.size()), kv.data()).ok());
  const SeqId gs = g.AddSequence();
  ASSERT_TRUE(g.Append(gs, prompt, kv.data()).ok());
  // Fork both into 3 branches fed different tokens; every branch's logits agree.
  SeqId gk[3], ck[3];
  ASSERT_TRUE(g.Fork(gs, 3, gk).ok());
  ASSERT_TRUE(c.Fork(cs, 3, ck).ok());
  const int next[3] = {3, 5, 7};
  std::vector<StepInput> gi, ci;
  for (int b = 0; b < 3; ++b) {
    gi.push_back({gk[b], {&next[b], 1}, true});
    ci.push_back({ck[b], {&next[b], 1}, true});
  }
  ASSERT_TRUE(g.Step(gi).ok());
  ASSERT_TRUE(c.Step(ci).ok());
  for (int b = 0; b < 3; ++b) {
    EXPECT_LE(MaxAbsDiffOverMax(g.logits(b), c.logits(b), vocab), 2e-2) << "branch " << b;
    EXPECT_EQ(Argmax(g.logits(b), vocab), Argmax(c.logits(b), vocab)) << "branch " << b;
  }
  // The KV the GPU step wrote is back in the host tree (what the router commits).
  std::vector<float> gkv(row), ckv(row);
  ASSERT_TRUE(g.kv_tree().ReadKv(gk[1], static_cast<int>(prompt.size()), 1, gkv.data()).ok());
  ASSERT_TRUE(c.kv_tree().ReadKv(ck[1], static_cast<int>(prompt.size()), 1, ckv.data()).ok());
  EXPECT_LE(MaxAbsDiffOverMax(gkv.data(), ckv.data(), static_cast<int>(row)), 2e-2);
}

INSTANTIATE_TEST_SUITE_P(Models, CudaEngineTest,
                         ::testing::Values("models/test-moe", "models/game24-moe"),
                         [](const auto& info) { return ModelTestName(info.param); });

}  // namespace
}  // namespace arbor::engine
