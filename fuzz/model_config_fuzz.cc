// config.json of a model folder (libs/model/include/arbor/model/config.h): untrusted text that
// parses into a validated config or is refused naming the field.
#include "arbor/model/config.h"
#include "fuzz_helpers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<arbor::model::ModelConfig> c =
      arbor::model::ModelConfig::Parse(arbor::fuzz::Text(data, size), "config.json");
  arbor::fuzz::CheckRefusal(c.status());
  if (c.ok() && (c->hidden_size <= 0 || c->num_hidden_layers <= 0 || c->vocab_size <= 0)) {
    std::abort();
  }
  return 0;
}
