// The router's proto codec and request validation: pure functions between the Extend wire types
// (router.proto) and the engine's, with the range of every client-set field checked once.
// Thread-safe.
#pragma once

#include "absl/status/status.h"
#include "arbor/engine/generator.h"
#include "arbor/v1/router.pb.h"

namespace arbor::router {

// What a request is checked against.
struct ExtendLimits {
  int vocab_size = 0;
  bool has_tokenizer = false;  // text and stop strings need one
  int max_text_bytes = 65536;
  int max_new_tokens = 8192;
  int max_seq_tokens = 4096;
};

// INVALID_ARGUMENT naming the field out of range (e.g. "token_ids.ids[3] = -1 outside the
// vocabulary [0, 512)").
absl::Status ValidateExtendRequest(const v1::ExtendRequest& req, const ExtendLimits& limits);
// Tokenize's text limit, the same as Extend's.
absl::Status ValidateTextBytes(size_t bytes, const ExtendLimits& limits);

// The generator's parameters for a request's (top_p 0 is read as 1).
engine::GenerationParams ParamsFromProto(const v1::GenerationParams& p);
v1::FinishReason FinishReasonToProto(engine::FinishReason r);

// The token events for r.token_ids[first, end): id, log-prob, `top_k` alternatives each, and on
// the last one the text in [sent_bytes, stable_bytes) (text is held back while a stop string may
// still cut it).
std::vector<v1::ExtendEvent> TokenEvents(const engine::GenerationResult& r, size_t first, int top_k,
                                         size_t sent_bytes, size_t stable_bytes);

// Appends to out->prompt_logprobs the scored prompt tokens of r from prompt position `first`
// (the input's start in the context) on: id, log-prob and `top_k` alternatives each.
void AddPromptLogprobs(const engine::GenerationResult& r, int first, int top_k,
                       v1::ExtendResult* out);

}  // namespace arbor::router
