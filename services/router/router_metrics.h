// The router's metrics, besides the per-RPC pair (rpc::RpcMetrics):
//   arbor_router_tokens_total{kind=prefill|decode|fetched|cached}  counter
//   arbor_router_expert_tokens_total{layer,expert}                 counter
//   arbor_router_expert_calls_total, arbor_router_expert_retries_total  counters
//   arbor_router_kv_usage (0..1)                                   gauge
//   arbor_router_running_extends, arbor_router_waiting_extends     gauges
//   arbor_router_extends_finished_total{reason=length|stop|eos|cancelled}  counter
//   arbor_router_expert_worker_up{worker}                          gauge, 1 when the last call
//                                                                  to that worker succeeded
//   arbor_router_step_duration_seconds, arbor_router_step_tokens   histograms
//   arbor_router_time_to_first_token_seconds                       histogram, per Extend
//   arbor_router_inter_token_latency_seconds                       histogram, per token
// Routed tokens are counted by wrapping the engine's expert backend (experts()); the remote
// backend's own counters are exported as deltas. An Extend's end-to-end latency is the per-RPC
// histogram's (arbor_router_request_duration_seconds{method="Extend"}). Step-loop only: not
// thread-safe.
#pragma once

#include <memory>
#include <vector>

#include "arbor/engine/expert_backend.h"
#include "arbor/kvcache/kv_tree.h"
#include "arbor/v1/common.pb.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "remote_expert_backend.h"

namespace arbor::router {

class RouterMetrics {
 public:
  // `inner` runs the experts; `remote` (may be null) is it when remote, for its call counters.
  // Both must outlive this.
  RouterMetrics(prometheus::Registry& registry, engine::ExpertBackend* inner,
                const RemoteExpertBackend* remote, int layers, int experts);
  ~RouterMetrics();

  // The backend the engine must run: `inner`, counting every routed token per (layer, expert).
  engine::ExpertBackend* experts();

  void ObserveStep(double seconds, int64_t prefill_tokens, int64_t decode_tokens);
  void ObserveFailedStep(double seconds);
  void AddReused(int64_t cached, int64_t fetched);
  // `tokens` new tokens sent `seconds_since_start` after the Extend arrived and
  // `seconds_since_last` after its previous tokens (the first ones: time to first token).
  void ObserveTokens(int tokens, bool first, double seconds_since_start, double seconds_since_last);
  void ObserveFinish(v1::FinishReason reason);
  // Brings the exported counters and gauges up to date.
  void Export(const kvcache::KvTreeStats& kv, int running, int waiting);

 private:
  class CountingBackend;
  std::unique_ptr<CountingBackend> counting_;
  const RemoteExpertBackend* remote_;

  prometheus::Family<prometheus::Counter>& tokens_;
  prometheus::Counter& prefill_;
  prometheus::Counter& decode_;
  prometheus::Counter& fetched_;
  prometheus::Counter& cached_;
  prometheus::Family<prometheus::Counter>& expert_tokens_family_;
  std::vector<std::vector<prometheus::Counter*>> expert_tokens_;  // [layer][expert]
  std::vector<std::vector<int64_t>> expert_tokens_seen_;          // exported so far
  prometheus::Counter& expert_calls_;
  prometheus::Counter& expert_retries_;
  int64_t calls_seen_ = 0, retries_seen_ = 0;
  prometheus::Gauge& kv_usage_;
  prometheus::Gauge& running_;
  prometheus::Gauge& waiting_;
  std::vector<prometheus::Counter*> finished_;  // by v1::FinishReason (none for UNSPECIFIED)
  std::vector<prometheus::Gauge*> worker_up_;   // by worker, as the remote backend lists them
  prometheus::Histogram& step_seconds_;
  prometheus::Histogram& step_tokens_;
  prometheus::Histogram& ttft_seconds_;
  prometheus::Histogram& itl_seconds_;
};

}  // namespace arbor::router
