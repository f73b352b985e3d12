// A task preset (<model>/presets/<name>.json): accepted presets have the fields a task needs.
#include "arbor/search/task_language.h"
#include "fuzz_helpers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto t = arbor::search::ParsePresetText(arbor::fuzz::Text(data, size), "presets/x.json");
  arbor::fuzz::CheckRefusal(t.status());
  if (t.ok() && (t->propose.empty() || t->step_stop.empty())) std::abort();
  if (t.ok()) arbor::search::Render(t->propose, "4 9 10 13", "state", "thought");
  return 0;
}
