// The KV of consecutive tokens on the wire (v1::Tensor in Commit and SegmentChunk): rows of
// [tokens, layers, 2 (K, V), kv_heads, head_dim] (kvcache::KvLayout::TokensShape), DTYPE_F32,
// little-endian floats in `data`. This file is the one place that knows it: the router, the
// kv-store and the benches encode and check KV only through it, so changing the wire dtype is a
// change here. Pure functions; thread-safe.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "arbor/kvcache/block_pool.h"
#include "arbor/v1/common.pb.h"

namespace arbor::mesh {

// Sets `out` to hold `tokens` tokens of KV and returns where their rows go
// ([tokens, layout.token_floats()] floats) for the caller to fill.
float* PrepareKv(const kvcache::KvLayout& layout, int tokens, v1::Tensor* out);

// The number of tokens `t` holds: INVALID_ARGUMENT naming `field` when its dtype, shape or byte
// count is not KV of this layout, or (when `tokens` >= 0) not exactly `tokens` tokens, e.g.
// "kv.shape [3, 2, 2, 2, 4] is not [4, 2, 2, 2, 4]".
absl::StatusOr<int> CheckKv(const v1::Tensor& t, const kvcache::KvLayout& layout, int tokens,
                            const std::string& field);

// INVALID_ARGUMENT naming `field` and the first value that is NaN or infinite in a tensor
// CheckKv accepted: KV a model computes is finite, and stored KV is served to later readers.
absl::Status CheckKvFinite(const v1::Tensor& t, const std::string& field);

// The f32 rows ([tokens, layout.token_floats()]) of a tensor CheckKv accepted, as bytes in any
// alignment (for memcpy, as KvTree::Append reads them); valid while `t` is. No copy.
const void* KvRowBytes(const v1::Tensor& t);
// Copies the rows of a tensor CheckKv accepted into `out` ([tokens, layout.token_floats()]).
void CopyKvRows(const v1::Tensor& t, float* out);

}  // namespace arbor::mesh
