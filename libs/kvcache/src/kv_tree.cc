#include "arbor/kvcache/kv_tree.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "arbor/common/status_macros.h"

namespace arbor::kvcache {
namespace {

constexpr uint64_t kHashSeed = 0x6a09e667f3bcc909ull;

uint64_t Mix(uint64_t h, uint64_t v) {  // splitmix64 of the combination
  uint64_t z = h ^ (v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2));
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Chained hash of one block of tokens after the path whose hash is `prev`.
uint64_t BlockHash(uint64_t prev, const int* tokens, int n) {
  uint64_t h = prev;
  for (int i = 0; i < n; ++i) h = Mix(h, static_cast<uint32_t>(tokens[i]));
  return Mix(h, static_cast<uint64_t>(n));
}

// The hash a path of `salt` starts from.
uint64_t RootHash(uint64_t salt) { return salt == 0 ? kHashSeed : Mix(kHashSeed, salt); }

absl::Status UnknownSeq(SeqId seq) {
  return absl::NotFoundError(absl::StrCat("sequence ", seq, " unknown or released"));
}

}  // namespace

uint64_t PrefixSalt(std::string_view tenant) {
  if (tenant.empty()) return 0;
  uint64_t h = Mix(kHashSeed, tenant.size());
  for (unsigned char c : tenant) h = Mix(h, c);
  return h == 0 ? 1 : h;
}

struct KvTree::Segment {
  SegmentId id = 0;
  Segment* parent = nullptr;
  int parent_len = 0;  // tokens of the parent on this segment's path
  int start = 0;       // absolute position of the first token
  std::vector<int> blocks;
  std::vector<int> tokens;
  int refcount = 0;  // live sequences whose leaf this is + child segments
  bool frozen = false;
  // Prefix hashing: valid when the segment starts at a block boundary after a hashed path.
  bool hashable = false;
  uint64_t start_hash = 0;
  std::vector<uint64_t> block_hashes;  // chained hash of each full block, in order
  int indexed = 0;                     // index_ entries pointing at this segment
  bool cached = false;                 // refcount 0 and kept in lru_
  std::list<Segment*>::iterator lru_it;

  int length() const { return static_cast<int>(tokens.size()); }
};

absl::StatusOr<std::unique_ptr<KvTree>> KvTree::Create(const KvLayout& layout, int capacity_blocks,
                                                       const KvTreeOptions& options) {
  if (options.max_fork < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_fork ", options.max_fork, " must be >= 1"));
  }
  if (options.max_seq_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_seq_tokens ", options.max_seq_tokens, " must be >= 1"));
  }
  ARBOR_ASSIGN_OR_RETURN(auto pool, BlockPool::Create(layout, capacity_blocks));
  return std::unique_ptr<KvTree>(new KvTree(std::move(pool), options));
}

KvTree::KvTree(std::unique_ptr<BlockPool> pool, const KvTreeOptions& options)
    : options_(options),
      layout_(pool->layout()),
      base_(pool->data(0)),
      floats_per_block_(pool->layout().floats_per_block()),
      pool_(std::move(pool)) {
  // Every indexed block is a distinct pool block, so the index never outgrows this.
  if (options_.prefix_index) index_.reserve(pool_->capacity());
}

KvTree::~KvTree() = default;

KvTree::Segment* KvTree::NewSegment(Segment* parent, int parent_len) {
  Segment* s;
  if (!free_segments_.empty()) {
    s = free_segments_.back();
    free_segments_.pop_back();
  } else {
    all_segments_.push_back(std::make_unique<Segment>());
    s = all_segments_.back().get();
  }
  s->id = NewId(&next_segment_, by_id_);
  s->parent = parent;
  s->parent_len = parent_len;
  s->start = parent == nullptr ? 0 : parent->start + parent_len;
  s->refcount = 0;
  s->frozen = false;
  s->indexed = 0;
  s->cached = false;
  const int bt = layout_.block_tokens;
  if (parent == nullptr) {
    s->hashable = true;
    s->start_hash = kHashSeed;
  } else if (parent->hashable && parent_len % bt == 0) {
    s->hashable = true;
    s->start_hash =
        parent_len == 0 ? parent->start_hash : parent->block_hashes[parent_len / bt - 1];
  } else {
    s->hashable = false;
  }
  ++num_segments_;
  by_id_.emplace(s->id, s);
  return s;
}

void KvTree::IndexNewFullBlocks(Segment* s) {
  if (!s->hashable) return;
  const int bt = layout_.block_tokens;
  while (static_cast<int>(s->block_hashes.size()) < s->length() / bt) {
    const int b = static_cast<int>(s->block_hashes.size());
    const uint64_t prev = b == 0 ? s->start_hash : s->block_hashes[b - 1];
    const uint64_t h = BlockHash(prev, s->tokens.data() + b * bt, bt);
    s->block_hashes.push_back(h);
    if (options_.prefix_index && index_.try_emplace(h, s, b).second) ++s->indexed;
  }
}

void KvTree::Unref(Segment* s) {
  while (s != nullptr && --s->refcount == 0) {
    if (s->indexed > 0) {  // keep it for the prefix index until the pool needs its blocks
      s->cached = true;
      s->frozen = true;
      s->lru_it = lru_.insert(lru_.end(), s);
      lru_blocks_ += static_cast<int>(s->blocks.size());
      return;
    }
    Segment* parent = s->parent;
    FreeSegment(s);
    s = parent;
  }
}

void KvTree::FreeSegment(Segment* s) {
  if (s->indexed > 0) {
    for (size_t b = 0; b < s->block_hashes.size(); ++b) {
      auto it = index_.find(s->block_hashes[b]);
      if (it != index_.end() && it->second.first == s) index_.erase(it);
    }
  }
  for (int b : s->blocks) pool_->Free(b);
  s->blocks.clear();
  s->tokens.clear();
  s->block_hashes.clear();
  s->parent = nullptr;
  by_id_.erase(s->id);
  --num_segments_;
  free_segments_.push_back(s);
}

bool KvTree::EvictFor(int blocks) {
  while (pool_->free_blocks() < blocks && !lru_.empty()) {
    Segment* s = lru_.front();
    lru_.pop_front();
    lru_blocks_ -= static_cast<int>(s->blocks.size());
    s->cached = false;
    Segment* parent = s->parent;
    FreeSegment(s);
    ++counters_.evicted_segments;
    Unref(parent);  // may cache the parent, adding to lru_
  }
  return pool_->free_blocks() >= blocks;
}

KvTree::Segment* KvTree::Leaf(SeqId seq) const {
  auto it = live_.find(seq);
  return it == live_.end() ? nullptr : it->second;
}

absl::StatusOr<KvTree::Created> KvTree::CreateSequence(absl::Span<const int> prompt,
                                                       uint64_t prefix_salt) {
  if (static_cast<int>(prompt.size()) > options_.max_seq_tokens) {
    return absl::OutOfRangeError(absl::StrCat(
        "prompt of ", prompt.size(), " tokens exceeds max_seq_tokens ", options_.max_seq_tokens));
  }
  absl::MutexLock lock(&mu_);
  Segment* match = nullptr;
  int match_len = 0, reused = 0;
  if (options_.prefix_index) {
    const int bt = layout_.block_tokens;
    uint64_t h = RootHash(prefix_salt);
    // Whole blocks only, and never the last token: its logits must be computed.
    for (int b = 0; (b + 1) * bt <= static_cast<int>(prompt.size()) - 1; ++b) {
      h = BlockHash(h, prompt.data() + b * bt, bt);
      auto it = index_.find(h);
      if (it == index_.end()) break;
      auto [seg, blk] = it->second;
      if (!std::equal(prompt.begin() + b * bt, prompt.begin() + (b + 1) * bt,
                      seg->tokens.begin() + blk * bt)) {
        break;  // a hash collision: stop reusing here
      }
      match = seg;
      match_len = (blk + 1) * bt;
      reused = (b + 1) * bt;
    }
  }
  Segment* leaf = NewSegment(match, match_len);
  if (match == nullptr) leaf->start_hash = RootHash(prefix_salt);  // a new root path
  leaf->refcount = 1;
  if (match != nullptr) {
    if (match->cached) {  // revive it
      lru_.erase(match->lru_it);
      lru_blocks_ -= static_cast<int>(match->blocks.size());
      match->cached = false;
    }
    ++match->refcount;
    ++counters_.prefix_hits;
    counters_.reused_tokens += reused;
  }
  const SeqId id = NewId(&next_seq_, live_);
  live_.emplace(id, leaf);
  return Created{id, reused};
}

absl::Status KvTree::Fork(SeqId seq, int n, SeqId* out) {
  absl::MutexLock lock(&mu_);
  Segment* leaf = Leaf(seq);
  if (leaf == nullptr) return UnknownSeq(seq);
  if (n < 1 || n > options_.max_fork) {
    return absl::InvalidArgumentError(
        absl::StrCat("fork n ", n, " out of range [1, ", options_.max_fork, "]"));
  }
  Segment* base;
  int base_len;
  if (leaf->length() == 0) {  // nothing to freeze: the children hang beside the leaf
    base = leaf->parent;
    base_len = leaf->parent_len;
  } else {  // freeze the leaf; `seq` moves on to a new empty leaf under it
    leaf->frozen = true;
    base = leaf;
    base_len = leaf->length();
    Segment* own = NewSegment(leaf, base_len);
    own->refcount = 1;
    live_[seq] = own;  // the leaf's one reference passes from `seq` to `own`
  }
  for (int i = 0; i < n; ++i) {
    Segment* child = NewSegment(base, base_len);
    child->refcount = 1;
    out[i] = NewId(&next_seq_, live_);
    live_.emplace(out[i], child);
  }
  if (base != nullptr) base->refcount += n;  // the one refcount change
  ++counters_.forks;
  return absl::OkStatus();
}

absl::Status KvTree::Release(SeqId seq) {
  absl::MutexLock lock(&mu_);
  auto it = live_.find(seq);
  if (it == live_.end()) return UnknownSeq(seq);
  Segment* leaf = it->second;
  live_.erase(it);
  Unref(leaf);
  return absl::OkStatus();
}

absl::Status KvTree::Reserve(absl::Span<const SeqId> seqs, absl::Span<const int> n_new) {
  if (seqs.size() != n_new.size()) {
    return absl::InvalidArgumentError("reserve: seqs and counts differ in length");
  }
  absl::MutexLock lock(&mu_);
  int needed = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    Segment* leaf = Leaf(seqs[i]);
    if (leaf == nullptr) return UnknownSeq(seqs[i]);
    for (size_t j = 0; j < i; ++j) {
      if (seqs[j] == seqs[i]) {
        return absl::InvalidArgumentError(
            absl::StrCat("reserve: sequence ", seqs[i], " listed twice"));
      }
    }
    if (n_new[i] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("reserve: count ", n_new[i], " < 0"));
    }
    const int total = leaf->start + leaf->length() + n_new[i];
    if (total > options_.max_seq_tokens) {
      return absl::OutOfRangeError(absl::StrCat("sequence ", seqs[i], " would hold ", total,
                                                " tokens, past max_seq_tokens ",
                                                options_.max_seq_tokens));
    }
    needed += std::max(
        0, layout_.BlocksFor(leaf->length() + n_new[i]) - static_cast<int>(leaf->blocks.size()));
  }
  if (!EvictFor(needed)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("kv pool: ", needed, " more blocks needed, ", pool_->free_blocks(),
                     " free and ", lru_blocks_, " evictable of ", pool_->capacity()));
  }
  for (size_t i = 0; i < seqs.size(); ++i) {
    Segment* leaf = Leaf(seqs[i]);
    const int want = layout_.BlocksFor(leaf->length() + n_new[i]);
    if (want > static_cast<int>(leaf->blocks.capacity())) {  // grow geometrically
      const size_t cap =
          std::max<size_t>({static_cast<size_t>(want), 2 * leaf->blocks.capacity(), 16});
      leaf->blocks.reserve(cap);
      leaf->block_hashes.reserve(cap);
      leaf->tokens.reserve(cap * layout_.block_tokens);
    }
    while (static_cast<int>(leaf->blocks.size()) < want) {
      leaf->blocks.push_back(*pool_->Allocate());  // cannot fail: room was made above
    }
  }
  return absl::OkStatus();
}

absl::Status KvTree::LeafSlots(SeqId seq, int first_pos, int n, Slot* out) const {
  absl::MutexLock lock(&mu_);
  return LeafSlotsLocked(seq, first_pos, n, out);
}

absl::Status KvTree::LeafSlotsLocked(SeqId seq, int first_pos, int n, Slot* out) const {
  const Segment* leaf = Leaf(seq);
  if (leaf == nullptr) return UnknownSeq(seq);
  const int bt = layout_.block_tokens;
  const int first = first_pos - leaf->start;
  if (first < 0 || n < 0 || first + n > static_cast<int>(leaf->blocks.size()) * bt) {
    return absl::OutOfRangeError(absl::StrCat("sequence ", seq, ": positions [", first_pos, ", ",
                                              first_pos + n, ") are not in its leaf's room"));
  }
  for (int i = 0; i < n; ++i) out[i] = {leaf->blocks[(first + i) / bt], (first + i) % bt};
  return absl::OkStatus();
}

absl::Status KvTree::Commit(SeqId seq, absl::Span<const int> tokens) {
  return CommitStep({seq}, {tokens});
}

absl::Status KvTree::Append(SeqId seq, absl::Span<const int> tokens, const void* kv) {
  const int n = static_cast<int>(tokens.size());
  ARBOR_RETURN_IF_ERROR(Reserve({seq}, {n}));
  std::vector<Slot> slots(n);
  ARBOR_RETURN_IF_ERROR(LeafSlots(seq, Length(seq), n, slots.data()));
  const size_t head_bytes = layout_.head_dim * sizeof(float);
  const auto* src = static_cast<const unsigned char*>(kv);
  for (const Slot& slot : slots) {  // reserved slots are the caller's: no lock needed
    ForEachHeadRow(slot.block, slot.slot, [&](float* row) {
      std::memcpy(row, src, head_bytes);
      src += head_bytes;
    });
  }
  {
    absl::MutexLock lock(&mu_);
    counters_.kv_bytes_copied += static_cast<int64_t>(src - static_cast<const unsigned char*>(kv));
  }
  return Commit(seq, tokens);
}

absl::Status KvTree::PathLocked(SeqId seq, std::vector<PathEntry>* out, int pending) const {
  const size_t first = out->size();
  Segment* s = Leaf(seq);
  if (s == nullptr) return UnknownSeq(seq);
  int len = s->length() + pending;
  if (pending < 0 || len > static_cast<int>(s->blocks.size()) * layout_.block_tokens) {
    return absl::FailedPreconditionError(
        absl::StrCat("path: sequence ", seq, " has fewer than ", pending, " reserved slots"));
  }
  while (s != nullptr) {
    if (len > 0) out->push_back({s->id, s->start, len, s->blocks.data(), s->frozen});
    len = s->parent_len;
    s = s->parent;
  }
  std::reverse(out->begin() + first, out->end());
  return absl::OkStatus();
}

absl::Status KvTree::Path(SeqId seq, std::vector<PathEntry>* out, int pending) const {
  out->clear();
  absl::MutexLock lock(&mu_);
  return PathLocked(seq, out, pending);
}

void KvTree::Lengths(absl::Span<const SeqId> seqs, int* out) const {
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < seqs.size(); ++i) {
    const Segment* leaf = Leaf(seqs[i]);
    out[i] = leaf == nullptr ? -1 : leaf->start + leaf->length();
  }
}

absl::Status KvTree::DescribeStep(absl::Span<const SeqId> seqs, absl::Span<const int> starts,
                                  absl::Span<const int> n_new, Slot* slots,
                                  std::vector<PathEntry>* paths, int* path_start) const {
  paths->clear();
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < seqs.size(); ++i) {
    path_start[i] = static_cast<int>(paths->size());
    ARBOR_RETURN_IF_ERROR(LeafSlotsLocked(seqs[i], starts[i], n_new[i], slots));
    slots += n_new[i];
    ARBOR_RETURN_IF_ERROR(PathLocked(seqs[i], paths, n_new[i]));
  }
  path_start[seqs.size()] = static_cast<int>(paths->size());
  return absl::OkStatus();
}

absl::Status KvTree::CommitStep(absl::Span<const SeqId> seqs,
                                absl::Span<const absl::Span<const int>> tokens) {
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < seqs.size(); ++i) {  // every check first: all or nothing
    const Segment* leaf = Leaf(seqs[i]);
    if (leaf == nullptr) return UnknownSeq(seqs[i]);
    const int room = static_cast<int>(leaf->blocks.size()) * layout_.block_tokens - leaf->length();
    if (static_cast<int>(tokens[i].size()) > room) {
      return absl::FailedPreconditionError(absl::StrCat("commit: sequence ", seqs[i], " has ", room,
                                                        " reserved slots for ", tokens[i].size(),
                                                        " tokens"));
    }
  }
  for (size_t i = 0; i < seqs.size(); ++i) {
    Segment* leaf = Leaf(seqs[i]);
    leaf->tokens.insert(leaf->tokens.end(), tokens[i].begin(), tokens[i].end());
    IndexNewFullBlocks(leaf);
  }
  return absl::OkStatus();
}

int KvTree::Length(SeqId seq) const {
  absl::MutexLock lock(&mu_);
  Segment* leaf = Leaf(seq);
  return leaf == nullptr ? -1 : leaf->start + leaf->length();
}

absl::StatusOr<std::vector<int>> KvTree::Tokens(SeqId seq) const {
  absl::MutexLock lock(&mu_);
  const Segment* s = Leaf(seq);
  if (s == nullptr) return UnknownSeq(seq);
  std::vector<int> tokens(s->start + s->length());
  for (int len = s->length(); s != nullptr; len = s->parent_len, s = s->parent) {
    std::copy(s->tokens.begin(), s->tokens.begin() + len, tokens.begin() + s->start);
  }
  return tokens;
}

template <typename Fn>
void KvTree::ForEachHeadRow(int block, int slot, Fn fn) const {
  // Block memory is the caller's to read or, for reserved slots, to write.
  float* base = base_ + static_cast<size_t>(block) * floats_per_block_;
  layout_.ForEachHeadRow(slot, [&](size_t offset) { fn(base + offset); });
}

void KvTree::CopyTokenKv(const Segment& s, int t, float* dst) const {
  const int bt = layout_.block_tokens;
  ForEachHeadRow(s.blocks[t / bt], t % bt,
                 [&](const float* row) { dst = std::copy(row, row + layout_.head_dim, dst); });
}

absl::StatusOr<std::vector<float>> KvTree::ReadKv(SeqId seq) const {
  // Committed tokens never change, so the length read first stays valid for the copy.
  const int length = Length(seq);
  if (length < 0) return UnknownSeq(seq);
  std::vector<float> kv(length * layout_.token_floats());
  ARBOR_RETURN_IF_ERROR(ReadKv(seq, 0, length, kv.data()));
  return kv;
}

absl::Status KvTree::ReadKv(SeqId seq, int first, int count, float* out) const {
  absl::MutexLock lock(&mu_);
  const Segment* s = Leaf(seq);
  if (s == nullptr) return UnknownSeq(seq);
  const int length = s->start + s->length();
  if (first < 0 || count < 0 || first + count > length) {
    return absl::OutOfRangeError(absl::StrCat("sequence ", seq, " holds ", length,
                                              " tokens; asked for [", first, ", ", first + count,
                                              ")"));
  }
  const size_t row = layout_.token_floats();
  const int end = first + count;
  for (int len = s->length(); s != nullptr && s->start + len > first;
       len = s->parent_len, s = s->parent) {
    const int lo = std::max(first, s->start), hi = std::min(end, s->start + len);
    for (int p = lo; p < hi; ++p) CopyTokenKv(*s, p - s->start, out + (p - first) * row);
  }
  return absl::OkStatus();
}

absl::Status KvTree::ReadSegment(SegmentId segment, int first, int count, float* out) const {
  absl::MutexLock lock(&mu_);
  auto it = by_id_.find(segment);
  if (it == by_id_.end()) {
    return absl::NotFoundError(absl::StrCat("segment ", segment, " unknown or freed"));
  }
  const Segment& s = *it->second;
  if (first < 0 || count < 0 || first + count > s.length()) {
    return absl::OutOfRangeError(absl::StrCat("segment ", segment, " holds ", s.length(),
                                              " tokens; asked for [", first, ", ", first + count,
                                              ")"));
  }
  const size_t row = layout_.token_floats();
  for (int t = 0; t < count; ++t) CopyTokenKv(s, first + t, out + t * row);
  return absl::OkStatus();
}

void KvTree::DropCache() {
  absl::MutexLock lock(&mu_);
  EvictFor(pool_->capacity() + 1);  // more than can ever be free: evicts every cached segment
}

KvTreeStats KvTree::stats() const {
  absl::MutexLock lock(&mu_);
  KvTreeStats s = counters_;
  s.blocks_in_use = pool_->used();
  s.blocks_capacity = pool_->capacity();
  s.live_sequences = static_cast<int>(live_.size());
  s.segments = num_segments_;
  s.cached_segments = static_cast<int>(lru_.size());
  s.cached_blocks = lru_blocks_;
  return s;
}

}  // namespace arbor::kvcache
