// The router's metrics, besides the per-RPC pair (rpc::RpcMetrics):
//   arbor_router_tokens_total{kind=prefill|decode|fetched|cached}  counter
//   arbor_router_expert_tokens_total{layer,expert}                 counter
//   arbor_router_expert_calls_total, arbor_router_expert_retries_total  counters
//   arbor_router_kv_usage (0..1), arbor_router_live_sequences      gauges
//   arbor_router_step_duration_seconds, arbor_router_step_tokens   histograms
// Routed tokens are counted by wrapping the engine's expert backend (experts()); the remote
// backend's own counters are exported as deltas. Step-loop only: not thread-safe.
#pragma once

#include <memory>
#include <vector>

#include "arbor/engine/expert_backend.h"
#include "arbor/kvcache/kv_tree.h"
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
  // Brings the exported counters and gauges up to date.
  void Export(const kvcache::KvTreeStats& kv, int live_sequences);

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
  prometheus::Gauge& live_sequences_;
  prometheus::Histogram& step_seconds_;
  prometheus::Histogram& step_tokens_;
};

}  // namespace arbor::router
