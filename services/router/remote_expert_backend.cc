#include "remote_expert_backend.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "arbor/common/mapped_file.h"
#include "arbor/common/status_macros.h"
#include "arbor/model/expert_spec.h"
#include "arbor/rpc/status.h"
#include "spdlog/spdlog.h"

namespace arbor::router {

using Clock = std::chrono::steady_clock;

struct RemoteExpertBackend::Worker {
  std::string address;
  std::unique_ptr<mesh::ExpertClient> client;
  Clock::time_point unhealthy_until{};
  bool last_call_ok = true;  // the outcome of the last call sent to it (none yet: true)
};

// One worker's share of a layer in one attempt.
struct RemoteExpertBackend::Batch {
  std::vector<int> tokens;                   // distinct tokens, in first-seen order
  absl::flat_hash_map<int, int> local;       // token -> row in `tokens`
  absl::flat_hash_map<int, int> assignment;  // expert -> index into request assignments
  std::vector<int> items;                    // (token, slot) indices this batch covers
  v1::RunExpertsRequest request;
  v1::RunExpertsResponse response;
  std::unique_ptr<mesh::AsyncCall> call;  // kept until the call's callback has run
  absl::Status status;
};

namespace {

bool Retryable(const absl::Status& st) {
  return absl::IsUnavailable(st) || absl::IsDeadlineExceeded(st);
}

}  // namespace

RemoteExpertBackend::RemoteExpertBackend(const model::ModelConfig& config,
                                         const RemoteExpertOptions& options)
    : config_(config), options_(options) {}

std::vector<std::string> RemoteExpertBackend::worker_addresses() const {
  std::vector<std::string> out;
  for (const auto& w : workers_) out.push_back(w->address);
  return out;
}

std::vector<bool> RemoteExpertBackend::WorkersHealthy() const {
  std::vector<bool> out;
  for (const auto& w : workers_) out.push_back(w->last_call_ok);
  return out;
}

RemoteExpertBackend::~RemoteExpertBackend() = default;

absl::StatusOr<std::vector<WorkerPlacement>> LoadPlacementFile(const std::string& path, int layers,
                                                               int experts) {
  ARBOR_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return model::ParsePlacement(text, path, layers, experts);
}

absl::StatusOr<std::unique_ptr<RemoteExpertBackend>> RemoteExpertBackend::Create(
    const std::vector<std::string>& worker_addresses, const model::ModelConfig& config,
    const RemoteExpertOptions& options) {
  std::vector<WorkerPlacement> placement;
  for (const std::string& a : worker_addresses) placement.push_back({.address = a});
  return Create(placement, config, options);
}

absl::StatusOr<std::unique_ptr<RemoteExpertBackend>> RemoteExpertBackend::Create(
    const std::vector<WorkerPlacement>& placement, const model::ModelConfig& config,
    const RemoteExpertOptions& options) {
  if (placement.empty()) return absl::InvalidArgumentError("no expert workers given");
  std::unique_ptr<RemoteExpertBackend> b(new RemoteExpertBackend(config, options));
  b->replicas_.assign(config.num_hidden_layers,
                      std::vector<std::vector<int>>(config.num_local_experts));
  for (const WorkerPlacement& wp : placement) {
    const std::string& address = wp.address;
    auto w = std::make_unique<Worker>();
    w->address = address;
    // A worker still starting is waited for, up to the Describe deadline.
    w->client = std::make_unique<mesh::ExpertClient>(
        address, mesh::ClientOptions{.timeout = options.call_timeout});
    absl::StatusOr<v1::DescribeResponse> described =
        w->client->Describe(std::chrono::system_clock::now() + options.describe_timeout);
    if (!described.ok()) return absl::UnavailableError(described.status().message());
    const v1::DescribeResponse& d = *described;
    if (d.hidden_size() != config.hidden_size ||
        d.num_hidden_layers() != config.num_hidden_layers ||
        d.num_local_experts() != config.num_local_experts) {
      return absl::FailedPreconditionError(absl::StrCat(
          "expert worker ", address, " serves a model of hidden ", d.hidden_size(), ", ",
          d.num_hidden_layers(), " layers, ", d.num_local_experts(), " experts; the router's has ",
          config.hidden_size, ", ", config.num_hidden_layers, ", ", config.num_local_experts));
    }
    const int index = static_cast<int>(b->workers_.size());
    std::vector<model::ExpertKey> hosted;
    for (const v1::ExpertKey& k : d.experts()) {
      if (k.layer() < 0 || k.layer() >= config.num_hidden_layers || k.expert() < 0 ||
          k.expert() >= config.num_local_experts) {
        return absl::FailedPreconditionError(
            absl::StrCat("expert worker ", address, " describes (layer ", k.layer(), ", expert ",
                         k.expert(), "), outside the model"));
      }
      hosted.push_back({k.layer(), k.expert()});
    }
    if (wp.experts) {
      for (const model::ExpertKey& k : *wp.experts) {
        if (std::find(hosted.begin(), hosted.end(), k) == hosted.end()) {
          return absl::FailedPreconditionError(
              absl::StrCat("placement gives expert worker ", address, " (layer ", k.layer,
                           ", expert ", k.expert, "), which it does not host"));
        }
      }
      hosted = *wp.experts;
    }
    for (const model::ExpertKey& k : hosted) b->replicas_[k.layer][k.expert].push_back(index);
    b->workers_.push_back(std::move(w));
  }
  for (int l = 0; l < config.num_hidden_layers; ++l) {
    for (int e = 0; e < config.num_local_experts; ++e) {
      if (b->replicas_[l][e].empty()) {
        return absl::FailedPreconditionError(
            absl::StrCat("no expert worker hosts (layer ", l, ", expert ", e, ")"));
      }
    }
  }
  b->counters_.rows_per_worker.assign(b->workers_.size(), 0);
  return b;
}

int RemoteExpertBackend::PickReplica(int layer, int expert, const std::vector<int>& load) const {
  const Clock::time_point now = Clock::now();
  int best = -1;
  for (int w : replicas_[layer][expert]) {
    if (workers_[w]->unhealthy_until > now) continue;
    if (best < 0 || load[w] < load[best]) best = w;
  }
  return best;
}

std::vector<std::unique_ptr<RemoteExpertBackend::Batch>> RemoteExpertBackend::Route(
    const engine::RoutedTokens& in, const std::vector<int>& pending, absl::Status* error) const {
  // Route every pending (token, slot) to a replica of its expert, spreading the load.
  std::vector<int> load(workers_.size(), 0);
  std::vector<std::unique_ptr<Batch>> batches(workers_.size());
  for (int i : pending) {
    const int token = i / in.top_k, expert = in.expert_ids[i];
    if (expert < 0 || expert >= config_.num_local_experts) {
      *error = absl::InvalidArgumentError(absl::StrCat("expert id ", expert, " out of range"));
      return {};
    }
    const int w = PickReplica(in.layer, expert, load);
    if (w < 0) {
      *error = absl::UnavailableError(
          absl::StrCat("no healthy expert worker for (layer ", in.layer, ", expert ", expert, ")"));
      return {};
    }
    if (!batches[w]) batches[w] = std::make_unique<Batch>();
    Batch& b = *batches[w];
    auto [it, fresh] = b.local.try_emplace(token, static_cast<int>(b.tokens.size()));
    if (fresh) b.tokens.push_back(token);
    auto [a, new_expert] = b.assignment.try_emplace(expert, b.request.assignments_size());
    if (new_expert) b.request.add_assignments()->set_expert(expert);
    auto* assignment = b.request.mutable_assignments(a->second);
    assignment->add_row_ids(it->second);
    assignment->add_weights(in.weights[i]);
    b.items.push_back(i);
    ++load[w];
  }
  return batches;
}

void RemoteExpertBackend::SendAll(const engine::RoutedTokens& in,
                                  std::vector<std::unique_ptr<Batch>>& batches) {
  const int hidden = config_.hidden_size;
  int n_calls = 0;
  for (const auto& b : batches) n_calls += b != nullptr;
  absl::BlockingCounter done(n_calls);
  for (size_t w = 0; w < batches.size(); ++w) {
    if (!batches[w]) continue;
    Batch& b = *batches[w];
    b.request.set_layer(in.layer);
    v1::Tensor* rows = b.request.mutable_rows();
    rows->add_shape(static_cast<int64_t>(b.tokens.size()));
    rows->add_shape(hidden);
    std::string* data = rows->mutable_data();
    if (options_.wire_dtype == DType::kBF16) {
      rows->set_dtype(v1::DTYPE_BF16);
      b.request.set_output_dtype(v1::DTYPE_BF16);
      data->resize(b.tokens.size() * hidden * sizeof(uint16_t));
      auto* bits = reinterpret_cast<uint16_t*>(data->data());
      for (size_t r = 0; r < b.tokens.size(); ++r) {
        const float* src = in.x + static_cast<size_t>(b.tokens[r]) * hidden;
        for (int d = 0; d < hidden; ++d) bits[r * hidden + d] = F32ToBF16(src[d]);
      }
    } else {
      rows->set_dtype(v1::DTYPE_F32);
      data->resize(b.tokens.size() * hidden * sizeof(float));
      for (size_t r = 0; r < b.tokens.size(); ++r) {
        std::memcpy(data->data() + r * hidden * sizeof(float),
                    in.x + static_cast<size_t>(b.tokens[r]) * hidden, hidden * sizeof(float));
      }
    }
    ++counters_.calls;
    counters_.rows_per_worker[w] += static_cast<int64_t>(b.tokens.size());
    b.call = workers_[w]->client->RunExpertsAsync(&b.request, &b.response, mesh::kNoDeadline,
                                                  [&b, &done](absl::Status s) {
                                                    b.status = std::move(s);
                                                    done.DecrementCount();
                                                  });
  }
  done.Wait();
}

absl::StatusOr<std::vector<int>> RemoteExpertBackend::Gather(
    std::vector<std::unique_ptr<Batch>>& batches, std::string* last_error, float* out) {
  const int hidden = config_.hidden_size;
  std::vector<int> failed;
  for (size_t w = 0; w < batches.size(); ++w) {
    if (!batches[w]) continue;
    Batch& b = *batches[w];
    if (!b.status.ok()) {
      const absl::Status& st = b.status;
      if (!Retryable(st)) return st;
      *last_error = std::string(st.message());
      spdlog::warn("{}; retrying its rows on another replica", *last_error);
      workers_[w]->unhealthy_until = Clock::now() + options_.unhealthy_for;
      workers_[w]->last_call_ok = false;
      failed.insert(failed.end(), b.items.begin(), b.items.end());
      ++counters_.retries;
      continue;
    }
    workers_[w]->last_call_ok = true;
    const std::string& data = b.response.output().data();
    const bool bf16 = b.response.output().dtype() == v1::DTYPE_BF16;
    const size_t width = bf16 ? sizeof(uint16_t) : sizeof(float);
    if ((!bf16 && b.response.output().dtype() != v1::DTYPE_F32) ||
        data.size() != b.tokens.size() * hidden * width) {
      return absl::InternalError(absl::StrCat(
          "expert worker ", workers_[w]->address, " returned ", data.size(), " bytes of ",
          v1::DType_Name(b.response.output().dtype()), " for ", b.tokens.size(), " rows"));
    }
    for (size_t r = 0; r < b.tokens.size(); ++r) {
      float* dst = out + static_cast<size_t>(b.tokens[r]) * hidden;
      if (bf16) {
        const auto* src = reinterpret_cast<const uint16_t*>(data.data()) + r * hidden;
        for (int d = 0; d < hidden; ++d) dst[d] += BF16ToF32(src[d]);
      } else {
        const float* src = reinterpret_cast<const float*>(data.data()) + r * hidden;
        for (int d = 0; d < hidden; ++d) dst[d] += src[d];
      }
    }
  }
  return failed;
}

absl::Status RemoteExpertBackend::Run(const engine::RoutedTokens& in, float* out) {
  if (in.layer < 0 || in.layer >= config_.num_hidden_layers) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", in.layer, " out of range"));
  }
  std::vector<int> pending(static_cast<size_t>(in.n_tokens) * in.top_k);
  for (size_t i = 0; i < pending.size(); ++i) pending[i] = static_cast<int>(i);
  std::string last_error = "no attempt made";
  for (int attempt = 0; attempt < options_.max_attempts && !pending.empty(); ++attempt) {
    absl::Status routed;
    std::vector<std::unique_ptr<Batch>> batches = Route(in, pending, &routed);
    if (!routed.ok()) {
      if (!absl::IsUnavailable(routed)) return routed;
      return absl::UnavailableError(absl::StrCat(routed.message(), ": last error: ", last_error));
    }
    // Send every worker its rows, all in parallel; add the partial sums that come back and
    // re-route what failed.
    SendAll(in, batches);
    absl::StatusOr<std::vector<int>> failed = Gather(batches, &last_error, out);
    if (!failed.ok()) return failed.status();
    pending = *std::move(failed);
  }
  if (!pending.empty()) {
    return absl::UnavailableError(absl::StrCat(
        "(layer ", in.layer, ", expert ", in.expert_ids[pending[0]],
        ") failed on every replica after ", options_.max_attempts, " attempts: ", last_error));
  }
  return absl::OkStatus();
}

}  // namespace arbor::router
