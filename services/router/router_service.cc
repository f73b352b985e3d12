#include "router_service.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <utility>

#include "absl/algorithm/container.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "arbor/common/clock.h"
#include "arbor/common/status_macros.h"
#include "arbor/rpc/status.h"
#include "extend_job.h"
#include "spdlog/spdlog.h"

namespace arbor::router {
namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

absl::StatusOr<std::unique_ptr<RouterService>> RouterService::Create(
    const model::ModelWeights* weights, const model::Tokenizer* tokenizer,
    engine::ExpertBackend* experts, const RemoteExpertBackend* remote,
    std::vector<std::shared_ptr<grpc::Channel>> kvstores, const RouterOptions& options,
    prometheus::Registry& registry) {
  if (weights == nullptr || experts == nullptr || kvstores.empty() ||
      absl::c_linear_search(kvstores, nullptr)) {
    return absl::InvalidArgumentError("the router needs weights, experts and a kv-store");
  }
  if (options.prefill_chunk < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefill_chunk ", options.prefill_chunk, " must be positive"));
  }
  if (options.max_pending < 1 || options.io_threads < 1 || options.max_text_bytes < 1 ||
      options.max_new_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_pending ", options.max_pending, ", io_threads ", options.io_threads,
                     ", max_text_bytes ", options.max_text_bytes, " must be positive"));
  }
  auto service = std::unique_ptr<RouterService>(new RouterService(
      weights, tokenizer, experts, remote, std::move(kvstores), options, registry));
  ARBOR_ASSIGN_OR_RETURN(
      service->engine_,
      engine::Engine::Create(weights, service->metrics_.experts(), options.engine));
  // Resolved: the backend (cpu or cuda), and max_seq_tokens capped by the model's context, which
  // is what requests are checked against and what KV admission reserves at most.
  service->options_.engine = service->engine_->options();
  service->limits_.max_seq_tokens = service->options_.engine.max_seq_tokens;
  service->generator_ =
      std::make_unique<engine::Generator>(service->engine_.get(), tokenizer, options.prefill_chunk);
  // Admitted jobs are the ones that run: at most a step's sequences, tenants taking turns.
  service->admission_ = std::make_unique<KvAdmission<std::shared_ptr<Job>>>(
      service->engine_->kv_tree().stats().blocks_capacity, service->options_.engine.max_seqs);
  service->loop_ = std::thread([s = service.get()] { s->Loop(); });
  return service;
}

RouterService::RouterService(const model::ModelWeights* weights, const model::Tokenizer* tokenizer,
                             engine::ExpertBackend* experts, const RemoteExpertBackend* remote,
                             std::vector<std::shared_ptr<grpc::Channel>> kvstores,
                             const RouterOptions& options, prometheus::Registry& registry)
    : weights_(weights),
      tokenizer_(tokenizer),
      remote_(remote),
      options_(options),
      limits_{.vocab_size = weights->config().vocab_size,
              .has_tokenizer = tokenizer != nullptr,
              .max_text_bytes = options.max_text_bytes,
              .max_new_tokens = options.max_new_tokens,
              .max_seq_tokens = options.engine.max_seq_tokens},
      kvstore_(std::move(kvstores), options.kvstore_timeout),
      rpc_metrics_("router", registry, v1::Router::service_full_name()),
      metrics_(registry, experts, remote, weights->config().num_hidden_layers,
               weights->config().num_local_experts),
      io_(options.io_threads) {}

RouterService::~RouterService() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  stop_ = true;
  // Every stage now fails its job with UNAVAILABLE; the loop returns once none is left.
  if (loop_.joinable()) loop_.join();
}

grpc::ServerWriteReactor<v1::ExtendEvent>* RouterService::Extend(grpc::CallbackServerContext* ctx,
                                                                 const v1::ExtendRequest* req) {
  auto job = std::make_shared<Job>();
  auto stream = rpc::EventStream<v1::ExtendEvent>::Create([this, weak = std::weak_ptr<Job>(job)] {
    if (auto j = weak.lock()) j->cancelled = true;
    Post([] {});  // wakes the loop, which drops cancelled jobs
  });
  job->id = next_job_++;
  job->seq = req->sequence_id();
  job->t0 = Clock::now();
  job->stream = stream;
  absl::Status st =
      options_.peers.Check(*ctx, {rpc::Role::kPlanner, rpc::Role::kOperator}, "Extend");
  if (st.ok()) st = ValidateExtendRequest(*req, limits_);
  if (st.ok() && pending_.fetch_add(1) >= options_.max_pending) {
    --pending_;
    st = absl::ResourceExhaustedError(absl::StrCat("the router has ", options_.max_pending,
                                                   " Extend calls in flight; retry later"));
  }
  if (!st.ok()) {
    job->ended = true;
    rpc_metrics_.Record("Extend", st, SecondsSince(job->t0));
    stream->Close(st);
    return stream.get();
  }
  job->request = *req;
  job->client_deadline = ctx->deadline();
  job->params = ParamsFromProto(req->params());
  io_.Schedule([this, job] { Prepare(job); });
  return stream.get();
}

grpc::ServerUnaryReactor* RouterService::Tokenize(grpc::CallbackServerContext* ctx,
                                                  const v1::TokenizeRequest* req,
                                                  v1::TokenizeResponse* resp) {
  const auto t0 = Clock::now();
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  if (absl::Status st =
          options_.peers.Check(*ctx, {rpc::Role::kPlanner, rpc::Role::kOperator}, "Tokenize");
      !st.ok()) {
    rpc_metrics_.Record("Tokenize", st, SecondsSince(t0));
    reactor->Finish(rpc::ToGrpcStatus(st));
    return reactor;
  }
  if (tokenizer_ == nullptr) {
    const absl::Status st =
        absl::FailedPreconditionError("the model folder has no tokenizer.model");
    rpc_metrics_.Record("Tokenize", st, SecondsSince(t0));
    reactor->Finish(rpc::ToGrpcStatus(st));
    return reactor;
  }
  if (absl::Status st = ValidateTextBytes(req->text().size(), limits_); !st.ok()) {
    rpc_metrics_.Record("Tokenize", st, SecondsSince(t0));
    reactor->Finish(rpc::ToGrpcStatus(st));
    return reactor;
  }
  io_.Schedule([this, req, resp, reactor, t0] {
    if (req->add_bos() && tokenizer_->bos_id() >= 0) resp->add_ids(tokenizer_->bos_id());
    for (int id : tokenizer_->Encode(req->text(), /*add_special=*/false)) resp->add_ids(id);
    rpc_metrics_.Record("Tokenize", absl::OkStatus(), SecondsSince(t0));
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

// ---- io pool stages ----

absl::Status RouterService::Interrupted(const Job& job) const {
  if (job.cancelled) return absl::CancelledError("Extend cancelled; nothing committed");
  return absl::UnavailableError("the router is shutting down; nothing committed");
}

void RouterService::Prepare(std::shared_ptr<Job> job) {
  if (job->cancelled || stop_) {
    Post([this, job] { Fail(job, Interrupted(*job)); });
    return;
  }
  const v1::ExtendRequest& req = job->request;
  if (req.has_text()) {
    if (req.add_bos() && tokenizer_->bos_id() >= 0) job->input.push_back(tokenizer_->bos_id());
    for (int id : tokenizer_->Encode(req.text(), /*add_special=*/false)) job->input.push_back(id);
  } else if (req.has_token_ids()) {
    job->input.assign(req.token_ids().ids().begin(), req.token_ids().ids().end());
  }
  absl::StatusOr<KvPath> path =
      kvstore_.GetPath(job->seq, job->request.tenant(), job->client_deadline);
  if (!path.ok()) {
    Post([this, job, st = path.status()] { Fail(job, st); });
    return;
  }
  job->path = std::move(path->segments);
  job->path_len = path->length;
  job->version = path->version;
  job->context = std::move(path->tokens);
  job->context.insert(job->context.end(), job->input.begin(), job->input.end());
  Post([this, job] { Admit(job); });
}

void RouterService::Fetch(std::shared_ptr<Job> job) {
  if (job->cancelled || stop_) {
    Post([this, job] { Fail(job, Interrupted(*job)); });
    return;
  }
  const kvcache::KvLayout& layout = engine_->kv_tree().layout();  // immutable
  job->fetched.assign(static_cast<size_t>(job->fetch_to - job->fetch_from) * layout.token_floats(),
                      0.0f);
  const absl::Status st =
      kvstore_.Fetch(job->seq, job->request.tenant(), job->path, job->fetch_from, job->fetch_to,
                     layout, job->client_deadline, job->fetched.data());
  if (!st.ok()) {
    Post([this, job, st] { Fail(job, st); });
    return;
  }
  Post([this, job] { StartGeneration(job); });
}

void RouterService::CommitAndFinish(std::shared_ptr<Job> job) {
  if (job->cancelled || stop_) {
    End(*job, Interrupted(*job));
    return;
  }
  if (job->commit.token_ids_size() > 0) {
    absl::StatusOr<uint64_t> version = kvstore_.Commit(job->commit, job->client_deadline);
    if (!version.ok()) {
      End(*job, version.status());
      return;
    }
    job->result.set_version(*version);
  } else {
    job->result.set_version(job->version);
  }
  v1::ExtendEvent last;
  *last.mutable_result() = std::move(job->result);
  job->stream->Push(std::move(last));
  End(*job, absl::OkStatus());
}

// ---- step-loop stages ----

void RouterService::Admit(std::shared_ptr<Job> job) {
  if (job->cancelled || stop_) {
    Fail(job, Interrupted(*job));
    return;
  }
  const int n = static_cast<int>(job->context.size());
  if (n == 0) {
    Fail(job, absl::InvalidArgumentError(
                  absl::StrCat("sequence ", job->seq, " is empty and the request has no input")));
    return;
  }
  if (job->input.empty() && job->params.max_tokens == 0) {  // nothing to do
    job->result.set_finish_reason(v1::FINISH_REASON_LENGTH);
    io_.Schedule([this, job] { CommitAndFinish(job); });
    return;
  }
  // Leave room for the input and at least one generated token (complete_kv feeds it back).
  const int room = job->params.max_tokens > 0 ? 1 : 0;
  if (n + room > options_.engine.max_seq_tokens) {
    Fail(job, absl::OutOfRangeError(absl::StrCat(
                  "sequence ", job->seq, " of ", job->path_len, " tokens plus ", job->input.size(),
                  " input tokens leaves no room under max_seq_tokens ",
                  options_.engine.max_seq_tokens)));
    return;
  }
  const kvcache::KvLayout& layout = engine_->kv_tree().layout();
  job->reserved_blocks =
      BlocksNeeded(layout, n, job->params.max_tokens, options_.engine.max_seq_tokens);
  const absl::Status fits = admission_->Enqueue(
      job, job->reserved_blocks,
      absl::StrCat("sequence ", job->seq, " with ", n, " context tokens and params.max_tokens ",
                   job->params.max_tokens),
      layout.block_tokens, job->request.tenant());
  if (!fits.ok()) {
    job->reserved_blocks = 0;
    Fail(job, fits);
    return;
  }
  AdmitWaiting();
}

void RouterService::AdmitWaiting() {
  for (std::shared_ptr<Job>& job : admission_->AdmitWaiting()) {
    job->admitted = true;
    Place(std::move(job));
  }
}

void RouterService::Place(std::shared_ptr<Job> job) {
  if (job->cancelled || stop_) {
    Fail(job, Interrupted(*job));
    return;
  }
  const int n = static_cast<int>(job->context.size());
  // Scoring the input needs the logits after the token before it: the cache is searched for the
  // path only, and the path's last token is computed here rather than fetched.
  const bool score = job->params.prompt_logprobs;
  const int reusable = score ? job->path_len : n;
  absl::StatusOr<kvcache::KvTree::Created> created = engine_->AddSequence(
      absl::MakeConstSpan(job->context.data(), reusable),
      options_.share_prefix_across_tenants ? 0 : kvcache::PrefixSalt(job->request.tenant()));
  if (!created.ok()) {
    Fail(job, created.status());
    return;
  }
  job->local = created->seq;
  job->cached = created->reused_tokens;
  // KV for positions [cached, path_len) exists in the kv-store. The last context token is
  // always computed here (its logits start the generation), so at most n - 1 are fetched.
  job->fetch_from = job->cached;
  job->fetch_to = std::max(job->cached, std::min(score ? job->path_len - 1 : job->path_len, n - 1));
  if (job->fetch_to > job->fetch_from) {
    io_.Schedule([this, job] { Fetch(job); });
  } else {
    StartGeneration(job);
  }
}

void RouterService::StartGeneration(std::shared_ptr<Job> job) {
  if (job->cancelled || stop_) {
    Fail(job, Interrupted(*job));
    return;
  }
  if (job->fetch_to > job->fetch_from) {
    const absl::Status st = engine_->Append(
        job->local,
        absl::MakeConstSpan(job->context.data() + job->fetch_from, job->fetch_to - job->fetch_from),
        job->fetched.data());
    if (!st.ok()) {
      Fail(job, st);
      return;
    }
    job->fetched = {};
  }
  absl::StatusOr<int> id = generator_->Submit(job->context, job->params,
                                              {.sequence = job->local,
                                               .held = std::max(job->cached, job->fetch_to),
                                               .keep_sequence = true,
                                               .complete_kv = true});
  if (!id.ok()) {
    Fail(job, id.status());
    return;
  }
  job->gen_id = *id;
  running_.emplace(*id, job);
  spdlog::debug("extend job={} seq={} context={} cached={} fetched={}", job->id, job->seq,
                job->context.size(), job->cached, job->fetch_to - job->fetch_from);
}

void RouterService::Emit(Job& job, bool finished) {
  const engine::GenerationResult& r = generator_->result(job.gen_id);
  const size_t stable = finished ? r.text.size() : generator_->stable_text_bytes(job.gen_id);
  for (v1::ExtendEvent& e :
       TokenEvents(r, job.sent_tokens, job.params.top_logprobs, job.sent_bytes, stable)) {
    job.stream->Push(std::move(e));
  }
  if (r.token_ids.size() > job.sent_tokens) {
    job.sent_bytes = std::max(job.sent_bytes, stable);
    const auto now = Clock::now();
    metrics_.ObserveTokens(static_cast<int>(r.token_ids.size() - job.sent_tokens),
                           job.sent_tokens == 0,
                           std::chrono::duration<double>(now - job.t0).count(),
                           std::chrono::duration<double>(now - job.last_token).count());
    job.last_token = now;
  }
  job.sent_tokens = r.token_ids.size();
}

void RouterService::Complete(std::shared_ptr<Job> job) {
  Emit(*job, /*finished=*/true);
  const engine::GenerationResult& r = generator_->result(job->gen_id);
  const int first = job->path_len;
  const int count = engine_->Length(job->local) - first;
  std::vector<int> tokens(job->context.begin() + first, job->context.end());
  tokens.insert(tokens.end(), r.token_ids.begin(), r.token_ids.end());
  absl::Status st;
  if (static_cast<int>(tokens.size()) != count) {
    st = absl::InternalError(
        absl::StrCat("the local sequence holds ", count, " new tokens of KV, not ", tokens.size()));
  } else {
    absl::StatusOr<v1::CommitRequest> commit = AssembleCommit(
        job->seq, job->version, tokens, engine_->kv_tree().layout(),
        [&](float* kv) { return engine_->kv_tree().ReadKv(job->local, first, count, kv); });
    st = commit.status();
    if (commit.ok()) {
      job->commit = *std::move(commit);
      job->commit.set_tenant(job->request.tenant());
    }
  }
  v1::ExtendResult& res = job->result;
  res.set_finish_reason(FinishReasonToProto(r.finish));
  metrics_.ObserveFinish(res.finish_reason());
  res.set_input_tokens(static_cast<int>(job->input.size()));
  res.set_generated_tokens(static_cast<int>(r.token_ids.size()));
  const int fetched = job->fetch_to - job->fetch_from;
  res.set_reused_tokens(job->cached + fetched);
  res.set_fetched_tokens(fetched);
  res.set_prefilled_tokens(static_cast<int>(job->context.size()) - job->cached - fetched);
  res.set_text(r.text);
  if (job->params.prompt_logprobs) {
    AddPromptLogprobs(r, job->path_len, job->params.top_logprobs, &res);
  }
  metrics_.AddReused(job->cached, fetched);
  running_.erase(job->gen_id);
  generator_->Erase(job->gen_id);
  engine_->Release(job->local).IgnoreError();  // ours, live
  job->local = 0;
  if (!st.ok()) {
    End(*job, st);
    Unreserve(*job);
    return;
  }
  Unreserve(*job);  // its KV is copied out; the commit needs none of the cache
  io_.Schedule([this, job] { CommitAndFinish(job); });
}

void RouterService::Unreserve(Job& job) {
  if (!job.admitted) return;
  job.admitted = false;
  admission_->Release(job.reserved_blocks);
  AdmitWaiting();
}

void RouterService::Fail(const std::shared_ptr<Job>& job, const absl::Status& status) {
  if (job->gen_id >= 0) {
    running_.erase(job->gen_id);
    generator_->Erase(job->gen_id);
    job->gen_id = -1;
  }
  if (job->local != 0) {
    engine_->Release(job->local).IgnoreError();
    job->local = 0;
  }
  End(*job, status);
  Unreserve(*job);
}

void RouterService::End(Job& job, const absl::Status& status) {
  if (job.ended.exchange(true)) return;
  --pending_;
  if (!status.ok() && status.code() != absl::StatusCode::kCancelled) {
    spdlog::warn("extend job={} seq={} failed: {}", job.id, job.seq, status.ToString());
  }
  rpc_metrics_.Record("Extend", status, SecondsSince(job.t0));
  job.stream->Close(status);
}

}  // namespace arbor::router
