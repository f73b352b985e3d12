// arbor-expert: an expert worker hosting a shard of a model's (layer, expert) FFN weights.
// Loads only its shard (the checkpoint is mmapped; other tensors are never read). SIGTERM or
// SIGINT: NOT_SERVING, grace, drain. Every flag can also be set as ARBOR_<FLAG_NAME>.
#include <cblas.h>

#include <cstdio>
#include <filesystem>

#include "absl/flags/flag.h"
#include "arbor/kernels/gpu.h"
#include "arbor/model/checkpoint.h"
#include "arbor/model/expert_spec.h"
#include "arbor/rpc/server_host.h"
#include "arbor/rpc/service_main.h"
#include "expert_worker_service.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, model, "models/game24-moe", "model folder (Hugging Face Mixtral layout)");
ABSL_FLAG(std::string, experts, "all",
          "hosted (layer, expert) pairs: all, or LAYERS:EXPERTS items, e.g. 0:0-3,1:*");
ABSL_FLAG(std::string, backend, "auto",
          "compute backend: auto (cuda when built with CUDA and a GPU is present, else cpu), "
          "cpu (OpenBLAS, f32), or cuda (bf16 grouped GEMMs on GPU 0)");
ABSL_FLAG(int, max_rows, 2048, "rows in one RunExperts");
ABSL_FLAG(int, threads, 2, "handler threads");
ABSL_FLAG(int, blas_threads, 0, "OpenBLAS threads; 0 keeps OpenBLAS's default");

int main(int argc, char** argv) {
  if (!arbor::rpc::InitServiceMain(argc, argv, "arbor-expert",
                                   "arbor-expert: runs a shard of a MoE model's experts",
                                   {.address = "127.0.0.1:50061",
                                    .metrics_address = "127.0.0.1:9101",
                                    .max_message_mb = 64})) {
    return 2;
  }
  const std::string backend = absl::GetFlag(FLAGS_backend);  // checked by CreateExpertBackend
  if (absl::GetFlag(FLAGS_blas_threads) > 0) {
    openblas_set_num_threads(absl::GetFlag(FLAGS_blas_threads));
  }
  const std::string dir = absl::GetFlag(FLAGS_model);
  auto ckpt = arbor::model::Checkpoint::Open(dir);
  if (!ckpt.ok()) {
    spdlog::error("{}", ckpt.status().ToString());
    return 1;
  }
  const auto& cfg = (*ckpt)->config();
  auto experts = arbor::model::ParseExpertSpec(absl::GetFlag(FLAGS_experts), cfg.num_hidden_layers,
                                               cfg.num_local_experts);
  if (!experts.ok()) {
    spdlog::error("--experts: {}", experts.status().ToString());
    return 2;
  }
  auto weights =
      arbor::model::ModelWeights::Load(**ckpt, {.non_expert = false, .experts = *experts});
  if (!weights.ok()) {
    spdlog::error("{}", weights.status().ToString());
    return 1;
  }
  auto registry = std::make_shared<prometheus::Registry>();
  auto service = arbor::expert_worker::ExpertWorkerService::Create(
      weights->get(), std::filesystem::path(dir).filename().string(),
      {.max_rows = absl::GetFlag(FLAGS_max_rows),
       .threads = absl::GetFlag(FLAGS_threads),
       .backend = backend,
       .peers = arbor::rpc::PeerRolesFromFlags()},
      *registry);
  if (!service.ok()) {
    spdlog::error("--backend={}: {}", backend, service.status().ToString());
    return 2;
  }
  spdlog::info("arbor-expert backend={} (asked: {}; CUDA devices: {})", (*service)->backend_name(),
               backend, arbor::kernels::CudaDeviceCount());
  auto host = arbor::rpc::ServerHost::Start(arbor::rpc::ServerHostOptionsFromFlags(),
                                            {service->get()}, registry);
  if (!host.ok()) {
    spdlog::error("{}", host.status().ToString());
    return 1;
  }
  spdlog::info("arbor-expert ready address={} metrics_port={} experts={} bytes_read={}",
               (*host)->address(), (*host)->metrics_port(),
               arbor::model::FormatExpertSpec(*experts), (*ckpt)->bytes_read());
  arbor::rpc::ServeUntilSignal(**host);
  return 0;
}
