#include "arbor/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace arbor::engine {

absl::Status SamplingParams::Validate() const {
  if (!(temperature >= 0.0f && temperature <= 100.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature ", temperature, " out of range [0, 100]"));
  }
  if (top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k ", top_k, " must be >= 0"));
  if (!(top_p > 0.0f && top_p <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p ", top_p, " out of range (0, 1]"));
  }
  return absl::OkStatus();
}

namespace {
// log(sum(exp(logits))), stable.
float LogSumExp(const float* logits, int n) {
  const float mx = *std::max_element(logits, logits + n);
  double z = 0;
  for (int i = 0; i < n; ++i) z += std::exp(static_cast<double>(logits[i]) - mx);
  return mx + static_cast<float>(std::log(z));
}

// An index drawn from [0, n) with probability probs[i] / sum.
int Draw(const float* probs, int n, double sum, std::mt19937_64& rng) {
  const double u = std::uniform_real_distribution<double>(0.0, sum)(rng);
  double cum = 0;
  for (int i = 0; i < n; ++i) {
    cum += probs[i];
    if (u < cum) return i;
  }
  // Rounding can leave u past the last partial sum: the last index with any mass.
  int i = n - 1;
  while (probs[i] == 0.0f && i > 0) --i;
  return i;
}
}  // namespace

Sampler::Sampler(int vocab_size) : vocab_(vocab_size), order_(vocab_size), probs_(vocab_size) {}

float Sampler::LogNormalizer(const float* logits) const { return LogSumExp(logits, vocab_); }

void Sampler::TopLogprobs(const float* logits, int k, float log_normalizer, std::vector<int>* ids,
                          std::vector<float>* logprobs) {
  k = std::clamp(k, 1, vocab_);
  std::iota(order_.begin(), order_.end(), 0);
  std::partial_sort(order_.begin(), order_.begin() + k, order_.end(), [logits](int a, int b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  });
  for (int i = 0; i < k; ++i) {
    ids->push_back(order_[i]);
    logprobs->push_back(logits[order_[i]] - log_normalizer);
  }
}

SampledToken Sampler::Sample(const float* logits, const SamplingParams& params,
                             std::mt19937_64& rng) {
  const float lse = LogSumExp(logits, vocab_);  // for the reported log-prob

  int chosen;
  if (params.temperature == 0.0f) {
    chosen = static_cast<int>(std::max_element(logits, logits + vocab_) - logits);
  } else if ((params.top_k == 0 || params.top_k >= vocab_) && params.top_p >= 1.0f) {
    // The whole distribution: one pass in vocabulary order, no candidates to sort.
    const float top = *std::max_element(logits, logits + vocab_);
    double sum = 0;
    for (int i = 0; i < vocab_; ++i) {
      probs_[i] = std::exp((logits[i] - top) / params.temperature);
      sum += probs_[i];
    }
    chosen = Draw(probs_.data(), vocab_, sum, rng);
  } else {
    std::iota(order_.begin(), order_.end(), 0);
    int n = vocab_;
    auto by_logit = [logits](int a, int b) {
      return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
    };
    if (params.top_k > 0 && params.top_k < n) {
      std::nth_element(order_.begin(), order_.begin() + params.top_k, order_.end(), by_logit);
      n = params.top_k;
    }
    std::sort(order_.begin(), order_.begin() + n, by_logit);
    // Softmax of logits / T over the candidates (the first is the largest).
    const float top = logits[order_[0]];
    double sum = 0;
    for (int i = 0; i < n; ++i) {
      probs_[i] = std::exp((logits[order_[i]] - top) / params.temperature);
      sum += probs_[i];
    }
    if (params.top_p < 1.0f) {
      double cum = 0;
      int keep = n;
      for (int i = 0; i < n; ++i) {
        cum += probs_[i] / sum;
        if (cum >= params.top_p) {
          keep = i + 1;
          break;
        }
      }
      n = keep;
      sum = 0;
      for (int i = 0; i < n; ++i) sum += probs_[i];
    }
    chosen = order_[Draw(probs_.data(), n, sum, rng)];
  }
  return SampledToken{chosen, logits[chosen] - lse, lse};
}

}  // namespace arbor::engine
