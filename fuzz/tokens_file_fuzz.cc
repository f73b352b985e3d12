// The planner's tokens file (libs/rpc/include/arbor/rpc/tokens.h): any bytes parse or are refused
// with a message naming the line; every tenant accepted is a valid name.
#include "arbor/rpc/tokens.h"
#include "fuzz_helpers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<arbor::rpc::TokenTable> t =
      arbor::rpc::ParseTokens(arbor::fuzz::Text(data, size), "tokens");
  arbor::fuzz::CheckRefusal(t.status());
  if (t.ok()) {
    for (const auto& [hash, id] : *t) {
      if (hash.size() != 71 || !arbor::rpc::ValidTenantName(id.tenant)) std::abort();
      if (id.quota.max_tasks < 0 || id.quota.max_nodes < 0 || id.quota.max_tokens < 0) std::abort();
    }
  }
  return 0;
}
