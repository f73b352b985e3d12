#include "mesh_thought_source.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "arbor/common/status_macros.h"
#include "arbor/rpc/status.h"

namespace arbor::planner {
namespace {
const std::string kValueStop = "\n";  // a value label is one line
constexpr int kExpectedTop = 20;      // top_logprobs read for the expected label value
}  // namespace

MeshThoughtSource::MeshThoughtSource(mesh::KvStoreShards* kv, mesh::RouterClient* router,
                                     ThreadPool* pool, std::string problem,
                                     search::Templates templates, SourceOptions options,
                                     std::function<bool()> is_cancelled)
    : kv_(kv),
      router_(router),
      pool_(pool),
      problem_(std::move(problem)),
      templates_(std::move(templates)),
      options_(options),
      is_cancelled_(std::move(is_cancelled)) {}

absl::Status MeshThoughtSource::CheckCancelled() const {
  if (is_cancelled_ && is_cancelled_()) return absl::CancelledError("the task was cancelled");
  if (std::chrono::system_clock::now() >= options_.deadline) {
    return absl::DeadlineExceededError("the task's deadline passed");
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> MeshThoughtSource::CreateRoot(const std::string& owner) {
  v1::CreateSequenceRequest create;
  create.set_owner(owner);
  create.set_tenant(options_.tenant);
  ARBOR_ASSIGN_OR_RETURN(const v1::CreateSequenceResponse created,
                         Home(owner).CreateSequence(create, options_.deadline));
  v1::ExtendRequest req;
  req.set_sequence_id(created.sequence_id());
  req.set_text(search::Render(templates_.propose, problem_, "", ""));
  req.set_add_bos(true);
  std::vector<Generated> out = ExtendAll({req});
  ARBOR_RETURN_IF_ERROR(out[0].status);
  ARBOR_ASSIGN_OR_RETURN(mesh::KvStoreClient * shard, kv_->ForSequence(created.sequence_id()));
  ARBOR_ASSIGN_OR_RETURN(const v1::GetPathResponse path,
                         shard->GetPath(created.sequence_id(), /*token_ids=*/true,
                                        options_.deadline, options_.tenant));
  ids_[created.sequence_id()].assign(path.token_ids().begin(), path.token_ids().end());
  return created.sequence_id();
}

absl::StatusOr<bool> MeshThoughtSource::Exists(uint64_t seq) {
  absl::StatusOr<mesh::KvStoreClient*> shard = kv_->ForSequence(seq);
  if (absl::IsNotFound(shard.status())) return false;
  absl::StatusOr<v1::GetPathResponse> path =
      (*shard)->GetPath(seq, false, options_.deadline, options_.tenant);
  if (absl::IsNotFound(path.status())) return false;
  if (!path.ok()) return path.status();
  return true;
}

absl::StatusOr<uint64_t> MeshThoughtSource::Rebuild(const std::vector<int>& tokens,
                                                    const std::string& owner) {
  v1::CreateSequenceRequest req;
  req.set_owner(owner);
  req.set_tenant(options_.tenant);
  req.mutable_prompt_token_ids()->Add(tokens.begin(), tokens.end());
  ARBOR_ASSIGN_OR_RETURN(const v1::CreateSequenceResponse created,
                         Home(owner).CreateSequence(req, options_.deadline));
  counts_.reused += created.reused_tokens();
  if (created.reused_tokens() < static_cast<int>(tokens.size())) {
    v1::ExtendRequest ext;
    ext.set_sequence_id(created.sequence_id());
    ext.mutable_token_ids()->mutable_ids()->Add(tokens.begin() + created.reused_tokens(),
                                                tokens.end());
    std::vector<Generated> out = ExtendAll({ext});
    ARBOR_RETURN_IF_ERROR(out[0].status);
  }
  return created.sequence_id();
}

const std::vector<int>& MeshThoughtSource::token_ids(uint64_t handle) const {
  static const std::vector<int> kNone;
  auto it = ids_.find(handle);
  return it == ids_.end() ? kNone : it->second;
}

std::vector<MeshThoughtSource::Generated> MeshThoughtSource::ExtendAll(
    const std::vector<v1::ExtendRequest>& reqs) {
  std::vector<Generated> out(reqs.size());
  absl::BlockingCounter done(static_cast<int>(reqs.size()));
  for (size_t i = 0; i < reqs.size(); ++i) {
    pool_->Schedule(
        [this, &reqs, &out, &done, i] {
          Generated& g = out[i];
          double sum = 0;
          v1::ExtendRequest req = reqs[i];
          req.set_tenant(options_.tenant);
          // A cancelled task starts no more Extends and stops those running at their next token
          // (the router drops a cancelled Extend within its step), not at the end of the round.
          if (absl::Status st = CheckCancelled(); !st.ok()) {
            g.status = st;
            done.DecrementCount();
            return;
          }
          g.status = router_->Extend(req, options_.deadline, [&](const v1::ExtendEvent& e) {
            if (is_cancelled_ && is_cancelled_()) return false;
            if (e.has_token()) {
              if (g.ids.empty()) {
                for (const v1::TokenLogprob& t : e.token().top_logprobs()) {
                  g.first_top.push_back({.id = t.id(), .logprob = t.logprob()});
                }
              }
              g.ids.push_back(e.token().id());
              sum += e.token().logprob();
            } else {
              g.result = e.result();
            }
            return true;
          });
          g.mean_logprob = g.ids.empty() ? 0 : sum / static_cast<double>(g.ids.size());
          done.DecrementCount();
        },
        options_.tenant);  // tenants take turns on the planner's calls to the mesh
  }
  done.Wait();
  for (const Generated& g : out) {
    counts_.generated += g.result.generated_tokens();
    counts_.prefilled += g.result.prefilled_tokens();
    counts_.reused += g.result.reused_tokens();
  }
  return out;
}

absl::StatusOr<std::vector<std::vector<search::Proposal>>> MeshThoughtSource::Propose(
    const std::vector<const search::SearchNode*>& parents, int n) {
  if (before_expand_ && !before_expand_()) {
    return std::vector<std::vector<search::Proposal>>(parents.size());
  }
  ARBOR_RETURN_IF_ERROR(CheckCancelled());
  std::vector<std::vector<uint64_t>> kids;
  for (const search::SearchNode* p : parents) {
    ARBOR_ASSIGN_OR_RETURN(mesh::KvStoreClient * shard, kv_->ForSequence(p->handle));
    ARBOR_ASSIGN_OR_RETURN(std::vector<uint64_t> k,
                           shard->Fork(p->handle, n, options_.deadline, options_.tenant));
    kids.push_back(std::move(k));
  }
  std::vector<v1::ExtendRequest> reqs;
  for (const auto& k : kids) {
    for (uint64_t seq : k) {
      v1::ExtendRequest req;
      req.set_sequence_id(seq);
      v1::GenerationParams* g = req.mutable_params();
      g->set_max_tokens(options_.max_thought_tokens);
      g->set_temperature(options_.temperature);
      g->set_top_k(options_.top_k);
      g->set_top_p(options_.top_p);
      g->set_seed(options_.seed * 1000003 + (++calls_));
      g->add_stop(templates_.step_stop);
      reqs.push_back(std::move(req));
    }
  }
  std::vector<Generated> gen = ExtendAll(reqs);
  std::vector<std::vector<search::Proposal>> out(parents.size());
  size_t i = 0;
  absl::Status first_error;
  std::vector<uint64_t> duplicates;
  for (size_t p = 0; p < parents.size(); ++p) {
    std::set<std::string> seen;  // a sibling with the same thought is the same state
    for (uint64_t seq : kids[p]) {
      const Generated& g = gen[i++];
      if (!g.status.ok()) {
        if (first_error.ok()) first_error = g.status;
        continue;
      }
      if (!seen.insert(g.result.text()).second) {
        duplicates.push_back(seq);
        continue;
      }
      search::Proposal q;
      q.handle = seq;
      const std::string& text = g.result.text();
      q.thought = text;
      q.state = parents[p]->state + text + templates_.step_stop;
      if (!templates_.answer_prefix.empty()) {
        const size_t at = text.find(templates_.answer_prefix);
        if (at != std::string::npos) {
          q.answer = true;
          std::string a = text.substr(at + templates_.answer_prefix.size());
          a.erase(0, a.find_first_not_of(' '));
          q.answer_text = a;
        }
      }
      q.logprob = g.mean_logprob;
      ids_[seq] = g.ids;
      out[p].push_back(std::move(q));
    }
  }
  if (!first_error.ok()) {
    // Nothing of this round enters the tree; its sequences go back to the kv-store.
    std::vector<uint64_t> all;
    for (const auto& k : kids) all.insert(all.end(), k.begin(), k.end());
    Release(all).IgnoreError();
    return first_error;
  }
  ARBOR_RETURN_IF_ERROR(Release(duplicates));
  return out;
}

absl::StatusOr<std::vector<double>> MeshThoughtSource::Evaluate(
    const std::vector<const search::SearchNode*>& nodes) {
  std::vector<double> values(nodes.size(), 0.0);
  if (options_.value == ValueMode::kLogProb) {
    for (size_t i = 0; i < nodes.size(); ++i) values[i] = nodes[i]->logprob;
    return values;
  }
  ARBOR_RETURN_IF_ERROR(CheckCancelled());
  // Label: the value prompt on forks of each node (sharing its KV), the label mapped to a score.
  const int k = options_.value == ValueMode::kSampled ? options_.value_samples : 1;
  const bool expected = options_.value == ValueMode::kLabel && options_.label_expected;
  const std::map<int, float>* label_tokens = nullptr;
  if (expected) {
    ARBOR_ASSIGN_OR_RETURN(label_tokens, LabelTokens());
  }
  std::vector<uint64_t> forks;
  std::vector<v1::ExtendRequest> reqs;
  for (const search::SearchNode* n : nodes) {
    ARBOR_ASSIGN_OR_RETURN(mesh::KvStoreClient * shard, kv_->ForSequence(n->handle));
    ARBOR_ASSIGN_OR_RETURN(std::vector<uint64_t> f,
                           shard->Fork(n->handle, k, options_.deadline, options_.tenant));
    for (uint64_t seq : f) {
      v1::ExtendRequest req;
      req.set_sequence_id(seq);
      req.set_text(search::Render(templates_.value, problem_, n->state, n->thought));
      v1::GenerationParams* g = req.mutable_params();
      g->set_max_tokens(expected ? 1 : 8);  // expected: the first token's distribution
      g->set_top_logprobs(expected ? kExpectedTop : 0);
      g->set_temperature(options_.value == ValueMode::kSampled ? options_.temperature : 0.0f);
      if (options_.value == ValueMode::kSampled) {
        g->set_top_k(options_.top_k);
        g->set_top_p(options_.top_p);
      }
      g->set_seed(options_.seed * 1000003 + (++calls_));
      g->add_stop(kValueStop);
      reqs.push_back(std::move(req));
      forks.push_back(seq);
    }
  }
  std::vector<Generated> gen = ExtendAll(reqs);
  ARBOR_RETURN_IF_ERROR(Release(forks));
  float lowest = 0;
  for (const auto& [label, score] : templates_.value_labels) lowest = std::min(lowest, score);
  for (size_t i = 0; i < nodes.size(); ++i) {
    double sum = 0;
    for (int j = 0; j < k; ++j) {
      const Generated& g = gen[i * k + j];
      ARBOR_RETURN_IF_ERROR(g.status);
      if (expected) {  // among the kExpectedTop most likely first tokens
        sum += search::ExpectedLabelScore(g.first_top, *label_tokens, lowest);
        continue;
      }
      std::string text;
      text.reserve(g.result.text().size());
      for (unsigned char c : g.result.text()) text.push_back(static_cast<char>(std::tolower(c)));
      // The label that appears first in what the model wrote; none scores the lowest.
      size_t first = std::string::npos;
      float score = lowest;
      for (const auto& [label, s] : templates_.value_labels) {
        const size_t at = text.find(label);
        if (at < first) {
          first = at;
          score = s;
        }
      }
      sum += score;
    }
    values[i] = sum / k;
  }
  return values;
}

absl::StatusOr<std::vector<int>> MeshThoughtSource::Tokenize(const std::string& text) {
  return router_->Tokenize(text, /*add_bos=*/false, options_.deadline);
}

absl::StatusOr<const std::map<int, float>*> MeshThoughtSource::LabelTokens() {
  if (label_tokens_) return &*label_tokens_;
  // A label's first token as the model would write it: right after the value prompt.
  const std::string prompt = search::Render(templates_.value, problem_, "", "");
  ARBOR_ASSIGN_OR_RETURN(const std::vector<int> before, Tokenize(prompt));
  std::map<int, std::string> label_of;  // first token id -> label
  for (const auto& [label, score] : templates_.value_labels) {
    ARBOR_ASSIGN_OR_RETURN(const std::vector<int> with, Tokenize(prompt + label));
    if (with.size() <= before.size() || !std::equal(before.begin(), before.end(), with.begin())) {
      return absl::InvalidArgumentError(
          absl::StrCat("value label \"", label,
                       "\" does not start a token of its own after the value prompt; the "
                       "expected label value needs labels that do"));
    }
    const auto [it, fresh] = label_of.emplace(with[before.size()], label);
    if (!fresh) {
      return absl::InvalidArgumentError(absl::StrCat(
          "value labels \"", it->second, "\" and \"", label,
          "\" start with the same token; the expected label value needs distinct first tokens"));
    }
  }
  label_tokens_.emplace();
  for (const auto& [id, label] : label_of) (*label_tokens_)[id] = templates_.value_labels.at(label);
  return &*label_tokens_;
}

// Releases run whatever the task's deadline (a task that ran out of time still gives its KV
// back): only the client's own timeout bounds them.
absl::Status MeshThoughtSource::ReleaseOwner(const std::string& owner) {
  return Home(owner).ReleaseOwner(owner, mesh::kNoDeadline, options_.tenant).status();
}

absl::Status MeshThoughtSource::Release(const std::vector<uint64_t>& seqs) {
  if (kv_->size() == 1) return kv_->shard(0).Release(seqs, mesh::kNoDeadline, options_.tenant);
  std::map<int, std::vector<uint64_t>> by_shard;
  for (uint64_t seq : seqs) by_shard[mesh::ShardOfSequence(seq)].push_back(seq);
  absl::Status status;
  for (const auto& [shard, ids] : by_shard) {
    absl::StatusOr<mesh::KvStoreClient*> kv = kv_->ForSequence(ids[0]);
    if (kv.ok()) status.Update((*kv)->Release(ids, mesh::kNoDeadline, options_.tenant));
  }
  return status;
}

}  // namespace arbor::planner
