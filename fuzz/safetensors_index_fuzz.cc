// model.safetensors.index.json: every shard it names is a plain file name in the model folder.
#include "arbor/model/checkpoint.h"
#include "fuzz_helpers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto map = arbor::model::ParseSafetensorsIndex(arbor::fuzz::Text(data, size),
                                                 "model.safetensors.index.json");
  arbor::fuzz::CheckRefusal(map.status());
  if (map.ok()) {
    for (const auto& [name, file] : *map) {
      if (file.empty() || file.find('/') != std::string::npos || file == "..") std::abort();
    }
  }
  return 0;
}
