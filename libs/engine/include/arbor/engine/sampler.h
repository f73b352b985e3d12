// Picks the next token from logits: greedy, or temperature / top-k / top-p sampling from a
// seeded generator. Scratch is sized once for the vocabulary, so Sample allocates nothing.
// Not thread-safe (one sampler per step loop).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/status.h"

namespace arbor::engine {

struct SamplingParams {
  float temperature = 0.0f;  // 0 = greedy; else in (0, 100]
  int top_k = 0;             // 0 = all tokens; else keep the k most likely
  float top_p = 1.0f;        // in (0, 1]: keep the smallest set whose probability reaches top_p
  uint64_t seed = 0;         // seeds the sequence's generator

  // INVALID_ARGUMENT naming the field that is out of range.
  absl::Status Validate() const;
};

struct SampledToken {
  int id = 0;
  float logprob = 0;         // log-probability under the model's own distribution (temperature 1)
  float log_normalizer = 0;  // log-sum-exp of the logits: logprob = logits[id] - log_normalizer
};

class Sampler {
 public:
  explicit Sampler(int vocab_size);

  SampledToken Sample(const float* logits, const SamplingParams& params, std::mt19937_64& rng);

  // log(sum(exp(logits))) over the vocabulary: a token's log-probability is its logit minus this.
  float LogNormalizer(const float* logits) const;

  // Appends the `k` most likely tokens (ties to the lower id) and their log-probabilities
  // under the model's distribution (temperature 1), most likely first. k in [1, vocab];
  // `log_normalizer` is the one Sample returned for these logits (computed once per token).
  void TopLogprobs(const float* logits, int k, float log_normalizer, std::vector<int>* ids,
                   std::vector<float>* logprobs);

 private:
  int vocab_;
  std::vector<int> order_;    // [vocab] candidate token ids (scratch of Sample and TopLogprobs)
  std::vector<float> probs_;  // [vocab]
};

}  // namespace arbor::engine
