// Continuous batching over an Engine: requests join and leave between steps; every step feeds
// one token to each decoding request and prompt chunks (up to `prefill_chunk` tokens each,
// within the step's token budget) to requests still prefilling. Handles sampling, stop strings,
// EOS and max_tokens. Not thread-safe: one thread calls Submit/Step.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "arbor/engine/engine.h"
#include "arbor/engine/sampler.h"
#include "arbor/model/tokenizer.h"

namespace arbor::engine {

enum class FinishReason { kNone, kLength, kStop, kEos };
const char* FinishReasonName(FinishReason r);

struct GenerationParams {
  SamplingParams sampling;
  int max_tokens = 64;            // in [0, 1 << 20]; 0 = only feed the prompt
  std::vector<std::string> stop;  // stop strings (need a tokenizer); up to 16, each 1..256 bytes
  bool ignore_eos = false;
  int top_logprobs = 0;  // in [0, 20]: per generated token, the k most likely tokens
  // Score the prompt too: each prompt token the generator feeds after the first gets its
  // log-probability given every token before it (and top_logprobs alternatives). A request
  // that scores its prompt reuses no cached prefix (those tokens would have no logits).
  bool prompt_logprobs = false;

  absl::Status Validate() const;
};

struct GenerationResult {
  std::vector<int> prompt_ids;
  std::vector<int> token_ids;   // generated, including the EOS or the token that hit a stop
  std::vector<float> logprobs;  // one per generated token
  // top_logprobs entries per generated token (params.top_logprobs of them, most likely first).
  std::vector<int> top_ids;
  std::vector<float> top_logprobs;
  std::string text;  // decoded generation, cut before the stop string
  FinishReason finish = FinishReason::kNone;
  // With params.prompt_logprobs: prompt_logprobs[i] = log p(prompt_ids[from + i] | prompt_ids[:from
  // + i]) for from = prompt_logprobs_from, which is 1 for a new sequence and held + 1 for one
  // that already held `held` tokens; top_logprobs alternatives per entry, most likely first.
  int prompt_logprobs_from = 0;
  std::vector<float> prompt_logprobs;
  std::vector<int> prompt_top_ids;
  std::vector<float> prompt_top_logprobs;
};

struct GeneratorStats {
  int64_t prefill_tokens = 0;
  int64_t decode_tokens = 0;
  int64_t reused_tokens = 0;   // prompt tokens found in the prefix cache, not prefilled
  double prefill_seconds = 0;  // steps that fed any prompt tokens
  double decode_seconds = 0;   // steps that fed only decode tokens
};

// How a request's sequence is made and what happens to it at the end.
struct SubmitOptions {
  // An existing engine sequence that already holds the KV of prompt_ids[0:held]; 0 makes a new
  // one at admission (reusing a cached prefix). The generator feeds prompt_ids[held:].
  SeqId sequence = 0;
  int held = 0;
  // Keep the sequence when the request finishes (the caller releases it); by default it is
  // released, or kept as a cached prefix.
  bool keep_sequence = false;
  // Feed the last generated token once more before finishing, so that the sequence's KV covers
  // every token of prompt + generation (what a KV store commits). Costs one token in one step.
  bool complete_kv = false;
};

class Generator {
 public:
  // `engine` (and `tokenizer`, which may be null when no request uses stop strings or text)
  // must outlive the generator. `prefill_chunk` bounds the prompt tokens one request feeds per
  // step (0 = up to the step's budget).
  Generator(Engine* engine, const model::Tokenizer* tokenizer, int prefill_chunk = 0);

  // Queues a request; returns its id. INVALID_ARGUMENT for an empty prompt, a prompt longer
  // than the engine's max_seq_tokens, bad params, or stop strings without a tokenizer.
  absl::StatusOr<int> Submit(std::vector<int> prompt_ids, const GenerationParams& params,
                             const SubmitOptions& options = {});

  // Ends an unfinished request now (finish reason kNone stays), releasing its sequence unless
  // it is kept. No-op for a finished one.
  void Cancel(int id);
  // Forgets a finished or cancelled request; its id is no longer valid.
  void Erase(int id);

  // Runs one engine step over the live requests (admitting queued ones). Returns how many
  // requests are still unfinished. An engine error is returned and the step has no effect.
  absl::StatusOr<int> Step();

  // Steps until every submitted request has finished.
  absl::Status RunToCompletion();

  bool finished(int id) const;
  // The engine sequence of an admitted request (0 before admission).
  SeqId sequence(int id) const;
  // Bytes of result(id).text that no later stop string can cut: safe to stream.
  size_t stable_text_bytes(int id) const;
  // Requests not yet finished.
  int live() const { return static_cast<int>(live_.size()); }
  // At most `tokens` of the request's tokens are fed in each step from now on: 0 holds it (it
  // waits, its state kept), -1 lifts the limit (the default). For a scheduler that shares
  // steps between clients.
  void SetStepTokens(int id, int tokens);
  // Prompt tokens the request has still to feed (0 once it decodes).
  int prompt_tokens_left(int id) const;
  // The request's result so far (complete once finished). The id must come from Submit.
  const GenerationResult& result(int id) const;

  const GeneratorStats& stats() const { return stats_; }

 private:
  struct Request {
    GenerationParams params;
    SubmitOptions options;
    GenerationResult result;
    std::mt19937_64 rng;
    std::unique_ptr<model::StreamDecoder> decoder;
    SeqId seq = 0;
    bool admitted = false;
    int fed = 0;             // prompt tokens fed so far
    bool tail_kv = false;    // finished; the last token still needs its KV (complete_kv)
    bool cancelled = false;  // ended by Cancel
    size_t max_stop = 0;     // longest stop string
    int step_tokens = -1;    // SetStepTokens
  };
  bool done(const Request& r) const {
    return r.cancelled || (r.result.finish != FinishReason::kNone && !r.tail_kv);
  }
  void ReleaseSequence(Request& r);
  void Finish(Request& r, FinishReason reason);
  // Samples, appends and checks stop conditions after a step that produced logits for r.
  void Advance(Request& r, const float* logits);
  // Records the log-probability of each prompt token that input i of the last step predicts
  // (r fed `n` tokens from prompt position `from`).
  void ScorePrompt(Request& r, int i, int from, int n);

  Engine* engine_;
  const model::Tokenizer* tokenizer_;
  int prefill_chunk_;
  Sampler sampler_;
  int next_id_ = 0;
  absl::flat_hash_map<int, std::unique_ptr<Request>> requests_;
  std::vector<int> live_;  // ids of unfinished requests, in submission order
  std::vector<StepInput> inputs_;
  std::vector<Request*> input_req_;
  std::vector<int> decode_token_;  // [max_seqs] backing store of decode inputs
  GeneratorStats stats_;
};

}  // namespace arbor::engine
