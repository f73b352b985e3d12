#include "arbor/kernels/gating.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace arbor::kernels {

// Mixtral has 8 experts; anything up to this many is gated without heap memory.
constexpr int kMaxExperts = 256;

absl::Status GatingParams::Validate() const {
  if (logits == nullptr || expert_ids == nullptr || weights == nullptr) {
    return absl::InvalidArgumentError("gating: logits, expert_ids and weights must be set");
  }
  if (n_experts <= 0 || n_experts > kMaxExperts || top_k <= 0 || top_k > n_experts) {
    return absl::InvalidArgumentError(absl::StrCat("gating: top_k ", top_k, " of ", n_experts,
                                                   " experts out of range (max ", kMaxExperts,
                                                   ")"));
  }
  return absl::OkStatus();
}

void GatingCpu(const GatingParams& p) {
  float probs[kMaxExperts];
  for (int t = 0; t < p.n_tokens; ++t) {
    const float* l = p.logits + static_cast<size_t>(t) * p.n_experts;
    float mx = l[0];
    for (int e = 1; e < p.n_experts; ++e) mx = std::max(mx, l[e]);
    float sum = 0;
    for (int e = 0; e < p.n_experts; ++e) sum += probs[e] = std::exp(l[e] - mx);
    for (int e = 0; e < p.n_experts; ++e) probs[e] /= sum;

    int* ids = p.expert_ids + static_cast<size_t>(t) * p.top_k;
    float* w = p.weights + static_cast<size_t>(t) * p.top_k;
    float kept = 0;
    for (int j = 0; j < p.top_k; ++j) {
      int best = -1;
      for (int e = 0; e < p.n_experts; ++e) {
        bool taken = false;
        for (int i = 0; i < j; ++i) taken |= ids[i] == e;
        if (!taken && (best < 0 || probs[e] > probs[best])) best = e;
      }
      ids[j] = best;
      w[j] = probs[best];
      kept += probs[best];
    }
    for (int j = 0; j < p.top_k; ++j) w[j] /= kept;
  }
}

}  // namespace arbor::kernels
