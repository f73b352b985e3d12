// The router's MoE dispatch: an engine::ExpertBackend that runs each layer's experts on remote
// expert workers. At Create it asks every worker to Describe itself and builds the placement
// (layer, expert) -> replicas, refusing to start, with a message naming the gap, if any pair
// has no host. Per layer it sends every worker involved one RunExperts with exactly the rows
// routed to the experts it hosts, all workers in parallel; the partial sums that come back are
// added. Each pair goes to its least-loaded healthy replica; a worker that answers UNAVAILABLE
// or DEADLINE_EXCEEDED is marked unhealthy for a while and its rows are retried on another
// replica of the same experts. Not thread-safe: one engine step loop calls Run.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "arbor/common/dtype.h"
#include "arbor/engine/expert_backend.h"
#include "arbor/mesh/expert_client.h"
#include "arbor/model/config.h"
#include "arbor/model/expert_spec.h"
#include "arbor/v1/expert.grpc.pb.h"

namespace arbor::router {

struct RemoteExpertOptions {
  std::chrono::milliseconds call_timeout{10000};     // deadline of every RunExperts
  std::chrono::milliseconds describe_timeout{5000};  // deadline of the Describe calls at Create
  std::chrono::milliseconds unhealthy_for{2000};     // how long a failed worker is skipped
  int max_attempts = 3;                              // rounds per layer before giving up
  // Rows sent and partial sums returned in f32 (exact: the in-process engine's numbers) or bf16
  // (half the bytes per RunExperts; each crossing rounds to bf16's 8-bit mantissa).
  DType wire_dtype = DType::kF32;
};

struct RemoteExpertCounters {
  int64_t calls = 0;    // RunExperts sent
  int64_t retries = 0;  // RunExperts re-sent to another replica after a failure
  std::vector<int64_t> rows_per_worker;
};

using model::WorkerPlacement;

// Reads a placement file (model::ParsePlacement). INVALID_ARGUMENT naming the file and field.
absl::StatusOr<std::vector<WorkerPlacement>> LoadPlacementFile(const std::string& path, int layers,
                                                               int experts);

class RemoteExpertBackend : public engine::ExpertBackend {
 public:
  // FAILED_PRECONDITION naming the first (layer, expert) no worker hosts, or a worker whose
  // model shape disagrees with `config`; UNAVAILABLE naming a worker that does not answer.
  static absl::StatusOr<std::unique_ptr<RemoteExpertBackend>> Create(
      const std::vector<std::string>& worker_addresses, const model::ModelConfig& config,
      const RemoteExpertOptions& options = {});
  // The same with an explicit placement; also FAILED_PRECONDITION naming a worker that does not
  // host a pair the placement gives it.
  static absl::StatusOr<std::unique_ptr<RemoteExpertBackend>> Create(
      const std::vector<WorkerPlacement>& placement, const model::ModelConfig& config,
      const RemoteExpertOptions& options = {});
  ~RemoteExpertBackend() override;

  // UNAVAILABLE naming the (layer, expert) whose every replica failed, with the last error.
  absl::Status Run(const engine::RoutedTokens& tokens, float* out) override;
  const char* name() const override { return "remote"; }

  const RemoteExpertCounters& counters() const { return counters_; }
  // The workers, in the order WorkersHealthy reports them.
  std::vector<std::string> worker_addresses() const;
  // Per worker: whether the last call sent to it succeeded (true before any). A failed worker
  // is skipped for a while, then tried again: it stays false until a call to it succeeds, so a
  // dead worker reads false however often it is retried. Same thread as Run.
  std::vector<bool> WorkersHealthy() const;

 private:
  struct Worker;
  struct Batch;
  // One round of Run: the pending (token, slot) items grouped into one batch per worker, each
  // item on a healthy replica of its expert (the least loaded); none and `*error` set when an
  // expert id is bad or has no healthy replica.
  std::vector<std::unique_ptr<Batch>> Route(const engine::RoutedTokens& in,
                                            const std::vector<int>& pending,
                                            absl::Status* error) const;
  // Sends every batch to its worker at once and waits for all.
  void SendAll(const engine::RoutedTokens& in, std::vector<std::unique_ptr<Batch>>& batches);
  // Adds the answers into `out`; returns the items of the workers that failed with a retryable
  // status (marked unhealthy), or a failure that is not retryable.
  absl::StatusOr<std::vector<int>> Gather(std::vector<std::unique_ptr<Batch>>& batches,
                                          std::string* last_error, float* out);
  RemoteExpertBackend(const model::ModelConfig& config, const RemoteExpertOptions& options);
  // A healthy replica of (layer, expert) with the fewest rows assigned so far, or -1.
  int PickReplica(int layer, int expert, const std::vector<int>& load) const;

  model::ModelConfig config_;
  RemoteExpertOptions options_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::vector<std::vector<int>>> replicas_;  // [layer][expert] -> worker indices
  RemoteExpertCounters counters_;
};

}  // namespace arbor::router
