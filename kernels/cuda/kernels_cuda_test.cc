// The CUDA elementwise, gating, permute and expert-FFN kernels against their CPU references.
// Tolerances: f32 kernels 1e-5 relative (different summation order, __expf); bf16 paths 1e-2
// relative, as stated in each test.
#include <cmath>
#include <random>
#include <vector>

#include "arbor/common/dtype.h"
#include "arbor/kernels/expert_ffn.h"
#include "arbor/kernels/gating.h"
#include "arbor/kernels/kv_write.h"
#include "arbor/kernels/moe_permute.h"
#include "arbor/kernels/rms_norm.h"
#include "arbor/kernels/rope.h"
#include "arbor/kernels/swiglu.h"
#include "cuda_test_util.h"

namespace arbor::kernels {
namespace {

using testing::CudaTest;

std::vector<float> Randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0, scale);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, double rel,
                 const char* what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_LE(std::abs(got[i] - want[i]), rel * (1.0 + std::abs(want[i])))
        << what << " element " << i << ": " << got[i] << " vs " << want[i];
  }
}

TEST(CudaBuildTest, ReportsItsDevices) {
  EXPECT_TRUE(CudaBuilt());
  EXPECT_GE(CudaDeviceCount(), 0);  // 0 on CI: every CudaTest below skips
}

TEST_F(CudaTest, DevicePoolReusesFreedBlocks) {
  {
    auto a = pool_->Allocate(1000);
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->size(), 1000u);
  }
  auto b = pool_->Allocate(900);  // same 1 KiB class
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(pool_->stats().device_mallocs, 1);
  EXPECT_EQ(pool_->stats().reuses, 1);
  EXPECT_EQ(DevicePool::ClassBytes(3u << 20), 3u << 20);
  EXPECT_FALSE(pool_->Allocate(0).ok());
}

TEST_F(CudaTest, RmsNormMatchesCpu) {
  for (int dim : {1, 7, 192, 4096}) {
    const int rows = 33, stride = dim + 3;
    std::vector<float> x = Randn(static_cast<size_t>(rows) * stride, dim), w = Randn(dim, 2);
    std::vector<float> want(static_cast<size_t>(rows) * dim);
    RmsNormCpu({x.data(), w.data(), want.data(), rows, dim, stride, 1e-5f});
    DeviceBuffer dx = Up(x), dw = Up(w), dout = Up(std::vector<float>(want.size()));
    ASSERT_TRUE(
        RmsNormCuda({dx.as<float>(), dw.as<float>(), dout.as<float>(), rows, dim, stride, 1e-5f},
                    nullptr)
            .ok());
    ExpectClose(Down<float>(dout, want.size()), want, 1e-5, "rms_norm");
  }
}

TEST_F(CudaTest, RopeMatchesCpu) {
  const int hd = 64, heads = 6, tokens = 40, stride = heads * hd + 64;
  RopeTable table(hd, 1e6f, 4096);
  std::vector<float> x = Randn(static_cast<size_t>(tokens) * stride, 9), want = x;
  std::vector<int> pos(tokens);
  for (int t = 0; t < tokens; ++t) pos[t] = (t * 97) % 4096;
  RopeParams cp{want.data(), pos.data(), &table, tokens, heads, stride};
  ASSERT_TRUE(cp.Validate().ok());
  RopeCpu(cp);
  std::vector<float> cos(table.cos(0), table.cos(0) + 4096 * hd / 2);
  std::vector<float> sin(table.sin(0), table.sin(0) + 4096 * hd / 2);
  DeviceBuffer dx = Up(x), dp = Up(pos), dc = Up(cos), ds = Up(sin);
  RopeCudaParams gp{dx.as<float>(), dp.as<int>(), dc.as<float>(), ds.as<float>(), hd,
                    4096,           tokens,       heads,          stride};
  ASSERT_TRUE(RopeCuda(gp, nullptr).ok());
  ExpectClose(Down<float>(dx, x.size()), want, 1e-5, "rope");
}

TEST_F(CudaTest, SwiGluMatchesCpuInF32AndBf16) {
  const int rows = 17, dim = 300;
  std::vector<float> gu = Randn(static_cast<size_t>(rows) * 2 * dim, 4, 3.0f);
  std::vector<float> want(static_cast<size_t>(rows) * dim);
  SwiGluCpu({gu.data(), want.data(), rows, dim});
  DeviceBuffer dgu = Up(gu), dout = Up(want);
  ASSERT_TRUE(SwiGluCuda({dgu.as<float>(), dout.as<float>(), rows, dim}, nullptr).ok());
  ExpectClose(Down<float>(dout, want.size()), want, 1e-5, "swiglu");

  std::vector<bf16_t> gub(gu.size()), wantb(want.size());
  for (size_t i = 0; i < gu.size(); ++i) gub[i] = F32ToBF16(gu[i]);
  SwiGluBf16Cpu({gub.data(), wantb.data(), rows, dim});
  DeviceBuffer dgub = Up(gub), doutb = Up(wantb);
  ASSERT_TRUE(SwiGluBf16Cuda({dgub.as<bf16_t>(), doutb.as<bf16_t>(), rows, dim}, nullptr).ok());
  const std::vector<bf16_t> got = Down<bf16_t>(doutb, wantb.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(BF16ToF32(got[i]), BF16ToF32(wantb[i]), 1e-2 * (1 + std::abs(BF16ToF32(wantb[i]))))
        << i;
  }
}

TEST_F(CudaTest, GatingMatchesCpuIncludingTies) {
  for (int experts : {8, 64, 256}) {
    const int tokens = 50, k = 2;
    std::vector<float> logits = Randn(static_cast<size_t>(tokens) * experts, experts);
    for (int e = 0; e < experts; ++e) logits[e] = 1.0f;  // token 0: all tied
    std::vector<int> ids(tokens * k);
    std::vector<float> w(tokens * k);
    GatingCpu({logits.data(), ids.data(), w.data(), tokens, experts, k});
    DeviceBuffer dl = Up(logits), di = Up(ids), dw = Up(w);
    ASSERT_TRUE(
        GatingCuda({dl.as<float>(), di.as<int>(), dw.as<float>(), tokens, experts, k}, nullptr)
            .ok());
    EXPECT_EQ(Down<int>(di, ids.size()), ids) << experts << " experts";
    ExpectClose(Down<float>(dw, w.size()), w, 1e-5, "gating weights");
  }
}

TEST_F(CudaTest, PermuteGatherUnpermuteMatchCpu) {
  std::mt19937 rng(11);
  for (int n_tokens : {1, 5, 300}) {
    const int k = 2, e = 8, dim = 64, align = 16;
    std::vector<int> ids(n_tokens * k);
    for (int t = 0; t < n_tokens; ++t) {
      ids[t * k] = t % 3 == 0 ? 5 : static_cast<int>(rng() % e);  // ragged, some experts empty
      ids[t * k + 1] = (ids[t * k] + 1) % e;
    }
    MoePermuteParams p;
    p.expert_ids = ids.data(), p.n_tokens = n_tokens, p.top_k = k, p.n_experts = e;
    p.row_align = align;
    std::vector<int> counts(e), offsets(e + 1), row_token(p.MaxRows(), -1), slot_row(ids.size());
    p.expert_counts = counts.data(), p.expert_offsets = offsets.data();
    p.row_token = row_token.data(), p.slot_row = slot_row.data();
    MoePermuteCpu(p);
    DeviceBuffer di = Up(ids), dc = Up(counts), dofs = Up(offsets),
                 drt = Up(std::vector<int>(row_token.size(), -5)), dsr = Up(slot_row);
    MoePermuteParams g = p;
    g.expert_ids = di.as<int>(), g.expert_counts = dc.as<int>(), g.expert_offsets = dofs.as<int>();
    g.row_token = drt.as<int>(), g.slot_row = dsr.as<int>();
    ASSERT_TRUE(MoePermuteCuda(g, nullptr).ok());
    EXPECT_EQ(Down<int>(dc, e), counts);
    EXPECT_EQ(Down<int>(dofs, e + 1), offsets);
    const int rows = offsets[e];
    EXPECT_EQ(Down<int>(drt, rows), std::vector<int>(row_token.begin(), row_token.begin() + rows));
    EXPECT_EQ(Down<int>(dsr, slot_row.size()), slot_row);

    std::vector<float> x = Randn(static_cast<size_t>(n_tokens) * dim, 12);
    std::vector<bf16_t> y(static_cast<size_t>(rows) * dim);
    GatherRowsCpu({x.data(), n_tokens, row_token.data(), y.data(), rows, dim});
    DeviceBuffer dx = Up(x), dy = Up(std::vector<bf16_t>(y.size()));
    ASSERT_TRUE(GatherRowsCuda(
                    {dx.as<float>(), n_tokens, drt.as<int>(), dy.as<bf16_t>(), rows, dim}, nullptr)
                    .ok());
    EXPECT_EQ(Down<bf16_t>(dy, y.size()), y);

    std::vector<float> w(ids.size(), 0.5f), out = Randn(x.size(), 13), want = out;
    MoeUnpermuteParams u;
    u.y = y.data(), u.n_rows = rows, u.rows_per_token = k, u.rows = slot_row.data();
    u.weights = w.data(), u.out = want.data(), u.n_tokens = n_tokens, u.dim = dim;
    MoeUnpermuteCpu(u);
    DeviceBuffer dw = Up(w), dout = Up(out);
    MoeUnpermuteParams gu = u;
    gu.y = dy.as<bf16_t>(), gu.rows = dsr.as<int>(), gu.weights = dw.as<float>();
    gu.out = dout.as<float>();
    ASSERT_TRUE(MoeUnpermuteCuda(gu, nullptr).ok());
    ExpectClose(Down<float>(dout, out.size()), want, 1e-5, "unpermute");
  }
}

// The expert FFN of grouped rows against an f32 CPU computation on the same bf16 values.
// Tolerance 2e-2 relative: gate_up and act are rounded to bf16 between the GEMMs.
void CheckExpertFfn(CudaTest* t, DevicePool* pool, ExpertGemm mode) {
  const int hidden = 128, inter = 96, n_experts = 4;
  const std::vector<int> group_rows = {37, 0, 1, 64};  // ragged, one empty, one single row
  int n_rows = 0;
  for (int r : group_rows) n_rows += r;
  auto rounded = [](std::vector<float> v) {
    for (float& x : v) x = BF16ToF32(F32ToBF16(x));
    return v;
  };
  auto to_bf16 = [](const std::vector<float>& v) {
    std::vector<bf16_t> b(v.size());
    for (size_t i = 0; i < v.size(); ++i) b[i] = F32ToBF16(v[i]);
    return b;
  };
  const std::vector<float> x = rounded(Randn(static_cast<size_t>(n_rows) * hidden, 21));
  std::vector<std::vector<float>> w13, w2;
  std::vector<DeviceBuffer> dw13, dw2;
  for (int e = 0; e < n_experts; ++e) {
    w13.push_back(rounded(Randn(2 * inter * hidden, 30 + e, 0.1f)));
    w2.push_back(rounded(Randn(hidden * inter, 40 + e, 0.1f)));
    dw13.push_back(t->Up(to_bf16(w13.back())));
    dw2.push_back(t->Up(to_bf16(w2.back())));
  }
  std::vector<float> want(static_cast<size_t>(n_rows) * hidden);
  std::vector<ExpertFfnGroup> groups;
  int row = 0;
  for (int e = 0; e < n_experts; ++e) {
    groups.push_back({row, group_rows[e], dw13[e].as<bf16_t>(), dw2[e].as<bf16_t>()});
    for (int r = row; r < row + group_rows[e]; ++r) {
      std::vector<float> act(inter);
      for (int i = 0; i < inter; ++i) {
        double a = 0, b = 0;
        for (int h = 0; h < hidden; ++h) {
          a += static_cast<double>(x[r * hidden + h]) * w13[e][i * hidden + h];
          b += static_cast<double>(x[r * hidden + h]) * w13[e][(inter + i) * hidden + h];
        }
        act[i] = static_cast<float>(a / (1 + std::exp(-a)) * b);
      }
      for (int h = 0; h < hidden; ++h) {
        double y = 0;
        for (int i = 0; i < inter; ++i) y += static_cast<double>(act[i]) * w2[e][h * inter + i];
        want[r * hidden + h] = static_cast<float>(y);
      }
    }
    row += group_rows[e];
  }
  DeviceBuffer dx = t->Up(to_bf16(x)), dy = t->Up(std::vector<bf16_t>(want.size()));
  DeviceBuffer dgu = t->Up(std::vector<bf16_t>(static_cast<size_t>(n_rows) * 2 * inter));
  DeviceBuffer dact = t->Up(std::vector<bf16_t>(static_cast<size_t>(n_rows) * inter));
  auto runner = ExpertFfnRunner::Create(pool, mode, n_experts);
  ASSERT_TRUE(runner.ok()) << runner.status();
  ExpertFfnParams p;
  p.x = dx.as<bf16_t>(), p.y = dy.as<bf16_t>(), p.n_rows = n_rows, p.hidden = hidden;
  p.inter = inter, p.groups = groups.data(), p.n_groups = n_experts;
  p.gate_up = dgu.as<bf16_t>(), p.act = dact.as<bf16_t>();
  const absl::Status st = (*runner)->Run(p, nullptr);
  ASSERT_TRUE(st.ok()) << st;
  const std::vector<bf16_t> got = t->Down<bf16_t>(dy, want.size());
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    worst =
        std::max(worst, std::abs(BF16ToF32(got[i]) - want[i]) / (0.02 * (0.1 + std::abs(want[i]))));
  }
  EXPECT_LE(worst, 1.0) << "mode " << static_cast<int>((*runner)->mode());
}

TEST_F(CudaTest, ExpertFfnGroupedGemmMatchesCpu) {
  CheckExpertFfn(this, pool_.get(), ExpertGemm::kAuto);
}
TEST_F(CudaTest, ExpertFfnGemmLoopMatchesCpu) {
  CheckExpertFfn(this, pool_.get(), ExpertGemm::kLoop);
}

TEST_F(CudaTest, ExpertFfnRejectsGroupsOutsideTheRows) {
  auto runner = ExpertFfnRunner::Create(pool_.get(), ExpertGemm::kLoop, 2);
  ASSERT_TRUE(runner.ok());
  DeviceBuffer buf = Up(std::vector<bf16_t>(64));
  ExpertFfnGroup g{2, 3, buf.as<bf16_t>(), buf.as<bf16_t>()};
  ExpertFfnParams p;
  p.x = p.y = p.gate_up = p.act = buf.as<bf16_t>();
  p.n_rows = 4, p.hidden = 8, p.inter = 4, p.groups = &g, p.n_groups = 1;
  EXPECT_EQ((*runner)->Run(p, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(CudaTest, KvWriteMatchesCpu) {
  const int heads = 8, hd = 128, bt = 16, tokens = 37, row = 3 * heads * hd;
  const size_t head_stride = bt * hd, block = 2 * 2 * heads * head_stride;  // 2 layers
  std::vector<float> qkv = Randn(static_cast<size_t>(tokens) * row, 31);
  std::vector<int> blk(tokens), slot(tokens);
  for (int t = 0; t < tokens; ++t) blk[t] = t / bt, slot[t] = t % bt;
  std::vector<bf16_t> want(3 * block, 0);
  KvWriteParams p;
  p.qkv = qkv.data(), p.row_stride = row, p.k_col = heads * hd, p.v_col = 2 * heads * hd;
  p.block = blk.data(), p.slot = slot.data(), p.n_tokens = tokens, p.blocks = want.data();
  p.block_elems = block, p.k_offset = 2 * heads * head_stride;
  p.v_offset = 3 * heads * head_stride, p.n_kv_heads = heads, p.head_dim = hd;
  p.head_stride = head_stride;
  KvWriteCpu(p);
  DeviceBuffer dq = Up(qkv), db = Up(blk), ds = Up(slot),
               dblocks = Up(std::vector<bf16_t>(want.size(), 0));
  KvWriteParams g = p;
  g.qkv = dq.as<float>(), g.block = db.as<int>(), g.slot = ds.as<int>();
  g.blocks = dblocks.as<bf16_t>();
  ASSERT_TRUE(KvWriteCuda(g, nullptr).ok());
  EXPECT_EQ(Down<bf16_t>(dblocks, want.size()), want);

  // And back out as token rows of both layers (layer 0 stays zero), device against CPU.
  KvReadParams r;
  r.blocks = want.data(), r.block_elems = block, r.block = blk.data(), r.slot = slot.data();
  r.n_tokens = tokens, r.n_layers = 2, r.n_kv_heads = heads, r.head_dim = hd;
  r.head_stride = head_stride;
  std::vector<float> rows(static_cast<size_t>(tokens) * 2 * 2 * heads * hd);
  r.out = rows.data();
  KvReadCpu(r);
  DeviceBuffer drows = Up(std::vector<float>(rows.size(), -1.0f));
  KvReadParams gr = r;
  gr.blocks = dblocks.as<bf16_t>(), gr.block = db.as<int>(), gr.slot = ds.as<int>();
  gr.out = drows.as<float>();
  ASSERT_TRUE(KvReadCuda(gr, nullptr).ok());
  EXPECT_EQ(Down<float>(drows, rows.size()), rows);
}

}  // namespace
}  // namespace arbor::kernels
