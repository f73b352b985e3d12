#include "cuda_step.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "arbor/common/dtype.h"
#include "arbor/common/status_macros.h"
#include "arbor/kernels/cublas_api.h"
#include "arbor/kernels/cuda_check.h"
#include "arbor/kernels/gating.h"
#include "arbor/kernels/kv_write.h"
#include "arbor/kernels/rms_norm.h"
#include "arbor/kernels/rope.h"

namespace arbor::engine {

using kernels::bf16_t;
using kernels::DeviceBuffer;

absl::StatusOr<std::unique_ptr<CudaStep>> CudaStep::Create(const model::ModelWeights* weights,
                                                           ExpertBackend* experts,
                                                           kvcache::KvTree* kv,
                                                           const EngineOptions& options) {
  std::unique_ptr<CudaStep> s(new CudaStep(weights, experts, kv, options));
  ARBOR_RETURN_IF_ERROR(s->Init());
  return s;
}

CudaStep::CudaStep(const model::ModelWeights* weights, ExpertBackend* experts, kvcache::KvTree* kv,
                   const EngineOptions& options)
    : config_(weights->config()),
      w_(weights->non_expert()),
      experts_(experts),
      tree_(kv),
      layout_(kv->layout()),
      kv_blocks_(kv->stats().blocks_capacity),
      options_(options) {}

CudaStep::~CudaStep() {
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  if (blas_ != nullptr) api_->destroy(blas_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

absl::Status CudaStep::Init() {
  ARBOR_ASSIGN_OR_RETURN(pool_, kernels::DevicePool::Create(0));
  ARBOR_CUDA_RETURN_IF_ERROR(cudaSetDevice(0));
  ARBOR_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  ARBOR_ASSIGN_OR_RETURN(api_, kernels::Cublas());
  cublasHandle_t handle = nullptr;
  ARBOR_CUBLAS_RETURN_IF_ERROR(api_->create(&handle));
  blas_ = handle;
  ARBOR_CUBLAS_RETURN_IF_ERROR(api_->set_stream(handle, stream_));
  // f32 weights and plain SGEMM (no TF32): the CPU engine's arithmetic, up to summation order.
  ARBOR_CUBLAS_RETURN_IF_ERROR(api_->set_math_mode(handle, CUBLAS_PEDANTIC_MATH));

  auto up = [&](const float* data, size_t n) { return pool_->Upload(data, n * sizeof(float)); };
  // Projection matrices go up as f32 (16-bit checkpoints' converted here, on the host).
  auto up_matrix = [&](const model::Matrix& m) {
    const std::vector<float> f32 = m.ToF32();
    return up(f32.data(), f32.size());
  };
  for (const model::LayerWeights& lw : w_->layers) {
    LayerDev d;
    ARBOR_ASSIGN_OR_RETURN(d.attn_norm, up(lw.attn_norm.data(), lw.attn_norm.size()));
    ARBOR_ASSIGN_OR_RETURN(d.wqkv, up_matrix(lw.wqkv));
    ARBOR_ASSIGN_OR_RETURN(d.wo, up_matrix(lw.wo));
    ARBOR_ASSIGN_OR_RETURN(d.ffn_norm, up(lw.ffn_norm.data(), lw.ffn_norm.size()));
    ARBOR_ASSIGN_OR_RETURN(d.gate, up_matrix(lw.gate));
    layers_.push_back(std::move(d));
  }
  const size_t hidden = config_.hidden_size, vocab = config_.vocab_size;
  ARBOR_ASSIGN_OR_RETURN(final_norm_, up(w_->final_norm.data(), hidden));
  if (w_->lm_head.empty()) {
    ARBOR_ASSIGN_OR_RETURN(lm_head_, up(w_->embed.data(), vocab * hidden));
  } else {
    ARBOR_ASSIGN_OR_RETURN(lm_head_, up_matrix(w_->lm_head));
  }
  const kernels::RopeTable rope(config_.head_dim, config_.rope_theta, options_.max_seq_tokens);
  const size_t rope_n = static_cast<size_t>(options_.max_seq_tokens) * config_.head_dim / 2;
  ARBOR_ASSIGN_OR_RETURN(rope_cos_, up(rope.cos(0), rope_n));
  ARBOR_ASSIGN_OR_RETURN(rope_sin_, up(rope.sin(0), rope_n));

  const size_t kv_bytes = static_cast<size_t>(kv_blocks_) * layout_.floats_per_block() * 2;
  ARBOR_ASSIGN_OR_RETURN(kv_, pool_->Allocate(kv_bytes));
  ARBOR_CUDA_RETURN_IF_ERROR(cudaMemset(kv_.data(), 0, kv_bytes));

  const size_t n = options_.max_batch_tokens, r = options_.max_logit_rows;
  const size_t qkv = config_.q_dim() + 2 * static_cast<size_t>(config_.kv_dim());
  const size_t k = config_.num_experts_per_tok;
  ARBOR_RETURN_IF_ERROR(pool_->AllocateAll({{&x_, n * hidden * 4},
                                            {&h_, n * hidden * 4},
                                            {&qkv_, n * qkv * 4},
                                            {&attn_, n * config_.q_dim() * 4},
                                            {&router_, n * config_.num_local_experts * 4},
                                            {&ids_, n * k * 4},
                                            {&gate_w_, n * k * 4},
                                            {&pos_, n * 4},
                                            {&slot_block_, n * 4},
                                            {&slot_slot_, n * 4},
                                            {&last_, r * hidden * 4},
                                            {&logits_, r * vocab * 4},
                                            {&kv_rows_, n * layout_.token_floats() * 4}}));
  h_x_.resize(n * hidden);
  h_h_.resize(n * hidden);
  h_w_.resize(n * k);
  h_ids_.resize(n * k);
  h_slot_block_.resize(n);
  h_slot_slot_.resize(n);
  h_kv_.resize(layout_.floats_per_block());
  h_kv_rows_.resize(n * layout_.token_floats());
  return absl::OkStatus();
}

// y[m, n] (+)= x[m, k] . w[n, k]^T, row-major: column-major y^T = op_T(w) . x^T.
absl::Status CudaStep::Gemm(const float* x, const float* w, float* y, int m, int n, int k,
                            float beta) {
  const float one = 1.0f;
  ARBOR_CUBLAS_RETURN_IF_ERROR(
      api_->sgemm(blas_, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &one, w, k, x, k, &beta, y, n));
  return absl::OkStatus();
}

absl::Status CudaStep::Grow(Grown& g, size_t bytes) {
  bytes = std::max<size_t>(bytes, 4);
  if (bytes <= g.bytes) return absl::OkStatus();
  g.bytes = std::max(bytes, 2 * g.bytes);
  ARBOR_ASSIGN_OR_RETURN(g.buf, pool_->Allocate(g.bytes));
  return absl::OkStatus();
}

absl::Status CudaStep::H2D(void* dst, const void* src, size_t bytes) {
  return kernels::CudaStatus(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_),
                             "upload");
}

absl::Status CudaStep::Run(const StepPlan& in, float* logits) {
  ARBOR_RETURN_IF_ERROR(UploadTokens(in));
  ARBOR_RETURN_IF_ERROR(UploadAttention(in));
  for (int l = 0; l < config_.num_hidden_layers; ++l) {
    ARBOR_RETURN_IF_ERROR(Layer(l, in.n_tokens, in.chunks->block_ids()));
  }
  ARBOR_RETURN_IF_ERROR(Logits(in, logits));
  return CopyKvBack(in);
}

absl::Status CudaStep::UploadTokens(const StepPlan& in) {
  const int n = in.n_tokens, hidden = config_.hidden_size;
  ARBOR_RETURN_IF_ERROR(H2D(x_.data(), in.x, static_cast<size_t>(n) * hidden * 4));
  ARBOR_RETURN_IF_ERROR(H2D(pos_.data(), in.positions, n * 4));
  for (int t = 0; t < n; ++t) {
    h_slot_block_[t] = in.slots[t].block;
    h_slot_slot_[t] = in.slots[t].slot;
  }
  ARBOR_RETURN_IF_ERROR(H2D(slot_block_.data(), h_slot_block_.data(), n * 4));
  ARBOR_RETURN_IF_ERROR(H2D(slot_slot_.data(), h_slot_slot_.data(), n * 4));
  return absl::OkStatus();
}

absl::Status CudaStep::UploadAttention(const StepPlan& in) {
  const int n = in.n_tokens;
  // Attention chunks and the work plan; block pointers are set per layer.
  const kernels::AttentionChunks& ch = *in.chunks;
  const kernels::DecodePlan plan = kernels::PlanTreeDecode(
      ch.view(), n, config_.num_attention_heads, config_.num_key_value_heads);
  const size_t n_chunks = ch.size();
  n_chunk_blocks_ = ch.n_blocks();
  const size_t heads = config_.num_attention_heads, slots = std::max(1, plan.n_slots);
  for (auto [g, bytes] : {std::pair<Grown*, size_t>{&chunk_start_, n_chunks * 4},
                          {&chunk_len_, n_chunks * 4},
                          {&chunk_block_start_, (n_chunks + 1) * 4},
                          {&chunk_query_start_, (n_chunks + 1) * 4},
                          {&chunk_queries_, ch.n_queries() * size_t{4}},
                          {&block_k_, n_chunk_blocks_ * sizeof(void*)},
                          {&block_v_, n_chunk_blocks_ * sizeof(void*)},
                          {&items_, plan.items.size() * sizeof(kernels::DecodeItem)},
                          {&slot_start_, plan.query_slot_start.size() * 4},
                          {&slots_, plan.query_slots.size() * 4},
                          {&pm_, slots * heads * 4},
                          {&pl_, slots * heads * 4},
                          {&po_, slots * heads * config_.head_dim * 4}}) {
    ARBOR_RETURN_IF_ERROR(Grow(*g, bytes));
  }
  for (auto [g, v] : {std::pair<Grown*, const std::vector<int>*>{&chunk_start_, &ch.start()},
                      {&chunk_len_, &ch.len()},
                      {&chunk_block_start_, &ch.block_start()},
                      {&chunk_query_start_, &ch.query_start()},
                      {&chunk_queries_, &ch.queries()},
                      {&slot_start_, &plan.query_slot_start},
                      {&slots_, &plan.query_slots}}) {
    ARBOR_RETURN_IF_ERROR(H2D(g->buf.data(), v->data(), v->size() * 4));
  }
  ARBOR_RETURN_IF_ERROR(
      H2D(items_.buf.data(), plan.items.data(), plan.items.size() * sizeof(kernels::DecodeItem)));

  kernels::DecodeAttentionParams& ap = attn_params_;
  ap = {};
  ap.q = qkv_.as<float>();
  ap.q_row_stride = config_.q_dim() + 2 * config_.kv_dim();
  ap.out = attn_.as<float>();
  ap.q_pos = pos_.as<int>();
  ap.n_tokens = n;
  ap.n_heads = config_.num_attention_heads;
  ap.n_kv_heads = config_.num_key_value_heads;
  ap.head_dim = config_.head_dim;
  ap.scale = 1.0f / std::sqrt(static_cast<float>(config_.head_dim));
  ap.chunks = {.n_chunks = ch.size(),
               .start = chunk_start_.buf.as<int>(),
               .len = chunk_len_.buf.as<int>(),
               .block_start = chunk_block_start_.buf.as<int>(),
               .query_start = chunk_query_start_.buf.as<int>(),
               .queries = chunk_queries_.buf.as<int>()};
  ap.block_k = block_k_.buf.as<const bf16_t*>();
  ap.block_v = block_v_.buf.as<const bf16_t*>();
  ap.block_tokens = layout_.block_tokens;
  ap.head_stride = layout_.head_stride();
  ap.items = items_.buf.as<kernels::DecodeItem>();
  ap.n_items = static_cast<int>(plan.items.size());
  ap.query_slot_start = slot_start_.buf.as<int>();
  ap.query_slots = slots_.buf.as<int>();
  ap.n_slots = plan.n_slots;
  ap.partial_m = pm_.buf.as<float>();
  ap.partial_l = pl_.buf.as<float>();
  ap.partial_o = po_.buf.as<float>();
  return absl::OkStatus();
}

absl::Status CudaStep::Logits(const StepPlan& in, float* logits) {
  const int hidden = config_.hidden_size;
  // Final norm and LM head of the wanted rows.
  for (int i = 0; i < in.n_last; ++i) {
    ARBOR_RETURN_IF_ERROR(
        kernels::RmsNormCuda({.x = x_.as<float>() + static_cast<size_t>(in.last_rows[i]) * hidden,
                              .weight = final_norm_.as<float>(),
                              .out = last_.as<float>() + static_cast<size_t>(i) * hidden,
                              .n_rows = 1,
                              .dim = hidden,
                              .eps = config_.rms_norm_eps},
                             stream_));
  }
  if (in.n_last > 0) {
    ARBOR_RETURN_IF_ERROR(Gemm(last_.as<float>(), lm_head_.as<float>(), logits_.as<float>(),
                               in.n_last, config_.vocab_size, hidden, 0.0f));
    ARBOR_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
        logits, logits_.data(), static_cast<size_t>(in.n_last) * config_.vocab_size * 4,
        cudaMemcpyDeviceToHost, stream_));
  }
  return absl::OkStatus();
}

absl::Status CudaStep::CopyKvBack(const StepPlan& in) {
  const int n = in.n_tokens;
  // The new tokens' KV back into the host blocks: packed on the device as token rows (only
  // those bytes cross), then written row by row into each token's slot.
  const size_t hd = layout_.head_dim, row = layout_.token_floats();
  const kernels::KvReadParams kr{.blocks = kv_.as<bf16_t>(),
                                 .block_elems = layout_.floats_per_block(),
                                 .block = slot_block_.as<int>(),
                                 .slot = slot_slot_.as<int>(),
                                 .n_tokens = n,
                                 .n_layers = layout_.num_layers,
                                 .n_kv_heads = layout_.num_kv_heads,
                                 .head_dim = static_cast<int>(hd),
                                 .head_stride = layout_.head_stride(),
                                 .out = kv_rows_.as<float>()};
  ARBOR_RETURN_IF_ERROR(kernels::KvReadCuda(kr, stream_));
  ARBOR_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(h_kv_rows_.data(), kv_rows_.data(),
                                             n * row * sizeof(float), cudaMemcpyDeviceToHost,
                                             stream_));
  ARBOR_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  for (int t = 0; t < n; ++t) {
    const float* src = h_kv_rows_.data() + t * row;  // a token row
    float* block = tree_->block_data(in.slots[t].block);
    layout_.ForEachHeadRow(in.slots[t].slot, [&](size_t offset) {
      std::copy(src, src + hd, block + offset);
      src += hd;
    });
  }
  return absl::OkStatus();
}

absl::Status CudaStep::Layer(int layer, int n, const std::vector<int>& chunk_blocks) {
  const LayerDev& lw = layers_[layer];
  const int hidden = config_.hidden_size, hd = config_.head_dim;
  const int q_dim = config_.q_dim(), kv_dim = config_.kv_dim(), qkv_dim = q_dim + 2 * kv_dim;
  const int k = config_.num_experts_per_tok, e = config_.num_local_experts;
  auto norm_into_h = [&](const kernels::DeviceBuffer& weight) {  // h = RMSNorm(x) * weight
    return kernels::RmsNormCuda({.x = x_.as<float>(),
                                 .weight = weight.as<float>(),
                                 .out = h_.as<float>(),
                                 .n_rows = n,
                                 .dim = hidden,
                                 .eps = config_.rms_norm_eps},
                                stream_);
  };

  ARBOR_RETURN_IF_ERROR(norm_into_h(lw.attn_norm));
  ARBOR_RETURN_IF_ERROR(
      Gemm(h_.as<float>(), lw.wqkv.as<float>(), qkv_.as<float>(), n, qkv_dim, hidden, 0.0f));
  kernels::RopeCudaParams rope{.x = qkv_.as<float>(),
                               .positions = pos_.as<int>(),
                               .cos = rope_cos_.as<float>(),
                               .sin = rope_sin_.as<float>(),
                               .head_dim = hd,
                               .max_positions = options_.max_seq_tokens,
                               .n_tokens = n,
                               .n_heads = config_.num_attention_heads,
                               .row_stride = qkv_dim};
  ARBOR_RETURN_IF_ERROR(kernels::RopeCuda(rope, stream_));
  rope.x = qkv_.as<float>() + q_dim;
  rope.n_heads = config_.num_key_value_heads;
  ARBOR_RETURN_IF_ERROR(kernels::RopeCuda(rope, stream_));

  ARBOR_RETURN_IF_ERROR(Attend(layer, n, chunk_blocks));
  ARBOR_RETURN_IF_ERROR(
      Gemm(attn_.as<float>(), lw.wo.as<float>(), x_.as<float>(), n, hidden, q_dim, 1.0f));

  ARBOR_RETURN_IF_ERROR(norm_into_h(lw.ffn_norm));
  ARBOR_RETURN_IF_ERROR(
      Gemm(h_.as<float>(), lw.gate.as<float>(), router_.as<float>(), n, e, hidden, 0.0f));
  ARBOR_RETURN_IF_ERROR(kernels::GatingCuda({.logits = router_.as<float>(),
                                             .expert_ids = ids_.as<int>(),
                                             .weights = gate_w_.as<float>(),
                                             .n_tokens = n,
                                             .n_experts = e,
                                             .top_k = k},
                                            stream_));

  return Experts(layer, n);
}

absl::Status CudaStep::Attend(int layer, int n, const std::vector<int>& chunk_blocks) {
  const int hd = config_.head_dim, q_dim = config_.q_dim(), kv_dim = config_.kv_dim();
  const kernels::KvWriteParams kw{.qkv = qkv_.as<float>(),
                                  .row_stride = q_dim + 2 * kv_dim,
                                  .k_col = q_dim,
                                  .v_col = q_dim + kv_dim,
                                  .block = slot_block_.as<int>(),
                                  .slot = slot_slot_.as<int>(),
                                  .n_tokens = n,
                                  .blocks = kv_.as<bf16_t>(),
                                  .block_elems = layout_.floats_per_block(),
                                  .k_offset = layout_.offset(layer, 0),
                                  .v_offset = layout_.offset(layer, 1),
                                  .n_kv_heads = config_.num_key_value_heads,
                                  .head_dim = hd,
                                  .head_stride = layout_.head_stride()};
  ARBOR_RETURN_IF_ERROR(kernels::KvWriteCuda(kw, stream_));

  h_block_k_.resize(n_chunk_blocks_);
  h_block_v_.resize(n_chunk_blocks_);
  const bf16_t* base = kv_.as<bf16_t>();
  for (int b = 0; b < n_chunk_blocks_; ++b) {
    const bf16_t* blk = base + static_cast<size_t>(chunk_blocks[b]) * kw.block_elems;
    h_block_k_[b] = blk + kw.k_offset;
    h_block_v_[b] = blk + kw.v_offset;
  }
  if (n_chunk_blocks_ > 0) {
    ARBOR_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(block_k_.buf.data(), h_block_k_.data(),
                                               n_chunk_blocks_ * sizeof(void*),
                                               cudaMemcpyHostToDevice, stream_));
    ARBOR_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(block_v_.buf.data(), h_block_v_.data(),
                                               n_chunk_blocks_ * sizeof(void*),
                                               cudaMemcpyHostToDevice, stream_));
  }
  return kernels::TreeDecodeCuda(attn_params_, stream_);
}

absl::Status CudaStep::Experts(int layer, int n) {
  const int hidden = config_.hidden_size, k = config_.num_experts_per_tok;
  // Experts on host buffers: they add their weighted outputs into x.
  auto d2h = [&](void* dst, const DeviceBuffer& src, size_t bytes) {
    return kernels::CudaStatus(
        cudaMemcpyAsync(dst, src.data(), bytes, cudaMemcpyDeviceToHost, stream_), "download");
  };
  const size_t rows = static_cast<size_t>(n) * hidden * 4;
  ARBOR_RETURN_IF_ERROR(d2h(h_h_.data(), h_, rows));
  ARBOR_RETURN_IF_ERROR(d2h(h_x_.data(), x_, rows));
  ARBOR_RETURN_IF_ERROR(d2h(h_ids_.data(), ids_, static_cast<size_t>(n) * k * 4));
  ARBOR_RETURN_IF_ERROR(d2h(h_w_.data(), gate_w_, static_cast<size_t>(n) * k * 4));
  ARBOR_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  ARBOR_RETURN_IF_ERROR(experts_->Run({.layer = layer,
                                       .x = h_h_.data(),
                                       .n_tokens = n,
                                       .top_k = k,
                                       .expert_ids = h_ids_.data(),
                                       .weights = h_w_.data()},
                                      h_x_.data()));
  ARBOR_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(x_.data(), h_x_.data(), rows, cudaMemcpyHostToDevice, stream_));
  return absl::OkStatus();
}

absl::Status CudaStep::BlocksWritten(const std::vector<int>& blocks) {
  const size_t fpb = layout_.floats_per_block();
  for (int b : blocks) {
    const float* host = tree_->block_data(b);
    for (size_t i = 0; i < fpb; ++i) h_kv_[i] = F32ToBF16(host[i]);
    // From pageable memory the copy returns once staged, so h_kv_ may be refilled at once.
    ARBOR_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(kv_.as<bf16_t>() + b * fpb, h_kv_.data(), fpb * 2,
                                               cudaMemcpyHostToDevice, stream_));
  }
  return absl::OkStatus();
}

}  // namespace arbor::engine
