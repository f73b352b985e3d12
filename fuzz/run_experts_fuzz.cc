// The expert worker's request validation and the compute behind it (services/expert-worker): a
// RunExpertsRequest from untrusted bytes is refused naming the field, or run on the test model's
// experts, and then the output is [n_rows, hidden] in the asked dtype.
#include <memory>

#include "arbor/model/checkpoint.h"
#include "arbor/model/weights.h"
#include "expert_worker_service.h"
#include "fuzz_helpers.h"

namespace {

struct Worker {
  std::unique_ptr<arbor::model::Checkpoint> ckpt;
  std::unique_ptr<arbor::model::ModelWeights> weights;
  std::unique_ptr<prometheus::Registry> registry;
  std::unique_ptr<arbor::expert_worker::ExpertWorkerService> service;
};

// The test model (tools/fuzz.sh runs from the repository root), every expert, 64 rows at most.
Worker& TheWorker() {
  static Worker* w = [] {
    auto* w = new Worker;
    auto ckpt = arbor::model::Checkpoint::Open("models/test-moe");
    if (!ckpt.ok()) std::abort();
    w->ckpt = std::move(*ckpt);
    auto weights = arbor::model::ModelWeights::Load(*w->ckpt, {.non_expert = false});
    if (!weights.ok()) std::abort();
    w->weights = std::move(*weights);
    w->registry = std::make_unique<prometheus::Registry>();
    auto service = arbor::expert_worker::ExpertWorkerService::Create(
        w->weights.get(), "test-moe", {.max_rows = 64}, *w->registry);
    if (!service.ok()) std::abort();
    w->service = std::move(*service);
    return w;
  }();
  return *w;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  arbor::v1::RunExpertsRequest req;
  if (!req.ParseFromArray(data, static_cast<int>(size))) return 0;
  Worker& w = TheWorker();
  arbor::v1::RunExpertsResponse resp;
  const absl::Status st = w.service->DoRun(req, &resp);
  arbor::fuzz::CheckRefusal(st);
  if (!st.ok()) return 0;
  const int64_t hidden = w.weights->config().hidden_size;
  const auto& out = resp.output();
  const int64_t n = req.rows().shape(0);
  const size_t width = out.dtype() == arbor::v1::DTYPE_BF16 ? 2 : 4;
  if (out.shape_size() != 2 || out.shape(0) != n || out.shape(1) != hidden || n < 1 || n > 64 ||
      out.data().size() != static_cast<size_t>(n * hidden) * width) {
    std::abort();
  }
  return 0;
}
