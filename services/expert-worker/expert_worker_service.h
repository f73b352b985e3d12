// The expert-worker service: hosts a shard of (layer, expert) FFN weights and runs them on the
// rows a router sends, returning one weighted partial sum per row. A thin shell over the
// RunGroups of an engine::ExpertBackend (cpu: OpenBLAS; cuda: bf16 grouped GEMMs on the GPU);
// handlers run on an owned pool and the compute is serialised.
#pragma once

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "arbor/common/thread_pool.h"
#include "arbor/engine/expert_backend.h"
#include "arbor/model/weights.h"
#include "arbor/rpc/rpc_metrics.h"
#include "arbor/rpc/tls.h"
#include "arbor/v1/expert.grpc.pb.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace arbor::expert_worker {

struct ExpertWorkerLimits {
  int max_rows = 2048;          // rows in one RunExperts, and the most one expert gets
  int threads = 2;              // handler pool
  std::string backend = "cpu";  // auto, cpu or cuda (engine::CreateExpertBackend)
  rpc::PeerRoles peers;         // with mTLS, routers only (tls.h)
};

class ExpertWorkerService final : public arbor::v1::ExpertWorker::CallbackService {
 public:
  // `weights` (holding this worker's experts) must outlive the service. INVALID_ARGUMENT if
  // max_rows <= 0 or the backend is unknown; FAILED_PRECONDITION for cuda without a device.
  static absl::StatusOr<std::unique_ptr<ExpertWorkerService>> Create(
      const model::ModelWeights* weights, std::string model_name, const ExpertWorkerLimits& limits,
      prometheus::Registry& registry);
  ~ExpertWorkerService() override;

  grpc::ServerUnaryReactor* RunExperts(grpc::CallbackServerContext* ctx,
                                       const v1::RunExpertsRequest* req,
                                       v1::RunExpertsResponse* resp) override;
  grpc::ServerUnaryReactor* Describe(grpc::CallbackServerContext* ctx,
                                     const v1::DescribeRequest* req,
                                     v1::DescribeResponse* resp) override;

  // The backend in use: "cpu" or "cuda" ("auto" resolved).
  const std::string& backend_name() const { return backend_name_; }

  // What RunExperts does once the caller is checked: every field of `req` against the model and
  // the limits (INVALID_ARGUMENT or FAILED_PRECONDITION naming it), then the experts' partial
  // sums into `resp`. Public for the fuzz target.
  absl::Status DoRun(const v1::RunExpertsRequest& req, v1::RunExpertsResponse* resp);

 private:
  ExpertWorkerService(const model::ModelWeights* weights, std::string model_name,
                      const ExpertWorkerLimits& limits, prometheus::Registry& registry,
                      std::unique_ptr<engine::ExpertBackend> backend);

  const model::ModelWeights* weights_;
  const std::string model_name_;
  const ExpertWorkerLimits limits_;
  absl::Mutex compute_mu_;
  std::unique_ptr<engine::ExpertBackend> backend_ ABSL_GUARDED_BY(compute_mu_);
  const std::string backend_name_;

  rpc::RpcMetrics rpc_metrics_;
  prometheus::Family<prometheus::Counter>& expert_tokens_;
  prometheus::Gauge& waiting_;  // RunExperts calls waiting for the compute lock
  prometheus::Gauge& running_;  // RunExperts calls computing (0 or 1)

  ThreadPool pool_;  // last: drained first
};

}  // namespace arbor::expert_worker
