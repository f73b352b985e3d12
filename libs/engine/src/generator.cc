#include "arbor/engine/generator.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "arbor/common/status_macros.h"

namespace arbor::engine {

Generator::Generator(Engine* engine, const model::Tokenizer* tokenizer, int prefill_chunk)
    : engine_(engine),
      tokenizer_(tokenizer),
      prefill_chunk_(prefill_chunk),
      sampler_(engine->config().vocab_size) {
  const int s = engine->options().max_seqs;
  inputs_.reserve(s);
  input_req_.reserve(s);
  decode_token_.resize(s);
}

absl::StatusOr<int> Generator::Submit(std::vector<int> prompt_ids, const GenerationParams& params,
                                      const SubmitOptions& options) {
  ARBOR_RETURN_IF_ERROR(params.Validate());
  if (prompt_ids.empty()) return absl::InvalidArgumentError("prompt has no tokens");
  if (options.sequence != 0) {
    if (options.held < 0 || options.held >= static_cast<int>(prompt_ids.size())) {
      return absl::InvalidArgumentError(
          absl::StrCat("held ", options.held, " out of range [0, ", prompt_ids.size(), ")"));
    }
    if (engine_->Length(options.sequence) != options.held) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", options.sequence, " holds ",
                                                     engine_->Length(options.sequence),
                                                     " tokens, not held ", options.held));
    }
  } else if (options.held != 0) {
    return absl::InvalidArgumentError("held needs a sequence");
  }
  if (static_cast<int>(prompt_ids.size()) >= engine_->options().max_seq_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("prompt of ", prompt_ids.size(),
                                                   " tokens leaves no room under max_seq_tokens ",
                                                   engine_->options().max_seq_tokens));
  }
  for (int t : prompt_ids) {
    if (t < 0 || t >= engine_->config().vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt token id ", t, " outside [0, ", engine_->config().vocab_size, ")"));
    }
  }
  if (!params.stop.empty() && tokenizer_ == nullptr) {
    return absl::InvalidArgumentError("stop strings need a tokenizer");
  }
  auto r = std::make_unique<Request>();
  r->params = params;
  r->options = options;
  for (const std::string& stop : params.stop) r->max_stop = std::max(r->max_stop, stop.size());
  if (options.sequence != 0) {
    r->seq = options.sequence;
    r->fed = options.held;
  }
  r->result.prompt_ids = std::move(prompt_ids);
  r->result.token_ids.reserve(params.max_tokens);
  r->result.logprobs.reserve(params.max_tokens);
  r->result.top_ids.reserve(static_cast<size_t>(params.max_tokens) * params.top_logprobs);
  r->result.top_logprobs.reserve(static_cast<size_t>(params.max_tokens) * params.top_logprobs);
  r->result.prompt_logprobs_from = r->fed + 1;
  r->rng.seed(params.sampling.seed);
  if (tokenizer_ != nullptr) r->decoder = std::make_unique<model::StreamDecoder>(tokenizer_);
  const int id = next_id_++;
  requests_.emplace(id, std::move(r));
  live_.push_back(id);
  return id;
}

void Generator::ReleaseSequence(Request& r) {
  if (r.seq != 0 && !r.options.keep_sequence) {
    engine_->Release(r.seq).IgnoreError();  // known: ours and not released
  }
}

void Generator::Finish(Request& r, FinishReason reason) {
  r.result.finish = reason;
  if (r.decoder) r.result.text += r.decoder->Flush();
  if (r.options.complete_kv && !r.result.token_ids.empty()) {
    r.tail_kv = true;  // fed once more by the next Step, then released
    return;
  }
  ReleaseSequence(r);
}

void Generator::Cancel(int id) {
  auto it = requests_.find(id);
  if (it == requests_.end() || done(*it->second)) return;
  Request& r = *it->second;
  r.cancelled = true;
  r.tail_kv = false;
  ReleaseSequence(r);
  live_.erase(std::remove(live_.begin(), live_.end(), id), live_.end());
}

void Generator::Erase(int id) {
  Cancel(id);
  requests_.erase(id);
}

void Generator::ScorePrompt(Request& r, int i, int from, int n) {
  GenerationResult& res = r.result;
  const int prompt = static_cast<int>(res.prompt_ids.size());
  // Row j holds the logits after prompt token from + j, which predict token from + j + 1.
  for (int j = 0; j < n && from + j + 1 < prompt; ++j) {
    const float* logits = engine_->token_logits(i, j);
    const float lse = sampler_.LogNormalizer(logits);
    res.prompt_logprobs.push_back(logits[res.prompt_ids[from + j + 1]] - lse);
    if (r.params.top_logprobs > 0) {
      sampler_.TopLogprobs(logits, r.params.top_logprobs, lse, &res.prompt_top_ids,
                           &res.prompt_top_logprobs);
    }
  }
}

void Generator::Advance(Request& r, const float* logits) {
  const SampledToken tok = sampler_.Sample(logits, r.params.sampling, r.rng);
  r.result.token_ids.push_back(tok.id);
  r.result.logprobs.push_back(tok.logprob);
  if (r.params.top_logprobs > 0) {
    sampler_.TopLogprobs(logits, r.params.top_logprobs, tok.log_normalizer, &r.result.top_ids,
                         &r.result.top_logprobs);
  }
  if (!r.params.ignore_eos && tok.id == engine_->config().eos_token_id.value_or(-1)) {
    Finish(r, FinishReason::kEos);
    return;
  }
  if (r.decoder) {
    const size_t before = r.result.text.size();
    r.result.text += r.decoder->Push(tok.id);
    for (const std::string& stop : r.params.stop) {
      const size_t from = before >= stop.size() ? before - stop.size() + 1 : 0;
      const size_t at = r.result.text.find(stop, from);
      if (at != std::string::npos) {
        r.result.text.resize(at);
        r.decoder->Flush();
        r.decoder.reset();  // nothing more is appended
        Finish(r, FinishReason::kStop);
        return;
      }
    }
  }
  // Feeding this token needs one more position; complete_kv feeds the last token too.
  const int room = r.options.complete_kv ? 2 : 1;
  if (static_cast<int>(r.result.token_ids.size()) >= r.params.max_tokens ||
      engine_->Length(r.seq) + room > engine_->options().max_seq_tokens) {
    Finish(r, FinishReason::kLength);
  }
}

void Generator::SetStepTokens(int id, int tokens) { requests_.at(id)->step_tokens = tokens; }

int Generator::prompt_tokens_left(int id) const {
  const Request& r = *requests_.at(id);
  return static_cast<int>(r.result.prompt_ids.size()) - r.fed;
}

absl::StatusOr<int> Generator::Step() {
  // Admit queued requests while there are sequence slots.
  int admitted = 0;
  for (int id : live_) admitted += requests_[id]->admitted;
  for (int id : live_) {
    Request& r = *requests_[id];
    if (!r.admitted && admitted < engine_->options().max_seqs) {
      if (r.seq == 0 && r.params.prompt_logprobs) {
        r.seq = engine_->AddSequence();  // every prompt token is fed, so every one is scored
      } else if (r.seq == 0) {
        // Reuses the longest cached prefix of the prompt: those tokens need no prefill.
        ARBOR_ASSIGN_OR_RETURN(kvcache::KvTree::Created created,
                               engine_->AddSequence(r.result.prompt_ids));
        r.seq = created.seq;
        r.fed = created.reused_tokens;
        stats_.reused_tokens += created.reused_tokens;
      }
      r.admitted = true;
      ++admitted;
    }
  }

  // Decode tokens first (one each), then prompt chunks within the remaining budget.
  inputs_.clear();
  input_req_.clear();
  int budget = engine_->options().max_batch_tokens;
  int rows = engine_->options().max_logit_rows;  // logits rows left in this step
  int prefill = 0, decode = 0;
  for (int id : live_) {
    Request& r = *requests_[id];
    if (!r.admitted || r.fed < static_cast<int>(r.result.prompt_ids.size()) || budget == 0 ||
        r.step_tokens == 0 || (r.result.finish != FinishReason::kNone && !r.tail_kv)) {
      continue;
    }
    decode_token_[inputs_.size()] = r.result.token_ids.back();
    inputs_.push_back({r.seq, std::span<const int>(&decode_token_[inputs_.size()], 1), !r.tail_kv});
    input_req_.push_back(&r);
    --budget;
    rows -= !r.tail_kv;
    ++decode;
  }
  for (int id : live_) {
    Request& r = *requests_[id];
    const int left = static_cast<int>(r.result.prompt_ids.size()) - r.fed;
    const bool score = r.params.prompt_logprobs;
    if (!r.admitted || left == 0 || budget == 0 || rows == 0 || r.step_tokens == 0) continue;
    int n = std::min(left, budget);
    if (r.step_tokens > 0) n = std::min(n, r.step_tokens);
    if (prefill_chunk_ > 0) n = std::min(n, prefill_chunk_);
    if (score) n = std::min(n, rows);  // one logits row per token
    const bool want = n == left && r.params.max_tokens > 0;
    inputs_.push_back(
        {r.seq, std::span<const int>(r.result.prompt_ids.data() + r.fed, n), want, score});
    input_req_.push_back(&r);
    budget -= n;
    rows -= score ? n : want;
    prefill += n;
  }
  if (inputs_.empty()) return static_cast<int>(live_.size());

  const auto t0 = std::chrono::steady_clock::now();
  ARBOR_RETURN_IF_ERROR(engine_->Step(inputs_));
  for (size_t i = 0; i < inputs_.size(); ++i) {
    Request& r = *input_req_[i];
    const int prompt = static_cast<int>(r.result.prompt_ids.size());
    if (r.tail_kv) {
      r.tail_kv = false;
      ReleaseSequence(r);
      continue;
    }
    if (r.fed < prompt) {
      if (inputs_[i].all_logits) {
        ScorePrompt(r, static_cast<int>(i), r.fed, static_cast<int>(inputs_[i].tokens.size()));
      }
      r.fed += static_cast<int>(inputs_[i].tokens.size());
      if (r.fed == prompt && r.params.max_tokens == 0) {
        Finish(r, FinishReason::kLength);
        continue;
      }
    }
    if (const float* logits = engine_->logits(static_cast<int>(i))) Advance(r, logits);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  stats_.prefill_tokens += prefill;
  stats_.decode_tokens += decode;
  (prefill > 0 ? stats_.prefill_seconds : stats_.decode_seconds) += secs;

  live_.erase(
      std::remove_if(live_.begin(), live_.end(), [this](int id) { return done(*requests_[id]); }),
      live_.end());
  return static_cast<int>(live_.size());
}

absl::Status Generator::RunToCompletion() {
  while (!live_.empty()) {
    ARBOR_ASSIGN_OR_RETURN(int live, Step());
    (void)live;
  }
  return absl::OkStatus();
}

bool Generator::finished(int id) const { return done(*requests_.at(id)); }

SeqId Generator::sequence(int id) const { return requests_.at(id)->seq; }

size_t Generator::stable_text_bytes(int id) const {
  const Request& r = *requests_.at(id);
  const size_t n = r.result.text.size();
  if (r.result.finish != FinishReason::kNone || r.max_stop == 0) return n;
  // A stop string found later starts after text[n - (max_stop - 1)] at the earliest.
  return n >= r.max_stop - 1 ? n - (r.max_stop - 1) : 0;
}

const GenerationResult& Generator::result(int id) const { return requests_.at(id)->result; }

}  // namespace arbor::engine
