// The planner's ThoughtSource over the mesh. Every search node is a kv-store sequence (its
// handle): the root holds the rendered propose prompt; a child is a Fork of its parent (O(1),
// all KV shared) extended by the router up to the step stop string, which is the thought. All
// the Extends of a round run at once, so the router batches them into shared steps.
// Proposals that repeat a sibling's thought word for word are dropped (their forks released), so
// a parent's children are distinct states. Values: the thought's mean token log-prob; or a label
// the model writes after the value prompt on a fork of the node (k forks sampled and averaged),
// mapped to a score. Thread-compatible: one task drives one source.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "arbor/common/thread_pool.h"
#include "arbor/mesh/kvstore_client.h"
#include "arbor/mesh/router_client.h"
#include "arbor/search/search.h"
#include "arbor/search/task_language.h"
#include "arbor/v1/planner.pb.h"

namespace arbor::planner {

enum class ValueMode { kLogProb, kLabel, kSampled };

struct SourceOptions {
  ValueMode value = ValueMode::kLogProb;
  int value_samples = 1;
  // kLabel: weigh the labels' scores by the probability of each label's first token.
  bool label_expected = false;
  float temperature = 0.8f;
  int top_k = 0;       // thoughts (and sampled values): 0 = all tokens
  float top_p = 1.0f;  // thoughts (and sampled values): nucleus mass in (0, 1]
  int max_thought_tokens = 64;
  uint64_t seed = 0;
  // The tenant every kv-store and router call acts for (the task's).
  std::string tenant;
  // Every call's deadline (the clients cap each call by their own timeout too).
  std::chrono::system_clock::time_point deadline = std::chrono::system_clock::time_point::max();
};

struct SourceCounts {
  int64_t generated = 0, prefilled = 0, reused = 0;
};

class MeshThoughtSource : public search::ThoughtSource {
 public:
  // The clients and pool must outlive the source; `is_cancelled` is polled between calls.
  MeshThoughtSource(mesh::KvStoreShards* kv, mesh::RouterClient* router, ThreadPool* pool,
                    std::string problem, search::Templates templates, SourceOptions options,
                    std::function<bool()> is_cancelled);

  // A new root sequence holding the rendered propose prompt (prefilled by the router), tagged
  // `owner` in the kv-store: every sequence forked from it carries the tag too.
  absl::StatusOr<uint64_t> CreateRoot(const std::string& owner);
  // The kv-store shard new sequences of the task are created on (and ReleaseOwner asks): its
  // owner key's first choice unless set.
  void set_shard(size_t shard) { shard_ = shard; }
  // Releases every kv-store sequence tagged `owner`.
  absl::Status ReleaseOwner(const std::string& owner);
  // The router the next calls go to (between rounds: a healing task moves to another router).
  void set_router(mesh::RouterClient* router) { router_ = router; }
  mesh::RouterClient* router() const { return router_; }

  absl::StatusOr<std::vector<std::vector<search::Proposal>>> Propose(
      const std::vector<const search::SearchNode*>& parents, int n) override;
  absl::StatusOr<std::vector<double>> Evaluate(
      const std::vector<const search::SearchNode*>& nodes) override;
  int64_t tokens_used() const override { return counts_.generated; }

  // Releases kv-store sequences (unknown ones are ignored).
  absl::Status Release(const std::vector<uint64_t>& seqs);

  const SourceCounts& counts() const { return counts_; }
  // Runs before every expansion's calls to the mesh (the planner's tokens_per_minute wait);
  // false: time ran out while it waited, and the expansion proposes nothing.
  void set_before_expand(std::function<bool()> fn) { before_expand_ = std::move(fn); }
  void set_counts(const SourceCounts& c) { counts_ = c; }
  // A node's own token ids, by handle: the root's prompt, a child's generated thought.
  const std::vector<int>& token_ids(uint64_t handle) const;
  // Whether the kv-store still holds `seq`.
  absl::StatusOr<bool> Exists(uint64_t seq);
  // A new sequence (tagged `owner`) holding `tokens`: the kv-store's prefix index supplies what
  // it caches, the router prefills the rest. Returns its id.
  absl::StatusOr<uint64_t> Rebuild(const std::vector<int>& tokens, const std::string& owner);

 private:
  struct Generated {
    absl::Status status;
    std::vector<int> ids;
    double mean_logprob = 0;
    std::vector<search::TokenLogprob> first_top;  // the first token's top_logprobs
    v1::ExtendResult result;
  };
  // Runs the Extends in parallel on the pool and waits for all.
  std::vector<Generated> ExtendAll(const std::vector<v1::ExtendRequest>& reqs);
  absl::Status CheckCancelled() const;
  absl::StatusOr<std::vector<int>> Tokenize(const std::string& text);
  // Each value label's first token id -> its score, as the router tokenizes the label after the
  // value prompt; fetched once. INVALID_ARGUMENT if a label does not start a token of its own
  // there or two labels start with the same token.
  absl::StatusOr<const std::map<int, float>*> LabelTokens();

  mesh::KvStoreShards* kv_;
  std::optional<size_t> shard_;  // where the task's sequences live (set_shard)
  mesh::KvStoreClient& Home(const std::string& owner) {
    return shard_ && *shard_ < kv_->size() ? kv_->shard(*shard_) : kv_->ForKey(owner);
  }
  mesh::RouterClient* router_;
  ThreadPool* pool_;
  std::function<bool()> before_expand_;
  std::string problem_;
  search::Templates templates_;
  SourceOptions options_;
  std::function<bool()> is_cancelled_;
  SourceCounts counts_;
  std::map<uint64_t, std::vector<int>> ids_;          // handle -> the node's own tokens
  uint64_t calls_ = 0;                                // varies the sampling seed per call
  std::optional<std::map<int, float>> label_tokens_;  // first token id -> the label's score
};

}  // namespace arbor::planner
