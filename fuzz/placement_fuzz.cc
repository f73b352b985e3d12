// A router placement file and the --experts syntax inside it: every pair accepted lies inside
// the model (4 layers x 8 experts here).
#include "arbor/model/expert_spec.h"
#include "fuzz_helpers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text = arbor::fuzz::Text(data, size);
  auto p = arbor::model::ParsePlacement(text, "placement.json", 4, 8);
  arbor::fuzz::CheckRefusal(p.status());
  if (p.ok()) {
    for (const auto& w : *p) {
      if (w.address.empty()) std::abort();
      for (const auto& k : w.experts.value_or(std::vector<arbor::model::ExpertKey>{})) {
        if (k.layer < 0 || k.layer >= 4 || k.expert < 0 || k.expert >= 8) std::abort();
      }
    }
  }
  auto spec = arbor::model::ParseExpertSpec(text, 4, 8);
  arbor::fuzz::CheckRefusal(spec.status());
  if (spec.ok() && arbor::model::ParseExpertSpec(arbor::model::FormatExpertSpec(*spec), 4, 8)
                           .value_or(std::vector<arbor::model::ExpertKey>{}) != *spec) {
    std::abort();  // the canonical spec reads back as the same pairs
  }
  return 0;
}
