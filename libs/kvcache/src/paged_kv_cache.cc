#include "arbor/kvcache/paged_kv_cache.h"

#include "absl/strings/str_cat.h"
#include "arbor/common/status_macros.h"

namespace arbor::kvcache {

absl::StatusOr<std::unique_ptr<PagedKvCache>> PagedKvCache::Create(const KvLayout& layout,
                                                                   int capacity_blocks,
                                                                   int max_seq_tokens) {
  if (max_seq_tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_seq_tokens ", max_seq_tokens, " must be > 0"));
  }
  ARBOR_ASSIGN_OR_RETURN(auto pool, BlockPool::Create(layout, capacity_blocks));
  return std::unique_ptr<PagedKvCache>(new PagedKvCache(std::move(pool), max_seq_tokens));
}

SeqId PagedKvCache::CreateSequence() {
  const SeqId id = next_id_++;
  Sequence& s = seqs_[id];
  s.blocks.reserve(layout().BlocksFor(max_seq_tokens_));
  return id;
}

absl::Status PagedKvCache::Reserve(const SeqId* seqs, const int* tokens, int n) {
  int needed = 0;
  for (int i = 0; i < n; ++i) {
    auto it = seqs_.find(seqs[i]);
    if (it == seqs_.end())
      return absl::NotFoundError(absl::StrCat("sequence ", seqs[i], " unknown"));
    if (tokens[i] > max_seq_tokens_) {
      return absl::OutOfRangeError(absl::StrCat("sequence ", seqs[i], " would hold ", tokens[i],
                                                " tokens, more than the limit of ",
                                                max_seq_tokens_));
    }
    needed +=
        std::max(0, layout().BlocksFor(tokens[i]) - static_cast<int>(it->second.blocks.size()));
  }
  if (needed > pool_->free_blocks()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("kv cache needs ", needed, " more blocks, ", pool_->free_blocks(), " free"));
  }
  for (int i = 0; i < n; ++i) {
    Sequence& s = seqs_.find(seqs[i])->second;
    while (static_cast<int>(s.blocks.size()) < layout().BlocksFor(tokens[i])) {
      s.blocks.push_back(*pool_->Allocate());  // cannot fail: counted above
    }
  }
  return absl::OkStatus();
}

absl::Status PagedKvCache::SetLength(SeqId seq, int tokens) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return absl::NotFoundError(absl::StrCat("sequence ", seq, " unknown"));
  const int room = static_cast<int>(it->second.blocks.size()) * layout().block_tokens;
  if (tokens < 0 || tokens > room) {
    return absl::OutOfRangeError(
        absl::StrCat("sequence ", seq, " length ", tokens, " outside reserved [0, ", room, "]"));
  }
  it->second.length = tokens;
  return absl::OkStatus();
}

absl::Status PagedKvCache::Release(SeqId seq) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return absl::NotFoundError(absl::StrCat("sequence ", seq, " unknown"));
  for (int b : it->second.blocks) pool_->Free(b);
  seqs_.erase(it);
  return absl::OkStatus();
}

const std::vector<int>* PagedKvCache::blocks(SeqId seq) const {
  auto it = seqs_.find(seq);
  return it == seqs_.end() ? nullptr : &it->second.blocks;
}

int PagedKvCache::length(SeqId seq) const {
  auto it = seqs_.find(seq);
  return it == seqs_.end() ? -1 : it->second.length;
}

}  // namespace arbor::kvcache
