// The seam between Engine (sequences, the KV tree, batching: what one step computes) and the
// backends that run its forward pass (how): CpuStep (OpenBLAS, f32 KV in the host blocks) and
// CudaStep (GPU, a bf16 mirror of the blocks). Private to the engine library; which backend runs
// is decided once, by CreateStepBackend, the only place that knows whether CUDA is built.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "arbor/engine/engine.h"
#include "arbor/kernels/attention_chunks.h"

namespace arbor::engine {

// One step, as Engine::Step plans it for either backend.
struct StepPlan {
  int n_tokens = 0;
  float* x = nullptr;  // [n_tokens, hidden] the new tokens' embeddings; the backend's to reuse
  const int* positions = nullptr;                    // [n_tokens] absolute position of each token
  const kvcache::KvTree::Slot* slots = nullptr;      // [n_tokens] reserved slot of each token's KV
  const kernels::AttentionChunks* chunks = nullptr;  // block ids are the KV tree's
  const int* last_rows = nullptr;                    // [n_last] token rows whose logits are wanted
  int n_last = 0;
};

// Chunk blocks one step's bookkeeping is sized for at Create, so steady-state steps allocate
// nothing: every sequence's longest path plus kChunkDepth partly used blocks. Deeper trees grow
// the buffers once.
inline constexpr size_t kChunkDepth = 64;
inline size_t ReservedChunkBlocks(const EngineOptions& options, const kvcache::KvLayout& layout) {
  return options.max_seqs * (layout.BlocksFor(options.max_seq_tokens) + kChunkDepth);
}

class StepBackend {
 public:
  virtual ~StepBackend() = default;
  // Runs the forward pass of `plan`: writes every new token's KV (all layers) into its slot of
  // the KV tree's host blocks, which stay the source of truth, and the logits of plan.last_rows
  // into `logits` [n_last, vocab].
  virtual absl::Status Run(const StepPlan& plan, float* logits) = 0;
  // Whether the backend keeps its own copy of the KV blocks that BlocksWritten must refresh.
  virtual bool mirrors_blocks() const { return false; }
  // Host blocks written outside a step (Engine::Append).
  virtual absl::Status BlocksWritten(const std::vector<int>& blocks) { return absl::OkStatus(); }
};

// The backend options.backend names, "cpu" or "cuda" (resolved: not "auto"). The experts run on
// `experts`; KV lives in `kv`. FAILED_PRECONDITION for cuda without CUDA in the build or a
// visible device; INVALID_ARGUMENT for cuda with attention the GPU kernel cannot tile, or an
// unknown name.
absl::StatusOr<std::unique_ptr<StepBackend>> CreateStepBackend(const model::ModelWeights* weights,
                                                               ExpertBackend* experts,
                                                               kvcache::KvTree* kv,
                                                               const EngineOptions& options);

}  // namespace arbor::engine
