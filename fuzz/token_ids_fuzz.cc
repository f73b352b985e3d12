// `arbor score --ids_file`: whitespace- or comma-separated token ids.
#include "fuzz_helpers.h"
#include "token_ids.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto ids = arbor::cli::ParseTokenIds(std::string(arbor::fuzz::Text(data, size)), "ids");
  arbor::fuzz::CheckRefusal(ids.status());
  if (ids.ok()) {
    for (int id : *ids) {
      if (id < 0) std::abort();
    }
  }
  return 0;
}
