// The same tree-of-thought search twice on one in-process engine, printed as one JSON object:
//   shared:   a child is a Fork of its parent (O(1), all KV shared) and only feeds the parent's
//             last token before generating its thought;
//   unshared: a child is a new empty sequence that prefills the whole context (prompt + every
//             thought on its path) before generating, as a server without KV sharing must.
// Both run the same strategy (libs/search RunSearch, BFS) with the same seeds; thoughts are
// `--thought_tokens` sampled tokens, valued by mean log-prob. Reported per mode: tokens fed
// before generating (prefill), tokens generated, wall seconds; and the ratios.
//
//   arbor_bench_tot [--model models/test-moe] [--breadth 2 --proposals 4 --depth 4]
#include <chrono>
#include <cstdio>
#include <map>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "arbor/common/logging.h"
#include "arbor/engine/generator.h"
#include "arbor/engine/local_model.h"
#include "arbor/search/search.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, model, "models/test-moe", "model folder");
ABSL_FLAG(int, breadth, 2, "BFS: states kept per level");
ABSL_FLAG(int, proposals, 4, "proposals per node");
ABSL_FLAG(int, depth, 4, "search depth");
ABSL_FLAG(int, thought_tokens, 24, "tokens per thought");
ABSL_FLAG(int, prompt_tokens, 64, "root prompt length");
ABSL_FLAG(int, threads, 0, "OpenBLAS threads; 0 = default");

namespace {

using arbor::engine::SeqId;
using Clock = std::chrono::steady_clock;

class LocalSource : public arbor::search::ThoughtSource {
 public:
  LocalSource(arbor::engine::Engine* engine, bool share, int thought_tokens)
      : engine_(engine), gen_(engine, nullptr), share_(share), thought_tokens_(thought_tokens) {}

  // The root: the prompt's KV, all but its last token (which the first children feed).
  absl::StatusOr<uint64_t> Root(const std::vector<int>& prompt) {
    const SeqId seq = engine_->AddSequence();
    arbor::engine::GenerationParams p;
    p.max_tokens = 0;
    std::vector<int> head(prompt.begin(), prompt.end() - 1);
    auto id = gen_.Submit(head, p, {.sequence = seq, .keep_sequence = true});
    if (!id.ok()) return id.status();
    prefill_ += static_cast<int64_t>(head.size());
    if (auto st = gen_.RunToCompletion(); !st.ok()) return st;
    gen_.Erase(*id);
    return Add(seq, prompt, 0);
  }

  absl::StatusOr<std::vector<std::vector<arbor::search::Proposal>>> Propose(
      const std::vector<const arbor::search::SearchNode*>& parents, int n) override {
    struct Pending {
      size_t parent;
      SeqId seq;
      int id;
    };
    std::vector<Pending> pending;
    for (size_t p = 0; p < parents.size(); ++p) {
      const Node& parent = nodes_.at(parents[p]->handle);
      std::vector<SeqId> kids(n);
      if (share_) {
        if (auto st = engine_->Fork(parent.seq, n, kids.data()); !st.ok()) return st;
      } else {
        for (SeqId& k : kids) k = engine_->AddSequence();
      }
      for (SeqId k : kids) {
        arbor::engine::GenerationParams g;
        g.max_tokens = thought_tokens_;
        g.ignore_eos = true;
        g.sampling.temperature = 0.8f;
        g.sampling.seed = ++seed_;
        const int held = engine_->Length(k);
        auto id =
            gen_.Submit(parent.tokens, g, {.sequence = k, .held = held, .keep_sequence = true});
        if (!id.ok()) return id.status();
        prefill_ += static_cast<int64_t>(parent.tokens.size()) - held;
        pending.push_back({p, k, *id});
      }
    }
    if (auto st = gen_.RunToCompletion(); !st.ok()) return st;
    std::vector<std::vector<arbor::search::Proposal>> out(parents.size());
    for (const Pending& q : pending) {
      const arbor::engine::GenerationResult& r = gen_.result(q.id);
      std::vector<int> tokens = nodes_.at(parents[q.parent]->handle).tokens;
      tokens.insert(tokens.end(), r.token_ids.begin(), r.token_ids.end());
      double lp = 0;
      for (float l : r.logprobs) lp += l;
      generated_ += static_cast<int64_t>(r.token_ids.size());
      const uint64_t h = Add(q.seq, tokens, r.logprobs.empty() ? 0 : lp / r.logprobs.size());
      out[q.parent].push_back(
          {.thought = std::to_string(h), .state = std::to_string(h), .handle = h});
      gen_.Erase(q.id);
    }
    return out;
  }

  absl::StatusOr<std::vector<double>> Evaluate(
      const std::vector<const arbor::search::SearchNode*>& nodes) override {
    std::vector<double> v;
    for (const auto* n : nodes) v.push_back(nodes_.at(n->handle).value);
    return v;
  }
  int64_t tokens_used() const override { return generated_; }

  void ReleaseAll() {
    for (auto& [h, n] : nodes_) engine_->Release(n.seq).IgnoreError();
    nodes_.clear();
  }
  int64_t prefill() const { return prefill_; }
  int64_t generated() const { return generated_; }

 private:
  struct Node {
    SeqId seq;
    std::vector<int> tokens;  // the whole context; the KV covers all but the last
    double value;
  };
  uint64_t Add(SeqId seq, std::vector<int> tokens, double value) {
    nodes_[++next_] = {seq, std::move(tokens), value};
    return next_;
  }

  arbor::engine::Engine* engine_;
  arbor::engine::Generator gen_;
  bool share_;
  int thought_tokens_;
  std::map<uint64_t, Node> nodes_;
  uint64_t next_ = 0, seed_ = 0;
  int64_t prefill_ = 0, generated_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  (void)arbor::InitLogging("warn");
  const int breadth = absl::GetFlag(FLAGS_breadth), proposals = absl::GetFlag(FLAGS_proposals),
            depth = absl::GetFlag(FLAGS_depth), thought = absl::GetFlag(FLAGS_thought_tokens),
            prompt_len = absl::GetFlag(FLAGS_prompt_tokens);
  arbor::engine::EngineOptions o;
  o.max_seqs = std::max(64, breadth * proposals);
  o.max_batch_tokens = 4096;
  o.max_seq_tokens = prompt_len + depth * thought + 8;
  o.kv_cache_tokens = (breadth * proposals + 1) * (depth + 1) * o.max_seq_tokens;
  o.prefix_cache = false;  // sharing comes from forks only
  o.num_threads = absl::GetFlag(FLAGS_threads);
  auto m = arbor::engine::LocalModel::Load(absl::GetFlag(FLAGS_model), o);
  if (!m.ok()) {
    std::fprintf(stderr, "%s\n", m.status().ToString().c_str());
    return 1;
  }
  std::vector<int> prompt = {1};
  for (int i = 1; i < prompt_len; ++i) prompt.push_back(3 + (i * 37) % 300);

  nlohmann::json modes;
  std::map<std::string, std::pair<int64_t, double>> figures;
  for (bool share : {true, false}) {
    LocalSource source((*m)->engine.get(), share, thought);
    const auto t0 = Clock::now();
    auto root = source.Root(prompt);
    if (!root.ok()) {
      std::fprintf(stderr, "%s\n", root.status().ToString().c_str());
      return 1;
    }
    arbor::search::SearchTree tree("");
    tree.mutable_node(0).handle = *root;
    arbor::search::SearchSpec spec{.strategy = arbor::search::Strategy::kBfs,
                                   .breadth = breadth,
                                   .proposals_per_node = proposals,
                                   .depth = depth};
    auto r = arbor::search::RunSearch(spec, {.max_nodes = 100000}, source, tree);
    if (!r.ok()) {
      std::fprintf(stderr, "%s\n", r.status().ToString().c_str());
      return 1;
    }
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    source.ReleaseAll();
    const char* name = share ? "shared" : "unshared";
    figures[name] = {source.prefill(), secs};
    modes[name] = {{"nodes", tree.size()},
                   {"prefill_tokens", source.prefill()},
                   {"generated_tokens", source.generated()},
                   {"wall_seconds", secs}};
  }
  nlohmann::json out = {
      {"bench", "tot"},
      {"model", absl::GetFlag(FLAGS_model)},
      {"search",
       {{"strategy", "bfs"},
        {"breadth", breadth},
        {"proposals", proposals},
        {"depth", depth},
        {"thought_tokens", thought},
        {"prompt_tokens", prompt_len}}},
      {"modes", modes},
      {"prefill_ratio", static_cast<double>(figures["unshared"].first) /
                            static_cast<double>(std::max<int64_t>(1, figures["shared"].first))},
      {"time_ratio", figures["unshared"].second / figures["shared"].second}};
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}
