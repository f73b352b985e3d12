#include "arbor/kernels/paged_attention.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace arbor::kernels {
namespace {

struct Case {
  int n_heads, n_kv_heads, head_dim, block_tokens;
  std::vector<std::pair<int, int>> seqs;  // (new queries, kv_len)
};

// Naive attention over dense per-sequence K/V: the independent check.
void NaiveAttention(const std::vector<float>& q, int q_stride, const std::vector<float>& k,
                    const std::vector<float>& v, int kv_len, int n_q, int q_row0, int nh, int nkv,
                    int hd, std::vector<float>& out) {
  const int r = nh / nkv;
  for (int t = 0; t < n_q; ++t) {
    const int pos = kv_len - n_q + t;
    for (int h = 0; h < nh; ++h) {
      const int g = h / r;
      std::vector<double> s(pos + 1);
      double mx = -1e300;
      for (int j = 0; j <= pos; ++j) {
        double dot = 0;
        for (int i = 0; i < hd; ++i) {
          dot += static_cast<double>(q[(q_row0 + t) * q_stride + h * hd + i]) *
                 k[(static_cast<size_t>(j) * nkv + g) * hd + i];
        }
        s[j] = dot / std::sqrt(static_cast<double>(hd));
        mx = std::max(mx, s[j]);
      }
      double den = 0;
      for (double& e : s) den += e = std::exp(e - mx);
      for (int i = 0; i < hd; ++i) {
        double acc = 0;
        for (int j = 0; j <= pos; ++j) acc += s[j] * v[(static_cast<size_t>(j) * nkv + g) * hd + i];
        out[((q_row0 + t) * nh + h) * hd + i] = static_cast<float>(acc / den);
      }
    }
  }
}

void RunCase(const Case& c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0, 1);
  const int nh = c.n_heads, nkv = c.n_kv_heads, hd = c.head_dim, bt = c.block_tokens;
  const size_t head_stride = static_cast<size_t>(bt) * hd + 3;  // padded: stride is honoured
  int n_tokens = 0, max_q = 0;
  for (auto [m, len] : c.seqs) n_tokens += m, max_q = std::max(max_q, m);
  const int q_stride = nh * hd + 5;
  std::vector<float> q(static_cast<size_t>(n_tokens) * q_stride);
  for (float& x : q) x = nd(rng);

  std::vector<int> query_start = {0}, kv_len, block_start = {0};
  std::vector<std::vector<float>> blocks_k, blocks_v;  // each [nkv, head_stride]
  std::vector<std::vector<float>> dense_k, dense_v;    // per seq [kv_len, nkv, hd]
  for (auto [m, len] : c.seqs) {
    query_start.push_back(query_start.back() + m);
    kv_len.push_back(len);
    std::vector<float> dk(static_cast<size_t>(len) * nkv * hd), dv(dk.size());
    for (size_t i = 0; i < dk.size(); ++i) dk[i] = nd(rng), dv[i] = nd(rng);
    const int nb = (len + bt - 1) / bt;
    for (int b = 0; b < nb; ++b) {
      std::vector<float> bk(nkv * head_stride, NAN), bv(nkv * head_stride, NAN);
      for (int t = 0; t < bt && b * bt + t < len; ++t) {
        for (int g = 0; g < nkv; ++g) {
          for (int i = 0; i < hd; ++i) {
            const size_t src = (static_cast<size_t>(b * bt + t) * nkv + g) * hd + i;
            bk[g * head_stride + t * hd + i] = dk[src];
            bv[g * head_stride + t * hd + i] = dv[src];
          }
        }
      }
      blocks_k.push_back(std::move(bk));
      blocks_v.push_back(std::move(bv));
    }
    block_start.push_back(block_start.back() + nb);
    dense_k.push_back(std::move(dk));
    dense_v.push_back(std::move(dv));
  }
  std::vector<const float*> kp, vp;
  for (size_t b = 0; b < blocks_k.size(); ++b)
    kp.push_back(blocks_k[b].data()), vp.push_back(blocks_v[b].data());

  std::vector<float> out(static_cast<size_t>(n_tokens) * nh * hd), expected(out.size());
  std::vector<float> ws(PagedAttentionParams::WorkspaceFloats(max_q, nh, nkv, hd, bt));
  PagedAttentionParams p;
  p.q = q.data();
  p.q_row_stride = q_stride;
  p.out = out.data();
  p.n_tokens = n_tokens;
  p.n_heads = nh;
  p.n_kv_heads = nkv;
  p.head_dim = hd;
  p.scale = 1.0f / std::sqrt(static_cast<float>(hd));
  p.n_seqs = static_cast<int>(c.seqs.size());
  p.query_start = query_start.data();
  p.kv_len = kv_len.data();
  p.block_start = block_start.data();
  p.block_k = kp.data();
  p.block_v = vp.data();
  p.block_tokens = bt;
  p.head_stride = head_stride;
  p.workspace = ws.data();
  ASSERT_TRUE(p.Validate().ok()) << p.Validate();
  PagedAttentionCpu(p);
  for (size_t s = 0; s < c.seqs.size(); ++s) {
    NaiveAttention(q, q_stride, dense_k[s], dense_v[s], kv_len[s], c.seqs[s].first, query_start[s],
                   nh, nkv, hd, expected);
  }
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], expected[i], 1e-5) << i;
}

TEST(PagedAttentionTest, MatchesNaiveAttentionForGqaRatiosAndPartialBlocks) {
  uint32_t seed = 1;
  for (int ratio : {1, 2, 4, 8}) {
    // Mixed batch: a prefill chunk, single decode tokens, a chunk continuing a sequence, a
    // sequence whose KV fills whole blocks exactly, and a single-token sequence.
    Case c{8, 8 / ratio, 16, 4, {{7, 7}, {1, 13}, {3, 10}, {1, 8}, {1, 1}}};
    RunCase(c, seed++);
  }
}

TEST(PagedAttentionTest, LongContextAcrossManyBlocks) {
  RunCase(Case{4, 2, 8, 16, {{1, 300}, {20, 257}}}, 99);
}

TEST(PagedAttentionTest, RejectsBlocksThatDoNotCoverTheSequence) {
  float q[4] = {}, out[4] = {}, ws[64] = {}, blk[64] = {};
  const float* bp[1] = {blk};
  int qs[2] = {0, 1}, len[1] = {5}, bs[2] = {0, 1};
  PagedAttentionParams p;
  p.q = q, p.q_row_stride = 4, p.out = out, p.n_tokens = 1, p.n_heads = 1, p.n_kv_heads = 1;
  p.head_dim = 4, p.scale = 0.5f, p.n_seqs = 1, p.query_start = qs, p.kv_len = len;
  p.block_start = bs, p.block_k = bp, p.block_v = bp, p.block_tokens = 4, p.head_stride = 16;
  p.workspace = ws;
  EXPECT_FALSE(p.Validate().ok());  // 5 tokens need 2 blocks of 4
}

}  // namespace
}  // namespace arbor::kernels
