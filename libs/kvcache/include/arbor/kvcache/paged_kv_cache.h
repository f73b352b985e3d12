// Per-sequence block tables over a BlockPool: each sequence owns the blocks that hold its
// tokens' KV, in position order. Not thread-safe (owned by one engine's step loop).
//
// This is the flat cache the CPU engine starts with; the KV tree (O(1) fork, shared frozen
// segments, prefix index) replaces the per-sequence tables behind the same engine calls.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "arbor/kvcache/block_pool.h"

namespace arbor::kvcache {

using SeqId = uint64_t;

class PagedKvCache {
 public:
  // `max_seq_tokens` bounds one sequence's length (its block table is reserved up front, so
  // growing a sequence never allocates heap memory).
  static absl::StatusOr<std::unique_ptr<PagedKvCache>> Create(const KvLayout& layout,
                                                              int capacity_blocks,
                                                              int max_seq_tokens);

  // A new empty sequence.
  SeqId CreateSequence();

  // Makes room for `tokens` tokens in total on each of `seqs` (allocating blocks), all or
  // nothing: RESOURCE_EXHAUSTED if the pool lacks blocks for all of them, OUT_OF_RANGE past
  // max_seq_tokens, NOT_FOUND for an unknown sequence; nothing changes on error.
  absl::Status Reserve(const SeqId* seqs, const int* tokens, int n);

  // Sets the number of valid tokens (<= reserved room). NOT_FOUND / OUT_OF_RANGE.
  absl::Status SetLength(SeqId seq, int tokens);

  // Frees the sequence's blocks. NOT_FOUND if unknown (or already released).
  absl::Status Release(SeqId seq);

  // nullptr if unknown.
  const std::vector<int>* blocks(SeqId seq) const;
  // -1 if unknown.
  int length(SeqId seq) const;

  float* block_data(int block) { return pool_->data(block); }
  const KvLayout& layout() const { return pool_->layout(); }
  const BlockPool& pool() const { return *pool_; }
  int num_sequences() const { return static_cast<int>(seqs_.size()); }
  int max_seq_tokens() const { return max_seq_tokens_; }

 private:
  struct Sequence {
    std::vector<int> blocks;  // block ids in position order
    int length = 0;
  };
  PagedKvCache(std::unique_ptr<BlockPool> pool, int max_seq_tokens)
      : pool_(std::move(pool)), max_seq_tokens_(max_seq_tokens) {}

  std::unique_ptr<BlockPool> pool_;
  int max_seq_tokens_;
  SeqId next_id_ = 1;
  absl::flat_hash_map<SeqId, Sequence> seqs_;
};

}  // namespace arbor::kvcache
