#include "arbor/kernels/kv_write.h"

#include <vector>

#include "arbor/common/dtype.h"
#include "gtest/gtest.h"

namespace arbor::kernels {
namespace {

TEST(KvWriteTest, WritesEachTokensHeadsAtItsSlotAndLayer) {
  // 2 kv heads of dim 4, 4-token blocks, 2 layers: a block is [layer, K/V, head, token, dim].
  const int heads = 2, hd = 4, bt = 4, layers = 2;
  const size_t head_stride = bt * hd, block = size_t{layers} * 2 * heads * head_stride;
  std::vector<bf16_t> blocks(3 * block, 0);
  // Two tokens: columns [q (8) | k (8) | v (8)], values = 100 * token + column.
  std::vector<float> qkv(2 * 24);
  for (int t = 0; t < 2; ++t) {
    for (int c = 0; c < 24; ++c) qkv[t * 24 + c] = 100.0f * t + c;
  }
  const int blk[2] = {2, 0}, slot[2] = {3, 1};
  const int layer = 1;
  KvWriteParams p;
  p.qkv = qkv.data(), p.row_stride = 24, p.k_col = 8, p.v_col = 16, p.block = blk;
  p.slot = slot, p.n_tokens = 2, p.blocks = blocks.data(), p.block_elems = block;
  p.k_offset = (layer * 2 + 0) * heads * head_stride;
  p.v_offset = (layer * 2 + 1) * heads * head_stride;
  p.n_kv_heads = heads, p.head_dim = hd, p.head_stride = head_stride;
  ASSERT_TRUE(p.Validate().ok());
  KvWriteCpu(p);
  for (int t = 0; t < 2; ++t) {
    for (int g = 0; g < heads; ++g) {
      for (int d = 0; d < hd; ++d) {
        const size_t at = blk[t] * block + g * head_stride + slot[t] * hd + d;
        EXPECT_EQ(BF16ToF32(blocks[at + p.k_offset]), 100.0f * t + 8 + g * hd + d);
        EXPECT_EQ(BF16ToF32(blocks[at + p.v_offset]), 100.0f * t + 16 + g * hd + d);
      }
    }
  }
  int written = 0;
  for (bf16_t b : blocks) written += b != 0;
  EXPECT_EQ(written, 2 * 2 * heads * hd);  // nothing outside the two tokens' rows
  p.v_col = 20;                            // V would run past the row
  EXPECT_FALSE(p.Validate().ok());
}

TEST(KvWriteTest, KvReadGivesBackEveryLayersRowsOfTheTokens) {
  // 2 layers written by KvWrite, read back as token rows [layer, K/V, head, dim]. Values are
  // integers below 256, exact in bf16.
  const int heads = 2, hd = 4, bt = 4, layers = 2, tokens = 3, row = 3 * heads * hd;
  const size_t head_stride = bt * hd, block = size_t{layers} * 2 * heads * head_stride;
  std::vector<bf16_t> blocks(2 * block, 0);
  std::vector<float> qkv(tokens * row);
  for (size_t i = 0; i < qkv.size(); ++i) qkv[i] = static_cast<float>(i % 97);
  const int blk[tokens] = {1, 1, 0}, slot[tokens] = {2, 3, 0};
  for (int l = 0; l < layers; ++l) {
    std::vector<float> layer_qkv = qkv;
    for (float& v : layer_qkv) v += 100.0f * l;
    KvWriteParams w;
    w.qkv = layer_qkv.data(), w.row_stride = row, w.k_col = heads * hd, w.v_col = 2 * heads * hd;
    w.block = blk, w.slot = slot, w.n_tokens = tokens, w.blocks = blocks.data();
    w.block_elems = block, w.k_offset = (l * 2 + 0) * heads * head_stride;
    w.v_offset = (l * 2 + 1) * heads * head_stride, w.n_kv_heads = heads, w.head_dim = hd;
    w.head_stride = head_stride;
    KvWriteCpu(w);
  }
  std::vector<float> out(tokens * layers * 2 * heads * hd, -1.0f);
  KvReadParams r;
  r.blocks = blocks.data(), r.block_elems = block, r.block = blk, r.slot = slot;
  r.n_tokens = tokens, r.n_layers = layers, r.n_kv_heads = heads, r.head_dim = hd;
  r.head_stride = head_stride, r.out = out.data();
  ASSERT_TRUE(r.Validate().ok());
  KvReadCpu(r);
  for (int t = 0; t < tokens; ++t) {
    for (int l = 0; l < layers; ++l) {
      for (int kv = 0; kv < 2; ++kv) {
        for (int i = 0; i < heads * hd; ++i) {
          const float want = qkv[t * row + (1 + kv) * heads * hd + i] + 100.0f * l;
          EXPECT_EQ(out[((t * layers + l) * 2 + kv) * heads * hd + i], want)
              << "token " << t << " layer " << l << " kv " << kv << " element " << i;
        }
      }
    }
  }
  r.block_elems = block - 1;  // too small for 2 layers
  EXPECT_FALSE(r.Validate().ok());
}

}  // namespace
}  // namespace arbor::kernels
