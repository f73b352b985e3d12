// The C++ forward against an independent float64 PyTorch forward (tools/make_test_model.py) on
// the checked-in tiny checkpoints: logits within 1e-4 relative (to the largest reference logit)
// and identical greedy tokens, at batch 1 and in mixed batches with chunked prefill.
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "arbor/common/test_names.h"
#include "arbor/engine/generator.h"
#include "arbor/engine/local_model.h"
#include "arbor/model/safetensors.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace arbor::engine {
namespace {

constexpr double kRelTol = 1e-4;

struct RefSeq {
  std::string prompt;
  std::vector<int> prompt_ids, greedy_ids;
  std::vector<float> logits;  // [steps + 1, vocab]
};

std::vector<RefSeq> LoadReference(const std::string& dir) {
  std::ifstream in(dir + "/reference.json");
  const auto j = nlohmann::json::parse(in);
  auto file = model::SafetensorsFile::Open(dir + "/reference.safetensors");
  EXPECT_TRUE(file.ok()) << file.status();
  std::vector<RefSeq> seqs;
  for (size_t i = 0; i < j["sequences"].size(); ++i) {
    const auto& s = j["sequences"][i];
    RefSeq r{s["prompt"], s["prompt_ids"], s["greedy_ids"], {}};
    const model::TensorInfo* t = (*file)->Find("seq" + std::to_string(i) + ".logits");
    EXPECT_NE(t, nullptr);
    r.logits.resize(t->numel());
    ConvertToF32(t->dtype, (*file)->Data(*t), t->numel(), r.logits.data());
    seqs.push_back(std::move(r));
  }
  return seqs;
}

// max |got - want| <= tol * max |want|
void ExpectLogitsClose(const float* got, const float* want, int vocab, const std::string& what) {
  double max_ref = 0, max_diff = 0;
  for (int i = 0; i < vocab; ++i) {
    max_ref = std::max(max_ref, std::abs(static_cast<double>(want[i])));
    max_diff = std::max(max_diff, std::abs(static_cast<double>(got[i]) - want[i]));
  }
  EXPECT_LE(max_diff, kRelTol * max_ref)
      << what << ": max diff " << max_diff << " vs max |ref| " << max_ref;
}

int Argmax(const float* x, int n) { return static_cast<int>(std::max_element(x, x + n) - x); }

class EngineParityTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = std::string(ARBOR_SOURCE_DIR) + "/" + GetParam();
    EngineOptions opts;
    opts.max_batch_tokens = 64;
    opts.max_seqs = 8;
    opts.max_seq_tokens = 256;
    opts.kv_cache_tokens = 1024;
    opts.kv_block_tokens = 4;  // small blocks: every prompt spans several, most end partly filled
    auto m = LocalModel::Load(dir_, opts);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
    ref_ = LoadReference(dir_);
    vocab_ = model_->checkpoint->config().vocab_size;
  }

  std::string dir_;
  std::unique_ptr<LocalModel> model_;
  std::vector<RefSeq> ref_;
  int vocab_ = 0;
};

TEST_P(EngineParityTest, TokenizerMatchesSentencePieceInPython) {
  for (const RefSeq& r : ref_) {
    EXPECT_EQ(model_->tokenizer->Encode(r.prompt), r.prompt_ids) << r.prompt;
    EXPECT_EQ(model_->tokenizer->Decode(r.prompt_ids), r.prompt);
  }
}

TEST_P(EngineParityTest, PrefillAndSixteenDecodeStepsAtBatchOne) {
  Engine& engine = *model_->engine;
  for (size_t i = 0; i < ref_.size(); ++i) {
    const RefSeq& r = ref_[i];
    const SeqId seq = engine.AddSequence();
    StepInput in{seq, r.prompt_ids, true};
    ASSERT_TRUE(engine.Step({&in, 1}).ok());
    for (size_t step = 0; step < r.greedy_ids.size(); ++step) {
      const float* logits = engine.logits(0);
      const std::string what = "seq " + std::to_string(i) + " step " + std::to_string(step);
      ExpectLogitsClose(logits, r.logits.data() + step * vocab_, vocab_, what);
      ASSERT_EQ(Argmax(logits, vocab_), r.greedy_ids[step]) << what;
      if (step + 1 == r.greedy_ids.size()) break;
      StepInput next{seq, {&r.greedy_ids[step], 1}, true};
      ASSERT_TRUE(engine.Step({&next, 1}).ok());
    }
    EXPECT_EQ(engine.Length(seq), static_cast<int>(r.prompt_ids.size() + r.greedy_ids.size() - 1));
    ASSERT_TRUE(engine.Release(seq).ok());
  }
  EXPECT_EQ(engine.kv_tree().stats().live_sequences, 0);
  EXPECT_EQ(engine.kv_tree().stats().blocks_in_use, engine.kv_tree().stats().cached_blocks);
}

TEST_P(EngineParityTest, MixedBatchOfDifferentLengthsWithChunkedPrefill) {
  // Sequence i joins at step i and feeds its prompt in chunks of 3 tokens, so steps mix prompt
  // chunks with decode tokens of sequences of different lengths.
  Engine& engine = *model_->engine;
  struct Live {
    SeqId seq;
    size_t fed = 0, produced = 0;
  };
  std::vector<Live> live(ref_.size());
  for (int step = 0;; ++step) {
    std::vector<StepInput> inputs;
    std::vector<size_t> owner;
    for (size_t i = 0; i < ref_.size() && static_cast<int>(i) <= step; ++i) {
      const RefSeq& r = ref_[i];
      Live& l = live[i];
      if (static_cast<int>(i) == step) l.seq = engine.AddSequence();
      if (l.produced == r.greedy_ids.size()) continue;
      if (l.fed < r.prompt_ids.size()) {
        const size_t n = std::min<size_t>(3, r.prompt_ids.size() - l.fed);
        inputs.push_back(
            {l.seq, {r.prompt_ids.data() + l.fed, n}, l.fed + n == r.prompt_ids.size()});
        l.fed += n;
      } else {
        inputs.push_back({l.seq, {&r.greedy_ids[l.produced - 1], 1}, true});
      }
      owner.push_back(i);
    }
    if (inputs.empty()) break;
    ASSERT_TRUE(engine.Step(inputs).ok());
    for (size_t k = 0; k < inputs.size(); ++k) {
      const float* logits = engine.logits(static_cast<int>(k));
      if (logits == nullptr) continue;
      Live& l = live[owner[k]];
      const RefSeq& r = ref_[owner[k]];
      const std::string what =
          "seq " + std::to_string(owner[k]) + " token " + std::to_string(l.produced);
      ExpectLogitsClose(logits, r.logits.data() + l.produced * vocab_, vocab_, what);
      ASSERT_EQ(Argmax(logits, vocab_), r.greedy_ids[l.produced]) << what;
      ++l.produced;
    }
  }
  for (size_t i = 0; i < ref_.size(); ++i) EXPECT_EQ(live[i].produced, ref_[i].greedy_ids.size());
}

TEST_P(EngineParityTest, GreedyGenerationReproducesReferenceTokens) {
  Generator gen(model_->engine.get(), model_->tokenizer.get(), /*prefill_chunk=*/5);
  std::vector<int> ids;
  for (const RefSeq& r : ref_) {
    GenerationParams p;
    p.max_tokens = static_cast<int>(r.greedy_ids.size());
    p.ignore_eos = true;
    ids.push_back(*gen.Submit(model_->tokenizer->Encode(r.prompt), p));
  }
  ASSERT_TRUE(gen.RunToCompletion().ok());
  for (size_t i = 0; i < ref_.size(); ++i) {
    const GenerationResult& res = gen.result(ids[i]);
    EXPECT_EQ(res.token_ids, ref_[i].greedy_ids);
    EXPECT_EQ(res.finish, FinishReason::kLength);
    ASSERT_EQ(res.logprobs.size(), res.token_ids.size());
    for (float lp : res.logprobs) EXPECT_LE(lp, 0.0f);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, EngineParityTest,
                         ::testing::Values("models/test-moe", "tests/data/tiny-mha-top1",
                                           "tests/data/tiny-gqa4-tied", "models/game24-moe"),
                         [](const auto& info) { return ModelTestName(info.param); });

}  // namespace
}  // namespace arbor::engine
