#include "router_metrics.h"

#include <algorithm>
#include <cctype>
#include <string>

#include "arbor/rpc/metric_families.h"

namespace arbor::router {

// Counts routed tokens per (layer, expert), then runs the real backend.
class RouterMetrics::CountingBackend : public engine::ExpertBackend {
 public:
  CountingBackend(engine::ExpertBackend* inner, int layers, int experts)
      : inner_(inner), counts_(layers, std::vector<int64_t>(experts, 0)) {}

  absl::Status Run(const engine::RoutedTokens& t, float* out) override {
    if (t.layer >= 0 && t.layer < static_cast<int>(counts_.size())) {
      std::vector<int64_t>& c = counts_[t.layer];
      for (int i = 0; i < t.n_tokens * t.top_k; ++i) {
        const int e = t.expert_ids[i];
        if (e >= 0 && e < static_cast<int>(c.size())) ++c[e];
      }
    }
    return inner_->Run(t, out);
  }
  const char* name() const override { return inner_->name(); }
  const std::vector<std::vector<int64_t>>& counts() const { return counts_; }

 private:
  engine::ExpertBackend* inner_;
  std::vector<std::vector<int64_t>> counts_;  // [layer][expert]
};

namespace {

std::string ReasonLabel(v1::FinishReason r) {
  std::string name = v1::FinishReason_Name(r);  // FINISH_REASON_EOS -> eos
  name = name.substr(std::string("FINISH_REASON_").size());
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

}  // namespace

using rpc::Counter;
using rpc::Gauge;
using rpc::Histogram;

RouterMetrics::RouterMetrics(prometheus::Registry& registry, engine::ExpertBackend* inner,
                             const RemoteExpertBackend* remote, int layers, int experts)
    : counting_(std::make_unique<CountingBackend>(inner, layers, experts)),
      remote_(remote),
      tokens_(rpc::CounterFamily(
          registry, "arbor_router_tokens_total",
          "tokens by kind: prefill and decode (computed here), fetched (KV read from the "
          "kv-store), cached (KV found in the router's cache)")),
      prefill_(tokens_.Add({{"kind", "prefill"}})),
      decode_(tokens_.Add({{"kind", "decode"}})),
      fetched_(tokens_.Add({{"kind", "fetched"}})),
      cached_(tokens_.Add({{"kind", "cached"}})),
      expert_tokens_family_(rpc::CounterFamily(registry, "arbor_router_expert_tokens_total",
                                               "tokens routed to each (layer, expert)")),
      expert_calls_(Counter(registry, "arbor_router_expert_calls_total",
                            "RunExperts calls sent to expert workers")),
      expert_retries_(Counter(registry, "arbor_router_expert_retries_total",
                              "RunExperts calls re-sent to another replica after a failure")),
      kv_usage_(Gauge(registry, "arbor_router_kv_usage",
                      "fraction of the router's KV cache blocks in use, 0..1")),
      running_(Gauge(registry, "arbor_router_running_extends",
                     "Extend calls generating in the step loop's batch")),
      waiting_(Gauge(registry, "arbor_router_waiting_extends",
                     "Extend calls accepted and not in the batch: reading their path or KV, "
                     "waiting for room in the KV cache, or committing")),
      step_seconds_(Histogram(registry, "arbor_router_step_duration_seconds",
                              "time of one batched forward step",
                              {1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1, 3})),
      step_tokens_(Histogram(registry, "arbor_router_step_tokens", "tokens fed in one batched step",
                             {1, 2, 4, 8, 16, 32, 64, 128, 256, 512})),
      ttft_seconds_(
          Histogram(registry, "arbor_router_time_to_first_token_seconds",
                    "from an Extend's arrival to its first generated token",
                    {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300})),
      itl_seconds_(Histogram(
          registry, "arbor_router_inter_token_latency_seconds",
          "between two generated tokens of one Extend",
          {0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.5, 5, 10})) {
  auto& finished = rpc::CounterFamily(registry, "arbor_router_extends_finished_total",
                                      "Extend generations finished, by finish reason");
  finished_.assign(v1::FINISH_REASON_CANCELLED + 1, nullptr);
  for (int r = v1::FINISH_REASON_LENGTH; r <= v1::FINISH_REASON_CANCELLED; ++r) {
    finished_[r] = &finished.Add({{"reason", ReasonLabel(static_cast<v1::FinishReason>(r))}});
  }
  if (remote_ != nullptr) {
    auto& up = prometheus::BuildGauge()
                   .Name("arbor_router_expert_worker_up")
                   .Help(
                       "1 when the router's last RunExperts call to the worker succeeded, 0 "
                       "when it failed (until one succeeds)")
                   .Register(registry);
    for (const std::string& worker : remote_->worker_addresses()) {
      worker_up_.push_back(&up.Add({{"worker", worker}}));
      worker_up_.back()->Set(1);
    }
  }
  expert_tokens_.resize(layers);
  expert_tokens_seen_.assign(layers, std::vector<int64_t>(experts, 0));
  for (int l = 0; l < layers; ++l) {
    for (int e = 0; e < experts; ++e) {
      expert_tokens_[l].push_back(&expert_tokens_family_.Add(
          {{"layer", std::to_string(l)}, {"expert", std::to_string(e)}}));
    }
  }
}

RouterMetrics::~RouterMetrics() = default;

engine::ExpertBackend* RouterMetrics::experts() { return counting_.get(); }

void RouterMetrics::ObserveStep(double seconds, int64_t prefill_tokens, int64_t decode_tokens) {
  step_seconds_.Observe(seconds);
  prefill_.Increment(static_cast<double>(prefill_tokens));
  decode_.Increment(static_cast<double>(decode_tokens));
  step_tokens_.Observe(static_cast<double>(prefill_tokens + decode_tokens));
}

void RouterMetrics::ObserveFailedStep(double seconds) { step_seconds_.Observe(seconds); }

void RouterMetrics::AddReused(int64_t cached, int64_t fetched) {
  cached_.Increment(static_cast<double>(cached));
  fetched_.Increment(static_cast<double>(fetched));
}

void RouterMetrics::ObserveTokens(int tokens, bool first, double seconds_since_start,
                                  double seconds_since_last) {
  if (tokens <= 0) return;
  if (first) {
    ttft_seconds_.Observe(seconds_since_start);
    --tokens;  // the first token has no gap before it
  }
  // Tokens that arrive together (a step that emitted several) share the gap evenly.
  for (int i = 0; i < tokens; ++i) itl_seconds_.Observe(seconds_since_last / tokens);
}

void RouterMetrics::ObserveFinish(v1::FinishReason reason) {
  if (reason > 0 && reason < static_cast<int>(finished_.size())) finished_[reason]->Increment();
}

void RouterMetrics::Export(const kvcache::KvTreeStats& kv, int running, int waiting) {
  const auto& counts = counting_->counts();
  for (size_t l = 0; l < counts.size(); ++l) {
    for (size_t e = 0; e < counts[l].size(); ++e) {
      const int64_t delta = counts[l][e] - expert_tokens_seen_[l][e];
      if (delta > 0) expert_tokens_[l][e]->Increment(static_cast<double>(delta));
      expert_tokens_seen_[l][e] = counts[l][e];
    }
  }
  if (remote_ != nullptr) {
    const RemoteExpertCounters& rc = remote_->counters();
    if (rc.calls > calls_seen_) {
      expert_calls_.Increment(static_cast<double>(rc.calls - calls_seen_));
    }
    if (rc.retries > retries_seen_) {
      expert_retries_.Increment(static_cast<double>(rc.retries - retries_seen_));
    }
    calls_seen_ = rc.calls;
    retries_seen_ = rc.retries;
  }
  kv_usage_.Set(kv.blocks_capacity > 0 ? static_cast<double>(kv.blocks_in_use) / kv.blocks_capacity
                                       : 0.0);
  running_.Set(static_cast<double>(running));
  waiting_.Set(static_cast<double>(std::max(0, waiting)));
  if (remote_ != nullptr) {
    const std::vector<bool> healthy = remote_->WorkersHealthy();
    for (size_t w = 0; w < worker_up_.size() && w < healthy.size(); ++w) {
      worker_up_[w]->Set(healthy[w] ? 1 : 0);
    }
  }
}

}  // namespace arbor::router
