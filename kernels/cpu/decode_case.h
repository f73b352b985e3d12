// Test fixture shared by the CPU and CUDA decode-attention tests: a random tree of KV segments
// in bf16 paged blocks (partial blocks almost everywhere), one decode query at the end of every
// leaf, its chunks (every node, with the queries below it), and the TreeAttentionCpu result over
// the same bf16 values widened to f32, which is what the decode kernels are checked against.
#pragma once

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "arbor/common/dtype.h"
#include "arbor/kernels/attention_chunks.h"
#include "arbor/kernels/decode_attention.h"
#include "arbor/kernels/tree_attention.h"

namespace arbor::kernels::testing {

struct DecodeCase {
  int n_heads = 0, n_kv_heads = 0, head_dim = 0, block_tokens = 0, n_tokens = 0;
  size_t head_stride = 0;
  std::vector<float> q;  // [n_tokens, n_heads * head_dim]
  std::vector<int> q_pos;
  std::vector<std::vector<bf16_t>> blocks_k, blocks_v;  // each [n_kv_heads, head_stride]
  std::vector<float> expected;                          // [n_tokens, n_heads * head_dim]
  // The chunks a kernel runs over, block ids indexing blocks_k / blocks_v: the tree's (every
  // node once, with all the queries below it) or the per-sequence ones (each query's own path,
  // segment by segment, listing that query alone).
  AttentionChunks tree_chunks, seq_chunks;

  const AttentionChunks& Chunks(bool tree) const { return tree ? tree_chunks : seq_chunks; }

  // The attention's shapes and scale; the caller sets every pointer and the plan.
  DecodeAttentionParams Shapes() const {
    DecodeAttentionParams p;
    p.q_row_stride = n_heads * head_dim, p.n_tokens = n_tokens, p.n_heads = n_heads;
    p.n_kv_heads = n_kv_heads, p.head_dim = head_dim;
    p.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    p.block_tokens = block_tokens, p.head_stride = head_stride;
    return p;
  }
};

// A root of `prefix` tokens with `branches` children of 1..max_suffix tokens; when `deep`, the
// first child gets a chain of three more segments. One query at the last token of every leaf.
inline DecodeCase MakeDecodeCase(uint32_t seed, int n_heads, int n_kv_heads, int head_dim,
                                 int block_tokens, int prefix, int branches, int max_suffix,
                                 bool deep) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0, 1);
  DecodeCase c;
  c.n_heads = n_heads, c.n_kv_heads = n_kv_heads, c.head_dim = head_dim;
  c.block_tokens = block_tokens;
  c.head_stride = static_cast<size_t>(block_tokens) * head_dim;
  struct Node {
    int parent, start, len, children = 0, first_block = 0, n_blocks = 0;
  };
  std::vector<Node> nodes;
  auto add = [&](int parent, int len) {
    const int start = parent < 0 ? 0 : nodes[parent].start + nodes[parent].len;
    if (parent >= 0) ++nodes[parent].children;
    Node n{parent, start, len};
    n.first_block = static_cast<int>(c.blocks_k.size());
    for (int b = 0; b * block_tokens < len; ++b) {
      std::vector<bf16_t> bk(n_kv_heads * c.head_stride, F32ToBF16(NAN)), bv(bk.size(), bk[0]);
      const int used = std::min(block_tokens, len - b * block_tokens);
      for (int g = 0; g < n_kv_heads; ++g) {
        for (int i = 0; i < used * head_dim; ++i) {
          bk[g * c.head_stride + i] = F32ToBF16(nd(rng));
          bv[g * c.head_stride + i] = F32ToBF16(nd(rng));
        }
      }
      c.blocks_k.push_back(std::move(bk));
      c.blocks_v.push_back(std::move(bv));
      ++n.n_blocks;
    }
    nodes.push_back(n);
    return static_cast<int>(nodes.size()) - 1;
  };
  add(-1, prefix);
  for (int b = 0; b < branches; ++b) add(0, 1 + static_cast<int>(rng() % max_suffix));
  if (deep && branches > 0) {
    int at = 1;
    for (int i = 0; i < 3; ++i) at = add(at, 1 + static_cast<int>(rng() % (2 * block_tokens)));
  }
  std::vector<int> leaf;
  for (int i = 0; i < static_cast<int>(nodes.size()); ++i) {
    if (nodes[i].children == 0) leaf.push_back(i);
  }
  c.n_tokens = static_cast<int>(leaf.size());
  for (int l : leaf) c.q_pos.push_back(nodes[l].start + nodes[l].len - 1);
  c.q.resize(static_cast<size_t>(c.n_tokens) * n_heads * head_dim);
  for (float& x : c.q) x = nd(rng);
  auto below = [&](int query, int node) {
    for (int a = leaf[query]; a >= 0; a = nodes[a].parent) {
      if (a == node) return true;
    }
    return false;
  };
  auto blocks_of = [&](int n) {
    std::vector<int> ids(nodes[n].n_blocks);
    for (int b = 0; b < nodes[n].n_blocks; ++b) ids[b] = nodes[n].first_block + b;
    return ids;
  };
  for (int n = 0; n < static_cast<int>(nodes.size()); ++n) {
    c.tree_chunks.Add(nodes[n].start, nodes[n].len, blocks_of(n));
    for (int t = 0; t < c.n_tokens; ++t) {
      if (below(t, n)) c.tree_chunks.AddQuery(t);
    }
  }
  // Per-sequence chunks: a path's segments one after another; every segment but the last is a
  // whole number of blocks only at block boundaries, so each segment stays its own chunk here
  // too, listing the query alone.
  for (int t = 0; t < c.n_tokens; ++t) {
    std::vector<int> path;
    for (int a = leaf[t]; a >= 0; a = nodes[a].parent) path.insert(path.begin(), a);
    for (int a : path) {
      c.seq_chunks.Add(nodes[a].start, nodes[a].len, blocks_of(a));
      c.seq_chunks.AddQuery(t);
    }
  }

  // Reference: TreeAttentionCpu over the bf16 values widened to f32.
  std::vector<std::vector<float>> fk, fv;
  std::vector<const float*> pk, pv;
  for (size_t b = 0; b < c.blocks_k.size(); ++b) {
    std::vector<float> k(c.blocks_k[b].size()), v(k.size());
    for (size_t i = 0; i < k.size(); ++i) {
      k[i] = BF16ToF32(c.blocks_k[b][i]);
      v[i] = BF16ToF32(c.blocks_v[b][i]);
    }
    fk.push_back(std::move(k));
    fv.push_back(std::move(v));
  }
  for (size_t b = 0; b < fk.size(); ++b) pk.push_back(fk[b].data()), pv.push_back(fv[b].data());
  int max_q = 0;
  const std::vector<int>& qs = c.tree_chunks.query_start();
  for (size_t i = 0; i + 1 < qs.size(); ++i) max_q = std::max(max_q, qs[i + 1] - qs[i]);
  c.expected.assign(c.q.size(), 0.0f);
  std::vector<float> ws(TreeAttentionParams::WorkspaceFloats(c.n_tokens, max_q, n_heads, n_kv_heads,
                                                             head_dim, block_tokens));
  TreeAttentionParams p;
  p.q = c.q.data(), p.q_row_stride = n_heads * head_dim, p.out = c.expected.data();
  p.q_pos = c.q_pos.data(), p.n_tokens = c.n_tokens, p.n_heads = n_heads;
  p.n_kv_heads = n_kv_heads, p.head_dim = head_dim;
  p.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  p.chunks = c.tree_chunks.view();  // its blocks are blocks 0, 1, ... in order
  p.block_k = pk.data(), p.block_v = pv.data(), p.block_tokens = block_tokens;
  p.head_stride = c.head_stride, p.workspace = ws.data();
  TreeAttentionCpu(p);
  return c;
}

// |got - want| <= tol * (1 + |want|) everywhere; returns the worst excess ratio (<= 1 passes).
inline double WorstError(const std::vector<float>& got, const std::vector<float>& want,
                         double tol) {
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    worst = std::max(worst, std::abs(got[i] - want[i]) / (tol * (1.0 + std::abs(want[i]))));
  }
  return worst;
}

}  // namespace arbor::kernels::testing
