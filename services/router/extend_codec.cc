#include "extend_codec.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace arbor::router {

absl::Status ValidateTextBytes(size_t bytes, const ExtendLimits& limits) {
  if (bytes > static_cast<size_t>(limits.max_text_bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("text of ", bytes, " bytes is over the limit of ", limits.max_text_bytes));
  }
  return absl::OkStatus();
}

absl::Status ValidateExtendRequest(const v1::ExtendRequest& req, const ExtendLimits& limits) {
  if (req.sequence_id() == 0) return absl::InvalidArgumentError("sequence_id is 0");
  if (req.tenant().size() > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("tenant of ", req.tenant().size(), " bytes, at most 64"));
  }
  if (!limits.has_tokenizer && (req.has_text() || req.params().stop_size() > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(req.has_text() ? "text" : "params.stop",
                     " needs a tokenizer, and the model folder has none: send token_ids"));
  }
  const int vocab = limits.vocab_size;
  if (req.has_text()) {
    if (absl::Status st = ValidateTextBytes(req.text().size(), limits); !st.ok()) return st;
  }
  if (req.has_token_ids()) {
    const auto& ids = req.token_ids().ids();
    if (ids.size() > limits.max_seq_tokens) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token_ids holds ", ids.size(), " ids, over max_seq_tokens ", limits.max_seq_tokens));
    }
    for (int i = 0; i < ids.size(); ++i) {
      if (ids[i] < 0 || ids[i] >= vocab) {
        return absl::InvalidArgumentError(absl::StrCat("token_ids.ids[", i, "] = ", ids[i],
                                                       " outside the vocabulary [0, ", vocab, ")"));
      }
    }
  }
  const v1::GenerationParams& p = req.params();
  if (p.max_tokens() < 0 || p.max_tokens() > limits.max_new_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "params.max_tokens ", p.max_tokens(), " out of range [0, ", limits.max_new_tokens, "]"));
  }
  if (p.top_k() < 0 || p.top_k() > vocab) {
    return absl::InvalidArgumentError(
        absl::StrCat("params.top_k ", p.top_k(), " out of range [0, ", vocab, "]"));
  }
  // The rest of the ranges are the generator's own.
  if (absl::Status st = ParamsFromProto(p).Validate(); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("params.", st.message()));
  }
  return absl::OkStatus();
}

engine::GenerationParams ParamsFromProto(const v1::GenerationParams& p) {
  engine::GenerationParams g;
  g.max_tokens = p.max_tokens();
  g.sampling.temperature = p.temperature();
  g.sampling.top_k = p.top_k();
  g.sampling.top_p = p.top_p() == 0 ? 1.0f : p.top_p();
  g.sampling.seed = p.seed();
  g.stop.assign(p.stop().begin(), p.stop().end());
  g.ignore_eos = p.ignore_eos();
  g.top_logprobs = p.top_logprobs();
  g.prompt_logprobs = p.prompt_logprobs();
  return g;
}

v1::FinishReason FinishReasonToProto(engine::FinishReason r) {
  switch (r) {
    case engine::FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case engine::FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case engine::FinishReason::kEos:
      return v1::FINISH_REASON_EOS;
    case engine::FinishReason::kNone:
      break;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

namespace {

// One token's id and log-prob, and its alternatives: entries [e * k, (e + 1) * k) of top_ids /
// top_logprobs.
void FillToken(int id, float logprob, const std::vector<int>& top_ids,
               const std::vector<float>& top_logprobs, size_t e, size_t k, v1::GeneratedToken* t) {
  t->set_id(id);
  t->set_logprob(logprob);
  for (size_t j = e * k; j < (e + 1) * k && j < top_ids.size(); ++j) {
    v1::TokenLogprob* top = t->add_top_logprobs();
    top->set_id(top_ids[j]);
    top->set_logprob(top_logprobs[j]);
  }
}

}  // namespace

std::vector<v1::ExtendEvent> TokenEvents(const engine::GenerationResult& r, size_t first, int top_k,
                                         size_t sent_bytes, size_t stable_bytes) {
  std::vector<v1::ExtendEvent> events;
  const size_t k = static_cast<size_t>(top_k);
  for (size_t i = first; i < r.token_ids.size(); ++i) {
    v1::ExtendEvent& e = events.emplace_back();
    v1::GeneratedToken* t = e.mutable_token();
    FillToken(r.token_ids[i], r.logprobs[i], r.top_ids, r.top_logprobs, i, k, t);
    if (i + 1 == r.token_ids.size() && stable_bytes > sent_bytes) {
      t->set_text(r.text.substr(sent_bytes, stable_bytes - sent_bytes));
    }
  }
  return events;
}

void AddPromptLogprobs(const engine::GenerationResult& r, int first, int top_k,
                       v1::ExtendResult* out) {
  const size_t k = static_cast<size_t>(top_k);
  const int from = r.prompt_logprobs_from;
  for (int i = std::max(first, from); i - from < static_cast<int>(r.prompt_logprobs.size()); ++i) {
    const size_t e = static_cast<size_t>(i - from);
    FillToken(r.prompt_ids[i], r.prompt_logprobs[e], r.prompt_top_ids, r.prompt_top_logprobs, e, k,
              out->add_prompt_logprobs());
  }
}

}  // namespace arbor::router
