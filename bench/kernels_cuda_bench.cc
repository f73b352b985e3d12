// GPU kernel figures, one JSON object per line (no Google Benchmark, so the binary needs only
// CUDA, cuBLAS and Arbor's own libraries on the GPU machine):
//   {"bench":"device", ...}                          name, SMs, L2, peak and measured bandwidth
//   {"bench":"expert_gemm","tokens_per_expert":T,...} Mixtral-8x7B expert FFN (hidden 4096,
//       intermediate 14336, 8 experts, T rows each) through ExpertFfnRunner, grouped and loop,
//       beside the same FLOPs as one dense FFN GEMM pair over 8T rows; TFLOP/s and ratios
//   {"bench":"decode_attention","branches":B,...}    one decode step of B branches below a
//       4096-token prefix (Mixtral attention: 32 heads, 8 kv heads, head_dim 128, 16-token
//       blocks, 32-token suffixes): tree vs per-sequence paged kernel, unique-KV GB/s, speedup
// Each figure is the median of --iters timed runs (CUDA events) after warm-up.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "arbor/common/dtype.h"
#include "arbor/kernels/cuda_check.h"
#include "arbor/kernels/decode_attention.h"
#include "arbor/kernels/device_pool.h"
#include "arbor/kernels/expert_ffn.h"

namespace arbor::kernels {
namespace {

int g_iters = 20;

void Die(const absl::Status& st, const char* what) {
  if (st.ok()) return;
  std::fprintf(stderr, "%s: %s\n", what, st.ToString().c_str());
  std::exit(1);
}

template <typename F>
double MedianMs(F&& fn) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  for (int i = 0; i < 3; ++i) fn();
  std::vector<float> ms;
  for (int i = 0; i < g_iters; ++i) {
    cudaEventRecord(a);
    fn();
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float t = 0;
    cudaEventElapsedTime(&t, a, b);
    ms.push_back(t);
  }
  Die(CudaStatus(cudaGetLastError(), "timed work"), "bench");
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

DeviceBuffer Alloc(DevicePool& pool, size_t bytes) {
  auto b = pool.Allocate(bytes);
  Die(b.status(), "allocate");
  return std::move(*b);
}

template <typename T>
DeviceBuffer Upload(DevicePool& pool, const std::vector<T>& v) {
  auto d = pool.Upload(v.data(), v.size() * sizeof(T));
  Die(d.status(), "upload");
  return std::move(*d);
}

// Random bf16 values with standard deviation `scale`, generated on the host once per size.
DeviceBuffer RandomBf16(DevicePool& pool, size_t n, float scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0, scale);
  std::vector<bf16_t> h(n);
  for (auto& x : h) x = F32ToBF16(nd(rng));
  return Upload(pool, h);
}

double DeviceReport(DevicePool& pool) {
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  int mem_khz = 0;
  cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, 0);
  const double peak = 2.0 * mem_khz * 1e3 * (prop.memoryBusWidth / 8) / 1e9;  // GB/s, DDR
  const size_t bytes = size_t{1} << 30;
  DeviceBuffer a = Alloc(pool, bytes), b = Alloc(pool, bytes);
  const double ms =
      MedianMs([&] { cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice); });
  const double copy_gbps = 2.0 * bytes / (ms * 1e-3) / 1e9;  // read + write
  std::printf(
      "{\"bench\":\"device\",\"name\":\"%s\",\"sm\":%d,\"cc\":\"%d.%d\",\"l2_mib\":%.0f,"
      "\"peak_gbps\":%.0f,\"copy_gbps\":%.0f}\n",
      prop.name, prop.multiProcessorCount, prop.major, prop.minor, prop.l2CacheSize / 1048576.0,
      peak, copy_gbps);
  return copy_gbps;
}

void BenchExpertGemm(DevicePool& pool, int tokens_per_expert) {
  constexpr int kHidden = 4096, kInter = 14336, kExperts = 8;
  const int rows = kExperts * tokens_per_expert;
  std::vector<DeviceBuffer> w13, w2;
  for (int e = 0; e < kExperts; ++e) {
    w13.push_back(RandomBf16(pool, size_t{2} * kInter * kHidden, 0.02f, 10 + e));
    w2.push_back(RandomBf16(pool, size_t{kHidden} * kInter, 0.02f, 20 + e));
  }
  DeviceBuffer x = RandomBf16(pool, size_t{1} * rows * kHidden, 1.0f, 1);
  DeviceBuffer y = Alloc(pool, size_t{2} * rows * kHidden);
  DeviceBuffer gu = Alloc(pool, size_t{2} * rows * 2 * kInter);
  DeviceBuffer act = Alloc(pool, size_t{2} * rows * kInter);
  std::vector<ExpertFfnGroup> groups;
  for (int e = 0; e < kExperts; ++e) {
    groups.push_back(
        {e * tokens_per_expert, tokens_per_expert, w13[e].as<bf16_t>(), w2[e].as<bf16_t>()});
  }
  ExpertFfnParams p;
  p.x = x.as<bf16_t>(), p.y = y.as<bf16_t>(), p.n_rows = rows, p.hidden = kHidden;
  p.inter = kInter, p.groups = groups.data(), p.n_groups = kExperts;
  p.gate_up = gu.as<bf16_t>(), p.act = act.as<bf16_t>();
  auto grouped = ExpertFfnRunner::Create(&pool, ExpertGemm::kGrouped, kExperts);
  auto loop = ExpertFfnRunner::Create(&pool, ExpertGemm::kLoop, kExperts);
  Die(grouped.status(), "runner");
  Die(loop.status(), "runner");
  absl::Status st;
  const double grouped_ms = MedianMs([&] { st.Update((*grouped)->Run(p, nullptr)); });
  Die(st, "grouped GEMM");
  const double loop_ms = MedianMs([&] { st.Update((*loop)->Run(p, nullptr)); });
  Die(st, "GEMM loop");
  // Dense: the same rows through one expert's weights as one GEMM pair.
  ExpertFfnGroup one{0, rows, w13[0].as<bf16_t>(), w2[0].as<bf16_t>()};
  ExpertFfnParams d = p;
  d.groups = &one, d.n_groups = 1;
  const double dense_ms = MedianMs([&] { st.Update((*loop)->Run(d, nullptr)); });
  Die(st, "dense GEMM");
  const double flops = ExpertFfnFlops(rows, kHidden, kInter);
  auto tf = [&](double ms) { return flops / (ms * 1e-3) / 1e12; };
  std::printf(
      "{\"bench\":\"expert_gemm\",\"tokens_per_expert\":%d,\"experts\":%d,\"hidden\":%d,"
      "\"intermediate\":%d,\"grouped_ms\":%.4f,\"loop_ms\":%.4f,\"dense_ms\":%.4f,"
      "\"grouped_tflops\":%.1f,\"loop_tflops\":%.1f,\"dense_tflops\":%.1f,"
      "\"grouped_over_dense\":%.3f,\"loop_over_dense\":%.3f}\n",
      tokens_per_expert, kExperts, kHidden, kInter, grouped_ms, loop_ms, dense_ms, tf(grouped_ms),
      tf(loop_ms), tf(dense_ms), dense_ms / grouped_ms, dense_ms / loop_ms);
}

// Device copies of a DecodePlan and its chunk arrays.
struct DevicePlan {
  DeviceBuffer items, slot_start, slots, pm, pl, po, start, len, block_start, qstart, queries, bk,
      bv;
  DecodeAttentionParams p;
};

void DecodeAttention(DevicePool& pool, int branches, double copy_gbps) {
  constexpr int kHeads = 32, kKvHeads = 8, kHd = 128, kBt = 16, kPrefix = 4096, kSuffix = 32;
  const size_t head_stride = size_t{kBt} * kHd, block_elems = kKvHeads * head_stride;
  const int prefix_blocks = kPrefix / kBt, suffix_blocks = kSuffix / kBt;
  const int n_blocks = prefix_blocks + branches * suffix_blocks;
  DeviceBuffer k = RandomBf16(pool, n_blocks * block_elems, 1.0f, 3);
  DeviceBuffer v = RandomBf16(pool, n_blocks * block_elems, 1.0f, 4);
  std::vector<const bf16_t*> all_k, all_v;
  for (int b = 0; b < n_blocks; ++b) {
    all_k.push_back(k.as<bf16_t>() + b * block_elems);
    all_v.push_back(v.as<bf16_t>() + b * block_elems);
  }
  std::vector<float> hq(size_t{1} * branches * kHeads * kHd);
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0, 1);
  for (float& x : hq) x = nd(rng);
  std::vector<int> q_pos(branches, kPrefix + kSuffix - 1);
  DeviceBuffer dq = Upload(pool, hq), dpos = Upload(pool, q_pos);
  DeviceBuffer dout = Alloc(pool, hq.size() * sizeof(float));

  auto build = [&](bool tree, int split) {
    AttentionChunks chunks;
    std::vector<const bf16_t*> bk, bv;
    auto add_chunk = [&](int s, int l, int first_block, int nb, std::vector<int> qs) {
      std::vector<int> ids;
      for (int b = first_block; b < first_block + nb; ++b) {
        ids.push_back(b), bk.push_back(all_k[b]), bv.push_back(all_v[b]);
      }
      chunks.Add(s, l, ids);
      for (int q : qs) chunks.AddQuery(q);
    };
    std::vector<int> everyone(branches);
    for (int i = 0; i < branches; ++i) everyone[i] = i;
    if (tree) add_chunk(0, kPrefix, 0, prefix_blocks, everyone);
    for (int i = 0; i < branches; ++i) {
      if (!tree) add_chunk(0, kPrefix, 0, prefix_blocks, {i});
      add_chunk(kPrefix, kSuffix, prefix_blocks + i * suffix_blocks, suffix_blocks, {i});
    }
    const DecodePlan plan = PlanDecode(chunks.view(), branches,
                                       tree ? kTreeDecodeRows / (kHeads / kKvHeads) : 1, split);
    auto dp = std::make_unique<DevicePlan>();
    dp->items = Upload(pool, plan.items), dp->slot_start = Upload(pool, plan.query_slot_start);
    dp->slots = Upload(pool, plan.query_slots);
    dp->pm = Alloc(pool, size_t{4} * plan.n_slots * kHeads);
    dp->pl = Alloc(pool, size_t{4} * plan.n_slots * kHeads);
    dp->po = Alloc(pool, size_t{4} * plan.n_slots * kHeads * kHd);
    dp->start = Upload(pool, chunks.start()), dp->len = Upload(pool, chunks.len());
    dp->block_start = Upload(pool, chunks.block_start());
    dp->qstart = Upload(pool, chunks.query_start()), dp->queries = Upload(pool, chunks.queries());
    dp->bk = Upload(pool, bk), dp->bv = Upload(pool, bv);
    DecodeAttentionParams& p = dp->p;
    p.q = dq.as<float>(), p.q_row_stride = kHeads * kHd, p.out = dout.as<float>();
    p.q_pos = dpos.as<int>(), p.n_tokens = branches, p.n_heads = kHeads, p.n_kv_heads = kKvHeads;
    p.head_dim = kHd, p.scale = 1.0f / std::sqrt(128.0f);
    p.chunks = {.n_chunks = chunks.size(),
                .start = dp->start.as<int>(),
                .len = dp->len.as<int>(),
                .block_start = dp->block_start.as<int>(),
                .query_start = dp->qstart.as<int>(),
                .queries = dp->queries.as<int>()};
    p.block_k = dp->bk.as<const bf16_t*>(), p.block_v = dp->bv.as<const bf16_t*>();
    p.block_tokens = kBt, p.head_stride = head_stride, p.items = dp->items.as<DecodeItem>();
    p.n_items = static_cast<int>(plan.items.size());
    p.query_slot_start = dp->slot_start.as<int>(), p.query_slots = dp->slots.as<int>();
    p.n_slots = plan.n_slots, p.partial_m = dp->pm.as<float>(), p.partial_l = dp->pl.as<float>();
    p.partial_o = dp->po.as<float>();
    return dp;
  };
  absl::Status st;
  const auto tree = build(true, 256);
  const double tree_ms = MedianMs([&] { st.Update(TreeDecodeCuda(tree->p, nullptr)); });
  Die(st, "tree decode");
  const auto paged = build(false, 512);
  const double paged_ms = MedianMs([&] { st.Update(PagedDecodeCuda(paged->p, nullptr)); });
  Die(st, "paged decode");
  const auto tree_alone = build(false, 256);  // the tree kernel with nothing shared
  const double tree_alone_ms = MedianMs([&] { st.Update(TreeDecodeCuda(tree_alone->p, nullptr)); });
  Die(st, "tree decode, unshared");
  const double token_bytes = 2.0 * kKvHeads * kHd * sizeof(bf16_t);  // K and V
  const double unique = (kPrefix + static_cast<double>(kSuffix) * branches) * token_bytes;
  const double per_seq = static_cast<double>(branches) * (kPrefix + kSuffix) * token_bytes;
  auto gbps = [](double bytes, double ms) { return bytes / (ms * 1e-3) / 1e9; };
  std::printf(
      "{\"bench\":\"decode_attention\",\"branches\":%d,\"prefix\":%d,\"suffix\":%d,"
      "\"tree_ms\":%.4f,\"paged_ms\":%.4f,\"tree_unshared_ms\":%.4f,\"unique_kv_mb\":%.1f,"
      "\"tree_gbps\":%.0f,\"paged_gbps\":%.0f,\"tree_frac_of_copy_bw\":%.3f,"
      "\"speedup_vs_paged\":%.2f,\"speedup_goal\":%.1f}\n",
      branches, kPrefix, kSuffix, tree_ms, paged_ms, tree_alone_ms, unique / 1e6,
      gbps(unique, tree_ms), gbps(per_seq, paged_ms), gbps(unique, tree_ms) / copy_gbps,
      paged_ms / tree_ms, branches / 2.0);
}

}  // namespace
}  // namespace arbor::kernels

int main(int argc, char** argv) {
  using namespace arbor::kernels;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--iters=", 0) == 0)
      g_iters = std::max(1, std::atoi(a.c_str() + 8));
    else if (a.rfind("--only=", 0) == 0)
      only = a.substr(7);
    else {
      std::fprintf(stderr, "usage: %s [--iters=N] [--only=gemm|attention]\n", argv[0]);
      return 2;
    }
  }
  if (CudaDeviceCount() == 0) {
    std::fprintf(stderr, "no CUDA device: nothing to measure\n");
    return 1;
  }
  auto pool = DevicePool::Create(0);
  Die(pool.status(), "device pool");
  const double copy_gbps = DeviceReport(**pool);
  (*pool)->Trim();
  if (only.empty() || only == "gemm") {
    for (int t : {16, 64, 256, 1024}) {
      BenchExpertGemm(**pool, t);
      (*pool)->Trim();
    }
  }
  if (only.empty() || only == "attention") {
    for (int b : {16, 64}) {
      DecodeAttention(**pool, b, copy_gbps);
      (*pool)->Trim();
    }
  }
  return 0;
}
