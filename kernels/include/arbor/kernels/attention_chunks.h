// Attention chunks: how one step's attention work is described, once, for every kernel and
// caller (the CPU tree attention, the decode plan and kernels, the engine's CPU and CUDA steps,
// the benches and the tests).
//
// A chunk is a run of consecutive tokens of one KV segment that a set of queries all attend to:
// tokens [start, start + len) (absolute positions), held in paged KV blocks (block i of the
// chunk holds tokens start + i * block_tokens ..., the last one possibly partly used), and the
// token rows of the step (queries) whose paths run through it. Sequences that share a prefix
// share its chunks, so each chunk's KV is read once for all of them; a query's chunks together
// cover its whole path, and a query at position p sees a chunk's tokens <= p.
#pragma once

#include <cstddef>
#include <vector>

namespace arbor::kernels {

// The chunks as kernels read them: flat arrays, host or device memory.
struct ChunkView {
  int n_chunks = 0;
  const int* start = nullptr;        // [n_chunks] position of each chunk's first token
  const int* len = nullptr;          // [n_chunks] tokens
  const int* block_start = nullptr;  // [n_chunks + 1] chunk c's blocks: [block_start[c], [c + 1])
  const int* query_start = nullptr;  // [n_chunks + 1] chunk c's queries: [query_start[c], [c + 1])
  const int* queries = nullptr;      // token rows attending to each chunk, chunk by chunk
};

// Builds a step's chunks on the host. Block ids are the caller's (KV-tree block ids, indices into
// a test's block list); a kernel gets per-block data pointers in the same order.
class AttentionChunks {
 public:
  void Clear() {
    start_.clear(), len_.clear(), queries_.clear(), block_ids_.clear();
    block_start_.assign(1, 0), query_start_.assign(1, 0);
  }
  // Opens a chunk of `len` tokens from position `start` held in blocks[0, n_blocks) (enough to
  // hold them); queries added next belong to it.
  void Add(int start, int len, const int* blocks, int n_blocks) {
    start_.push_back(start), len_.push_back(len);
    block_ids_.insert(block_ids_.end(), blocks, blocks + n_blocks);
    block_start_.push_back(static_cast<int>(block_ids_.size()));
    query_start_.push_back(static_cast<int>(queries_.size()));
  }
  void Add(int start, int len, const std::vector<int>& blocks) {
    Add(start, len, blocks.data(), static_cast<int>(blocks.size()));
  }
  // Adds token row `query` to the last chunk opened.
  void AddQuery(int query) {
    queries_.push_back(query);
    ++query_start_.back();
  }
  // Room for `chunks` chunks, `queries` query entries and `blocks` blocks without reallocating.
  void Reserve(size_t chunks, size_t queries, size_t blocks) {
    for (auto* v : {&start_, &len_, &block_start_, &query_start_}) v->reserve(chunks + 1);
    queries_.reserve(queries), block_ids_.reserve(blocks);
  }

  int size() const { return static_cast<int>(start_.size()); }
  int n_blocks() const { return static_cast<int>(block_ids_.size()); }
  int n_queries() const { return static_cast<int>(queries_.size()); }
  const std::vector<int>& start() const { return start_; }
  const std::vector<int>& len() const { return len_; }
  const std::vector<int>& block_start() const { return block_start_; }
  const std::vector<int>& query_start() const { return query_start_; }
  const std::vector<int>& queries() const { return queries_; }
  const std::vector<int>& block_ids() const { return block_ids_; }  // every chunk's, in order
  ChunkView view() const {
    ChunkView v;  // (CUDA sources include this header as C++17: no designated initializers)
    v.n_chunks = size(), v.start = start_.data(), v.len = len_.data();
    v.block_start = block_start_.data(), v.query_start = query_start_.data();
    v.queries = queries_.data();
    return v;
  }

 private:
  std::vector<int> start_, len_, queries_, block_ids_;
  std::vector<int> block_start_{0}, query_start_{0};
};

}  // namespace arbor::kernels
