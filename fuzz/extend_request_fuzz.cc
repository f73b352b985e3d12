// The router's request validation (services/router/extend_codec.h): an ExtendRequest from
// untrusted bytes is refused naming the field, or accepted inside every range router.proto and
// the router's limits state, and its parameters are ones the generator takes.
#include "extend_codec.h"
#include "fuzz_helpers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  arbor::v1::ExtendRequest req;
  if (!req.ParseFromArray(data, static_cast<int>(size))) return 0;
  for (const bool tokenizer : {false, true}) {
    const arbor::router::ExtendLimits limits{.vocab_size = 768,
                                             .has_tokenizer = tokenizer,
                                             .max_text_bytes = 4096,
                                             .max_new_tokens = 512,
                                             .max_seq_tokens = 1024};
    const absl::Status st = arbor::router::ValidateExtendRequest(req, limits);
    arbor::fuzz::CheckRefusal(st);
    if (!st.ok()) continue;
    if (!tokenizer && (req.has_text() || req.params().stop_size() > 0)) std::abort();
    if (req.has_text() && req.text().size() > 4096) std::abort();
    if (req.token_ids().ids_size() > 1024) std::abort();
    for (int id : req.token_ids().ids()) {
      if (id < 0 || id >= 768) std::abort();
    }
    const arbor::engine::GenerationParams g = arbor::router::ParamsFromProto(req.params());
    if (!g.Validate().ok() || g.max_tokens < 0 || g.max_tokens > 512 || g.sampling.top_k < 0 ||
        g.sampling.top_k > 768) {
      std::abort();
    }
  }
  return 0;
}
