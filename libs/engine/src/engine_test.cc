#include "arbor/engine/engine.h"

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <new>

#include "arbor/engine/local_model.h"
#include "arbor/kernels/gpu.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

// Counts every C++ heap allocation in this test binary. GCC cannot see that these replacements
// pair malloc with free, hence the pragma.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
static std::atomic<int64_t> g_allocations{0};

void* operator new(size_t n) {
  ++g_allocations;
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }

namespace arbor::engine {
namespace {

const std::string kModel = std::string(ARBOR_SOURCE_DIR) + "/models/test-moe";

std::unique_ptr<LocalModel> Load(EngineOptions opts) {
  auto m = LocalModel::Load(kModel, opts);
  EXPECT_TRUE(m.ok()) << m.status();
  return std::move(*m);
}

EngineOptions SmallOptions() {
  EngineOptions o;
  o.max_batch_tokens = 32;
  o.max_seqs = 4;
  o.max_seq_tokens = 128;
  o.kv_cache_tokens = 256;
  o.kv_block_tokens = 4;
  return o;
}

TEST(EngineTest, DecodeStepsAllocateNoHeapMemoryInSteadyState) {
  auto m = Load(SmallOptions());
  Engine& e = *m->engine;
  std::vector<SeqId> seqs;
  std::vector<std::vector<int>> prompts = {{1, 5, 9}, {1, 7}, {1, 8, 9, 10, 11}, {1}};
  std::vector<StepInput> in;
  for (auto& p : prompts) {
    seqs.push_back(e.AddSequence());
    in.push_back({seqs.back(), p, true});
  }
  ASSERT_TRUE(e.Step(in).ok());
  std::vector<int> next(4, 42);
  for (size_t i = 0; i < 4; ++i) in[i] = {seqs[i], {&next[i], 1}, true};
  ASSERT_TRUE(e.Step(in).ok());  // warm-up

  const int64_t before = g_allocations.load();
  ::operator delete(::operator new(8));  // the counter is live
  ASSERT_EQ(g_allocations.load(), before + 1);
  for (int step = 0; step < 24; ++step) {  // crosses several 4-token block boundaries
    ASSERT_TRUE(e.Step(in).ok());
    for (size_t i = 0; i < 4; ++i) {
      next[i] = static_cast<int>(std::max_element(e.logits(i), e.logits(i) + 384) - e.logits(i));
    }
  }
  EXPECT_EQ(g_allocations.load() - before, 1);
  EXPECT_EQ(e.Length(seqs[2]), 5 + 25);
}

TEST(EngineTest, EachExpertRunsOneGroupPerLayerPerStep) {
  auto m = Load(SmallOptions());
  Engine& e = *m->engine;
  const SeqId a = e.AddSequence(), b = e.AddSequence();
  const std::vector<int> pa = {1, 20, 30, 40, 50, 60, 70, 80}, pb = {1, 2, 3, 4, 5, 6, 7};
  const StepInput in[2] = {{a, pa, true}, {b, pb, true}};
  ASSERT_TRUE(e.Step(in).ok());
  const auto& cfg = e.config();
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    int64_t rows = 0;
    for (int64_t n : m->experts->tokens_per_expert()[l]) rows += n;
    EXPECT_EQ(rows, 15 * cfg.num_experts_per_tok);  // every (token, slot) routed once
    int used = 0;
    for (int64_t n : m->experts->tokens_per_expert()[l]) used += n > 0;
    EXPECT_EQ(m->experts->groups_run()[l], used);  // one group per expert that has tokens
    EXPECT_LE(used, cfg.num_local_experts);
  }
}

TEST(EngineTest, BadStepsFailWithClearErrorsAndChangeNothing) {
  auto m = Load(SmallOptions());
  Engine& e = *m->engine;
  const SeqId a = e.AddSequence();
  const std::vector<int> prompt = {1, 10, 11};
  StepInput ok{a, prompt, true};
  ASSERT_TRUE(e.Step({&ok, 1}).ok());
  std::vector<float> expected;
  const int used = e.kv_tree().stats().blocks_in_use;

  const std::vector<int> bad_token = {384}, empty = {}, one = {7};
  const std::vector<int> too_many(40, 5), too_long(126, 5);
  struct Case {
    std::vector<StepInput> inputs;
    absl::StatusCode code;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {{{a, bad_token, true}}, absl::StatusCode::kInvalidArgument, "token id 384 outside"},
      {{{a, empty, true}}, absl::StatusCode::kInvalidArgument, "no tokens"},
      {{{a, one, true}, {a, one, true}}, absl::StatusCode::kInvalidArgument, "appears twice"},
      {{{a, too_many, true}}, absl::StatusCode::kInvalidArgument, "exceed max_batch_tokens"},
      {{{999, one, true}}, absl::StatusCode::kNotFound, "sequence 999 unknown"},
      {{{a, too_long, true}}, absl::StatusCode::kOutOfRange, "past max"},
      {{}, absl::StatusCode::kInvalidArgument, "no inputs"},
  };
  for (const Case& c : cases) {
    const absl::Status st = e.Step(c.inputs);
    EXPECT_EQ(st.code(), c.code) << st;
    EXPECT_NE(st.message().find(c.needle), absl::string_view::npos) << st;
    EXPECT_EQ(e.Length(a), 3);
    EXPECT_EQ(e.kv_tree().stats().blocks_in_use, used);
  }
  // The sequence still continues exactly as on a fresh engine.
  StepInput next{a, one, true};
  ASSERT_TRUE(e.Step({&next, 1}).ok());
  auto fresh = Load(SmallOptions());
  const SeqId f = fresh->engine->AddSequence();
  const std::vector<int> all = {1, 10, 11, 7};
  StepInput fin{f, all, true};
  ASSERT_TRUE(fresh->engine->Step({&fin, 1}).ok());
  for (int i = 0; i < 384; ++i) {
    EXPECT_NEAR(e.logits(0)[i], fresh->engine->logits(0)[i], 1e-4);
  }
}

TEST(EngineTest, FullKvPoolIsResourceExhaustedUntilReleaseOrEviction) {
  EngineOptions o = SmallOptions();
  o.kv_cache_tokens = 16;  // 4 blocks of 4
  auto m = Load(o);
  Engine& e = *m->engine;
  const SeqId a = e.AddSequence(), b = e.AddSequence();
  const std::vector<int> twelve(12, 9), eight(8, 9);
  StepInput ia{a, twelve, true};
  ASSERT_TRUE(e.Step({&ia, 1}).ok());
  EXPECT_EQ(e.kv_tree().stats().blocks_in_use, 3);
  StepInput ib{b, eight, true};
  const absl::Status st = e.Step({&ib, 1});
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  EXPECT_EQ(e.Length(b), 0);
  EXPECT_EQ(e.kv_tree().stats().blocks_in_use, 3);
  // Released, a's full blocks stay as a cached prefix until the pool needs them.
  ASSERT_TRUE(e.Release(a).ok());
  EXPECT_EQ(e.kv_tree().stats().cached_blocks, 3);
  ASSERT_TRUE(e.Step({&ib, 1}).ok());
  EXPECT_EQ(e.kv_tree().stats().evicted_segments, 1);
  EXPECT_EQ(e.kv_tree().stats().blocks_in_use, 2);
  EXPECT_EQ(e.Release(a).code(), absl::StatusCode::kNotFound);
}

TEST(EngineTest, CreateRejectsBadOptionsAndRouterOnlyWeights) {
  EngineOptions o = SmallOptions();
  o.max_seqs = 0;
  auto bad = LocalModel::Load(kModel, o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("max_seqs 0"), absl::string_view::npos);

  auto ckpt = *model::Checkpoint::Open(kModel);
  auto experts_only = *model::ModelWeights::Load(*ckpt, {.non_expert = false});
  auto backend = *CpuExpertBackend::Create(experts_only.get(), 8);
  EXPECT_FALSE(Engine::Create(experts_only.get(), backend.get(), SmallOptions()).ok());
}

TEST(EngineTest, BackendOptionIsCheckedAndCudaNeedsADevice) {
  EngineOptions o = SmallOptions();
  o.backend = "tpu";
  auto bad = LocalModel::Load(kModel, o);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("tpu"), absl::string_view::npos);
  // auto: cuda only with a device and a head_dim the GPU kernel tiles (tiny-gqa4-tied has 12).
  auto test_moe = *model::ModelConfig::Load(kModel);
  auto gqa12 =
      *model::ModelConfig::Load(std::string(ARBOR_SOURCE_DIR) + "/tests/data/tiny-gqa4-tied");
  EXPECT_EQ(ResolveEngineBackend("auto", test_moe),
            kernels::CudaDeviceCount() > 0 ? "cuda" : "cpu");
  EXPECT_EQ(ResolveEngineBackend("auto", gqa12), "cpu");
  EXPECT_EQ(ResolveEngineBackend("cuda", gqa12), "cuda");
  EXPECT_EQ(ResolveEngineBackend("cpu", test_moe), "cpu");
  o.backend = "auto";
  auto resolved = LocalModel::Load(kModel, o);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ((*resolved)->engine->options().backend, ResolveEngineBackend("auto", test_moe));
  if (kernels::CudaDeviceCount() == 0) {
    o.backend = "cuda";
    auto cuda = LocalModel::Load(kModel, o);
    ASSERT_FALSE(cuda.ok());
    EXPECT_EQ(cuda.status().code(), absl::StatusCode::kFailedPrecondition) << cuda.status();
  }
}

// Greedy continuation of `seq` for `steps` tokens starting by feeding `first`; returns every
// logits vector.
std::vector<std::vector<float>> Continue(Engine& e, SeqId seq, int first, int steps) {
  std::vector<std::vector<float>> out;
  int next = first;
  for (int i = 0; i < steps; ++i) {
    StepInput in{seq, {&next, 1}, true};
    EXPECT_TRUE(e.Step({&in, 1}).ok());
    const int v = e.config().vocab_size;
    out.emplace_back(e.logits(0), e.logits(0) + v);
    next = static_cast<int>(std::max_element(e.logits(0), e.logits(0) + v) - e.logits(0));
  }
  return out;
}

TEST(EngineTest, ForkedBranchesEqualIndependentSequencesAndShareAttentionChunks) {
  auto m = Load(SmallOptions());
  Engine& e = *m->engine;
  const std::vector<int> prompt = {1, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49};  // partial block
  const SeqId root = e.AddSequence();
  StepInput in{root, prompt, true};
  ASSERT_TRUE(e.Step({&in, 1}).ok());
  SeqId kids[3];
  const int blocks = e.kv_tree().stats().blocks_in_use;
  ASSERT_TRUE(e.Fork(root, 3, kids).ok());
  EXPECT_EQ(e.kv_tree().stats().blocks_in_use, blocks);
  EXPECT_EQ(e.kv_tree().stats().kv_bytes_copied, 0);

  // All three branches decode together: the prompt's segment is one chunk for all of them.
  std::vector<int> next = {7, 8, 9};
  std::vector<std::vector<std::vector<float>>> got(3);
  const StepCounters before = e.counters();
  for (int step = 0; step < 6; ++step) {
    std::vector<StepInput> ins;
    for (int k = 0; k < 3; ++k) ins.push_back({kids[k], {&next[k], 1}, true});
    ASSERT_TRUE(e.Step(ins).ok());
    for (int k = 0; k < 3; ++k) {
      got[k].emplace_back(e.logits(k), e.logits(k) + 384);
      next[k] = static_cast<int>(std::max_element(e.logits(k), e.logits(k) + 384) - e.logits(k));
    }
  }
  const StepCounters after = e.counters();
  // Per step: one shared prompt chunk + one leaf chunk per branch, for 6 path references.
  EXPECT_EQ(after.attention_chunks - before.attention_chunks, 6 * 4);
  EXPECT_EQ(after.attention_chunk_refs - before.attention_chunk_refs, 6 * 6);

  for (int k = 0; k < 3; ++k) {
    auto fresh = Load(SmallOptions());
    const SeqId s = fresh->engine->AddSequence();
    StepInput p{s, prompt, true};
    ASSERT_TRUE(fresh->engine->Step({&p, 1}).ok());
    const auto want = Continue(*fresh->engine, s, 7 + k, 6);
    for (int i = 0; i < 6; ++i) {
      for (int v = 0; v < 384; ++v) ASSERT_NEAR(got[k][i][v], want[i][v], 1e-4) << k << " " << i;
    }
  }
}

TEST(EngineTest, PromptPrefixIsReusedFromTheCacheWithIdenticalResults) {
  auto m = Load(SmallOptions());
  Engine& e = *m->engine;
  std::vector<int> prompt(14);
  for (int i = 0; i < 14; ++i) prompt[i] = 30 + i;
  const SeqId a = e.AddSequence();
  StepInput in{a, prompt, true};
  ASSERT_TRUE(e.Step({&in, 1}).ok());
  const std::vector<float> want(e.logits(0), e.logits(0) + 384);
  ASSERT_TRUE(e.Release(a).ok());

  auto created = e.AddSequence(prompt);
  ASSERT_TRUE(created.ok());
  EXPECT_EQ(created->reused_tokens, 12);  // three whole 4-token blocks
  StepInput rest{created->seq, absl::MakeConstSpan(prompt).subspan(12), true};
  ASSERT_TRUE(e.Step({&rest, 1}).ok());
  for (int v = 0; v < 384; ++v) ASSERT_NEAR(e.logits(0)[v], want[v], 1e-4);
}

TEST(EngineTest, SlidingWindowCapsSequenceLength) {
  auto dir = std::filesystem::temp_directory_path() / "arbor_engine_window";
  std::filesystem::remove_all(dir);
  std::filesystem::copy(kModel, dir);
  std::ifstream in(dir / "config.json");
  auto cfg = nlohmann::json::parse(in);
  cfg["sliding_window"] = 40;
  std::ofstream(dir / "config.json", std::ios::trunc) << cfg.dump();
  auto m = LocalModel::Load(dir.string(), SmallOptions());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->engine->options().max_seq_tokens, 40);
  const SeqId a = (*m)->engine->AddSequence();
  const std::vector<int> p(41, 5);
  StepInput in_a{a, p, true};
  EXPECT_EQ((*m)->engine->Step({&in_a, 1}).code(), absl::StatusCode::kOutOfRange);
}

TEST(EngineTest, MissingExpertIsFailedPreconditionNamingIt) {
  auto ckpt = *model::Checkpoint::Open(kModel);
  auto router = *model::ModelWeights::Load(*ckpt, {.experts = std::vector<model::ExpertKey>{}});
  auto backend = *CpuExpertBackend::Create(router.get(), 32);
  auto e = *Engine::Create(router.get(), backend.get(), SmallOptions());
  const SeqId a = e->AddSequence();
  const std::vector<int> p = {1, 2, 3};
  StepInput in{a, p, true};
  const absl::Status st = e->Step({&in, 1});
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("layer 0"), absl::string_view::npos) << st;
  EXPECT_EQ(e->Length(a), 0);
}

}  // namespace
}  // namespace arbor::engine
