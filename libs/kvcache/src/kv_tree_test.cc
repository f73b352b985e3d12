#include "arbor/kvcache/kv_tree.h"

#include <map>
#include <random>

#include "gtest/gtest.h"

namespace arbor::kvcache {
namespace {

// 2 layers x K/V x 2 kv heads x head_dim 4 = 32 floats of KV per token; 4-token blocks.
const KvLayout kLayout{2, 2, 4, 4};
constexpr int kRow = 2 * 2 * 2 * 4;

uint64_t Mix(uint64_t h, uint64_t v) {
  uint64_t z = h + 0x9e3779b97f4a7c15ull * (v + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  return z ^ (z >> 27);
}

// The KV of a token depends on every token up to it, as in a real model, so reused prefixes
// must hold exactly the KV the new sequence would have computed.
std::vector<float> KvFor(const std::vector<int>& tokens, size_t from) {
  std::vector<float> kv;
  uint64_t h = 17;
  for (size_t p = 0; p < tokens.size(); ++p) {
    h = Mix(h, tokens[p]);
    if (p < from) continue;
    for (int i = 0; i < kRow; ++i)
      kv.push_back(static_cast<float>(Mix(h, i) & 0xffffff) / 16777216.0f);
  }
  return kv;
}

struct Naive {
  std::vector<int> tokens;
  std::vector<float> kv;
};

void ExpectMatches(const KvTree& tree, const std::map<SeqId, Naive>& naive,
                   const std::string& ctx) {
  for (const auto& [seq, n] : naive) {
    ASSERT_EQ(tree.Length(seq), static_cast<int>(n.tokens.size())) << ctx;
    ASSERT_EQ(*tree.Tokens(seq), n.tokens) << ctx << " seq " << seq;
    ASSERT_EQ(*tree.ReadKv(seq), n.kv) << ctx << " seq " << seq;
    // A range across segment boundaries.
    const int len = static_cast<int>(n.tokens.size()), first = len / 3, count = len / 2;
    std::vector<float> part(static_cast<size_t>(count) * kRow);
    ASSERT_TRUE(tree.ReadKv(seq, first, count, part.data()).ok());
    ASSERT_TRUE(std::equal(part.begin(), part.end(), n.kv.begin() + first * kRow)) << ctx;
    ASSERT_EQ(tree.ReadKv(seq, first, len - first + 1, part.data()).code(),
              absl::StatusCode::kOutOfRange);
  }
  ASSERT_EQ(tree.stats().live_sequences, static_cast<int>(naive.size())) << ctx;
}

TEST(KvTreeTest, RandomOperationsMatchANaiveCopyOfEverySequence) {
  auto tree = *KvTree::Create(kLayout, 160, KvTreeOptions{.max_fork = 4, .max_seq_tokens = 200});
  std::map<SeqId, Naive> naive;
  std::mt19937 rng(7);
  auto pick = [&]() {
    auto it = naive.begin();
    std::advance(it, rng() % naive.size());
    return it->first;
  };
  // A few shared prompt stems so the prefix index gets hits.
  const std::vector<std::vector<int>> stems = {
      {5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17}, {1, 2, 3, 4, 5, 6, 7, 8, 9}, {42}};
  int exhausted = 0, hits = 0;
  for (int op = 0; op < 4000; ++op) {
    const int kind = naive.empty() ? 0 : static_cast<int>(rng() % 10);
    const std::string ctx = "op " + std::to_string(op) + " kind " + std::to_string(kind);
    if (kind <= 1) {  // create from a prompt, reusing an indexed prefix when there is one
      std::vector<int> prompt = stems[rng() % stems.size()];
      const int extra = static_cast<int>(rng() % 12);
      for (int i = 0; i < extra; ++i) prompt.push_back(static_cast<int>(rng() % 50));
      auto created = tree->CreateSequence(prompt);
      ASSERT_TRUE(created.ok()) << created.status();
      const int r = created->reused_tokens;
      hits += r > 0;
      ASSERT_EQ(r % kLayout.block_tokens, 0);
      ASSERT_LT(r, static_cast<int>(prompt.size()));
      ASSERT_EQ(*tree->Tokens(created->seq), std::vector<int>(prompt.begin(), prompt.begin() + r));
      const auto kv = KvFor(prompt, r);
      const absl::Status st =
          tree->Append(created->seq, absl::MakeConstSpan(prompt).subspan(r), kv.data());
      if (!st.ok()) {  // pool full: the new sequence holds only the reused prefix
        ASSERT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
        ++exhausted;
        ASSERT_TRUE(tree->Release(created->seq).ok());
      } else {
        naive[created->seq] = {prompt, KvFor(prompt, 0)};
      }
    } else if (kind <= 3) {  // fork
      const SeqId seq = pick();
      const int n = 1 + static_cast<int>(rng() % 4);
      SeqId out[4];
      const int64_t copied = tree->stats().kv_bytes_copied;
      const int blocks = tree->stats().blocks_in_use;
      ASSERT_TRUE(tree->Fork(seq, n, out).ok());
      ASSERT_EQ(tree->stats().kv_bytes_copied, copied);  // no KV moves
      ASSERT_EQ(tree->stats().blocks_in_use, blocks);    // no block is allocated
      for (int i = 0; i < n; ++i) naive[out[i]] = naive[seq];
    } else if (kind <= 7) {  // append
      const SeqId seq = pick();
      Naive& n = naive[seq];
      std::vector<int> add(1 + rng() % 9);
      for (int& t : add) t = static_cast<int>(rng() % 50);
      std::vector<int> all = n.tokens;
      all.insert(all.end(), add.begin(), add.end());
      const auto kv = KvFor(all, n.tokens.size());
      const absl::Status st = tree->Append(seq, add, kv.data());
      if (st.ok()) {
        n.tokens = all;
        n.kv.insert(n.kv.end(), kv.begin(), kv.end());
      } else {
        ASSERT_TRUE(st.code() == absl::StatusCode::kResourceExhausted ||
                    st.code() == absl::StatusCode::kOutOfRange)
            << st;
        ++exhausted;
      }
    } else {  // release
      const SeqId seq = pick();
      ASSERT_TRUE(tree->Release(seq).ok());
      naive.erase(seq);
    }
    ExpectMatches(*tree, naive, ctx);
    if (HasFatalFailure()) return;
  }
  EXPECT_GT(hits, 100);     // the prefix index was exercised
  EXPECT_GT(exhausted, 0);  // and so was a full pool
  EXPECT_GT(tree->stats().evicted_segments, 0);
  for (const auto& [seq, n] : naive) ASSERT_TRUE(tree->Release(seq).ok());
  tree->DropCache();
  const KvTreeStats s = tree->stats();
  EXPECT_EQ(s.blocks_in_use, 0);
  EXPECT_EQ(s.segments, 0);
  EXPECT_EQ(s.live_sequences, 0);
}

std::unique_ptr<KvTree> TreeWith(int blocks, KvTreeOptions o = {}) {
  return *KvTree::Create(kLayout, blocks, o);
}

SeqId SeqOf(KvTree& tree, const std::vector<int>& tokens) {
  const SeqId s = tree.CreateSequence({})->seq;
  const auto kv = KvFor(tokens, 0);
  EXPECT_TRUE(tree.Append(s, tokens, kv.data()).ok());
  return s;
}

TEST(KvTreeTest, ForkCopiesNoBytesAndAllocatesNoBlocks) {
  auto tree = TreeWith(1000);
  std::vector<int> tokens(1001);
  for (int i = 0; i < 1001; ++i) tokens[i] = i % 97;  // ends in a partly filled block
  const SeqId s = SeqOf(*tree, tokens);
  const KvTreeStats before = tree->stats();
  SeqId kids[8];
  ASSERT_TRUE(tree->Fork(s, 8, kids).ok());
  const KvTreeStats after = tree->stats();
  EXPECT_EQ(after.kv_bytes_copied, before.kv_bytes_copied);
  EXPECT_EQ(after.blocks_in_use, before.blocks_in_use);
  EXPECT_EQ(after.live_sequences, 9);
  for (SeqId k : kids) EXPECT_EQ(*tree->ReadKv(k), *tree->ReadKv(s));
  // The parent keeps growing on its own leaf; children start fresh blocks after the partial one.
  std::vector<int> more = {1, 2};
  std::vector<int> all = tokens;
  all.insert(all.end(), more.begin(), more.end());
  ASSERT_TRUE(tree->Append(s, more, KvFor(all, tokens.size()).data()).ok());
  EXPECT_EQ(tree->Length(kids[0]), 1001);
  EXPECT_EQ(tree->Length(s), 1003);
  std::vector<PathEntry> path;
  ASSERT_TRUE(tree->Path(kids[0], &path).ok());
  ASSERT_EQ(path.size(), 1u);
  EXPECT_EQ(path[0].length, 1001);
  ASSERT_TRUE(tree->Path(s, &path).ok());
  ASSERT_EQ(path.size(), 2u);
  EXPECT_EQ(path[1].start, 1001);
  EXPECT_EQ(path[1].length, 2);
}

TEST(KvTreeTest, SixteenBranchesCostPrefixPlusSuffixes) {
  const KvLayout layout{1, 1, 4, 16};
  auto tree = *KvTree::Create(layout, 4096, {});
  const SeqId root = tree->CreateSequence({})->seq;
  const std::vector<int> prefix(4096, 3);
  const std::vector<float> kv(4096 * 8, 0.5f);
  ASSERT_TRUE(tree->Append(root, prefix, kv.data()).ok());
  SeqId kids[16];
  ASSERT_TRUE(tree->Fork(root, 16, kids).ok());
  ASSERT_TRUE(tree->Release(root).ok());
  const std::vector<int> suffix(64, 4);
  for (SeqId k : kids) ASSERT_TRUE(tree->Append(k, suffix, kv.data()).ok());
  const double used_tokens = tree->stats().blocks_in_use * 16.0;
  EXPECT_LE(used_tokens, 1.02 * (4096 + 16 * 64));
}

TEST(KvTreeTest, PrefixIndexReusesWholeBlocksEvenAfterRelease) {
  auto tree = TreeWith(100);
  std::vector<int> prompt(18);
  for (int i = 0; i < 18; ++i) prompt[i] = 100 + i;
  const SeqId a = SeqOf(*tree, prompt);
  auto b = tree->CreateSequence(prompt);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->reused_tokens, 16);  // 4 whole blocks; the last 2 tokens must be computed
  ASSERT_TRUE(
      tree->Append(b->seq, absl::MakeConstSpan(prompt).subspan(16), KvFor(prompt, 16).data()).ok());
  EXPECT_EQ(*tree->ReadKv(b->seq), *tree->ReadKv(a));
  // A prompt that diverges inside block 2 reuses blocks 0 and 1 only.
  std::vector<int> other = prompt;
  other[9] = 7;
  auto c = tree->CreateSequence(other);
  EXPECT_EQ(c->reused_tokens, 8);
  ASSERT_TRUE(tree->Release(c->seq).ok());

  ASSERT_TRUE(tree->Release(a).ok());
  ASSERT_TRUE(tree->Release(b->seq).ok());
  EXPECT_GT(tree->stats().cached_segments, 0);
  EXPECT_EQ(tree->CreateSequence(prompt)->reused_tokens, 16);  // revived from the cache
  EXPECT_GT(tree->stats().reused_tokens, 16);
}

TEST(KvTreeTest, FullPoolEvictsCachedPrefixesThenFailsWithoutChangingAnything) {
  auto tree = TreeWith(6);  // 24 tokens
  std::vector<int> p(16, 9);
  const SeqId a = SeqOf(*tree, p);  // 4 blocks
  ASSERT_TRUE(tree->Release(a).ok());
  EXPECT_EQ(tree->stats().blocks_in_use, 4);              // cached
  const SeqId b = SeqOf(*tree, std::vector<int>(20, 1));  // needs 5: evicts the cache
  EXPECT_EQ(tree->stats().evicted_segments, 1);
  const KvTreeStats before = tree->stats();
  const std::vector<int> more(8, 2);
  const absl::Status st = tree->Append(b, more, KvFor(more, 0).data());
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(st.message().find("more blocks needed"), absl::string_view::npos);
  EXPECT_EQ(tree->Length(b), 20);
  EXPECT_EQ(tree->stats().blocks_in_use, before.blocks_in_use);
}

TEST(KvTreeTest, BadUseIsAClearErrorAndChangesNothing) {
  auto tree = TreeWith(50, KvTreeOptions{.max_fork = 8, .max_seq_tokens = 40});
  const SeqId a = SeqOf(*tree, {1, 2, 3, 4, 5, 6, 7, 8});  // two full blocks: no free slot
  const SeqId gone = SeqOf(*tree, {1});
  ASSERT_TRUE(tree->Release(gone).ok());
  const KvTreeStats before = tree->stats();
  SeqId out[16];
  const std::vector<int> one = {7};
  const auto kv = KvFor(one, 0);
  struct Case {
    absl::Status status;
    absl::StatusCode code;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {tree->Fork(999, 1, out), absl::StatusCode::kNotFound, "sequence 999 unknown"},
      {tree->Fork(gone, 1, out), absl::StatusCode::kNotFound, "unknown or released"},
      {tree->Append(gone, one, kv.data()), absl::StatusCode::kNotFound, "unknown"},
      {tree->Release(gone), absl::StatusCode::kNotFound, "unknown"},
      {tree->Fork(a, 0, out), absl::StatusCode::kInvalidArgument, "fork n 0 out of range [1, 8]"},
      {tree->Fork(a, 9, out), absl::StatusCode::kInvalidArgument, "fork n 9"},
      {tree->Append(a, std::vector<int>(33, 1), KvFor(std::vector<int>(33, 1), 0).data()),
       absl::StatusCode::kOutOfRange, "past max_seq_tokens 40"},
      {tree->Reserve({{a, a}}, {{1, 1}}), absl::StatusCode::kInvalidArgument, "listed twice"},
      {tree->Commit(a, one), absl::StatusCode::kFailedPrecondition, "reserved slots"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(c.status.code(), c.code) << c.status;
    EXPECT_NE(c.status.message().find(c.needle), absl::string_view::npos) << c.status;
  }
  const KvTreeStats after = tree->stats();
  EXPECT_EQ(after.blocks_in_use, before.blocks_in_use);
  EXPECT_EQ(after.live_sequences, before.live_sequences);
  EXPECT_EQ(after.forks, before.forks);
  EXPECT_EQ(*tree->Tokens(a), (std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8}));
  auto too_long = tree->CreateSequence(std::vector<int>(41, 1));
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kOutOfRange);
}

TEST(KvTreeTest, ReadSegmentReturnsCommittedKvOfAnySegmentOnAPath) {
  auto tree = TreeWith(50);
  const std::vector<int> tokens = {1, 2, 3, 4, 5, 6};
  const SeqId a = SeqOf(*tree, tokens);
  SeqId kid;
  ASSERT_TRUE(tree->Fork(a, 1, &kid).ok());
  std::vector<PathEntry> path;
  ASSERT_TRUE(tree->Path(kid, &path).ok());
  ASSERT_EQ(path.size(), 1u);
  EXPECT_TRUE(path[0].frozen);
  std::vector<float> got(3 * kRow);
  ASSERT_TRUE(tree->ReadSegment(path[0].segment, 2, 3, got.data()).ok());
  const auto all = KvFor(tokens, 0);
  EXPECT_EQ(got, std::vector<float>(all.begin() + 2 * kRow, all.begin() + 5 * kRow));
  EXPECT_EQ(tree->ReadSegment(path[0].segment, 4, 3, got.data()).code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(tree->ReadSegment(9999, 0, 1, got.data()).code(), absl::StatusCode::kNotFound);
}

TEST(KvTreeTest, ForkingAnEmptyLeafHangsChildrenBesideIt) {
  auto tree = TreeWith(50);
  const SeqId a = SeqOf(*tree, {1, 2, 3, 4, 5, 6});
  SeqId kids[2], grandkids[3];
  ASSERT_TRUE(tree->Fork(a, 2, kids).ok());
  const int segments = tree->stats().segments;          // a's frozen leaf + 3 empty leaves
  ASSERT_TRUE(tree->Fork(kids[0], 3, grandkids).ok());  // kids[0] is empty: no new level
  EXPECT_EQ(tree->stats().segments, segments + 3);
  std::vector<PathEntry> path;
  ASSERT_TRUE(tree->Path(grandkids[2], &path).ok());
  EXPECT_EQ(path.size(), 1u);
  EXPECT_EQ(*tree->Tokens(grandkids[2]), (std::vector<int>{1, 2, 3, 4, 5, 6}));
}

// The engine's per-step calls (one lock each) give what the per-sequence calls give, and a
// step's commit is all or nothing.
TEST(KvTreeTest, StepCallsMatchPerSequenceCallsAndCommitAllOrNothing) {
  auto tree = TreeWith(100);
  const SeqId a = SeqOf(*tree, {1, 2, 3, 4, 5, 6});
  SeqId kids[2];
  ASSERT_TRUE(tree->Fork(a, 2, kids).ok());
  ASSERT_TRUE(
      tree->Append(kids[0], std::vector<int>{7, 8, 9}, KvFor({1, 2, 3, 4, 5, 6, 7, 8, 9}, 6).data())
          .ok());
  const SeqId b = SeqOf(*tree, {40, 41});
  const std::vector<SeqId> seqs = {kids[0], kids[1], b, 12345};
  int lengths[4];
  tree->Lengths(seqs, lengths);
  EXPECT_EQ(std::vector<int>(lengths, lengths + 4), (std::vector<int>{9, 6, 2, -1}));

  const std::vector<SeqId> step = {kids[0], kids[1], b};
  const std::vector<int> starts = {9, 6, 2}, n_new = {1, 5, 3};
  ASSERT_TRUE(tree->Reserve(step, n_new).ok());
  std::vector<KvTree::Slot> slots(9);
  std::vector<PathEntry> paths = {PathEntry{}};  // cleared by the call
  int path_start[4];
  ASSERT_TRUE(tree->DescribeStep(step, starts, n_new, slots.data(), &paths, path_start).ok());
  int t = 0;
  for (size_t i = 0; i < step.size(); ++i) {
    std::vector<KvTree::Slot> one(n_new[i]);
    ASSERT_TRUE(tree->LeafSlots(step[i], starts[i], n_new[i], one.data()).ok());
    for (const KvTree::Slot& s : one) {
      EXPECT_EQ(slots[t].block, s.block) << "input " << i;
      EXPECT_EQ(slots[t].slot, s.slot) << "input " << i;
      ++t;
    }
    std::vector<PathEntry> path;
    ASSERT_TRUE(tree->Path(step[i], &path, n_new[i]).ok());
    ASSERT_EQ(path_start[i + 1] - path_start[i], static_cast<int>(path.size())) << "input " << i;
    for (size_t p = 0; p < path.size(); ++p) {
      const PathEntry& got = paths[path_start[i] + p];
      EXPECT_EQ(got.segment, path[p].segment);
      EXPECT_EQ(got.start, path[p].start);
      EXPECT_EQ(got.length, path[p].length);
      EXPECT_EQ(got.blocks, path[p].blocks);
    }
  }
  EXPECT_EQ(path_start[3], static_cast<int>(paths.size()));
  const std::vector<SeqId> unknown = {12345};
  const std::vector<int> zero = {0}, one = {1};
  EXPECT_EQ(tree->DescribeStep(unknown, zero, one, slots.data(), &paths, path_start).code(),
            absl::StatusCode::kNotFound);

  // Too many tokens for b's reserved slots, or an unknown sequence: nothing is committed.
  const std::vector<int> t0 = {10}, t1 = {7, 7, 7, 7, 7}, t2 = {42, 43, 44},
                         big = {1, 2, 3, 4, 5, 6, 7};
  const std::vector<absl::Span<const int>> too_many = {t0, t1, big};
  EXPECT_EQ(tree->CommitStep(step, too_many).code(), absl::StatusCode::kFailedPrecondition);
  const std::vector<absl::Span<const int>> ok = {t0, t1, t2};
  EXPECT_EQ(tree->CommitStep({{kids[0], 12345}}, {{t0, t0}}).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(tree->Length(kids[0]), 9);
  EXPECT_EQ(tree->Length(kids[1]), 6);
  ASSERT_TRUE(tree->CommitStep(step, ok).ok());
  EXPECT_EQ(*tree->Tokens(kids[0]), (std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
  EXPECT_EQ(*tree->Tokens(kids[1]), (std::vector<int>{1, 2, 3, 4, 5, 6, 7, 7, 7, 7, 7}));
  EXPECT_EQ(*tree->Tokens(b), (std::vector<int>{40, 41, 42, 43, 44}));
}
}  // namespace
}  // namespace arbor::kvcache
