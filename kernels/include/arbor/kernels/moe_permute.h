// Moving routed tokens to and from expert order, for running each expert as one GEMM.
//
// MoePermute groups the (token, slot) rows of a top-k routing by expert, stably (inside an
// expert, rows keep token order), optionally starting each expert's group at a multiple of
// `row_align` (a GEMM tile) with padding rows between groups. It returns the per-expert counts
// and offsets the grouped GEMM takes, the source token of every grouped row, and the grouped row
// of every (token, slot), which is what MoeUnpermute reads back. GatherRows copies (and converts
// to bf16) the tokens into grouped order; MoeUnpermute adds each token's weighted expert outputs
// back into its row, in slot order, with no atomics, so the result is deterministic.
#pragma once

#include "absl/status/status.h"
#include "arbor/kernels/gpu.h"

namespace arbor::kernels {

struct MoePermuteParams {
  const int* expert_ids = nullptr;  // [n_tokens, top_k], each in [0, n_experts)
  int n_tokens = 0;
  int top_k = 0;
  int n_experts = 0;
  int row_align = 1;  // each group starts at a multiple of this

  int* expert_counts = nullptr;   // [n_experts] out: rows routed to each expert
  int* expert_offsets = nullptr;  // [n_experts + 1] out: group e is rows [offsets[e], + counts[e])
                                  // and offsets[n_experts] is the grouped row count, padding in
  int* row_token = nullptr;       // [MaxRows()] out: source token of each grouped row, -1 = pad
  int* slot_row = nullptr;        // [n_tokens, top_k] out: grouped row of each (token, slot)

  // Grouped rows, padding included, in the worst case: size of row_token.
  int MaxRows() const { return n_tokens * top_k + n_experts * (row_align - 1); }
  absl::Status Validate() const;
};

// Expert ids are checked by Validate on the CPU path; the CUDA path trusts them (the gating
// kernel produced them), and an id out of range drops that row.
void MoePermuteCpu(const MoePermuteParams& p);
absl::Status MoePermuteCuda(const MoePermuteParams& p, cudaStream_t stream);

// out[r] = bf16(x[row_token[r]]), zeros where row_token[r] < 0.
struct GatherRowsParams {
  const float* x = nullptr;  // [n_src, dim]
  int n_src = 0;
  const int* row_token = nullptr;  // [n_rows]
  bf16_t* out = nullptr;           // [n_rows, dim]
  int n_rows = 0;
  int dim = 0;

  absl::Status Validate() const;
};

void GatherRowsCpu(const GatherRowsParams& p);
absl::Status GatherRowsCuda(const GatherRowsParams& p, cudaStream_t stream);

// out[t] += sum_j weight[j] * y[rows[j]] for j in [row_start[t], row_start[t + 1]) in order,
// in f32. row_start == nullptr means every token has `rows_per_token` entries (top-k routing:
// rows = MoePermute's slot_row, weights = the gating weights).
struct MoeUnpermuteParams {
  const bf16_t* y = nullptr;  // [n_rows, dim] expert outputs in grouped order
  int n_rows = 0;
  const int* row_start = nullptr;  // [n_tokens + 1] or nullptr
  int rows_per_token = 0;          // when row_start is nullptr
  const int* rows = nullptr;       // grouped row of each entry
  const float* weights = nullptr;  // weight of each entry
  float* out = nullptr;            // [n_tokens, dim], accumulated into
  int n_tokens = 0;
  int dim = 0;

  absl::Status Validate() const;
};

void MoeUnpermuteCpu(const MoeUnpermuteParams& p);
absl::Status MoeUnpermuteCuda(const MoeUnpermuteParams& p, cudaStream_t stream);

}  // namespace arbor::kernels
