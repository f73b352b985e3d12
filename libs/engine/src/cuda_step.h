// The GPU side of Engine::Step (builds with ARBOR_HAVE_CUDA only; private to the engine).
//
// Owns device copies of the non-expert weights (f32; GEMMs through cuBLAS SGEMM), the RoPE
// table, per-step buffers sized from EngineOptions, and a bf16 mirror of the KV tree's blocks
// (same block ids, same KvLayout, bf16 elements). Per layer it runs RMSNorm, the QKV GEMM, RoPE,
// the KV write into the mirror, tree attention (TreeDecodeCuda over the step's chunks; prefill
// rows are queries too, masked by position), the output projection, RMSNorm, the gate GEMM and
// gating on the GPU; the experts run through the engine's ExpertBackend on host buffers (remote
// workers or the CUDA expert backend), so x and the routing cross to the host once per layer.
// After the step the new tokens' KV (packed on the device by KvReadCuda) is copied back into
// the host blocks, so the host KV tree stays the source for ReadKv / ReadSegment; a host Append
// is mirrored by BlocksWritten.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "arbor/engine/engine.h"
#include "arbor/kernels/decode_attention.h"
#include "arbor/kernels/device_pool.h"
#include "step_backend.h"

struct cublasContext;

namespace arbor::kernels {
struct CublasApi;
}  // namespace arbor::kernels

namespace arbor::engine {

class CudaStep final : public StepBackend {
 public:
  // The caller (CreateStepBackend) has checked that the attention kernel can tile the model.
  // The mirror has one block per block of `kv`. Device errors as Status.
  static absl::StatusOr<std::unique_ptr<CudaStep>> Create(const model::ModelWeights* weights,
                                                          ExpertBackend* experts,
                                                          kvcache::KvTree* kv,
                                                          const EngineOptions& options);
  ~CudaStep();

  absl::Status Run(const StepPlan& plan, float* logits) override;
  bool mirrors_blocks() const override { return true; }
  // Copies host blocks (converted to bf16) into the mirror.
  absl::Status BlocksWritten(const std::vector<int>& blocks) override;

 private:
  CudaStep(const model::ModelWeights* weights, ExpertBackend* experts, kvcache::KvTree* kv,
           const EngineOptions& options);
  absl::Status Init();
  // Run's parts: the tokens' embeddings, positions and KV slots; the attention chunks, their
  // decode plan and attn_params_; the final norm and LM head of the wanted rows; the new
  // tokens' KV back into the host blocks.
  absl::Status H2D(void* dst, const void* src, size_t bytes);  // async on stream_
  absl::Status UploadTokens(const StepPlan& in);
  absl::Status UploadAttention(const StepPlan& in);
  absl::Status Logits(const StepPlan& in, float* logits);
  absl::Status CopyKvBack(const StepPlan& in);
  absl::Status Gemm(const float* x, const float* w, float* y, int m, int n, int k, float beta);
  // `chunk_blocks`: the KV-tree block ids of the step's chunks, in chunk order.
  absl::Status Layer(int layer, int n_tokens, const std::vector<int>& chunk_blocks);
  // Layer's parts: the KV write into the mirror and tree attention; the experts on host buffers.
  absl::Status Attend(int layer, int n_tokens, const std::vector<int>& chunk_blocks);
  absl::Status Experts(int layer, int n_tokens);

  const model::ModelConfig config_;
  const model::NonExpertWeights* w_;
  ExpertBackend* const experts_;
  kvcache::KvTree* const tree_;  // the host blocks: the source of truth
  const kvcache::KvLayout layout_;
  const int kv_blocks_;
  const EngineOptions options_;
  std::unique_ptr<kernels::DevicePool> pool_;
  cudaStream_t stream_ = nullptr;
  const kernels::CublasApi* api_ = nullptr;
  cublasContext* blas_ = nullptr;

  struct LayerDev {
    kernels::DeviceBuffer attn_norm, wqkv, wo, ffn_norm, gate;
  };
  std::vector<LayerDev> layers_;
  kernels::DeviceBuffer final_norm_, lm_head_, rope_cos_, rope_sin_;
  kernels::DeviceBuffer kv_;  // [kv_blocks, floats_per_block] bf16 mirror

  // Per-step device buffers. N = max_batch_tokens.
  kernels::DeviceBuffer x_, h_, qkv_, attn_, router_, ids_, gate_w_, pos_, slot_block_, slot_slot_,
      last_, logits_;
  kernels::DeviceBuffer kv_rows_;  // [N, layout.token_floats()] the step's new KV, packed
  // Attention chunks and plan, uploaded per step; each grows on demand.
  struct Grown {
    kernels::DeviceBuffer buf;
    size_t bytes = 0;
  };
  absl::Status Grow(Grown& g, size_t bytes);
  Grown chunk_start_, chunk_len_, chunk_block_start_, chunk_query_start_, chunk_queries_, block_k_,
      block_v_, items_, slot_start_, slots_, pm_, pl_, po_;
  kernels::DecodeAttentionParams attn_params_;
  std::vector<const kernels::bf16_t*> h_block_k_, h_block_v_;
  int n_chunk_blocks_ = 0;

  // Host staging.
  std::vector<float> h_x_, h_h_, h_w_;
  std::vector<int> h_ids_, h_slot_block_, h_slot_slot_;
  std::vector<kernels::bf16_t> h_kv_;  // one block, for UploadBlocks
  std::vector<float> h_kv_rows_;       // [N, layout.token_floats()]
};

}  // namespace arbor::engine
