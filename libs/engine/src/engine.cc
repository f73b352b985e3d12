#include "arbor/engine/engine.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "arbor/common/status_macros.h"
#include "arbor/kernels/decode_attention.h"
#include "arbor/kernels/gating.h"
#include "arbor/kernels/gpu.h"
#include "arbor/kernels/rms_norm.h"
#include "arbor/kernels/tree_attention.h"

#ifdef ARBOR_HAVE_CUDA
#include "cuda_step.h"
#else
namespace arbor::engine {
class CudaStep {};  // never created without CUDA
}  // namespace arbor::engine
#endif

namespace arbor::engine {
namespace {

absl::Status CheckPositive(const char* name, int v) {
  if (v <= 0) return absl::InvalidArgumentError(absl::StrCat(name, " ", v, " must be > 0"));
  return absl::OkStatus();
}

// y[m, n] (+)= x[m, k] . w[n, k]^T, all row-major and dense.
void MatMulWT(const float* x, const float* w, float* y, int m, int n, int k, float beta) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, x, k, w, k, beta, y, n);
}

// Whether TreeDecodeCuda can tile the model's attention (see decode_attention.h).
absl::Status CudaAttentionSupports(const model::ModelConfig& c) {
  const int group = c.num_attention_heads / c.num_key_value_heads;
  if (c.head_dim % 16 != 0 || c.head_dim > 256 || group > kernels::kTreeDecodeRows) {
    return absl::InvalidArgumentError(absl::StrCat(
        "engine backend cuda: head_dim ", c.head_dim, " (needs a multiple of 16, <= 256) or ",
        group, " query heads per kv head (max ", kernels::kTreeDecodeRows,
        ") is not supported by the attention kernel"));
  }
  return absl::OkStatus();
}

}  // namespace

std::string ResolveEngineBackend(const std::string& backend, const model::ModelConfig& config) {
  if (backend != "auto") return backend;
  return kernels::CudaDeviceCount() > 0 && CudaAttentionSupports(config).ok() ? "cuda" : "cpu";
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const model::ModelWeights* weights,
                                                       ExpertBackend* experts,
                                                       const EngineOptions& options) {
  if (weights == nullptr || weights->non_expert() == nullptr) {
    return absl::InvalidArgumentError("engine: the non-expert weights are not loaded");
  }
  if (experts == nullptr) return absl::InvalidArgumentError("engine: no expert backend");
  ARBOR_RETURN_IF_ERROR(CheckPositive("max_batch_tokens", options.max_batch_tokens));
  ARBOR_RETURN_IF_ERROR(CheckPositive("max_seqs", options.max_seqs));
  ARBOR_RETURN_IF_ERROR(CheckPositive("max_seq_tokens", options.max_seq_tokens));
  ARBOR_RETURN_IF_ERROR(CheckPositive("kv_cache_tokens", options.kv_cache_tokens));
  ARBOR_RETURN_IF_ERROR(CheckPositive("kv_block_tokens", options.kv_block_tokens));
  if (options.num_threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_threads ", options.num_threads, " must be >= 0"));
  }
  const model::ModelConfig& c = weights->config();
  EngineOptions opts = options;
  opts.max_seq_tokens = std::min(opts.max_seq_tokens, c.max_position_embeddings);
  // Sliding-window attention is not implemented; within the window it equals full attention,
  // so sequences are capped there rather than computed differently from the model.
  if (c.sliding_window) opts.max_seq_tokens = std::min(opts.max_seq_tokens, *c.sliding_window);
  ARBOR_RETURN_IF_ERROR(CheckPositive("max_fork", opts.max_fork));
  const kvcache::KvLayout layout{c.num_hidden_layers, c.num_key_value_heads, c.head_dim,
                                 opts.kv_block_tokens};
  ARBOR_ASSIGN_OR_RETURN(auto kv,
                         kvcache::KvTree::Create(layout, layout.BlocksFor(opts.kv_cache_tokens),
                                                 {.max_fork = opts.max_fork,
                                                  .max_seq_tokens = opts.max_seq_tokens,
                                                  .prefix_index = opts.prefix_cache}));
  opts.backend = ResolveEngineBackend(opts.backend, c);
  if (opts.backend != "cpu" && opts.backend != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("engine backend \"", opts.backend, "\" is not auto, cpu or cuda"));
  }
  std::unique_ptr<CudaStep> cuda;
  if (opts.backend == "cuda") {
#ifdef ARBOR_HAVE_CUDA
    if (kernels::CudaDeviceCount() == 0) {
      return absl::FailedPreconditionError("engine backend cuda: no CUDA device is visible");
    }
    ARBOR_RETURN_IF_ERROR(CudaAttentionSupports(c));
    ARBOR_ASSIGN_OR_RETURN(
        cuda, CudaStep::Create(weights, layout, layout.BlocksFor(opts.kv_cache_tokens), opts));
#else
    return absl::FailedPreconditionError(
        "engine backend cuda: this build has no CUDA (ARBOR_ENABLE_CUDA=OFF)");
#endif
  }
  if (opts.num_threads > 0) openblas_set_num_threads(opts.num_threads);
  auto engine = std::unique_ptr<Engine>(new Engine(weights, experts, opts, std::move(kv)));
  engine->cuda_ = std::move(cuda);
  return engine;
}

Engine::~Engine() = default;

absl::Status Engine::Append(SeqId seq, absl::Span<const int> tokens, const void* kv) {
  [[maybe_unused]] const int before = kv_->Length(seq);  // read by the CUDA mirror only
  ARBOR_RETURN_IF_ERROR(kv_->Append(seq, tokens, kv));
  if (cuda_ == nullptr || tokens.empty()) return absl::OkStatus();
#ifdef ARBOR_HAVE_CUDA
  // Mirror the leaf blocks the appended tokens went to (KvTree::Append wrote them there).
  std::vector<kvcache::KvTree::Slot> slots(tokens.size());
  ARBOR_RETURN_IF_ERROR(kv_->LeafSlots(seq, before, static_cast<int>(tokens.size()), slots.data()));
  std::vector<int> blocks;
  for (const kvcache::KvTree::Slot& slot : slots) {
    if (blocks.empty() || blocks.back() != slot.block) blocks.push_back(slot.block);
  }
  return cuda_->UploadBlocks(*kv_, blocks);
#else
  return absl::OkStatus();
#endif
}

Engine::Engine(const model::ModelWeights* weights, ExpertBackend* experts,
               const EngineOptions& options, std::unique_ptr<kvcache::KvTree> kv)
    : config_(weights->config()),
      w_(weights->non_expert()),
      experts_(experts),
      options_(options),
      kv_(std::move(kv)),
      rope_(config_.head_dim, config_.rope_theta, options.max_seq_tokens) {
  const size_t n = options.max_batch_tokens, s = options.max_seqs, h = config_.hidden_size;
  const size_t k = config_.num_experts_per_tok;
  x_.resize(n * h);
  h_.resize(n * h);
  qkv_.resize(n * (config_.q_dim() + 2 * config_.kv_dim()));
  attn_.resize(n * config_.q_dim());
  router_.resize(n * config_.num_local_experts);
  expert_ids_.resize(n * k);
  expert_w_.resize(n * k);
  positions_.resize(n);
  slots_.resize(n);
  query_start_.resize(s + 1);
  step_seqs_.resize(s);
  step_new_.resize(s);
  attn_ws_.resize(kernels::TreeAttentionParams::WorkspaceFloats(
      options.max_batch_tokens, options.max_batch_tokens, config_.num_attention_heads,
      config_.num_key_value_heads, config_.head_dim, options.kv_block_tokens));
  last_.resize(s * h);
  logits_.resize(s * config_.vocab_size);
  logits_row_.resize(s);
  last_rows_.resize(s);
  // Chunk bookkeeping grows only for paths deeper than this.
  constexpr size_t kDepth = 64;
  path_.reserve(kDepth);
  refs_.reserve(s * kDepth);
  for (auto* v : {&chunk_start_, &chunk_len_, &chunk_block_start_, &chunk_query_start_}) {
    v->reserve(s * kDepth + 1);
  }
  chunk_queries_.reserve(n * kDepth);
  const size_t blocks = s * (kv_->layout().BlocksFor(options.max_seq_tokens) + kDepth);
  chunk_block_ids_.reserve(blocks);
  block_k_.reserve(blocks);
  block_v_.reserve(blocks);
}

SeqId Engine::AddSequence() { return kv_->CreateSequence({})->seq; }

absl::StatusOr<kvcache::KvTree::Created> Engine::AddSequence(absl::Span<const int> prompt) {
  for (int t : prompt) {
    if (t < 0 || t >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt token id ", t, " outside the vocabulary [0, ", config_.vocab_size, ")"));
    }
  }
  return kv_->CreateSequence(prompt);
}

const float* Engine::logits(int i) const {
  if (i < 0 || i >= n_inputs_ || logits_row_[i] < 0) return nullptr;
  return logits_.data() + static_cast<size_t>(logits_row_[i]) * config_.vocab_size;
}

absl::Status Engine::Validate(std::span<const StepInput> inputs) {
  if (inputs.empty()) return absl::InvalidArgumentError("step: no inputs");
  if (static_cast<int>(inputs.size()) > options_.max_seqs) {
    return absl::InvalidArgumentError(
        absl::StrCat("step: ", inputs.size(), " inputs exceed max_seqs ", options_.max_seqs));
  }
  int total = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const StepInput& in = inputs[i];
    if (in.tokens.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("step: input ", i, " has no tokens"));
    }
    const int len = kv_->Length(in.seq);
    if (len < 0) return absl::NotFoundError(absl::StrCat("step: sequence ", in.seq, " unknown"));
    for (size_t j = 0; j < i; ++j) {
      if (inputs[j].seq == in.seq) {
        return absl::InvalidArgumentError(
            absl::StrCat("step: sequence ", in.seq, " appears twice"));
      }
    }
    for (int t : in.tokens) {
      if (t < 0 || t >= config_.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(
            "step: token id ", t, " outside the vocabulary [0, ", config_.vocab_size, ")"));
      }
    }
    if (len + static_cast<int>(in.tokens.size()) > options_.max_seq_tokens) {
      return absl::OutOfRangeError(absl::StrCat("step: sequence ", in.seq, " would reach ",
                                                len + in.tokens.size(), " tokens, past max ",
                                                options_.max_seq_tokens));
    }
    total += static_cast<int>(in.tokens.size());
  }
  if (total > options_.max_batch_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "step: ", total, " tokens exceed max_batch_tokens ", options_.max_batch_tokens));
  }
  return absl::OkStatus();
}

absl::Status Engine::BuildChunks(std::span<const StepInput> inputs) {
  refs_.clear();
  for (size_t s = 0; s < inputs.size(); ++s) {
    ARBOR_RETURN_IF_ERROR(kv_->Path(inputs[s].seq, &path_, step_new_[s]));
    for (const kvcache::PathEntry& e : path_) {
      refs_.push_back({e.segment, e.length, e.start, static_cast<int>(s), e.blocks});
    }
  }
  // Sequences sharing a segment prefix of the same length share one chunk.
  std::sort(refs_.begin(), refs_.end(), [](const PathRef& a, const PathRef& b) {
    return a.segment != b.segment ? a.segment < b.segment
           : a.length != b.length ? a.length < b.length
                                  : a.input < b.input;
  });
  chunk_start_.clear();
  chunk_len_.clear();
  chunk_block_start_.assign(1, 0);
  chunk_query_start_.assign(1, 0);
  chunk_queries_.clear();
  chunk_block_ids_.clear();
  const int bt = kv_->layout().block_tokens;
  for (size_t i = 0; i < refs_.size(); ++i) {
    const PathRef& r = refs_[i];
    if (i == 0 || r.segment != refs_[i - 1].segment || r.length != refs_[i - 1].length) {
      if (i > 0) chunk_query_start_.push_back(static_cast<int>(chunk_queries_.size()));
      chunk_start_.push_back(r.start);
      chunk_len_.push_back(r.length);
      for (int b = 0; b < (r.length + bt - 1) / bt; ++b) {
        chunk_block_ids_.push_back(r.blocks[b]);
      }
      chunk_block_start_.push_back(static_cast<int>(chunk_block_ids_.size()));
    }
    for (int t = query_start_[r.input]; t < query_start_[r.input + 1]; ++t) {
      chunk_queries_.push_back(t);
    }
  }
  if (!refs_.empty()) chunk_query_start_.push_back(static_cast<int>(chunk_queries_.size()));
  n_chunks_ = static_cast<int>(chunk_start_.size());
  block_k_.resize(chunk_block_ids_.size());
  block_v_.resize(chunk_block_ids_.size());
  counters_.attention_chunks += n_chunks_;
  counters_.attention_chunk_refs += static_cast<int64_t>(refs_.size());
  return absl::OkStatus();
}

absl::Status Engine::Step(std::span<const StepInput> inputs) {
  ARBOR_RETURN_IF_ERROR(Validate(inputs));
  const int n_seqs = static_cast<int>(inputs.size());
  for (int s = 0; s < n_seqs; ++s) {
    step_seqs_[s] = inputs[s].seq;
    step_new_[s] = static_cast<int>(inputs[s].tokens.size());
  }
  ARBOR_RETURN_IF_ERROR(kv_->Reserve(absl::MakeConstSpan(step_seqs_.data(), n_seqs),
                                     absl::MakeConstSpan(step_new_.data(), n_seqs)));

  // Token rows: embeddings, positions and the KV slot each new token writes.
  const int hidden = config_.hidden_size;
  int t = 0;
  query_start_[0] = 0;
  for (int s = 0; s < n_seqs; ++s) {
    const int start = kv_->Length(inputs[s].seq);
    ARBOR_RETURN_IF_ERROR(
        kv_->LeafSlots(inputs[s].seq, start, step_new_[s], slots_.data() + t));  // reserved above
    for (size_t j = 0; j < inputs[s].tokens.size(); ++j, ++t) {
      const float* e = w_->embed.data() + static_cast<size_t>(inputs[s].tokens[j]) * hidden;
      std::copy(e, e + hidden, x_.data() + static_cast<size_t>(t) * hidden);
      positions_[t] = start + static_cast<int>(j);
    }
    query_start_[s + 1] = t;
  }
  const int n_tokens = t;
  ARBOR_RETURN_IF_ERROR(BuildChunks(inputs));

  // Rows whose logits are wanted: the last token row of each input that asks for them.
  int n_last = 0;
  for (int s = 0; s < n_seqs; ++s) {
    logits_row_[s] = inputs[s].want_logits ? n_last : -1;
    if (inputs[s].want_logits) last_rows_[n_last++] = query_start_[s + 1] - 1;
  }

#ifdef ARBOR_HAVE_CUDA
  if (cuda_ != nullptr) {
    CudaStepInput in;
    in.n_tokens = n_tokens, in.x = x_.data(), in.positions = positions_.data();
    in.slots = slots_.data(), in.n_chunks = n_chunks_, in.chunk_start = chunk_start_.data();
    in.chunk_len = chunk_len_.data(), in.chunk_block_start = chunk_block_start_.data();
    in.chunk_block_ids = chunk_block_ids_.data();
    in.chunk_query_start = chunk_query_start_.data(), in.chunk_queries = chunk_queries_.data();
    in.last_rows = last_rows_.data(), in.n_last = n_last;
    ARBOR_RETURN_IF_ERROR(cuda_->Run(in, experts_, kv_.get(), logits_.data()));
    return Finish(inputs);
  }
#endif
  for (int l = 0; l < config_.num_hidden_layers; ++l) {
    ARBOR_RETURN_IF_ERROR(RunLayer(l, n_tokens));
  }

  // Final norm and LM head of the wanted rows.
  for (int i = 0; i < n_last; ++i) {
    kernels::RmsNormCpu({x_.data() + static_cast<size_t>(last_rows_[i]) * hidden,
                         w_->final_norm.data(), last_.data() + static_cast<size_t>(i) * hidden, 1,
                         hidden, hidden, config_.rms_norm_eps});
  }
  if (n_last > 0) {
    MatMulWT(last_.data(), w_->lm_head_data(), logits_.data(), n_last, config_.vocab_size, hidden,
             0.0f);
  }
  return Finish(inputs);
}

absl::Status Engine::Finish(std::span<const StepInput> inputs) {
  const int n_seqs = static_cast<int>(inputs.size());
  n_inputs_ = n_seqs;
  for (int s = 0; s < n_seqs; ++s) {
    ARBOR_RETURN_IF_ERROR(kv_->Commit(step_seqs_[s], inputs[s].tokens));
    if (inputs[s].tokens.size() > 1) {
      counters_.prefill_tokens += static_cast<int64_t>(inputs[s].tokens.size());
    } else {
      counters_.decode_tokens += 1;
    }
  }
  ++counters_.steps;
  return absl::OkStatus();
}

absl::Status Engine::RunLayer(int layer, int n_tokens) {
  const model::LayerWeights& lw = w_->layers[layer];
  const int hidden = config_.hidden_size, hd = config_.head_dim;
  const int q_dim = config_.q_dim(), kv_dim = config_.kv_dim(), qkv_dim = q_dim + 2 * kv_dim;
  const kvcache::KvLayout& layout = kv_->layout();

  // Attention block.
  kernels::RmsNormCpu(
      {x_.data(), lw.attn_norm.data(), h_.data(), n_tokens, hidden, hidden, config_.rms_norm_eps});
  MatMulWT(h_.data(), lw.wqkv.data(), qkv_.data(), n_tokens, qkv_dim, hidden, 0.0f);
  kernels::RopeCpu(
      {qkv_.data(), positions_.data(), &rope_, n_tokens, config_.num_attention_heads, qkv_dim});
  kernels::RopeCpu({qkv_.data() + q_dim, positions_.data(), &rope_, n_tokens,
                    config_.num_key_value_heads, qkv_dim});

  // Write this layer's K and V of the new tokens into their leaves' blocks.
  for (int t = 0; t < n_tokens; ++t) {
    float* block = kv_->block_data(slots_[t].block);
    const size_t in_block = static_cast<size_t>(slots_[t].slot) * hd;
    const float* k = qkv_.data() + static_cast<size_t>(t) * qkv_dim + q_dim;
    const float* v = k + kv_dim;
    for (int g = 0; g < config_.num_key_value_heads; ++g) {
      std::copy(k + g * hd, k + (g + 1) * hd,
                block + layout.offset(layer, 0) + g * layout.head_stride() + in_block);
      std::copy(v + g * hd, v + (g + 1) * hd,
                block + layout.offset(layer, 1) + g * layout.head_stride() + in_block);
    }
  }
  for (size_t b = 0; b < chunk_block_ids_.size(); ++b) {
    const float* block = kv_->block_data(chunk_block_ids_[b]);
    block_k_[b] = block + layout.offset(layer, 0);
    block_v_[b] = block + layout.offset(layer, 1);
  }
  kernels::TreeAttentionParams ap;
  ap.q = qkv_.data();
  ap.q_row_stride = qkv_dim;
  ap.out = attn_.data();
  ap.q_pos = positions_.data();
  ap.n_tokens = n_tokens;
  ap.n_heads = config_.num_attention_heads;
  ap.n_kv_heads = config_.num_key_value_heads;
  ap.head_dim = hd;
  ap.scale = 1.0f / std::sqrt(static_cast<float>(hd));
  ap.n_chunks = n_chunks_;
  ap.chunk_start = chunk_start_.data();
  ap.chunk_len = chunk_len_.data();
  ap.chunk_block_start = chunk_block_start_.data();
  ap.block_k = block_k_.data();
  ap.block_v = block_v_.data();
  ap.block_tokens = layout.block_tokens;
  ap.head_stride = layout.head_stride();
  ap.chunk_query_start = chunk_query_start_.data();
  ap.chunk_queries = chunk_queries_.data();
  ap.workspace = attn_ws_.data();
  kernels::TreeAttentionCpu(ap);
  MatMulWT(attn_.data(), lw.wo.data(), x_.data(), n_tokens, hidden, q_dim, 1.0f);

  // MoE block: gate, top-k, experts (which add their weighted outputs into x).
  kernels::RmsNormCpu(
      {x_.data(), lw.ffn_norm.data(), h_.data(), n_tokens, hidden, hidden, config_.rms_norm_eps});
  MatMulWT(h_.data(), lw.gate.data(), router_.data(), n_tokens, config_.num_local_experts, hidden,
           0.0f);
  kernels::GatingCpu({router_.data(), expert_ids_.data(), expert_w_.data(), n_tokens,
                      config_.num_local_experts, config_.num_experts_per_tok});
  return experts_->Run({layer, h_.data(), n_tokens, config_.num_experts_per_tok, expert_ids_.data(),
                        expert_w_.data()},
                       x_.data());
}

}  // namespace arbor::engine
