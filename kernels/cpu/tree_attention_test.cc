#include "arbor/kernels/tree_attention.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace arbor::kernels {
namespace {

// A random tree of KV segments; each leaf contributes queries at its last positions.
struct Tree {
  struct Node {
    int parent = -1, start = 0, len = 0, depth = 0, children = 0;
    std::vector<std::vector<float>> blocks_k, blocks_v;  // each [kv_heads, head_stride]
    std::vector<float> dense_k, dense_v;                 // [len, kv_heads, hd]
  };
  std::vector<Node> nodes;
};

void CheckRandomTree(uint32_t seed, int n_heads, int n_kv_heads, int hd, int bt, int n_nodes) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0, 1);
  const size_t head_stride = static_cast<size_t>(bt) * hd;
  Tree tree;
  auto add = [&](int parent) {
    Tree::Node n;
    n.parent = parent;
    if (parent >= 0) {
      const Tree::Node& p = tree.nodes[parent];
      n.start = p.start + p.len;
      n.depth = p.depth + 1;
      ++tree.nodes[parent].children;
    }
    n.len = 1 + static_cast<int>(rng() % 11);  // partial blocks almost everywhere
    n.dense_k.resize(static_cast<size_t>(n.len) * n_kv_heads * hd);
    n.dense_v.resize(n.dense_k.size());
    for (size_t i = 0; i < n.dense_k.size(); ++i) n.dense_k[i] = nd(rng), n.dense_v[i] = nd(rng);
    for (int b = 0; b * bt < n.len; ++b) {
      std::vector<float> bk(n_kv_heads * head_stride, NAN), bv(bk.size(), NAN);
      for (int t = b * bt; t < std::min(n.len, (b + 1) * bt); ++t) {
        for (int g = 0; g < n_kv_heads; ++g) {
          for (int d = 0; d < hd; ++d) {
            const size_t src = (static_cast<size_t>(t) * n_kv_heads + g) * hd + d;
            bk[g * head_stride + (t - b * bt) * hd + d] = n.dense_k[src];
            bv[g * head_stride + (t - b * bt) * hd + d] = n.dense_v[src];
          }
        }
      }
      n.blocks_k.push_back(std::move(bk));
      n.blocks_v.push_back(std::move(bv));
    }
    tree.nodes.push_back(std::move(n));
  };
  add(-1);
  for (int i = 0; i < 16; ++i) add(0);  // fan-out 16 at the root
  int chain = 0;
  for (int d = 0; d < 7; ++d)
    add(d == 0 ? 1 : chain), chain = static_cast<int>(tree.nodes.size()) - 1;  // depth 8
  while (static_cast<int>(tree.nodes.size()) < n_nodes) {
    const int parent = static_cast<int>(rng() % tree.nodes.size());
    if (tree.nodes[parent].depth < 7 && tree.nodes[parent].children < 16) add(parent);
  }

  // Queries: the last 1..3 positions of every leaf.
  std::vector<int> q_pos, q_leaf;
  for (int i = 0; i < static_cast<int>(tree.nodes.size()); ++i) {
    const Tree::Node& n = tree.nodes[i];
    if (n.children > 0) continue;
    const int k = std::min(n.len, 1 + static_cast<int>(rng() % 3));
    for (int j = k; j >= 1; --j) q_pos.push_back(n.start + n.len - j), q_leaf.push_back(i);
  }
  const int n_tokens = static_cast<int>(q_pos.size());
  const int q_stride = n_heads * hd;
  std::vector<float> q(static_cast<size_t>(n_tokens) * q_stride);
  for (float& x : q) x = nd(rng);

  // Chunks = every node; its queries = those of the leaves below it.
  AttentionChunks chunks;
  std::vector<const float*> bk, bv;
  int max_q = 0;
  for (int c = 0; c < static_cast<int>(tree.nodes.size()); ++c) {
    const Tree::Node& n = tree.nodes[c];
    std::vector<int> ids;
    for (size_t b = 0; b < n.blocks_k.size(); ++b) {
      ids.push_back(static_cast<int>(bk.size()));
      bk.push_back(n.blocks_k[b].data()), bv.push_back(n.blocks_v[b].data());
    }
    chunks.Add(n.start, n.len, ids);
    const int before = chunks.n_queries();
    for (int t = 0; t < n_tokens; ++t) {
      for (int a = q_leaf[t]; a >= 0; a = tree.nodes[a].parent) {
        if (a == c) {
          chunks.AddQuery(t);
          break;
        }
      }
    }
    max_q = std::max(max_q, chunks.n_queries() - before);
  }

  std::vector<float> out(static_cast<size_t>(n_tokens) * n_heads * hd);
  std::vector<float> ws(
      TreeAttentionParams::WorkspaceFloats(n_tokens, max_q, n_heads, n_kv_heads, hd, bt));
  TreeAttentionParams p;
  p.q = q.data();
  p.q_row_stride = q_stride;
  p.out = out.data();
  p.q_pos = q_pos.data();
  p.n_tokens = n_tokens;
  p.n_heads = n_heads;
  p.n_kv_heads = n_kv_heads;
  p.head_dim = hd;
  p.scale = 1.0f / std::sqrt(static_cast<float>(hd));
  p.chunks = chunks.view();
  p.block_k = bk.data();
  p.block_v = bv.data();
  p.block_tokens = bt;
  p.head_stride = head_stride;
  p.workspace = ws.data();
  ASSERT_TRUE(p.Validate().ok()) << p.Validate();
  TreeAttentionCpu(p);

  // Naive: each query over the dense K/V of its own path, in double.
  const int r = n_heads / n_kv_heads;
  for (int t = 0; t < n_tokens; ++t) {
    std::vector<int> path;
    for (int a = q_leaf[t]; a >= 0; a = tree.nodes[a].parent) path.insert(path.begin(), a);
    for (int h = 0; h < n_heads; ++h) {
      const int g = h / r;
      std::vector<double> s;
      std::vector<const float*> vrows;
      for (int a : path) {
        const Tree::Node& n = tree.nodes[a];
        for (int i = 0; i < n.len && n.start + i <= q_pos[t]; ++i) {
          const float* k = n.dense_k.data() + (static_cast<size_t>(i) * n_kv_heads + g) * hd;
          double dot = 0;
          for (int d = 0; d < hd; ++d)
            dot += static_cast<double>(q[t * q_stride + h * hd + d]) * k[d];
          s.push_back(dot / std::sqrt(static_cast<double>(hd)));
          vrows.push_back(n.dense_v.data() + (static_cast<size_t>(i) * n_kv_heads + g) * hd);
        }
      }
      const double mx = *std::max_element(s.begin(), s.end());
      double den = 0;
      for (double& e : s) den += e = std::exp(e - mx);
      for (int d = 0; d < hd; ++d) {
        double acc = 0;
        for (size_t j = 0; j < s.size(); ++j) acc += s[j] * vrows[j][d];
        ASSERT_NEAR(out[(static_cast<size_t>(t) * n_heads + h) * hd + d], acc / den, 1e-5)
            << "seed " << seed << " query " << t << " head " << h;
      }
    }
  }
}

TEST(TreeAttentionTest, EqualsPerSequenceAttentionOnRandomTrees) {
  uint32_t seed = 1;
  for (int ratio : {1, 2, 4, 8}) {
    for (int rep = 0; rep < 3; ++rep) CheckRandomTree(seed++, 8, 8 / ratio, 16, 4, 80);
  }
}

TEST(TreeAttentionTest, LargerBlocksAndHeadDim) { CheckRandomTree(77, 4, 2, 64, 16, 60); }

// Enough work that the kv heads run in parallel on the kernels' threads (parallel.h), each in its
// own workspace slice; the result must not depend on which thread ran which head.
TEST(TreeAttentionTest, EightKvHeadsInParallel) { CheckRandomTree(91, 16, 8, 64, 4, 400); }

TEST(TreeAttentionTest, RejectsChunksThatTheirBlocksDoNotCover) {
  float q[4] = {}, out[4] = {}, ws[256] = {}, blk[64] = {};
  const float* bp[1] = {blk};
  int pos[1] = {0}, start[1] = {0}, len[1] = {5}, bs[2] = {0, 1}, qs[2] = {0, 1}, qi[1] = {0};
  TreeAttentionParams p;
  p.q = q, p.q_row_stride = 4, p.out = out, p.q_pos = pos, p.n_tokens = 1, p.n_heads = 1;
  p.n_kv_heads = 1, p.head_dim = 4, p.scale = 0.5f;
  p.chunks = {.n_chunks = 1,
              .start = start,
              .len = len,
              .block_start = bs,
              .query_start = qs,
              .queries = qi};
  p.block_k = bp, p.block_v = bp, p.block_tokens = 4, p.head_stride = 16;
  p.workspace = ws;
  EXPECT_FALSE(p.Validate().ok());
  len[0] = 4;
  EXPECT_TRUE(p.Validate().ok());
  qi[0] = 3;  // not a query row
  EXPECT_FALSE(p.Validate().ok());
}

}  // namespace
}  // namespace arbor::kernels
