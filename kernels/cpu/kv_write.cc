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

}  // namespace arbor::kernels
