// KV tree benchmarks (Google Benchmark; --benchmark_format=json for machines):
//   BM_Fork/<context_tokens>          fork one branch off a sequence of that length
//   BM_ForkDepth/<depth>              fork one branch off the deepest leaf of a chain
//   BM_TreeAttention/<branches>/<prefix_tokens>   one decode step, shared prefix read once
//   BM_PagedAttention/<branches>/<prefix_tokens>  the same step, each branch reading its path
// Counters: bytes_copied_per_fork and blocks_per_fork (both 0 by design), kv_bytes_read and
// kv_GBps (bytes of KV the kernel had to read, per second), mem_ratio (KV tokens held over
// prefix + suffixes).
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <vector>

#include "arbor/kernels/paged_attention.h"
#include "arbor/kernels/tree_attention.h"
#include "arbor/kvcache/kv_tree.h"

namespace arbor {
namespace {

using kvcache::KvLayout;
using kvcache::KvTree;
using kvcache::SeqId;

// Fork benchmarks care about bookkeeping, not KV size: a small layout lets 1M tokens fit.
const KvLayout kForkLayout{1, 1, 8, 16};
constexpr int kForkBatch = 4096;  // forks between (untimed) releases

// Grows `seq` by n tokens without writing KV (the fork never reads it).
void Grow(KvTree& tree, SeqId seq, int n) {
  const int chunk = 1 << 16;
  for (int done = 0; done < n; done += chunk) {
    const int k = std::min(chunk, n - done);
    std::vector<int> tokens(k, 5);
    if (!tree.Reserve({seq}, {k}).ok() || !tree.Commit(seq, tokens).ok()) std::abort();
  }
}

void RunForks(benchmark::State& state, KvTree& tree, SeqId seq) {
  std::vector<SeqId> kids(kForkBatch);
  const auto before = tree.stats();
  int i = 0;
  for (auto _ : state) {
    if (!tree.Fork(seq, 1, &kids[i]).ok()) std::abort();
    if (++i == kForkBatch) {
      state.PauseTiming();
      for (SeqId k : kids) (void)tree.Release(k);
      i = 0;
      state.ResumeTiming();
    }
  }
  const auto after = tree.stats();
  state.counters["bytes_copied_per_fork"] =
      static_cast<double>(after.kv_bytes_copied - before.kv_bytes_copied) / state.iterations();
  state.counters["blocks_in_use"] = after.blocks_in_use;
  for (int j = 0; j < i; ++j) (void)tree.Release(kids[j]);
}

void BM_Fork(benchmark::State& state) {
  const int ctx = static_cast<int>(state.range(0));
  auto tree = *KvTree::Create(kForkLayout, ctx / 16 + 16,
                              {.max_fork = 64, .max_seq_tokens = ctx + 16, .prefix_index = false});
  const SeqId seq = tree->CreateSequence({})->seq;
  Grow(*tree, seq, ctx);
  RunForks(state, *tree, seq);
}
BENCHMARK(BM_Fork)->Arg(16)->Arg(1024)->Arg(65536)->Arg(1048576);

void BM_ForkDepth(benchmark::State& state) {
  const int depth = static_cast<int>(state.range(0));
  auto tree =
      *KvTree::Create(kForkLayout, depth + 16,
                      {.max_fork = 64, .max_seq_tokens = 16 * depth + 16, .prefix_index = false});
  SeqId seq = tree->CreateSequence({})->seq;
  for (int d = 0; d < depth; ++d) {  // each level: 4 tokens, then fork (seq moves one deeper)
    Grow(*tree, seq, 4);
    SeqId sibling;
    if (!tree->Fork(seq, 1, &sibling).ok()) std::abort();
    (void)tree->Release(sibling);
  }
  Grow(*tree, seq, 4);
  SeqId probe;
  (void)tree->Fork(seq, 1, &probe);  // freeze the deepest leaf once; forks below are the same
  std::vector<kvcache::PathEntry> path;
  (void)tree->Path(probe, &path);
  state.counters["path_segments"] = static_cast<double>(path.size());
  (void)tree->Release(probe);
  RunForks(state, *tree, seq);
}
BENCHMARK(BM_ForkDepth)->Arg(1)->Arg(10)->Arg(100)->Arg(1000);

// ---- attention: one decode step of `branches` leaves under a shared prefix ----------------
// Mixtral-8x7B attention shapes: 32 query heads, 8 kv heads, head_dim 128; one layer.
constexpr int kHeads = 32, kKvHeads = 8, kHeadDim = 128, kBlock = 16, kSuffix = 64;

struct AttentionSetup {
  std::unique_ptr<KvTree> tree;
  std::vector<SeqId> leaves;
  std::vector<float> q;  // [branches, heads * head_dim]
  std::vector<int> pos;  // [branches]
  double memory_ratio = 0;

  AttentionSetup(int branches, int prefix) {
    const KvLayout layout{1, kKvHeads, kHeadDim, kBlock};
    const int blocks = prefix / kBlock + branches * (kSuffix / kBlock + 1) + 4;
    tree = *KvTree::Create(
        layout, blocks,
        {.max_fork = 64, .max_seq_tokens = prefix + 2 * kSuffix, .prefix_index = false});
    std::mt19937 rng(1);
    std::normal_distribution<float> nd(0, 1);
    const size_t row = 2 * kKvHeads * kHeadDim;
    auto append = [&](SeqId s, int n) {
      std::vector<float> kv(static_cast<size_t>(n) * row);
      for (float& x : kv) x = nd(rng);
      if (!tree->Append(s, std::vector<int>(n, 3), kv.data()).ok()) std::abort();
    };
    const SeqId root = tree->CreateSequence({})->seq;
    append(root, prefix);
    leaves.resize(branches);
    if (!tree->Fork(root, branches, leaves.data()).ok()) std::abort();
    (void)tree->Release(root);
    for (SeqId s : leaves) append(s, kSuffix);
    q.resize(static_cast<size_t>(branches) * kHeads * kHeadDim);
    for (float& x : q) x = nd(rng);
    pos.assign(branches, prefix + kSuffix - 1);
    memory_ratio = tree->stats().blocks_in_use * static_cast<double>(kBlock) /
                   (prefix + static_cast<double>(branches) * kSuffix);
  }
};

void SetCommon(benchmark::State& state, const AttentionSetup& s, double kv_bytes) {
  state.counters["kv_bytes_read"] = kv_bytes;
  state.counters["kv_GBps"] =
      benchmark::Counter(kv_bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["mem_ratio"] = s.memory_ratio;
}

void BM_TreeAttention(benchmark::State& state) {
  const int branches = static_cast<int>(state.range(0)), prefix = static_cast<int>(state.range(1));
  AttentionSetup s(branches, prefix);
  const KvTree& tree = *s.tree;
  // Chunks: the shared prefix (all branches), then each branch's own suffix.
  kernels::AttentionChunks chunks;
  std::vector<const float*> bk, bv;
  std::vector<kvcache::PathEntry> path;
  (void)tree.Path(s.leaves[0], &path);
  auto add_chunk = [&](const kvcache::PathEntry& e, const std::vector<int>& qs) {
    const int n_blocks = tree.layout().BlocksFor(e.length);
    chunks.Add(e.start, e.length, e.blocks, n_blocks);
    for (int b = 0; b < n_blocks; ++b) {
      bk.push_back(tree.block_data(e.blocks[b]) + tree.layout().offset(0, 0));
      bv.push_back(tree.block_data(e.blocks[b]) + tree.layout().offset(0, 1));
    }
    for (int q : qs) chunks.AddQuery(q);
  };
  std::vector<int> all(branches);
  for (int b = 0; b < branches; ++b) all[b] = b;
  add_chunk(path[0], all);
  for (int b = 0; b < branches; ++b) {
    (void)tree.Path(s.leaves[b], &path);
    add_chunk(path.back(), {b});
  }
  std::vector<float> out(s.q.size());
  std::vector<float> ws(kernels::TreeAttentionParams::WorkspaceFloats(branches, branches, kHeads,
                                                                      kKvHeads, kHeadDim, kBlock));
  kernels::TreeAttentionParams p;
  p.q = s.q.data();
  p.q_row_stride = kHeads * kHeadDim;
  p.out = out.data();
  p.q_pos = s.pos.data();
  p.n_tokens = branches;
  p.n_heads = kHeads;
  p.n_kv_heads = kKvHeads;
  p.head_dim = kHeadDim;
  p.scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
  p.chunks = chunks.view();
  p.block_k = bk.data();
  p.block_v = bv.data();
  p.block_tokens = kBlock;
  p.head_stride = tree.layout().head_stride();
  p.workspace = ws.data();
  if (!p.Validate().ok()) std::abort();
  for (auto _ : state) {
    kernels::TreeAttentionCpu(p);
    benchmark::DoNotOptimize(out.data());
  }
  SetCommon(state, s,
            (prefix + static_cast<double>(branches) * kSuffix) * 2 * kKvHeads * kHeadDim * 4);
}

void BM_PagedAttention(benchmark::State& state) {
  const int branches = static_cast<int>(state.range(0)), prefix = static_cast<int>(state.range(1));
  AttentionSetup s(branches, prefix);
  const KvTree& tree = *s.tree;
  // Each branch lists every block of its own path (prefix blocks repeated per branch).
  std::vector<int> query_start = {0}, kv_len, block_start = {0};
  std::vector<const float*> bk, bv;
  std::vector<kvcache::PathEntry> path;
  for (int b = 0; b < branches; ++b) {
    (void)tree.Path(s.leaves[b], &path);
    for (const auto& e : path) {
      for (int i = 0; i < (e.length + kBlock - 1) / kBlock; ++i) {
        bk.push_back(tree.block_data(e.blocks[i]) + tree.layout().offset(0, 0));
        bv.push_back(tree.block_data(e.blocks[i]) + tree.layout().offset(0, 1));
      }
    }
    block_start.push_back(static_cast<int>(bk.size()));
    query_start.push_back(b + 1);
    kv_len.push_back(prefix + kSuffix);
  }
  std::vector<float> out(s.q.size());
  std::vector<float> ws(
      kernels::PagedAttentionParams::WorkspaceFloats(1, kHeads, kKvHeads, kHeadDim, kBlock));
  kernels::PagedAttentionParams p;
  p.q = s.q.data();
  p.q_row_stride = kHeads * kHeadDim;
  p.out = out.data();
  p.n_tokens = branches;
  p.n_heads = kHeads;
  p.n_kv_heads = kKvHeads;
  p.head_dim = kHeadDim;
  p.scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
  p.n_seqs = branches;
  p.query_start = query_start.data();
  p.kv_len = kv_len.data();
  p.block_start = block_start.data();
  p.block_k = bk.data();
  p.block_v = bv.data();
  p.block_tokens = kBlock;
  p.head_stride = tree.layout().head_stride();
  p.workspace = ws.data();
  if (!p.Validate().ok()) std::abort();
  for (auto _ : state) {
    kernels::PagedAttentionCpu(p);
    benchmark::DoNotOptimize(out.data());
  }
  SetCommon(state, s,
            static_cast<double>(branches) * (prefix + kSuffix) * 2 * kKvHeads * kHeadDim * 4);
}

void AttentionArgs(benchmark::internal::Benchmark* b) {
  for (int branches : {4, 16, 64}) {
    for (int prefix : {1024, 4096, 16384}) b->Args({branches, prefix});
  }
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}
BENCHMARK(BM_TreeAttention)->Apply(AttentionArgs);
BENCHMARK(BM_PagedAttention)->Apply(AttentionArgs);

}  // namespace
}  // namespace arbor

BENCHMARK_MAIN();
