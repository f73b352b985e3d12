// A safetensors file (header length, JSON header, data): every tensor accepted lies inside the
// file, with a byte count that matches its dtype and shape.
#include "arbor/model/safetensors.h"
#include "fuzz_helpers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<std::vector<arbor::model::TensorInfo>> t =
      arbor::model::ParseSafetensors(arbor::fuzz::Text(data, size), "model.safetensors");
  arbor::fuzz::CheckRefusal(t.status());
  if (t.ok()) {
    for (const arbor::model::TensorInfo& info : *t) {
      if (info.offset > size || info.nbytes > size - info.offset) std::abort();
    }
  }
  return 0;
}
