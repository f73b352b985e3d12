#include "expert_worker_service.h"

#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "arbor/common/clock.h"
#include "arbor/common/dtype.h"
#include "arbor/common/status_macros.h"
#include "arbor/rpc/metric_families.h"
#include "arbor/rpc/status.h"

namespace arbor::expert_worker {
namespace {

absl::StatusOr<DType> TensorDType(v1::DType d) {
  switch (d) {
    case v1::DTYPE_F32:
      return DType::kF32;
    case v1::DTYPE_F16:
      return DType::kF16;
    case v1::DTYPE_BF16:
      return DType::kBF16;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("rows.dtype ", v1::DType_Name(d), " is not F32, F16 or BF16"));
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<ExpertWorkerService>> ExpertWorkerService::Create(
    const model::ModelWeights* weights, std::string model_name, const ExpertWorkerLimits& limits,
    prometheus::Registry& registry) {
  ARBOR_ASSIGN_OR_RETURN(auto backend,
                         engine::CreateExpertBackend(weights, limits.max_rows, limits.backend));
  return std::unique_ptr<ExpertWorkerService>(new ExpertWorkerService(
      weights, std::move(model_name), limits, registry, std::move(backend)));
}

ExpertWorkerService::ExpertWorkerService(const model::ModelWeights* weights, std::string model_name,
                                         const ExpertWorkerLimits& limits,
                                         prometheus::Registry& registry,
                                         std::unique_ptr<engine::ExpertBackend> backend)
    : weights_(weights),
      model_name_(std::move(model_name)),
      limits_(limits),
      backend_(std::move(backend)),
      backend_name_(backend_->name()),
      rpc_metrics_("expert", registry, v1::ExpertWorker::service_full_name()),
      expert_tokens_(rpc::CounterFamily(registry, "arbor_expert_tokens_total",
                                        "rows run through each hosted expert")),
      waiting_(rpc::Gauge(registry, "arbor_expert_waiting_calls",
                          "RunExperts calls checked and waiting for the compute backend")),
      running_(rpc::Gauge(registry, "arbor_expert_running_calls",
                          "RunExperts calls computing now (one at a time)")),
      pool_(limits.threads) {
  const model::ModelConfig& c = weights->config();
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    for (int e = 0; e < c.num_local_experts; ++e) {
      if (weights->expert(l, e) != nullptr) {
        expert_tokens_.Add({{"layer", absl::StrCat(l)}, {"expert", absl::StrCat(e)}});
      }
    }
  }
}

ExpertWorkerService::~ExpertWorkerService() = default;

absl::Status ExpertWorkerService::DoRun(const v1::RunExpertsRequest& req,
                                        v1::RunExpertsResponse* resp) {
  const model::ModelConfig& c = weights_->config();
  if (req.layer() < 0 || req.layer() >= c.num_hidden_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", req.layer(), " out of range [0, ", c.num_hidden_layers, ")"));
  }
  ARBOR_ASSIGN_OR_RETURN(DType dtype, TensorDType(req.rows().dtype()));
  const auto& shape = req.rows().shape();
  if (shape.size() != 2 || shape[1] != c.hidden_size || shape[0] < 1 ||
      shape[0] > limits_.max_rows) {
    return absl::InvalidArgumentError(absl::StrCat("rows.shape [", absl::StrJoin(shape, ", "),
                                                   "] is not [n, ", c.hidden_size,
                                                   "] with n in [1, ", limits_.max_rows, "]"));
  }
  const int n = static_cast<int>(shape[0]);
  const size_t bytes = static_cast<size_t>(n) * c.hidden_size * DTypeSize(dtype);
  if (req.rows().data().size() != bytes) {
    return absl::InvalidArgumentError(absl::StrCat("rows.data holds ", req.rows().data().size(),
                                                   " bytes; rows.shape needs ", bytes));
  }
  std::vector<engine::ExpertGroup> groups;
  for (int i = 0; i < req.assignments_size(); ++i) {
    const auto& a = req.assignments(i);
    if (a.expert() < 0 || a.expert() >= c.num_local_experts ||
        weights_->expert(req.layer(), a.expert()) == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat("assignments[", i, "]: expert (layer ",
                                                        req.layer(), ", expert ", a.expert(),
                                                        ") is not hosted here"));
    }
    if (a.row_ids_size() != a.weights_size()) {
      return absl::InvalidArgumentError(absl::StrCat("assignments[", i, "]: ", a.row_ids_size(),
                                                     " row_ids but ", a.weights_size(),
                                                     " weights"));
    }
    for (int r : a.row_ids()) {
      if (r < 0 || r >= n) {
        return absl::InvalidArgumentError(
            absl::StrCat("assignments[", i, "]: row id ", r, " out of range [0, ", n, ")"));
      }
    }
    if (a.row_ids_size() > limits_.max_rows) {
      return absl::InvalidArgumentError(absl::StrCat("assignments[", i, "]: ", a.row_ids_size(),
                                                     " rows exceed ", limits_.max_rows));
    }
    groups.push_back({a.expert(), a.row_ids().data(), a.weights().data(), a.row_ids_size()});
  }
  const v1::DType out_dtype = req.output_dtype();
  if (out_dtype != v1::DTYPE_UNSPECIFIED && out_dtype != v1::DTYPE_F32 &&
      out_dtype != v1::DTYPE_BF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("output_dtype ", v1::DType_Name(out_dtype), " is not F32 or BF16"));
  }
  std::vector<float> x(static_cast<size_t>(n) * c.hidden_size);  // [n, hidden]
  ConvertToF32(dtype, req.rows().data().data(), x.size(), x.data());
  v1::Tensor* out = resp->mutable_output();
  out->add_shape(n);
  out->add_shape(c.hidden_size);
  std::string* data = out->mutable_data();
  data->assign(x.size() * sizeof(float), '\0');  // [n, hidden] f32 partial sums, start at 0
  {
    waiting_.Increment();
    absl::MutexLock lock(&compute_mu_);
    waiting_.Decrement();
    running_.Increment();
    const absl::Status st = backend_->RunGroups(req.layer(), x.data(), n, groups,
                                                reinterpret_cast<float*>(data->data()));
    running_.Decrement();
    ARBOR_RETURN_IF_ERROR(st);
  }
  out->set_dtype(v1::DTYPE_F32);
  if (out_dtype == v1::DTYPE_BF16) {
    // Narrowed in place, front to back: element i's 2 bytes land at or before its own 4.
    out->set_dtype(v1::DTYPE_BF16);
    char* bytes = data->data();
    for (size_t i = 0; i < x.size(); ++i) {
      float sum;
      std::memcpy(&sum, bytes + 4 * i, 4);
      const uint16_t bits = F32ToBF16(sum);
      std::memcpy(bytes + 2 * i, &bits, 2);
    }
    data->resize(x.size() * sizeof(uint16_t));
  }
  for (const auto& g : groups) {
    expert_tokens_.Add({{"layer", absl::StrCat(req.layer())}, {"expert", absl::StrCat(g.expert)}})
        .Increment(g.n);
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* ExpertWorkerService::RunExperts(grpc::CallbackServerContext* ctx,
                                                          const v1::RunExpertsRequest* req,
                                                          v1::RunExpertsResponse* resp) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  if (absl::Status st = limits_.peers.Check(*ctx, {rpc::Role::kRouter}, "RunExperts"); !st.ok()) {
    rpc_metrics_.Record("RunExperts", st, 0);
    reactor->Finish(rpc::ToGrpcStatus(st));
    return reactor;
  }
  pool_.Schedule([this, ctx, req, resp, reactor] {
    const auto t0 = std::chrono::steady_clock::now();
    const absl::Status st =
        ctx->IsCancelled() ? absl::CancelledError("RunExperts: cancelled") : DoRun(*req, resp);
    rpc_metrics_.Record("RunExperts", st, SecondsSince(t0));
    reactor->Finish(rpc::ToGrpcStatus(st));
  });
  return reactor;
}

grpc::ServerUnaryReactor* ExpertWorkerService::Describe(grpc::CallbackServerContext* ctx,
                                                        const v1::DescribeRequest*,
                                                        v1::DescribeResponse* resp) {
  if (absl::Status st = limits_.peers.Check(*ctx, {rpc::Role::kRouter}, "Describe"); !st.ok()) {
    rpc_metrics_.Record("Describe", st, 0);
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    reactor->Finish(rpc::ToGrpcStatus(st));
    return reactor;
  }
  const model::ModelConfig& c = weights_->config();
  resp->set_model(model_name_);
  for (const model::ExpertKey& k : weights_->experts_loaded()) {
    v1::ExpertKey* e = resp->add_experts();
    e->set_layer(k.layer);
    e->set_expert(k.expert);
  }
  resp->set_backend(backend_name_);
  resp->set_dtype(backend_name_ == "cuda" ? v1::DTYPE_BF16 : v1::DTYPE_F32);
  resp->set_hidden_size(c.hidden_size);
  resp->set_num_hidden_layers(c.num_hidden_layers);
  resp->set_num_local_experts(c.num_local_experts);
  rpc_metrics_.Record("Describe", absl::OkStatus(), 0);
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace arbor::expert_worker
