// The generator's plain types, apart from the generator so that what only validates requests
// (the router's codec, its fuzz target) needs no tokenizer.
#include "absl/strings/str_cat.h"
#include "arbor/common/status_macros.h"
#include "arbor/engine/generator.h"  // declares what is defined here

namespace arbor::engine {

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kNone:
      return "none";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kEos:
      return "eos";
  }
  return "?";
}

absl::Status GenerationParams::Validate() const {
  ARBOR_RETURN_IF_ERROR(sampling.Validate());
  if (max_tokens < 0 || max_tokens > (1 << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens ", max_tokens, " out of range [0, 1048576]"));
  }
  if (top_logprobs < 0 || top_logprobs > 20) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_logprobs ", top_logprobs, " out of range [0, 20]"));
  }
  if (stop.size() > 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("stop holds ", stop.size(), " strings, at most 16"));
  }
  for (size_t i = 0; i < stop.size(); ++i) {
    if (stop[i].empty() || stop[i].size() > 256) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop[", i, "] of ", stop[i].size(), " bytes out of range [1, 256]"));
    }
  }
  return absl::OkStatus();
}

}  // namespace arbor::engine
