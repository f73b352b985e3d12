// The router service: Extend(seq, input, params) appends to a kv-store sequence, generates, and
// streams the tokens; the new tokens and their KV are committed to the kv-store when it ends.
//
// One step-loop thread owns a local Engine (attention, gates, lm head; the MoE FFN goes to the
// ExpertBackend, remote expert workers in production) and a Generator, so every live Extend of
// every client shares each step (continuous batching). The engine's own KV tree is the router's
// cache: a sequence's KV is keyed by its token prefix there, so the KV of a frozen kv-store
// segment, once fetched, serves every later Extend below it. Per Extend:
//   io pool:  tokenize; kv-store GetPath (tokens, segments, version)
//   loop:     local sequence = longest cached prefix of (path tokens + input)
//   io pool:  ReadSegments for the path tokens the cache lacks (from the segments that hold them)
//   loop:     append that KV; the Generator prefills the input and decodes, tokens stream out
//   loop:     at the end, copy out the new tokens' KV and release the local sequence
//   io pool:  kv-store Commit(expected_version); the final ExtendResult carries the new version
// A client that cancels (or whose deadline passes) before the commit starts gets CANCELLED and
// nothing is committed; a commit against a sequence someone else extended meanwhile is ABORTED.
// gRPC threads only validate and hand work over; blocking calls run on the io pool.
//
// The parts: extend_codec.h (validation, proto <-> engine), router_kv_client.h (GetPath, the
// fetch-range split, commit assembly, Commit), kv_admission.h (reserve, wait, unreserve),
// router_metrics.h; this file is the Extend pipeline that carries a job through them.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "arbor/common/thread_pool.h"
#include "arbor/engine/engine.h"
#include "arbor/engine/generator.h"
#include "arbor/model/tokenizer.h"
#include "arbor/rpc/event_stream.h"
#include "arbor/rpc/rpc_metrics.h"
#include "arbor/rpc/tls.h"
#include "arbor/v1/router.grpc.pb.h"
#include "extend_codec.h"
#include "grpcpp/channel.h"
#include "kv_admission.h"
#include "prometheus/registry.h"
#include "remote_expert_backend.h"
#include "router_kv_client.h"
#include "router_metrics.h"

namespace arbor::router {

struct RouterOptions {
  engine::EngineOptions engine;  // the local engine: step size, KV cache, sequence length
  int prefill_chunk = 256;       // input tokens one Extend feeds per step
  // The tokens of one step while a tenant with few tokens to feed (no more than its fair part of
  // these) runs beside others, shared between them (each its fair part, what one leaves unused
  // going to the others; a tenant's Extends take turns within its part), so that one tenant's
  // large batch does not slow every step another tenant's few tokens ride in. When every tenant
  // wants more than its part, every running Extend is fed. 0 = never held.
  int shared_step_tokens = 8;
  // How long a step that failed for want of an expert (no live replica) is tried again before
  // its jobs fail: a restarted worker's experts are waited for. 0: fail at once.
  std::chrono::milliseconds expert_wait{30000};
  int max_text_bytes = 65536;  // ExtendRequest.text, TokenizeRequest.text
  int max_new_tokens = 8192;   // GenerationParams.max_tokens
  int max_pending = 1024;      // Extend calls in flight; beyond: RESOURCE_EXHAUSTED
  int io_threads = 8;          // kv-store calls and tokenization
  std::chrono::milliseconds kvstore_timeout{30000};  // per kv-store call, capped by the client's
  // Reuse cached prompt prefixes across tenants (a single-tenant deployment); by default a
  // tenant's Extends reuse only KV computed for the same tenant.
  bool share_prefix_across_tenants = false;
  rpc::PeerRoles peers;  // with mTLS, planners and operators (tls.h)
};

class RouterService final : public v1::Router::CallbackService {
 public:
  // `weights` (non-expert), `tokenizer` and `experts` must outlive the service; `remote` (may be
  // null) is `experts` when it is remote, for its retry metrics. Without a tokenizer (null),
  // requests must carry token ids. Starts the step loop.
  // INVALID_ARGUMENT naming a bad option.
  static absl::StatusOr<std::unique_ptr<RouterService>> Create(
      const model::ModelWeights* weights, const model::Tokenizer* tokenizer,
      engine::ExpertBackend* experts, const RemoteExpertBackend* remote,
      std::vector<std::shared_ptr<grpc::Channel>> kvstores, const RouterOptions& options,
      prometheus::Registry& registry);
  // Ends every Extend still running with UNAVAILABLE, then stops the loop.
  ~RouterService() override;

  // The options as Create resolved them (engine.backend is "cpu" or "cuda"); never change.
  const RouterOptions& options() const { return options_; }

  grpc::ServerWriteReactor<v1::ExtendEvent>* Extend(grpc::CallbackServerContext* ctx,
                                                    const v1::ExtendRequest* req) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* ctx,
                                     const v1::TokenizeRequest* req,
                                     v1::TokenizeResponse* resp) override;

 private:
  struct Job;
  RouterService(const model::ModelWeights* weights, const model::Tokenizer* tokenizer,
                engine::ExpertBackend* experts, const RemoteExpertBackend* remote,
                std::vector<std::shared_ptr<grpc::Channel>> kvstores, const RouterOptions& options,
                prometheus::Registry& registry);

  // Runs `fn` on the step-loop thread.
  void Post(std::function<void()> fn);
  void Loop();
  void StepOnce();
  void ExportMetrics();
  // With a small tenant running beside others, sets how many tokens each running Extend is fed
  // next step (RouterOptions::shared_step_tokens); lifts every limit otherwise.
  void ShareStep();
  // io pool stages.
  void Prepare(std::shared_ptr<Job> job);
  void Fetch(std::shared_ptr<Job> job);
  void CommitAndFinish(std::shared_ptr<Job> job);
  // Loop stages.
  void Admit(std::shared_ptr<Job> job);
  // Places the waiting jobs that now fit, in order.
  void AdmitWaiting();
  // Creates the job's local sequence and starts its fetch or its generation.
  void Place(std::shared_ptr<Job> job);
  void StartGeneration(std::shared_ptr<Job> job);
  void Emit(Job& job, bool finished);
  void Complete(std::shared_ptr<Job> job);
  // Ends a job that is not (or no longer) in the generator: releases its local sequence.
  void Fail(const std::shared_ptr<Job>& job, const absl::Status& status);
  // Returns a job's KV reservation and admits what now fits.
  void Unreserve(Job& job);
  void End(Job& job, const absl::Status& status);
  // CANCELLED or, while shutting down, UNAVAILABLE.
  absl::Status Interrupted(const Job& job) const;
  // Fails every job of a step that failed (nothing of it was applied).
  void FailAll(const absl::Status& status);

  const model::ModelWeights* weights_;
  const model::Tokenizer* tokenizer_;
  const RemoteExpertBackend* remote_;
  RouterOptions options_;
  ExtendLimits limits_;
  RouterKvClient kvstore_;
  rpc::RpcMetrics rpc_metrics_;
  RouterMetrics metrics_;  // step loop only

  std::unique_ptr<engine::Engine> engine_;                        // step loop only
  std::unique_ptr<engine::Generator> generator_;                  // step loop only
  absl::flat_hash_map<int, std::shared_ptr<Job>> running_;        // generator id -> job; loop only
  std::unique_ptr<KvAdmission<std::shared_ptr<Job>>> admission_;  // step loop only
  std::chrono::steady_clock::time_point failing_since_;           // steps failing since; loop only
  bool sharing_ = false;                             // ShareStep limits are set; loop only
  absl::flat_hash_map<std::string, uint64_t> turn_;  // per tenant: whose turn; loop only

  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> inbox_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<int> pending_{0};  // Extend calls accepted and not yet ended
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> next_job_{1};

  ThreadPool io_;
  std::thread loop_;  // last: started once everything above exists
};

}  // namespace arbor::router
