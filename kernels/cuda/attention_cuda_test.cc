// TreeDecodeCuda and PagedDecodeCuda against TreeAttentionCpu on the same bf16 KV (tolerance
// 2e-2 relative: queries and probabilities are rounded to bf16 for the tensor cores), over GQA
// ratios 1, 4 and 8, partial blocks, a single token, deep paths and several token splits.
#include <cmath>
#include <vector>

#include "../cpu/decode_case.h"
#include "arbor/kernels/decode_attention.h"
#include "cuda_test_util.h"

namespace arbor::kernels {
namespace {

using testing::CudaTest;
using testing::DecodeCase;
using testing::MakeDecodeCase;
using testing::WorstError;

std::vector<float> RunGpu(CudaTest* t, const DecodeCase& c, bool tree, int split) {
  const AttentionChunks& ch = c.Chunks(tree);
  std::vector<DeviceBuffer> blocks;  // every block on the device once; chunks point into them
  std::vector<const bf16_t*> all_k, all_v, bk, bv;
  for (size_t b = 0; b < c.blocks_k.size(); ++b) {
    blocks.push_back(t->Up(c.blocks_k[b]));
    all_k.push_back(blocks.back().as<bf16_t>());
    blocks.push_back(t->Up(c.blocks_v[b]));
    all_v.push_back(blocks.back().as<bf16_t>());
  }
  for (int b : ch.block_ids()) bk.push_back(all_k[b]), bv.push_back(all_v[b]);
  const int r = c.n_heads / c.n_kv_heads;
  const DecodePlan plan = PlanDecode(ch.view(), c.n_tokens, tree ? kTreeDecodeRows / r : 1, split);
  const size_t slots = static_cast<size_t>(plan.n_slots) * c.n_heads;
  DeviceBuffer dq = t->Up(c.q), dout = t->Up(std::vector<float>(c.q.size(), -1.0f)),
               dpos = t->Up(c.q_pos), dstart = t->Up(ch.start()), dlen = t->Up(ch.len()),
               dbs = t->Up(ch.block_start()), dqs = t->Up(ch.query_start()),
               dqueries = t->Up(ch.queries()), dbk = t->Up(bk), dbv = t->Up(bv),
               ditems = t->Up(plan.items), dslot_start = t->Up(plan.query_slot_start),
               dslots = t->Up(plan.query_slots), dpm = t->Up(std::vector<float>(slots)),
               dpl = t->Up(std::vector<float>(slots)),
               dpo = t->Up(std::vector<float>(slots * c.head_dim));
  DecodeAttentionParams p = c.Shapes();
  p.q = dq.as<float>(), p.out = dout.as<float>(), p.q_pos = dpos.as<int>();
  p.chunks = {.n_chunks = ch.size(),
              .start = dstart.as<int>(),
              .len = dlen.as<int>(),
              .block_start = dbs.as<int>(),
              .query_start = dqs.as<int>(),
              .queries = dqueries.as<int>()};
  p.block_k = dbk.as<const bf16_t*>(), p.block_v = dbv.as<const bf16_t*>();
  p.items = ditems.as<DecodeItem>(), p.n_items = static_cast<int>(plan.items.size());
  p.query_slot_start = dslot_start.as<int>(), p.query_slots = dslots.as<int>();
  p.n_slots = plan.n_slots, p.partial_m = dpm.as<float>(), p.partial_l = dpl.as<float>();
  p.partial_o = dpo.as<float>();
  const absl::Status st = tree ? TreeDecodeCuda(p, nullptr) : PagedDecodeCuda(p, nullptr);
  EXPECT_TRUE(st.ok()) << st;
  return t->Down<float>(dout, c.q.size());
}

TEST_F(CudaTest, TreeAndPagedDecodeMatchCpuForGqaRatiosAndSplits) {
  uint32_t seed = 100;
  for (int ratio : {1, 4, 8}) {
    for (int hd : {64, 128}) {
      const DecodeCase c = MakeDecodeCase(seed++, 8, 8 / ratio, hd, 16, 300, 21, 40, true);
      for (int split : {32, 128, 4096}) {
        EXPECT_LE(WorstError(RunGpu(this, c, true, split), c.expected, 2e-2), 1.0)
            << "tree ratio " << ratio << " head_dim " << hd << " split " << split;
        EXPECT_LE(WorstError(RunGpu(this, c, false, split), c.expected, 2e-2), 1.0)
            << "paged ratio " << ratio << " head_dim " << hd << " split " << split;
      }
    }
  }
}

TEST_F(CudaTest, DecodeOfASingleTokenAndOfManyBranches) {
  const DecodeCase one = MakeDecodeCase(7, 4, 1, 32, 16, 1, 0, 1, false);
  EXPECT_LE(WorstError(RunGpu(this, one, true, 64), one.expected, 2e-2), 1.0);
  EXPECT_LE(WorstError(RunGpu(this, one, false, 64), one.expected, 2e-2), 1.0);
  // 64 branches: more queries than one item holds, so a chunk's queries span several items.
  const DecodeCase wide = MakeDecodeCase(8, 32, 8, 128, 16, 1000, 64, 20, false);
  EXPECT_LE(WorstError(RunGpu(this, wide, true, 256), wide.expected, 2e-2), 1.0);
  EXPECT_LE(WorstError(RunGpu(this, wide, false, 256), wide.expected, 2e-2), 1.0);
}

}  // namespace
}  // namespace arbor::kernels
