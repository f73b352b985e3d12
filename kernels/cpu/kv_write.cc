#include "arbor/kernels/kv_write.h"

#include "absl/strings/str_cat.h"
#include "arbor/common/dtype.h"

namespace arbor::kernels {

absl::Status KvWriteParams::Validate() const {
  if (qkv == nullptr || block == nullptr || slot == nullptr || blocks == nullptr) {
    return absl::InvalidArgumentError("kv_write: qkv, block, slot and blocks must be set");
  }
  if (n_tokens < 0 || n_kv_heads <= 0 || head_dim <= 0 ||
      head_stride < static_cast<size_t>(head_dim) || k_col + n_kv_heads * head_dim > row_stride ||
      v_col + n_kv_heads * head_dim > row_stride) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv_write: bad shape n_tokens=", n_tokens, " n_kv_heads=", n_kv_heads,
                     " head_dim=", head_dim, " row_stride=", row_stride));
  }
  return absl::OkStatus();
}

void KvWriteCpu(const KvWriteParams& p) {
  for (int t = 0; t < p.n_tokens; ++t) {
    const float* row = p.qkv + static_cast<size_t>(t) * p.row_stride;
    bf16_t* base = p.blocks + static_cast<size_t>(p.block[t]) * p.block_elems +
                   static_cast<size_t>(p.slot[t]) * p.head_dim;
    for (int g = 0; g < p.n_kv_heads; ++g) {
      for (int d = 0; d < p.head_dim; ++d) {
        base[p.k_offset + g * p.head_stride + d] = F32ToBF16(row[p.k_col + g * p.head_dim + d]);
        base[p.v_offset + g * p.head_stride + d] = F32ToBF16(row[p.v_col + g * p.head_dim + d]);
      }
    }
  }
}

absl::Status KvReadParams::Validate() const {
  if (blocks == nullptr || block == nullptr || slot == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("kv_read: blocks, block, slot and out must be set");
  }
  if (n_tokens < 0 || n_layers <= 0 || n_kv_heads <= 0 || head_dim <= 0 ||
      head_stride < static_cast<size_t>(head_dim) ||
      block_elems < 2 * static_cast<size_t>(n_layers) * n_kv_heads * head_stride) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv_read: bad shape n_tokens=", n_tokens, " n_layers=", n_layers,
                     " n_kv_heads=", n_kv_heads, " head_dim=", head_dim));
  }
  return absl::OkStatus();
}

void KvReadCpu(const KvReadParams& p) {
  const size_t rows = 2 * static_cast<size_t>(p.n_layers) * p.n_kv_heads;  // (layer, K/V, head)
  for (int t = 0; t < p.n_tokens; ++t) {
    const bf16_t* base = p.blocks + static_cast<size_t>(p.block[t]) * p.block_elems +
                         static_cast<size_t>(p.slot[t]) * p.head_dim;
    float* out = p.out + static_cast<size_t>(t) * rows * p.head_dim;
    for (size_t r = 0; r < rows; ++r) {
      for (int d = 0; d < p.head_dim; ++d) {
        out[r * p.head_dim + d] = BF16ToF32(base[r * p.head_stride + d]);
      }
    }
  }
}

}  // namespace arbor::kernels
