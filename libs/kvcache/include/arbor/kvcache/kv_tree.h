// The KV tree: every sequence's KV cache as a path of segments from a root, in which a fork costs
// O(1) whatever the context length or tree depth, and copies no KV.
//
// A segment is a run of blocks holding consecutive tokens, with a parent and `parent_len`: the
// tokens before it are the parent's first parent_len tokens (and the parent's own path). A live
// sequence owns a mutable leaf segment; every other segment is frozen (immutable forever).
// - Fork(seq, n) freezes the sequence's leaf and hangs n + 1 empty leaves under it (n children,
//   plus a new leaf for `seq` itself so it can keep growing): one refcount change on the frozen
//   segment, no block list copied, no per-block work, no walk up the tree. A frozen segment may
//   end in a partly filled block; children start in fresh blocks, so no copy-on-write is needed.
//   Forking a sequence whose leaf is still empty hangs the children beside it instead.
// - Release drops a sequence. A segment whose refcount (live leaves + child segments) reaches 0
//   frees its blocks, unless it holds full blocks in the prefix index: then it stays as an
//   evictable cache entry (LRU) until the pool needs its blocks.
// - The prefix index keys every full, block-aligned block by a chained hash of all token ids up to
//   its end; CreateSequence reuses the longest indexed prefix of a prompt (whole blocks, leaving at
//   least one token to compute) by pointing the new leaf into the middle of the matching segment.
//
// Memory: B branches of a P-token prefix cost P + sum(suffixes) tokens of KV plus at most one
// partial block per fork point.
//
// A leaf's block table and token list grow geometrically (reserved 16 blocks at a time, then
// doubling), so appending to a sequence allocates heap memory only at those thresholds.
//
// Thread-safe: every method takes one mutex. KV data lives in the BlockPool; the owner of a live
// sequence may write the slots it reserved (LeafSlots) without the lock, since no one else reads a
// leaf's unreserved tail or writes anything frozen.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "arbor/common/random_id.h"
#include "arbor/kvcache/block_pool.h"

namespace arbor::kvcache {

using SeqId = uint64_t;
using SegmentId = uint64_t;

struct KvTreeOptions {
  int max_fork = 64;             // n in Fork(seq, n) is in [1, max_fork]
  int max_seq_tokens = 1 << 20;  // one sequence's length, path included
  bool prefix_index = true;      // index full prompt blocks and reuse them
  // Sequence and segment ids drawn at random (never 0, never one in use) instead of counted
  // from 1, so a client cannot guess another's (the kv-store service); counted ids are
  // easier to read in a single process's logs.
  bool random_ids = false;
  // With random_ids, the tree's incarnation (a kv-store process picks one at random at start):
  // the top 16 bits of every id it hands out, so an id from an earlier process never names one
  // of this one's sequences or segments. 0: ids are random in all 64 bits.
  uint16_t epoch = 0;
  // With an epoch, the kv-store shard the tree is (0-255): bits 40-47 of every id, so a client of
  // several shards sends each call to the shard that holds its sequence.
  uint8_t shard = 0;
};

// The incarnation an id of a tree with KvTreeOptions::epoch came from, and its shard.
inline uint16_t EpochOfId(uint64_t id) { return static_cast<uint16_t>(id >> 48); }
inline uint8_t ShardOfId(uint64_t id) { return static_cast<uint8_t>(id >> 40); }

// The prefix-hash salt of a tenant (0, no salt, for ""): prompts reuse KV only within the same
// salt, so one tenant can neither reuse nor probe (by timing) another's prompt KV.
uint64_t PrefixSalt(std::string_view tenant);

// One segment of a sequence's path: tokens [start, start + length) of the sequence live in
// `blocks` (block i holds tokens start + i * block_tokens ...; the last may be partly used).
struct PathEntry {
  SegmentId segment = 0;
  int start = 0;                // absolute position of the segment's first token
  int length = 0;               // tokens of this segment on the path
  const int* blocks = nullptr;  // valid until the tree next changes
  bool frozen = false;          // frozen segments never change (cacheable by id)
};

struct KvTreeStats {
  int blocks_in_use = 0;
  int blocks_capacity = 0;
  int live_sequences = 0;
  int segments = 0;         // live or cached
  int cached_segments = 0;  // refcount 0, kept for the prefix index (evictable)
  int cached_blocks = 0;    // blocks held by cached segments
  int64_t forks = 0;
  int64_t kv_bytes_copied = 0;  // KV bytes written into blocks by Append; forks add nothing
  int64_t prefix_hits = 0;
  int64_t reused_tokens = 0;
  int64_t evicted_segments = 0;
};

class KvTree {
 public:
  // INVALID_ARGUMENT for a bad layout, capacity or option.
  static absl::StatusOr<std::unique_ptr<KvTree>> Create(const KvLayout& layout, int capacity_blocks,
                                                        const KvTreeOptions& options);
  ~KvTree();

  struct Created {
    SeqId seq = 0;
    int reused_tokens = 0;  // prompt tokens whose KV the new sequence already has
  };
  // A new sequence holding the longest indexed prefix of `prompt` (empty when nothing matches or
  // `prompt` is empty). The caller computes and commits prompt[reused_tokens:]. OUT_OF_RANGE if
  // the prompt exceeds max_seq_tokens. Only prefixes indexed under the same `prefix_salt`
  // (PrefixSalt) are reused, and the new sequence's blocks are indexed under it.
  absl::StatusOr<Created> CreateSequence(absl::Span<const int> prompt, uint64_t prefix_salt = 0);

  // Writes n new sequence ids into `out`, each sharing all of `seq`'s KV; `seq` stays valid.
  // NOT_FOUND for an unknown sequence, INVALID_ARGUMENT for n outside [1, max_fork]; nothing
  // changes on error.
  absl::Status Fork(SeqId seq, int n, SeqId* out);

  // Drops `seq`. NOT_FOUND if unknown or already released.
  absl::Status Release(SeqId seq);

  // Makes room for n_new[i] more tokens on seqs[i], all or nothing, evicting cached prefixes
  // (least recently used first) if the pool is short. RESOURCE_EXHAUSTED when nothing more is
  // evictable, OUT_OF_RANGE past max_seq_tokens, NOT_FOUND for an unknown sequence,
  // INVALID_ARGUMENT for a sequence listed twice or a negative count. On error no sequence
  // changes (cached prefixes evicted on the way stay evicted).
  absl::Status Reserve(absl::Span<const SeqId> seqs, absl::Span<const int> n_new);

  // Block id and slot of each of the sequence's tokens at absolute positions
  // [first_pos, first_pos + n), which must lie in its leaf's committed or reserved room:
  // out[i] for position first_pos + i. NOT_FOUND if unknown, OUT_OF_RANGE otherwise.
  struct Slot {
    int block = -1;
    int slot = 0;
  };
  absl::Status LeafSlots(SeqId seq, int first_pos, int n, Slot* out) const;

  // Appends `tokens` whose KV the caller has written into the reserved slots. FAILED_PRECONDITION
  // if fewer slots are reserved; NOT_FOUND if unknown.
  absl::Status Commit(SeqId seq, absl::Span<const int> tokens);

  // Reserve + copy `kv` ([n, layers, 2, kv_heads, head_dim] f32, any alignment) + Commit.
  absl::Status Append(SeqId seq, absl::Span<const int> tokens, const void* kv);

  // Segments root to leaf into `out` (cleared first), counting `pending` reserved but not yet
  // committed tokens as part of the leaf (for a step that is writing them). NOT_FOUND if
  // unknown, FAILED_PRECONDITION if fewer than `pending` slots are reserved.
  absl::Status Path(SeqId seq, std::vector<PathEntry>* out, int pending = 0) const;
  // Tokens of the sequence, path included; -1 if unknown.
  int Length(SeqId seq) const;

  // One engine step over several sequences, each a single locked call whatever their number.
  // Lengths: out[i] = Length(seqs[i]).
  void Lengths(absl::Span<const SeqId> seqs, int* out) const;
  // After Reserve: for each seqs[i] of length starts[i], the slots of its n_new[i] reserved
  // tokens (into `slots`, sequence after sequence) and its path with them pending (appended to
  // `paths`, cleared first; path_start[i] is its first entry, path_start[n] the end). Errors as
  // LeafSlots and Path; the outputs are unspecified on error.
  absl::Status DescribeStep(absl::Span<const SeqId> seqs, absl::Span<const int> starts,
                            absl::Span<const int> n_new, Slot* slots, std::vector<PathEntry>* paths,
                            int* path_start) const;
  // Commit of tokens[i] to seqs[i] for every i (distinct sequences, as for Reserve), all or
  // nothing: on NOT_FOUND or FAILED_PRECONDITION (as Commit) no sequence changes.
  absl::Status CommitStep(absl::Span<const SeqId> seqs,
                          absl::Span<const absl::Span<const int>> tokens);
  absl::StatusOr<std::vector<int>> Tokens(SeqId seq) const;
  // The sequence's KV as [length, layers, 2, kv_heads, head_dim] (for tests and readers).
  absl::StatusOr<std::vector<float>> ReadKv(SeqId seq) const;
  // Tokens [first, first + count) of the sequence's KV into `out` as
  // [count, layers, 2, kv_heads, head_dim]. NOT_FOUND if unknown, OUT_OF_RANGE past its length.
  absl::Status ReadKv(SeqId seq, int first, int count, float* out) const;
  // Tokens [first, first + count) of a segment's committed KV into `out` as
  // [count, layers, 2, kv_heads, head_dim]. NOT_FOUND for an unknown (or freed) segment,
  // OUT_OF_RANGE past its committed length. Committed tokens never change, so this is
  // consistent even on a growing leaf.
  absl::Status ReadSegment(SegmentId segment, int first, int count, float* out) const;

  // Block memory never moves, so these need no lock.
  float* block_data(int block) { return base_ + static_cast<size_t>(block) * floats_per_block_; }
  const float* block_data(int block) const {
    return base_ + static_cast<size_t>(block) * floats_per_block_;
  }
  const KvLayout& layout() const { return layout_; }
  const KvTreeOptions& options() const { return options_; }
  KvTreeStats stats() const;

  // Evicts every cached (unreferenced) segment, returning its blocks to the pool.
  void DropCache();

 private:
  struct Segment;
  KvTree(std::unique_ptr<BlockPool> pool, const KvTreeOptions& options);

  Segment* NewSegment(Segment* parent, int parent_len) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Unref(Segment* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FreeSegment(Segment* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CopyTokenKv(const Segment& s, int t, float* dst) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Calls fn(head row) for the token in `slot` of `block` in token-row order
  // (KvLayout::ForEachHeadRow): the walk both copy directions use.
  template <typename Fn>
  void ForEachHeadRow(int block, int slot, Fn fn) const;
  bool EvictFor(int blocks) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void IndexNewFullBlocks(Segment* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Segment* Leaf(SeqId seq) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // The next id: `*counter`'s value (then counted up), or with random_ids a random one that
  // `in_use` does not hold.
  template <typename Map>
  uint64_t NewId(uint64_t* counter, const Map& in_use) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!options_.random_ids) return (*counter)++;
    constexpr uint64_t kLow40 = (uint64_t{1} << 40) - 1;
    for (;;) {
      uint64_t id = RandomNonZeroU64();
      if (options_.epoch != 0) {
        if ((id & kLow40) == 0) continue;
        id = (uint64_t{options_.epoch} << 48) | (uint64_t{options_.shard} << 40) | (id & kLow40);
      }
      if (!in_use.contains(id)) return id;
    }
  }
  // Appends the path to `out` (Path clears it first).
  absl::Status PathLocked(SeqId seq, std::vector<PathEntry>* out, int pending) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::Status LeafSlotsLocked(SeqId seq, int first_pos, int n, Slot* out) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);

  const KvTreeOptions options_;
  const KvLayout layout_;
  float* const base_;  // block 0 of the pool
  const size_t floats_per_block_;
  mutable absl::Mutex mu_;
  std::unique_ptr<BlockPool> pool_ ABSL_GUARDED_BY(mu_);
  SeqId next_seq_ ABSL_GUARDED_BY(mu_) = 1;
  SegmentId next_segment_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<SeqId, Segment*> live_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<SegmentId, Segment*> by_id_ ABSL_GUARDED_BY(mu_);  // live and cached
  int num_segments_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::unique_ptr<Segment>> all_segments_ ABSL_GUARDED_BY(mu_);  // owns every one
  std::vector<Segment*> free_segments_ ABSL_GUARDED_BY(mu_);  // recycled, capacity kept
  // Full block hash -> (segment, block index).
  absl::flat_hash_map<uint64_t, std::pair<Segment*, int>> index_ ABSL_GUARDED_BY(mu_);
  std::list<Segment*> lru_ ABSL_GUARDED_BY(mu_);  // cached segments, oldest first
  int lru_blocks_ ABSL_GUARDED_BY(mu_) = 0;
  KvTreeStats counters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace arbor::kvcache
