#include "arbor/engine/generator.h"

#include <cmath>

#include "../../model/src/test_util.h"
#include "arbor/engine/local_model.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace arbor::engine {
namespace {

const std::string kModel = std::string(ARBOR_SOURCE_DIR) + "/models/test-moe";

EngineOptions Options(int max_seqs = 4) {
  EngineOptions o;
  o.max_batch_tokens = 32;
  o.max_seqs = max_seqs;
  o.max_seq_tokens = 256;
  o.kv_cache_tokens = 2048;
  o.kv_block_tokens = 8;
  return o;
}

GenerationResult GenerateOne(LocalModel& m, const std::string& prompt, GenerationParams p) {
  Generator gen(m.engine.get(), m.tokenizer.get());
  auto id = gen.Submit(m.tokenizer->Encode(prompt), p);
  EXPECT_TRUE(id.ok()) << id.status();
  EXPECT_TRUE(gen.RunToCompletion().ok());
  return gen.result(*id);
}

class GeneratorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = LocalModel::Load(kModel, Options());
    ASSERT_TRUE(m.ok()) << m.status();
    m_ = std::move(*m);
  }
  std::unique_ptr<LocalModel> m_;
};

TEST_F(GeneratorTest, MaxTokensEndsWithLength) {
  GenerationParams p;
  p.max_tokens = 7;
  p.ignore_eos = true;
  const GenerationResult r = GenerateOne(*m_, "4 9 10 13", p);
  EXPECT_EQ(r.token_ids.size(), 7u);
  EXPECT_EQ(r.logprobs.size(), 7u);
  EXPECT_EQ(r.finish, FinishReason::kLength);
  EXPECT_EQ(m_->engine->kv_tree().stats().live_sequences, 0);
  EXPECT_EQ(m_->engine->kv_tree().stats().blocks_in_use,
            m_->engine->kv_tree().stats().cached_blocks);  // finished requests free their KV
}

TEST_F(GeneratorTest, StopStringCutsTheTextBeforeIt) {
  GenerationParams p;
  p.max_tokens = 40;
  p.ignore_eos = true;
  const GenerationResult full = GenerateOne(*m_, "The tree", p);
  ASSERT_GE(full.text.size(), 12u);
  // Stop on a piece of the greedy text: generation must end as soon as it appears.
  const std::string stop = full.text.substr(6, 3);
  const size_t at = full.text.find(stop);
  p.stop = {"never-appears", stop};
  const GenerationResult cut = GenerateOne(*m_, "The tree", p);
  EXPECT_EQ(cut.finish, FinishReason::kStop);
  EXPECT_EQ(cut.text, full.text.substr(0, at));
  EXPECT_LT(cut.token_ids.size(), full.token_ids.size());
  EXPECT_TRUE(std::equal(cut.token_ids.begin(), cut.token_ids.end(), full.token_ids.begin()));
}

TEST_F(GeneratorTest, EosEndsGenerationUnlessIgnored) {
  GenerationParams p;
  p.max_tokens = 5;
  p.ignore_eos = true;
  const GenerationResult free_run = GenerateOne(*m_, "4 9", p);
  // A copy of the model whose EOS is the token it generates first.
  auto dir = model::testing::CopyModel(kModel, "eos");
  std::ifstream in(dir / "config.json");
  auto cfg = nlohmann::json::parse(in);
  cfg["eos_token_id"] = free_run.token_ids[0];
  model::testing::WriteFile(dir / "config.json", cfg.dump());
  auto m = *LocalModel::Load(dir.string(), Options());
  p.ignore_eos = false;
  const GenerationResult r = GenerateOne(*m, "4 9", p);
  EXPECT_EQ(r.finish, FinishReason::kEos);
  EXPECT_EQ(r.token_ids, std::vector<int>{free_run.token_ids[0]});
  EXPECT_EQ(r.text, "");
}

TEST_F(GeneratorTest, MoreRequestsThanSlotsQueueAndMatchRunningAlone) {
  auto m = *LocalModel::Load(kModel, Options(/*max_seqs=*/2));
  const std::vector<std::string> prompts = {"4 9 10 13", "branch", "1 1 4 6", "Arbor forks",
                                            "value sure"};
  GenerationParams p;
  p.max_tokens = 9;
  p.ignore_eos = true;
  Generator gen(m->engine.get(), m->tokenizer.get(), /*prefill_chunk=*/3);
  std::vector<int> ids;
  for (const auto& s : prompts) ids.push_back(*gen.Submit(m->tokenizer->Encode(s), p));
  ASSERT_TRUE(gen.RunToCompletion().ok());
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_TRUE(gen.finished(ids[i]));
    EXPECT_EQ(gen.result(ids[i]).token_ids, GenerateOne(*m_, prompts[i], p).token_ids) << i;
  }
  EXPECT_EQ(m->engine->kv_tree().stats().live_sequences, 0);
  EXPECT_EQ(m->engine->kv_tree().stats().blocks_in_use, m->engine->kv_tree().stats().cached_blocks);
  EXPECT_EQ(gen.stats().decode_tokens + static_cast<int64_t>(prompts.size()),
            static_cast<int64_t>(prompts.size()) * 9);  // first token of each comes from prefill
}

// A held request (step tokens 0) is not fed while the others run; one limited to 2 tokens a step
// prefills in chunks of 2; lifted, both finish with exactly the tokens they generate alone.
TEST_F(GeneratorTest, StepTokensHoldAndLimitRequestsWithoutChangingTheirOutput) {
  GenerationParams p;
  p.max_tokens = 6;
  p.ignore_eos = true;
  Generator gen(m_->engine.get(), m_->tokenizer.get());
  const int held = *gen.Submit(m_->tokenizer->Encode("4 9 10 13"), p);
  const int slow = *gen.Submit(m_->tokenizer->Encode("Arbor forks branches"), p);
  const int prompt = gen.prompt_tokens_left(slow);
  ASSERT_GT(prompt, 4);
  gen.SetStepTokens(held, 0);
  gen.SetStepTokens(slow, 2);
  ASSERT_TRUE(gen.Step().ok());
  EXPECT_EQ(gen.prompt_tokens_left(held), static_cast<int>(gen.result(held).prompt_ids.size()));
  EXPECT_EQ(gen.prompt_tokens_left(slow), prompt - 2);
  ASSERT_TRUE(gen.Step().ok());
  EXPECT_EQ(gen.prompt_tokens_left(slow), prompt - 4);
  EXPECT_TRUE(gen.result(held).token_ids.empty());
  gen.SetStepTokens(held, -1);
  gen.SetStepTokens(slow, -1);
  ASSERT_TRUE(gen.RunToCompletion().ok());
  EXPECT_EQ(gen.prompt_tokens_left(slow), 0);
  EXPECT_EQ(gen.result(held).token_ids, GenerateOne(*m_, "4 9 10 13", p).token_ids);
  EXPECT_EQ(gen.result(slow).token_ids, GenerateOne(*m_, "Arbor forks branches", p).token_ids);
}

TEST_F(GeneratorTest, RepeatedPromptReusesCachedPrefixAndGeneratesTheSame) {
  GenerationParams p;
  p.max_tokens = 8;
  p.ignore_eos = true;
  const std::string prompt = "The tree of thoughts grows branch leaf root search beam depth";
  Generator gen(m_->engine.get(), m_->tokenizer.get());
  const int first = *gen.Submit(m_->tokenizer->Encode(prompt), p);
  ASSERT_TRUE(gen.RunToCompletion().ok());
  EXPECT_EQ(gen.stats().reused_tokens, 0);
  const int second = *gen.Submit(m_->tokenizer->Encode(prompt), p);
  ASSERT_TRUE(gen.RunToCompletion().ok());
  EXPECT_GT(gen.stats().reused_tokens, 0);
  EXPECT_EQ(gen.result(second).token_ids, gen.result(first).token_ids);
}

TEST_F(GeneratorTest, SeededSamplingIsReproducible) {
  GenerationParams p;
  p.max_tokens = 12;
  p.ignore_eos = true;
  p.sampling = {0.9f, 50, 0.95f, 1234};
  const auto a = GenerateOne(*m_, "4 9 10 13", p);
  const auto b = GenerateOne(*m_, "4 9 10 13", p);
  EXPECT_EQ(a.token_ids, b.token_ids);
  p.sampling.seed = 99;
  EXPECT_NE(GenerateOne(*m_, "4 9 10 13", p).token_ids, a.token_ids);
}

TEST_F(GeneratorTest, TopLogprobsComeWithEveryTokenAndLeaveSamplingAlone) {
  GenerationParams p;
  p.max_tokens = 9;
  p.ignore_eos = true;
  p.sampling = {0.9f, 0, 1.0f, 77};
  const auto plain = GenerateOne(*m_, "4 9 10 13", p);
  EXPECT_TRUE(plain.top_ids.empty());
  p.top_logprobs = 4;
  const auto r = GenerateOne(*m_, "4 9 10 13", p);
  EXPECT_EQ(r.token_ids, plain.token_ids);  // same seed, same tokens
  ASSERT_EQ(r.top_ids.size(), 9u * 4);
  ASSERT_EQ(r.top_logprobs.size(), 9u * 4);
  for (size_t i = 0; i < r.token_ids.size(); ++i) {
    double mass = 0;
    for (size_t j = i * 4; j < i * 4 + 4; ++j) {
      if (j > i * 4) {
        EXPECT_GE(r.top_logprobs[j - 1], r.top_logprobs[j]);
      }
      mass += std::exp(r.top_logprobs[j]);
      // The sampled token's log-prob is the same number when it is among the four.
      if (r.top_ids[j] == r.token_ids[i]) {
        EXPECT_FLOAT_EQ(r.top_logprobs[j], r.logprobs[i]);
      }
    }
    EXPECT_LE(mass, 1.0 + 1e-5);
    EXPECT_LE(r.logprobs[i], r.top_logprobs[i * 4]);
  }
}

TEST_F(GeneratorTest, MaxTokensZeroOnlyFeedsThePrompt) {
  Generator gen(m_->engine.get(), m_->tokenizer.get());
  GenerationParams p;
  p.max_tokens = 0;
  const std::vector<int> prompt = m_->tokenizer->Encode("4 9 10 13");
  const SeqId seq = m_->engine->AddSequence();
  auto id = gen.Submit(prompt, p, {.sequence = seq, .keep_sequence = true});
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_TRUE(gen.RunToCompletion().ok());
  EXPECT_TRUE(gen.result(*id).token_ids.empty());
  EXPECT_EQ(gen.result(*id).finish, FinishReason::kLength);
  EXPECT_EQ(m_->engine->Length(seq), static_cast<int>(prompt.size()));
}

// complete_kv + keep_sequence + an attached sequence is how the router drives a generation: the
// kept sequence ends up holding KV for prompt + every generated token, and continuing from it
// gives the same tokens as one longer generation.
TEST_F(GeneratorTest, AttachedSequenceWithCompleteKvContinuesExactly) {
  GenerationParams p;
  p.max_tokens = 12;
  p.ignore_eos = true;
  const std::vector<int> prompt = m_->tokenizer->Encode("4 9 10 13");
  const GenerationResult whole = GenerateOne(*m_, "4 9 10 13", p);

  Generator gen(m_->engine.get(), m_->tokenizer.get());
  const SeqId seq = m_->engine->AddSequence();
  GenerationParams first = p;
  first.max_tokens = 5;
  auto a = gen.Submit(prompt, first, {.sequence = seq, .keep_sequence = true, .complete_kv = true});
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(gen.RunToCompletion().ok());
  ASSERT_TRUE(gen.finished(*a));
  const std::vector<int> got_a = gen.result(*a).token_ids;
  ASSERT_EQ(got_a.size(), 5u);
  EXPECT_EQ(m_->engine->Length(seq), static_cast<int>(prompt.size() + 5));

  // Continue from prompt + 5 tokens in a new request.
  std::vector<int> context = prompt;
  context.insert(context.end(), got_a.begin(), got_a.end());
  ASSERT_TRUE(m_->engine->Release(seq).ok());
  GenerationParams rest = p;
  rest.max_tokens = 7;
  auto b = gen.Submit(context, rest);  // reuses the released sequence's cached blocks
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE(gen.RunToCompletion().ok());
  std::vector<int> joined = got_a;
  joined.insert(joined.end(), gen.result(*b).token_ids.begin(), gen.result(*b).token_ids.end());
  EXPECT_EQ(joined, whole.token_ids);
  gen.Erase(*a);
  gen.Erase(*b);
  EXPECT_EQ(m_->engine->kv_tree().stats().live_sequences, 0);
}

TEST_F(GeneratorTest, CancelReleasesTheSequenceAndStableTextNeverShrinks) {
  Generator gen(m_->engine.get(), m_->tokenizer.get());
  GenerationParams p;
  p.max_tokens = 30;
  p.ignore_eos = true;
  p.stop = {"zzzzzz"};  // never generated: the last 5 bytes are held back while running
  auto id = gen.Submit(m_->tokenizer->Encode("4 9 10 13"), p);
  ASSERT_TRUE(id.ok());
  size_t stable = 0;
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(gen.Step().ok());
    const size_t now = gen.stable_text_bytes(*id);
    EXPECT_GE(now, stable);
    EXPECT_LE(now + 5, std::max<size_t>(gen.result(*id).text.size(), 5));
    stable = now;
  }
  EXPECT_EQ(gen.live(), 1);
  gen.Cancel(*id);
  EXPECT_TRUE(gen.finished(*id));
  EXPECT_EQ(gen.live(), 0);
  EXPECT_EQ(m_->engine->kv_tree().stats().live_sequences, 0);
  gen.Erase(*id);
}

TEST_F(GeneratorTest, SubmitRejectsBadRequests) {
  Generator gen(m_->engine.get(), m_->tokenizer.get());
  GenerationParams p;
  EXPECT_NE(gen.Submit({}, p).status().message().find("no tokens"), absl::string_view::npos);
  EXPECT_NE(gen.Submit({1, 5000}, p).status().message().find("5000"), absl::string_view::npos);
  EXPECT_NE(gen.Submit(std::vector<int>(256, 5), p).status().message().find("max_seq_tokens"),
            absl::string_view::npos);
  p.max_tokens = -1;
  EXPECT_NE(gen.Submit({1}, p).status().message().find("max_tokens"), absl::string_view::npos);
  p.max_tokens = 4;
  EXPECT_NE(gen.Submit({1, 2}, p, {.held = 1}).status().message().find("held needs a sequence"),
            absl::string_view::npos);
  const SeqId seq = m_->engine->AddSequence();
  EXPECT_NE(gen.Submit({1, 2}, p, {.sequence = seq, .held = 1}).status().message().find("holds 0"),
            absl::string_view::npos);
  EXPECT_NE(gen.Submit({1, 2}, p, {.sequence = seq, .held = 2}).status().message().find("held 2"),
            absl::string_view::npos);
  p.max_tokens = 4;
  p.top_logprobs = 21;
  EXPECT_NE(gen.Submit({1}, p).status().message().find("top_logprobs 21"), absl::string_view::npos);
  p.top_logprobs = 0;
  p.stop = {""};
  EXPECT_NE(gen.Submit({1}, p).status().message().find("stop[0] of 0 bytes"),
            absl::string_view::npos);
  Generator no_tokenizer(m_->engine.get(), nullptr);
  p.stop = {"x"};
  EXPECT_NE(no_tokenizer.Submit({1}, p).status().message().find("tokenizer"),
            absl::string_view::npos);
}

// Scoring a text (prompt_logprobs) against generating it: the log-prob the generator reports for
// each generated token is the one scoring prompt + generation gives the same token, whether the
// prompt goes in one chunk of logits rows or in chunks cut by max_seqs rows, alone or next to
// other requests; top alternatives come with each entry, most likely first.
TEST_F(GeneratorTest, PromptLogprobsScoreEveryTokenAsGenerationDoes) {
  GenerationParams p;
  p.max_tokens = 10;
  p.ignore_eos = true;
  const std::vector<int> prompt = m_->tokenizer->Encode("The tree of thoughts");
  const GenerationResult gen = GenerateOne(*m_, "The tree of thoughts", p);
  std::vector<int> text = prompt;
  text.insert(text.end(), gen.token_ids.begin(), gen.token_ids.end());

  GenerationParams score;
  score.max_tokens = 0;
  score.prompt_logprobs = true;
  score.top_logprobs = 3;
  for (int chunk : {0, 3}) {
    Generator g(m_->engine.get(), m_->tokenizer.get(), chunk);
    auto busy = g.Submit(prompt, p);  // a neighbour that decodes while the text is scored
    auto id = g.Submit(text, score);
    ASSERT_TRUE(id.ok()) << id.status();
    ASSERT_TRUE(g.RunToCompletion().ok());
    const GenerationResult& r = g.result(*id);
    EXPECT_EQ(r.prompt_logprobs_from, 1);
    ASSERT_EQ(r.prompt_logprobs.size(), text.size() - 1) << "chunk " << chunk;
    ASSERT_EQ(r.prompt_top_ids.size(), 3 * r.prompt_logprobs.size());
    for (size_t i = 0; i < gen.token_ids.size(); ++i) {
      EXPECT_NEAR(r.prompt_logprobs[prompt.size() - 1 + i], gen.logprobs[i], 1e-4)
          << "chunk " << chunk << " token " << i;
    }
    for (size_t e = 0; e < r.prompt_logprobs.size(); ++e) {
      EXPECT_LE(r.prompt_logprobs[e], 0.0f);
      EXPECT_LE(r.prompt_logprobs[e], r.prompt_top_logprobs[3 * e] + 1e-6f);
      EXPECT_GE(r.prompt_top_logprobs[3 * e], r.prompt_top_logprobs[3 * e + 1]);
    }
    EXPECT_TRUE(r.token_ids.empty());
    EXPECT_EQ(g.result(*busy).token_ids, gen.token_ids);
  }
  EXPECT_EQ(m_->engine->kv_tree().stats().live_sequences, 0);
}

// A request attached to a sequence that already holds `held` tokens scores from held + 1; the
// scores equal those of scoring the whole text on a new sequence.
TEST_F(GeneratorTest, PromptLogprobsOnAnAttachedSequenceStartAfterWhatItHeld) {
  const std::vector<int> text = m_->tokenizer->Encode("1 1 4 6: 6 / (1 - 1 / 4)");
  GenerationParams score;
  score.max_tokens = 0;
  score.prompt_logprobs = true;
  Generator g(m_->engine.get(), m_->tokenizer.get());
  auto whole = g.Submit(text, score);
  ASSERT_TRUE(g.RunToCompletion().ok());

  const int held = 4;
  const SeqId seq = m_->engine->AddSequence();
  GenerationParams feed;
  feed.max_tokens = 0;
  auto a =
      g.Submit({text.begin(), text.begin() + held}, feed, {.sequence = seq, .keep_sequence = true});
  ASSERT_TRUE(g.RunToCompletion().ok());
  auto b = g.Submit(text, score, {.sequence = seq, .held = held, .keep_sequence = true});
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_TRUE(g.RunToCompletion().ok());
  const GenerationResult& r = g.result(*b);
  EXPECT_EQ(r.prompt_logprobs_from, held + 1);
  ASSERT_EQ(r.prompt_logprobs.size(), text.size() - held - 1);
  for (size_t e = 0; e < r.prompt_logprobs.size(); ++e) {
    EXPECT_NEAR(r.prompt_logprobs[e], g.result(*whole).prompt_logprobs[held + e], 1e-4) << e;
  }
  EXPECT_TRUE(g.result(*a).prompt_logprobs.empty());
  ASSERT_TRUE(m_->engine->Release(seq).ok());
}

TEST(EngineLogitRowsTest, AllLogitsRowsAreBoundedByMaxLogitRows) {
  EngineOptions o = Options(/*max_seqs=*/2);
  o.max_logit_rows = 1;
  EXPECT_NE(LocalModel::Load(kModel, o).status().message().find("max_logit_rows 1"),
            absl::string_view::npos);
  o.max_logit_rows = 0;  // = max_seqs
  auto m = LocalModel::Load(kModel, o);
  ASSERT_TRUE(m.ok()) << m.status();
  Engine& e = *(*m)->engine;
  const std::vector<int> three = {1, 40, 41};
  const SeqId seq = e.AddSequence();
  StepInput in{seq, three, true, true};
  const absl::Status st = e.Step({&in, 1});
  EXPECT_NE(st.message().find("3 logits rows exceed max_logit_rows 2"), absl::string_view::npos)
      << st;
  in.tokens = {three.data(), 2};
  ASSERT_TRUE(e.Step({&in, 1}).ok());
  ASSERT_NE(e.token_logits(0, 1), nullptr);
  EXPECT_EQ(e.token_logits(0, 1), e.logits(0));  // the last row is the input's logits
  EXPECT_EQ(e.token_logits(0, 2), nullptr);
  EXPECT_EQ(e.token_logits(1, 0), nullptr);
}

}  // namespace
}  // namespace arbor::engine
