#include "arbor/engine/engine.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "arbor/common/status_macros.h"
#include "arbor/kernels/decode_attention.h"
#include "arbor/kernels/gpu.h"
#include "step_backend.h"

namespace arbor::engine {
namespace {

absl::Status CheckPositive(const char* name, int v) {
  if (v <= 0) return absl::InvalidArgumentError(absl::StrCat(name, " ", v, " must be > 0"));
  return absl::OkStatus();
}

}  // namespace

std::string ResolveEngineBackend(const std::string& backend, const model::ModelConfig& config) {
  if (backend != "auto") return backend;
  const bool tiles = kernels::CheckTreeDecodeShape(config.num_attention_heads,
                                                   config.num_key_value_heads, config.head_dim)
                         .ok();
  return kernels::CudaDeviceCount() > 0 && tiles ? "cuda" : "cpu";
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
  if (opts.max_logit_rows == 0) opts.max_logit_rows = opts.max_seqs;
  if (opts.max_logit_rows < opts.max_seqs) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_logit_rows ", opts.max_logit_rows, " must be 0 or at least max_seqs ", opts.max_seqs));
  }
  const kvcache::KvLayout layout{c.num_hidden_layers, c.num_key_value_heads, c.head_dim,
                                 opts.kv_block_tokens};
  ARBOR_ASSIGN_OR_RETURN(auto kv,
                         kvcache::KvTree::Create(layout, layout.BlocksFor(opts.kv_cache_tokens),
                                                 {.max_fork = opts.max_fork,
                                                  .max_seq_tokens = opts.max_seq_tokens,
                                                  .prefix_index = opts.prefix_cache}));
  opts.backend = ResolveEngineBackend(opts.backend, c);
  if (opts.num_threads > 0) openblas_set_num_threads(opts.num_threads);
  auto engine = std::unique_ptr<Engine>(new Engine(weights, opts, std::move(kv)));
  ARBOR_ASSIGN_OR_RETURN(engine->backend_,
                         CreateStepBackend(weights, experts, engine->kv_.get(), opts));
  return engine;
}

Engine::~Engine() = default;

absl::Status Engine::Append(SeqId seq, absl::Span<const int> tokens, const void* kv) {
  const int before = kv_->Length(seq);
  ARBOR_RETURN_IF_ERROR(kv_->Append(seq, tokens, kv));
  if (!backend_->mirrors_blocks() || tokens.empty()) return absl::OkStatus();
  // The leaf blocks the appended tokens went to (KvTree::Append wrote them there).
  std::vector<kvcache::KvTree::Slot> slots(tokens.size());
  ARBOR_RETURN_IF_ERROR(kv_->LeafSlots(seq, before, static_cast<int>(tokens.size()), slots.data()));
  std::vector<int> blocks;
  for (const kvcache::KvTree::Slot& slot : slots) {
    if (blocks.empty() || blocks.back() != slot.block) blocks.push_back(slot.block);
  }
  return backend_->BlocksWritten(blocks);
}

Engine::Engine(const model::ModelWeights* weights, const EngineOptions& options,
               std::unique_ptr<kvcache::KvTree> kv)
    : config_(weights->config()),
      embed_(weights->non_expert()->embed.data()),
      options_(options),
      kv_(std::move(kv)) {
  const size_t n = options.max_batch_tokens, s = options.max_seqs, r = options.max_logit_rows;
  x_.resize(n * config_.hidden_size);
  positions_.resize(n);
  slots_.resize(n);
  query_start_.resize(s + 1);
  step_seqs_.resize(s);
  step_new_.resize(s);
  step_start_.resize(s);
  step_tokens_.resize(s);
  path_start_.resize(s + 1);
  logits_.resize(r * config_.vocab_size);
  logits_row_.resize(s);
  first_row_.resize(s);
  last_rows_.resize(r);
  paths_.reserve(s * kChunkDepth);
  refs_.reserve(s * kChunkDepth);
  chunks_.Reserve(s * kChunkDepth, n * kChunkDepth, ReservedChunkBlocks(options, kv_->layout()));
}

SeqId Engine::AddSequence() { return kv_->CreateSequence({})->seq; }

absl::StatusOr<kvcache::KvTree::Created> Engine::AddSequence(absl::Span<const int> prompt,
                                                             uint64_t prefix_salt) {
  for (int t : prompt) {
    if (t < 0 || t >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt token id ", t, " outside the vocabulary [0, ", config_.vocab_size, ")"));
    }
  }
  return kv_->CreateSequence(prompt, prefix_salt);
}

const float* Engine::logits(int i) const {
  if (i < 0 || i >= n_inputs_ || logits_row_[i] < 0) return nullptr;
  return logits_.data() + static_cast<size_t>(logits_row_[i]) * config_.vocab_size;
}

const float* Engine::token_logits(int i, int j) const {
  if (i < 0 || i >= n_inputs_ || first_row_[i] < 0 || j < 0 ||
      j >= query_start_[i + 1] - query_start_[i]) {
    return nullptr;
  }
  return logits_.data() + static_cast<size_t>(first_row_[i] + j) * config_.vocab_size;
}

absl::Status Engine::Validate(std::span<const StepInput> inputs) {
  if (inputs.empty()) return absl::InvalidArgumentError("step: no inputs");
  if (static_cast<int>(inputs.size()) > options_.max_seqs) {
    return absl::InvalidArgumentError(
        absl::StrCat("step: ", inputs.size(), " inputs exceed max_seqs ", options_.max_seqs));
  }
  const int n_seqs = static_cast<int>(inputs.size());
  for (int s = 0; s < n_seqs; ++s) {
    step_seqs_[s] = inputs[s].seq;
    step_new_[s] = static_cast<int>(inputs[s].tokens.size());
    step_tokens_[s] = absl::MakeConstSpan(inputs[s].tokens.data(), inputs[s].tokens.size());
  }
  kv_->Lengths(absl::MakeConstSpan(step_seqs_.data(), n_seqs), step_start_.data());
  int total = 0, rows = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const StepInput& in = inputs[i];
    if (in.tokens.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("step: input ", i, " has no tokens"));
    }
    const int len = step_start_[i];
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
    rows += in.all_logits ? static_cast<int>(in.tokens.size()) : in.want_logits ? 1 : 0;
  }
  if (total > options_.max_batch_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "step: ", total, " tokens exceed max_batch_tokens ", options_.max_batch_tokens));
  }
  if (rows > options_.max_logit_rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        "step: ", rows, " logits rows exceed max_logit_rows ", options_.max_logit_rows));
  }
  return absl::OkStatus();
}

void Engine::BuildChunks(int n_seqs) {
  refs_.clear();
  for (int s = 0; s < n_seqs; ++s) {
    for (int p = path_start_[s]; p < path_start_[s + 1]; ++p) {
      const kvcache::PathEntry& e = paths_[p];
      refs_.push_back({e.segment, e.length, e.start, s, e.blocks});
    }
  }
  // Sequences sharing a segment prefix of the same length share one chunk.
  std::sort(refs_.begin(), refs_.end(), [](const PathRef& a, const PathRef& b) {
    return a.segment != b.segment ? a.segment < b.segment
           : a.length != b.length ? a.length < b.length
                                  : a.input < b.input;
  });
  chunks_.Clear();
  const kvcache::KvLayout& layout = kv_->layout();
  for (size_t i = 0; i < refs_.size(); ++i) {
    const PathRef& r = refs_[i];
    if (i == 0 || r.segment != refs_[i - 1].segment || r.length != refs_[i - 1].length) {
      chunks_.Add(r.start, r.length, r.blocks, layout.BlocksFor(r.length));
    }
    for (int t = query_start_[r.input]; t < query_start_[r.input + 1]; ++t) chunks_.AddQuery(t);
  }
  counters_.attention_chunks += chunks_.size();
  counters_.attention_chunk_refs += static_cast<int64_t>(refs_.size());
}

absl::Status Engine::Step(std::span<const StepInput> inputs) {
  const auto t_step = std::chrono::steady_clock::now();
  ARBOR_RETURN_IF_ERROR(Validate(inputs));  // fills step_seqs_, step_new_, step_start_
  const int n_seqs = static_cast<int>(inputs.size());
  const auto seqs = absl::MakeConstSpan(step_seqs_.data(), n_seqs);
  const auto n_new = absl::MakeConstSpan(step_new_.data(), n_seqs);
  ARBOR_RETURN_IF_ERROR(kv_->Reserve(seqs, n_new));
  // The KV slot of every new token and every sequence's path: one call (one lock) per step.
  ARBOR_RETURN_IF_ERROR(kv_->DescribeStep(seqs, absl::MakeConstSpan(step_start_.data(), n_seqs),
                                          n_new, slots_.data(), &paths_, path_start_.data()));

  // Token rows: embeddings and positions.
  const int hidden = config_.hidden_size;
  int t = 0;
  query_start_[0] = 0;
  for (int s = 0; s < n_seqs; ++s) {
    const int start = step_start_[s];
    for (size_t j = 0; j < inputs[s].tokens.size(); ++j, ++t) {
      const float* e = embed_ + static_cast<size_t>(inputs[s].tokens[j]) * hidden;
      std::copy(e, e + hidden, x_.data() + static_cast<size_t>(t) * hidden);
      positions_[t] = start + static_cast<int>(j);
    }
    query_start_[s + 1] = t;
  }
  const int n_tokens = t;
  BuildChunks(n_seqs);

  // Rows whose logits are wanted: the last token row of each input that asks for them, every
  // token row of an all_logits input.
  int n_last = 0;
  for (int s = 0; s < n_seqs; ++s) {
    const StepInput& in = inputs[s];
    const int end = query_start_[s + 1];
    const int begin = in.all_logits ? query_start_[s] : in.want_logits ? end - 1 : end;
    first_row_[s] = in.all_logits ? n_last : -1;
    for (int t = begin; t < end; ++t) last_rows_[n_last++] = t;
    logits_row_[s] = in.want_logits ? n_last - 1 : -1;
  }

  const auto t_forward = std::chrono::steady_clock::now();
  ARBOR_RETURN_IF_ERROR(backend_->Run({.n_tokens = n_tokens,
                                       .x = x_.data(),
                                       .positions = positions_.data(),
                                       .slots = slots_.data(),
                                       .chunks = &chunks_,
                                       .last_rows = last_rows_.data(),
                                       .n_last = n_last},
                                      logits_.data()));
  const auto t_finish = std::chrono::steady_clock::now();
  ARBOR_RETURN_IF_ERROR(Finish(inputs));
  const auto t_end = std::chrono::steady_clock::now();
  counters_.forward_seconds += std::chrono::duration<double>(t_finish - t_forward).count();
  counters_.step_seconds += std::chrono::duration<double>(t_end - t_step).count();
  return absl::OkStatus();
}

absl::Status Engine::Finish(std::span<const StepInput> inputs) {
  const int n_seqs = static_cast<int>(inputs.size());
  n_inputs_ = n_seqs;
  ARBOR_RETURN_IF_ERROR(kv_->CommitStep(absl::MakeConstSpan(step_seqs_.data(), n_seqs),
                                        absl::MakeConstSpan(step_tokens_.data(), n_seqs)));
  for (int s = 0; s < n_seqs; ++s) {
    if (inputs[s].tokens.size() > 1) {
      counters_.prefill_tokens += static_cast<int64_t>(inputs[s].tokens.size());
    } else {
      counters_.decode_tokens += 1;
    }
  }
  ++counters_.steps;
  return absl::OkStatus();
}

}  // namespace arbor::engine
