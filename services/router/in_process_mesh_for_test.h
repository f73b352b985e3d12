// For tests: a kv-store and a router on loopback in this process, over one model folder, with
// the experts run by a local CpuExpertBackend. Real services, real gRPC; nothing is spawned.
// Without `tokenizer` the router takes token ids only (what sanitizer builds can hold: see
// docs/README.md, "SentencePiece and protobuf in one process").
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "arbor/common/status_macros.h"
#include "arbor/engine/expert_backend.h"
#include "arbor/kvcache/kv_tree.h"
#include "arbor/model/checkpoint.h"
#include "arbor/model/config.h"
#include "arbor/model/tokenizer.h"
#include "arbor/model/weights.h"
#include "arbor/rpc/server_host.h"
#include "arbor/statestore/state_store.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/support/client_interceptor.h"
#include "kvstore_service.h"
#include "router_service.h"

namespace arbor::testing {

struct InProcessMeshOptions {
  std::string model_dir = "models/test-moe";
  bool tokenizer = false;
  router::RouterOptions router;
  int kvstore_cache_tokens = 1 << 15;
  // Interceptors on the routers' channel to the kv-store (e.g. to hold a Commit in flight).
  std::function<
      std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>()>
      router_kv_interceptors;
};

class InProcessMesh {
 public:
  // INTERNAL naming the part that did not start (a missing fixture, a bad option).
  static absl::StatusOr<std::unique_ptr<InProcessMesh>> Start(const InProcessMeshOptions& o) {
    auto m = std::unique_ptr<InProcessMesh>(new InProcessMesh());
    ARBOR_ASSIGN_OR_RETURN(m->ckpt_, model::Checkpoint::Open(o.model_dir));
    const model::ModelConfig& c = m->ckpt_->config();
    ARBOR_ASSIGN_OR_RETURN(m->weights_, model::ModelWeights::Load(*m->ckpt_, {}));
    if (o.tokenizer) {
      ARBOR_ASSIGN_OR_RETURN(m->tokenizer_,
                             model::Tokenizer::Load(o.model_dir, c.bos_token_id, c.eos_token_id));
    }
    ARBOR_ASSIGN_OR_RETURN(m->experts_, engine::CpuExpertBackend::Create(
                                            m->weights_.get(), o.router.engine.max_batch_tokens));
    const kvcache::KvLayout layout{c.num_hidden_layers, c.num_key_value_heads, c.head_dim,
                                   o.router.engine.kv_block_tokens};
    ARBOR_ASSIGN_OR_RETURN(m->tree_,
                           kvcache::KvTree::Create(layout, layout.BlocksFor(o.kvstore_cache_tokens),
                                                   {.max_fork = 64, .max_seq_tokens = 4096}));
    m->state_ = statestore::NewInMemoryStateStore();
    m->kv_registry_ = std::make_shared<prometheus::Registry>();
    m->kvstore_ = std::make_unique<kvstore::KvStoreService>(
        m->tree_.get(), m->state_.get(), kvstore::KvStoreLimits{.vocab_size = c.vocab_size},
        *m->kv_registry_);
    ARBOR_ASSIGN_OR_RETURN(m->kv_host_,
                           rpc::ServerHost::Start({}, {m->kvstore_.get()}, m->kv_registry_));
    m->kv_channel_ =
        grpc::CreateChannel(m->kv_host_->address(), grpc::InsecureChannelCredentials());
    m->router_kv_channel_ = o.router_kv_interceptors
                                ? grpc::experimental::CreateCustomChannelWithInterceptors(
                                      m->kv_host_->address(), grpc::InsecureChannelCredentials(),
                                      grpc::ChannelArguments(), o.router_kv_interceptors())
                                : m->kv_channel_;
    ARBOR_ASSIGN_OR_RETURN(m->router_host_, m->StartRouter(o.router));
    return m;
  }

  ~InProcessMesh() {
    if (router_host_) router_host_->Shutdown();
    router_host_.reset();
    router_.reset();
    if (kv_host_) kv_host_->Shutdown();
  }

  // A second router over the same kv-store and experts, with an empty KV cache.
  absl::StatusOr<std::unique_ptr<rpc::ServerHost>> StartRouter(const router::RouterOptions& o) {
    auto registry = std::make_shared<prometheus::Registry>();
    registries_.push_back(registry);
    ARBOR_ASSIGN_OR_RETURN(
        std::unique_ptr<router::RouterService> service,
        router::RouterService::Create(weights_.get(), tokenizer_.get(), experts_.get(), nullptr,
                                      {router_kv_channel_}, o, *registry));
    ARBOR_ASSIGN_OR_RETURN(std::unique_ptr<rpc::ServerHost> host,
                           rpc::ServerHost::Start({}, {service.get()}, registry));
    if (router_ == nullptr) {
      router_ = std::move(service);
    } else {
      extra_routers_.push_back(std::move(service));
    }
    return host;
  }

  std::shared_ptr<grpc::Channel> kvstore_channel() const { return kv_channel_; }
  // The first router's metrics.
  prometheus::Registry& router_registry() const { return *registries_.front(); }
  std::shared_ptr<grpc::Channel> router_channel() const {
    return grpc::CreateChannel(router_host_->address(), grpc::InsecureChannelCredentials());
  }
  std::string router_address() const { return router_host_->address(); }
  statestore::StateStore* state() const { return state_.get(); }
  kvcache::KvTree& kv_tree() const { return *tree_; }
  const model::ModelConfig& config() const { return ckpt_->config(); }

 private:
  InProcessMesh() = default;

  std::unique_ptr<model::Checkpoint> ckpt_;
  std::unique_ptr<model::ModelWeights> weights_;
  std::unique_ptr<model::Tokenizer> tokenizer_;
  std::unique_ptr<engine::CpuExpertBackend> experts_;
  std::unique_ptr<kvcache::KvTree> tree_;
  std::unique_ptr<statestore::StateStore> state_;
  std::shared_ptr<prometheus::Registry> kv_registry_;
  std::unique_ptr<kvstore::KvStoreService> kvstore_;
  std::unique_ptr<rpc::ServerHost> kv_host_;
  std::shared_ptr<grpc::Channel> kv_channel_;
  std::shared_ptr<grpc::Channel> router_kv_channel_;               // kv_channel_ unless intercepted
  std::vector<std::shared_ptr<prometheus::Registry>> registries_;  // the routers' metrics
  // Hosts stop before the services they serve are destroyed (members go in reverse order).
  std::vector<std::unique_ptr<router::RouterService>> extra_routers_;
  std::unique_ptr<router::RouterService> router_;
  std::unique_ptr<rpc::ServerHost> router_host_;
};

}  // namespace arbor::testing
