// arbor-router: tokenizer, attention, gates and the continuous-batching step loop; the MoE FFN
// runs on expert workers and every sequence's KV lives in the kv-store. At start it asks every
// worker to Describe itself and refuses to serve, naming the gap, if any (layer, expert) has no
// host. SIGTERM/SIGINT: NOT_SERVING, grace, drain. Every flag can also be set from the
// environment as ARBOR_<FLAG_NAME>.
#include <cblas.h>

#include <cstdio>
#include <filesystem>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "arbor/engine/engine.h"
#include "arbor/engine/expert_backend.h"
#include "arbor/kernels/gpu.h"
#include "arbor/mesh/call.h"
#include "arbor/model/checkpoint.h"
#include "arbor/model/tokenizer.h"
#include "arbor/rpc/server_host.h"
#include "arbor/rpc/service_main.h"
#include "remote_expert_backend.h"
#include "router_service.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, model, "models/game24-moe",
          "model folder (Hugging Face Mixtral layout); only non-expert tensors are read, unless "
          "--local_experts");
ABSL_FLAG(std::string, kvstore, "127.0.0.1:50051",
          "kv-store address (host:port), or its shards' in shard order, comma-separated (as the "
          "planners list them): each call goes to the shard of its sequence");
ABSL_FLAG(std::vector<std::string>, workers, {},
          "expert worker addresses, comma-separated; each serves what it Describes");
ABSL_FLAG(std::string, expert_wire_dtype, "f32",
          "the rows sent to expert workers and the sums they return: f32 (exact) or bf16 (half "
          "the bytes per RunExperts, each crossing rounded to bf16)");
ABSL_FLAG(bool, local_experts, false,
          "run every expert in this process (on --backend) instead of on expert workers: one "
          "process for a small model on one machine, no RunExperts round trips");
ABSL_FLAG(std::string, placement, "",
          "placement file instead of --workers: {\"workers\": [{\"address\": \"host:port\", "
          "\"experts\": \"0:0-3,1:*\"}, ...]}");
ABSL_FLAG(std::string, backend, "auto",
          "where attention, norms, RoPE, gating and the LM head run: auto (cuda when built with "
          "CUDA and a GPU is present, else cpu), cpu, or cuda (GPU 0, KV blocks in device memory)");
ABSL_FLAG(int, max_batch_tokens, 512, "tokens in one step, over all sequences");
ABSL_FLAG(int, max_seqs, 64, "sequences generating in one step");
ABSL_FLAG(int, max_seq_tokens, 32768, "longest sequence, in tokens");
ABSL_FLAG(int, kv_cache_tokens, 65536, "the router's KV cache, in tokens");
ABSL_FLAG(int, kv_block_tokens, 16, "tokens per KV block");
ABSL_FLAG(int, prefill_chunk, 256, "input tokens one Extend feeds per step");
ABSL_FLAG(int, shared_step_tokens, 8,
          "tokens of one step while a tenant with few tokens to feed runs beside others, shared "
          "fairly between them (so one tenant's batch does not slow another's steps); 0 = feed "
          "every Extend each step");
ABSL_FLAG(int, max_new_tokens, 8192, "largest params.max_tokens");
ABSL_FLAG(int, max_pending, 1024, "Extend calls in flight before RESOURCE_EXHAUSTED");
ABSL_FLAG(int, io_threads, 8, "threads for kv-store calls and tokenization");
ABSL_FLAG(int, blas_threads, 0, "OpenBLAS threads; 0 keeps OpenBLAS's default");
ABSL_FLAG(int, expert_timeout_ms, 10000, "deadline of every RunExperts call");
ABSL_FLAG(int, expert_wait_ms, 30000,
          "how long a step whose expert has no live replica is retried (waiting for a restarted "
          "worker) before its Extends fail; 0 = fail at once");
ABSL_FLAG(int, describe_timeout_ms, 30000, "how long to wait for every worker at start");
ABSL_FLAG(int, kvstore_timeout_ms, 30000, "deadline of every kv-store call");
ABSL_FLAG(bool, share_prefix_across_tenants, false,
          "reuse cached prompt prefixes across tenants (a single-tenant deployment only)");

namespace {

using arbor::router::WorkerPlacement;

// The model folder's tokenizer, or none (Extend then takes token ids only).
absl::StatusOr<std::unique_ptr<arbor::model::Tokenizer>> LoadTokenizer(
    const std::string& dir, const arbor::model::ModelConfig& cfg) {
  if (!std::filesystem::exists(std::filesystem::path(dir) / "tokenizer.model")) {
    spdlog::warn("{} has no tokenizer.model: Extend takes token ids only", dir);
    return nullptr;
  }
  return arbor::model::Tokenizer::Load(dir, cfg.bos_token_id, cfg.eos_token_id);
}

// The expert workers from --placement or --workers. INVALID_ARGUMENT for flags that do not
// name any, or both.
absl::StatusOr<std::vector<WorkerPlacement>> Placement(const arbor::model::ModelConfig& cfg) {
  std::vector<WorkerPlacement> placement;
  if (!absl::GetFlag(FLAGS_placement).empty()) {
    if (!absl::GetFlag(FLAGS_workers).empty()) {
      return absl::InvalidArgumentError("give --workers or --placement, not both");
    }
    auto loaded = arbor::router::LoadPlacementFile(absl::GetFlag(FLAGS_placement),
                                                   cfg.num_hidden_layers, cfg.num_local_experts);
    if (!loaded.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--placement: ", loaded.status().ToString()));
    }
    placement = std::move(*loaded);
  } else {
    for (const std::string& a : absl::GetFlag(FLAGS_workers)) {
      if (!a.empty()) placement.push_back({.address = a});
    }
  }
  if (placement.empty()) {
    return absl::InvalidArgumentError(
        "no expert workers: give --workers or --placement (or --local_experts)");
  }
  return placement;
}

// The service's options from the flags; the engine resolves and checks --backend.
arbor::router::RouterOptions OptionsFromFlags() {
  arbor::router::RouterOptions options;
  options.engine.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  options.engine.max_seqs = absl::GetFlag(FLAGS_max_seqs);
  options.engine.max_seq_tokens = absl::GetFlag(FLAGS_max_seq_tokens);
  options.engine.kv_cache_tokens = absl::GetFlag(FLAGS_kv_cache_tokens);
  options.engine.kv_block_tokens = absl::GetFlag(FLAGS_kv_block_tokens);
  options.engine.backend = absl::GetFlag(FLAGS_backend);
  options.prefill_chunk = absl::GetFlag(FLAGS_prefill_chunk);
  options.shared_step_tokens = absl::GetFlag(FLAGS_shared_step_tokens);
  options.expert_wait = std::chrono::milliseconds(absl::GetFlag(FLAGS_expert_wait_ms));
  options.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  options.max_pending = absl::GetFlag(FLAGS_max_pending);
  options.io_threads = absl::GetFlag(FLAGS_io_threads);
  options.share_prefix_across_tenants = absl::GetFlag(FLAGS_share_prefix_across_tenants);
  options.peers = arbor::rpc::PeerRolesFromFlags();
  options.kvstore_timeout = std::chrono::milliseconds(absl::GetFlag(FLAGS_kvstore_timeout_ms));
  return options;
}

// Logs `message` and returns `code` (2: bad flags, 1: anything else).
int Exit(const std::string& message, int code) {
  spdlog::error("{}", message);
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  if (!arbor::rpc::InitServiceMain(
          argc, argv, "arbor-router",
          "arbor-router: attention, gating and batching over expert workers",
          {.address = "127.0.0.1:50071",
           .metrics_address = "127.0.0.1:9111",
           // Extend requests are text or token ids (router.proto's limits); the kv-store
           // channel, which carries KV, has its own limit below.
           .max_message_mb = 16})) {
    return 2;
  }
  if (absl::GetFlag(FLAGS_blas_threads) > 0) {
    openblas_set_num_threads(absl::GetFlag(FLAGS_blas_threads));
  }
  const std::string dir = absl::GetFlag(FLAGS_model);
  auto ckpt = arbor::model::Checkpoint::Open(dir);
  if (!ckpt.ok()) return Exit(ckpt.status().ToString(), 1);
  const arbor::model::ModelConfig& cfg = (*ckpt)->config();
  const bool local = absl::GetFlag(FLAGS_local_experts);
  arbor::model::LoadOptions load;
  if (!local) load.experts = std::vector<arbor::model::ExpertKey>{};
  auto weights = arbor::model::ModelWeights::Load(**ckpt, load);
  if (!weights.ok()) return Exit(weights.status().ToString(), 1);
  auto tokenizer = LoadTokenizer(dir, cfg);
  if (!tokenizer.ok()) return Exit(tokenizer.status().ToString(), 1);
  std::unique_ptr<arbor::engine::ExpertBackend> local_experts;
  std::unique_ptr<arbor::router::RemoteExpertBackend> remote;
  std::vector<std::string> addresses;
  if (local) {
    if (!absl::GetFlag(FLAGS_workers).empty() || !absl::GetFlag(FLAGS_placement).empty()) {
      return Exit("give --local_experts or expert workers (--workers, --placement), not both", 2);
    }
    // The experts run where the engine does ("auto" resolved the same way).
    auto created = arbor::engine::CreateExpertBackend(
        weights->get(), absl::GetFlag(FLAGS_max_batch_tokens),
        arbor::engine::ResolveEngineBackend(absl::GetFlag(FLAGS_backend), cfg));
    if (!created.ok()) {
      return Exit(absl::StrCat("refusing to serve: ", created.status().ToString()), 1);
    }
    local_experts = *std::move(created);
    addresses.push_back("local");
  } else {
    absl::StatusOr<std::vector<WorkerPlacement>> placement = Placement(cfg);
    if (!placement.ok()) return Exit(std::string(placement.status().message()), 2);
    const std::string wire = absl::GetFlag(FLAGS_expert_wire_dtype);
    if (wire != "f32" && wire != "bf16") {
      return Exit(absl::StrCat("--expert_wire_dtype must be f32 or bf16, not \"", wire, "\""), 2);
    }
    auto created = arbor::router::RemoteExpertBackend::Create(
        *placement, cfg,
        {.call_timeout = std::chrono::milliseconds(absl::GetFlag(FLAGS_expert_timeout_ms)),
         .describe_timeout = std::chrono::milliseconds(absl::GetFlag(FLAGS_describe_timeout_ms)),
         .wire_dtype = wire == "bf16" ? arbor::DType::kBF16 : arbor::DType::kF32});
    if (!created.ok()) {
      return Exit(absl::StrCat("refusing to serve: ", created.status().ToString()), 1);
    }
    remote = *std::move(created);
    for (const auto& p : *placement) addresses.push_back(p.address);
  }
  arbor::engine::ExpertBackend* backend = remote ? remote.get() : local_experts.get();
  const arbor::router::RouterOptions options = OptionsFromFlags();

  const arbor::rpc::ServerHostOptions host_options = arbor::rpc::ServerHostOptionsFromFlags();
  std::vector<std::shared_ptr<grpc::Channel>> kvstore;
  for (absl::string_view address :
       absl::StrSplit(absl::GetFlag(FLAGS_kvstore), ',', absl::SkipWhitespace())) {
    kvstore.push_back(
        arbor::mesh::NewChannel(std::string(address), {.max_message_bytes = 256 << 20}));
  }
  if (kvstore.empty() || kvstore.size() > 256) {
    spdlog::error("--kvstore names {} kv-stores; 1 to 256 shards", kvstore.size());
    return 2;
  }
  auto registry = std::make_shared<prometheus::Registry>();
  auto service = arbor::router::RouterService::Create(weights->get(), tokenizer->get(), backend,
                                                      remote.get(), kvstore, options, *registry);
  if (!service.ok()) {
    return Exit(
        absl::StrCat("--backend=", options.engine.backend, ": ", service.status().ToString()), 2);
  }
  spdlog::info("arbor-router backend={} (asked: {}; CUDA devices: {})",
               (*service)->options().engine.backend, options.engine.backend,
               arbor::kernels::CudaDeviceCount());
  auto host = arbor::rpc::ServerHost::Start(host_options, {service->get()}, registry);
  if (!host.ok()) return Exit(host.status().ToString(), 1);
  spdlog::info("arbor-router ready address={} metrics_port={} kvstore={} workers={}",
               (*host)->address(), (*host)->metrics_port(), absl::GetFlag(FLAGS_kvstore),
               absl::StrJoin(addresses, ","));
  arbor::rpc::ServeUntilSignal(**host);
  service->reset();
  return 0;
}
