// The layout of one paged KV block: the one place it is written down. The KV tree allocates
// blocks of this shape, the CPU engine and the CUDA step write and read them, and the attention
// and KV-write kernels take the strides it gives (their params name `head_stride` and the
// offsets below; their headers do not restate the layout).
//
// A block holds `block_tokens` consecutive tokens of one sequence for every layer. Its elements
// are laid out [layer][kv: 0 = K, 1 = V][kv_head][token slot][head_dim], so K (or V) of one
// (layer, kv head) is a dense [block_tokens, head_dim] matrix: a "head block". One token's KV,
// copied in or out of a block (and over the wire), is a "token row" laid out
// [layers, 2, kv_heads, head_dim]; its head rows are visited in that order by ForEachHeadRow.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace arbor::kernels {

struct KvLayout {
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int block_tokens = 16;

  // Elements between the head blocks of consecutive kv heads.
  size_t head_stride() const { return static_cast<size_t>(block_tokens) * head_dim; }
  // Elements of one token row: [layers, 2, kv_heads, head_dim].
  size_t token_floats() const {
    return static_cast<size_t>(num_layers) * 2 * num_kv_heads * head_dim;
  }
  // The shape of n tokens' rows: [n, layers, 2, kv_heads, head_dim].
  std::vector<int64_t> TokensShape(int64_t n) const {
    return {n, num_layers, 2, num_kv_heads, head_dim};
  }
  size_t floats_per_block() const {
    return static_cast<size_t>(num_layers) * 2 * num_kv_heads * head_stride();
  }
  // Offset inside a block of the head block of K (kv = 0) or V (kv = 1) of (layer, kv_head).
  size_t offset(int layer, int kv, int kv_head = 0) const {
    return ((static_cast<size_t>(layer) * 2 + kv) * num_kv_heads + kv_head) * head_stride();
  }
  // Offset inside a block of the head_dim elements of (layer, kv, kv_head) at token `slot`.
  size_t head_row(int layer, int kv, int kv_head, int slot) const {
    return offset(layer, kv, kv_head) + static_cast<size_t>(slot) * head_dim;
  }
  // Calls fn(offset) with head_row(...) of token `slot` for every (layer, kv, kv head), in
  // token-row order: the i-th call's head_dim elements are the token row's i-th head_dim.
  template <typename Fn>
  void ForEachHeadRow(int slot, Fn&& fn) const {
    for (int layer = 0; layer < num_layers; ++layer) {
      for (int kv = 0; kv < 2; ++kv) {
        for (int g = 0; g < num_kv_heads; ++g) fn(head_row(layer, kv, g, slot));
      }
    }
  }
  int BlocksFor(int tokens) const { return (tokens + block_tokens - 1) / block_tokens; }
};

}  // namespace arbor::kernels
