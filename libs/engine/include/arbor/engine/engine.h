// The CPU forward pass of a Mixtral-architecture model over the KV tree, one batched step at a
// time: a step takes any mix of prefill chunks and decode tokens from many sequences and returns
// next-token logits for the sequences that ask for them. Sequences fork in O(1) and new prompts
// reuse cached prefixes (kvcache::KvTree).
//
// Per layer: RMSNorm -> one GEMM for q, k, v -> RoPE -> K/V written to each sequence's leaf ->
// tree attention (a segment shared by several sequences of the step is read once for all of
// them) -> o_proj GEMM -> RMSNorm -> gate GEMM -> top-k gating -> ExpertBackend (tokens grouped
// by expert). Buffers are sized at Create from EngineOptions, so a step allocates no heap memory
// in steady state. Not thread-safe: one step loop drives an engine.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "arbor/engine/expert_backend.h"
#include "arbor/kernels/attention_chunks.h"
#include "arbor/kvcache/kv_tree.h"
#include "arbor/model/weights.h"

namespace arbor::engine {

using kvcache::SeqId;

struct EngineOptions {
  int max_batch_tokens = 512;   // tokens in one step, over all sequences
  int max_seqs = 64;            // sequences in one step
  int max_seq_tokens = 4096;    // one sequence's length; capped by max_position_embeddings
                                // and by sliding_window when the config sets one
  int kv_cache_tokens = 32768;  // KV pool size in tokens, over all sequences
  int kv_block_tokens = 16;
  int max_fork = 64;         // children per Fork
  bool prefix_cache = true;  // AddSequence(prompt) reuses cached prompt prefixes
  int num_threads = 0;       // OpenBLAS threads; 0 keeps OpenBLAS's default
  // Logits rows one step may return, over all inputs: an input wants one (its last token) or,
  // with all_logits, one per token. 0 means max_seqs; otherwise at least max_seqs. Each row
  // costs vocab floats of host (and device) memory, sized at Create.
  int max_logit_rows = 0;
  // Where attention, norms, RoPE, gating and the LM head run: "cpu" (OpenBLAS, f32 KV),
  // "cuda" (GPU 0, a bf16 mirror of the KV blocks; builds with CUDA only) or "auto" (see
  // ResolveEngineBackend). The experts run on the ExpertBackend either way.
  std::string backend = "cpu";
};

// "auto" stands for "cuda" when this build has CUDA, a device is visible and the model's
// attention fits the GPU kernel (head_dim a multiple of 16 up to 256, at most 64 query heads per
// kv head), else "cpu"; any other name is returned as it is.
std::string ResolveEngineBackend(const std::string& backend, const model::ModelConfig& config);

class StepBackend;

struct StepInput {
  SeqId seq = 0;
  std::span<const int> tokens;  // appended at the sequence's current end; at least one
  bool want_logits = true;      // false for a prefill chunk that is not the last
  // Logits after every token of the input, not only the last (scoring a prompt): row j predicts
  // the token after tokens[j]. Counts tokens.size() rows against max_logit_rows.
  bool all_logits = false;
};

struct StepCounters {
  int64_t steps = 0;
  int64_t prefill_tokens = 0;        // tokens fed in inputs of more than one token
  int64_t decode_tokens = 0;         // tokens fed in single-token inputs
  int64_t attention_chunks = 0;      // chunks attention read, over all steps
  int64_t attention_chunk_refs = 0;  // (sequence, path segment) pairs they served
  double step_seconds = 0;           // wall time in Step, over all successful steps
  double forward_seconds = 0;        // of which in the backend's forward pass (the rest is the
                                     // engine's bookkeeping: checks, KV tree, chunks, commit)
};

class Engine {
 public:
  // `weights` must hold the non-expert weights; `experts` runs the MoE FFN. Both must outlive
  // the engine. INVALID_ARGUMENT names the bad option.
  // FAILED_PRECONDITION for backend cuda without CUDA in the build or a device; INVALID_ARGUMENT
  // for cuda with a model whose attention the GPU kernel cannot tile.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const model::ModelWeights* weights,
                                                        ExpertBackend* experts,
                                                        const EngineOptions& options);
  ~Engine();

  // A new empty sequence.
  SeqId AddSequence();
  // A new sequence that already holds the longest cached prefix of `prompt` (whole KV blocks,
  // never the last token); the caller feeds prompt[reused_tokens:]. OUT_OF_RANGE past
  // max_seq_tokens.
  // Prefixes are reused only between sequences of the same `prefix_salt` (kvcache::PrefixSalt).
  absl::StatusOr<kvcache::KvTree::Created> AddSequence(absl::Span<const int> prompt,
                                                       uint64_t prefix_salt = 0);
  // n new sequences sharing all of `seq`'s KV, in O(n) whatever its length; `seq` stays valid.
  // Errors as KvTree::Fork.
  absl::Status Fork(SeqId seq, int n, SeqId* out) { return kv_->Fork(seq, n, out); }
  // Drops a sequence; KV that no other sequence shares is freed or kept as a cached prefix.
  // NOT_FOUND if unknown.
  absl::Status Release(SeqId seq) { return kv_->Release(seq); }
  // Appends tokens whose KV was computed elsewhere (a kv-store's segments): `kv` is
  // [n, layers, 2, kv_heads, head_dim] f32. All or nothing; errors as KvTree::Append.
  absl::Status Append(SeqId seq, absl::Span<const int> tokens, const void* kv);
  // Tokens in the sequence's KV, -1 if unknown.
  int Length(SeqId seq) const { return kv_->Length(seq); }

  // Runs one forward step. On success logits(i) is valid for every input i with want_logits,
  // until the next Step. Errors change no sequence: INVALID_ARGUMENT (empty input, token id out
  // of vocabulary, a sequence twice, more than max_seqs inputs, max_batch_tokens tokens or
  // max_logit_rows logits rows),
  // NOT_FOUND (unknown sequence), OUT_OF_RANGE (past max_seq_tokens), RESOURCE_EXHAUSTED (KV
  // pool full even after evicting cached prefixes).
  absl::Status Step(std::span<const StepInput> inputs);

  // [vocab] logits after input i of the last Step; nullptr if it did not want logits.
  const float* logits(int i) const;
  // [vocab] logits after token j of input i of the last Step (an all_logits input; j in
  // [0, tokens)); nullptr otherwise.
  const float* token_logits(int i, int j) const;

  const model::ModelConfig& config() const { return config_; }
  const EngineOptions& options() const { return options_; }
  const StepCounters& counters() const { return counters_; }
  const kvcache::KvTree& kv_tree() const { return *kv_; }

 private:
  Engine(const model::ModelWeights* weights, const EngineOptions& options,
         std::unique_ptr<kvcache::KvTree> kv);
  // Checks the inputs; fills step_seqs_, step_new_, step_start_ and step_tokens_.
  absl::Status Validate(std::span<const StepInput> inputs);
  // Groups the paths of the step's sequences (paths_) into attention chunks.
  void BuildChunks(int n_seqs);
  // Commits the step's tokens and counts them.
  absl::Status Finish(std::span<const StepInput> inputs);

  model::ModelConfig config_;
  const float* embed_;  // [vocab, hidden]
  EngineOptions options_;
  std::unique_ptr<kvcache::KvTree> kv_;
  StepCounters counters_;

  // Per-step buffers, sized at Create. N = max_batch_tokens, S = max_seqs.
  std::vector<float> x_;                            // [N, hidden] embeddings, then the backend's
  std::vector<int> positions_;                      // [N]
  std::vector<kvcache::KvTree::Slot> slots_;        // [N] where each new token's KV goes
  std::vector<int> query_start_;                    // [S + 1] token rows of each input
  std::vector<SeqId> step_seqs_;                    // [S]
  std::vector<int> step_new_;                       // [S] tokens each input adds
  std::vector<int> step_start_;                     // [S] each input's length before the step
  std::vector<absl::Span<const int>> step_tokens_;  // [S] each input's tokens
  std::vector<float> logits_;                       // [R, vocab], R = max_logit_rows
  std::vector<int> logits_row_;                     // [S] row in logits_ of input i, or -1
  std::vector<int> first_row_;                      // [S] all_logits: row of token 0, or -1
  std::vector<int> last_rows_;                      // [R] token row of each logits_ row
  int n_inputs_ = 0;

  // Attention chunks: one per distinct (segment, length) on the step's paths, sorted by segment.
  struct PathRef {
    kvcache::SegmentId segment;
    int length, start, input;
    const int* blocks;
  };
  std::vector<kvcache::PathEntry> paths_;  // every input's path, input after input
  std::vector<int> path_start_;            // [S + 1] input s's entries in paths_
  std::vector<PathRef> refs_;
  kernels::AttentionChunks chunks_;

  std::unique_ptr<StepBackend> backend_;  // runs the forward pass: CPU or CUDA
};

}  // namespace arbor::engine
