#include "router_service.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "arbor/common/status_macros.h"
#include "arbor/rpc/status.h"
#include "spdlog/spdlog.h"

namespace arbor::router {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

v1::FinishReason ToProto(engine::FinishReason r) {
  switch (r) {
    case engine::FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case engine::FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case engine::FinishReason::kEos:
      return v1::FINISH_REASON_EOS;
    case engine::FinishReason::kNone:
      break;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

// The generator's parameters for a request's (top_p 0 is read as 1).
engine::GenerationParams ParamsFromProto(const v1::GenerationParams& p) {
  engine::GenerationParams g;
  g.max_tokens = p.max_tokens();
  g.sampling.temperature = p.temperature();
  g.sampling.top_k = p.top_k();
  g.sampling.top_p = p.top_p() == 0 ? 1.0f : p.top_p();
  g.sampling.seed = p.seed();
  g.stop.assign(p.stop().begin(), p.stop().end());
  g.ignore_eos = p.ignore_eos();
  g.top_logprobs = p.top_logprobs();
  return g;
}

}  // namespace

// Counts routed tokens per (layer, expert), then runs the real backend.
class RouterService::CountingBackend : public engine::ExpertBackend {
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
  std::vector<std::vector<int64_t>> counts_;
};

// Everything one Extend carries through its stages. Fields up to `stream` are set by the gRPC
// handler; the rest belong to whichever stage holds the job (one at a time).
struct RouterService::Job {
  uint64_t id = 0;
  uint64_t seq = 0;
  v1::ExtendRequest request;
  engine::GenerationParams params;
  std::chrono::system_clock::time_point client_deadline;
  Clock::time_point t0;
  std::shared_ptr<rpc::EventStream<v1::ExtendEvent>> stream;
  std::atomic<bool> cancelled{false};
  std::atomic<bool> ended{false};

  std::vector<int> input;    // tokens to append
  std::vector<int> context;  // path tokens + input
  std::vector<v1::PathSegment> path;
  int path_len = 0;
  uint64_t version = 0;
  engine::SeqId local = 0;
  int reserved_blocks = 0;           // KV blocks held against the router's cache
  bool admitted = false;             // holds reserved_blocks
  int cached = 0;                    // context tokens found in the local cache
  int fetch_from = 0, fetch_to = 0;  // context positions whose KV comes from the kv-store
  std::vector<float> fetched;
  int gen_id = -1;
  size_t sent_tokens = 0, sent_bytes = 0;
  v1::CommitRequest commit;
  v1::ExtendResult result;
};

absl::StatusOr<std::unique_ptr<RouterService>> RouterService::Create(
    const model::ModelWeights* weights, const model::Tokenizer* tokenizer,
    engine::ExpertBackend* experts, const RemoteExpertBackend* remote,
    std::shared_ptr<grpc::Channel> kvstore, const RouterOptions& options,
    prometheus::Registry& registry) {
  if (weights == nullptr || experts == nullptr || kvstore == nullptr) {
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
      weights, tokenizer, experts, remote, std::move(kvstore), options, registry));
  ARBOR_ASSIGN_OR_RETURN(service->engine_,
                         engine::Engine::Create(weights, service->counting_.get(), options.engine));
  service->generator_ =
      std::make_unique<engine::Generator>(service->engine_.get(), tokenizer, options.prefill_chunk);
  service->capacity_blocks_ = service->engine_->kv_tree().stats().blocks_capacity;
  service->loop_ = std::thread([s = service.get()] { s->Loop(); });
  return service;
}

RouterService::RouterService(const model::ModelWeights* weights, const model::Tokenizer* tokenizer,
                             engine::ExpertBackend* experts, const RemoteExpertBackend* remote,
                             std::shared_ptr<grpc::Channel> kvstore, const RouterOptions& options,
                             prometheus::Registry& registry)
    : weights_(weights),
      tokenizer_(tokenizer),
      remote_(remote),
      options_(options),
      kvstore_(v1::KvStore::NewStub(std::move(kvstore))),
      counting_(std::make_unique<CountingBackend>(experts, weights->config().num_hidden_layers,
                                                  weights->config().num_local_experts)),
      rpc_metrics_("router", registry),
      tokens_family_(prometheus::BuildCounter()
                         .Name("arbor_router_tokens_total")
                         .Help("tokens by kind: prefill and decode (computed here), fetched (KV "
                               "read from the kv-store), cached (KV found in the router's cache)")
                         .Register(registry)),
      prefill_tokens_(tokens_family_.Add({{"kind", "prefill"}})),
      decode_tokens_(tokens_family_.Add({{"kind", "decode"}})),
      fetched_tokens_(tokens_family_.Add({{"kind", "fetched"}})),
      cached_tokens_(tokens_family_.Add({{"kind", "cached"}})),
      expert_tokens_family_(prometheus::BuildCounter()
                                .Name("arbor_router_expert_tokens_total")
                                .Help("tokens routed to each (layer, expert)")
                                .Register(registry)),
      expert_calls_(prometheus::BuildCounter()
                        .Name("arbor_router_expert_calls_total")
                        .Help("RunExperts calls sent to expert workers")
                        .Register(registry)
                        .Add({})),
      expert_retries_(prometheus::BuildCounter()
                          .Name("arbor_router_expert_retries_total")
                          .Help("RunExperts calls re-sent to another replica after a failure")
                          .Register(registry)
                          .Add({})),
      kv_usage_(prometheus::BuildGauge()
                    .Name("arbor_router_kv_usage")
                    .Help("fraction of the router's KV cache blocks in use, 0..1")
                    .Register(registry)
                    .Add({})),
      live_sequences_(prometheus::BuildGauge()
                          .Name("arbor_router_live_sequences")
                          .Help("Extend calls generating in the step loop")
                          .Register(registry)
                          .Add({})),
      step_seconds_(
          prometheus::BuildHistogram()
              .Name("arbor_router_step_duration_seconds")
              .Help("time of one batched forward step")
              .Register(registry)
              .Add({}, prometheus::Histogram::BucketBoundaries{1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2,
                                                               0.1, 0.3, 1, 3})),
      step_tokens_(prometheus::BuildHistogram()
                       .Name("arbor_router_step_tokens")
                       .Help("tokens fed in one batched step")
                       .Register(registry)
                       .Add({}, prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128,
                                                                        256, 512})),
      io_(options.io_threads) {
  const model::ModelConfig& c = weights->config();
  expert_tokens_.resize(c.num_hidden_layers);
  expert_tokens_seen_.assign(c.num_hidden_layers, std::vector<int64_t>(c.num_local_experts, 0));
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    for (int e = 0; e < c.num_local_experts; ++e) {
      expert_tokens_[l].push_back(&expert_tokens_family_.Add(
          {{"layer", std::to_string(l)}, {"expert", std::to_string(e)}}));
    }
  }
}

RouterService::~RouterService() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  stop_ = true;
  // Every stage now fails its job with UNAVAILABLE; the loop returns once none is left.
  if (loop_.joinable()) loop_.join();
}

void RouterService::Post(std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  inbox_.push_back(std::move(fn));
}

std::chrono::system_clock::time_point RouterService::Deadline(const Job& job) const {
  return std::min(job.client_deadline, std::chrono::system_clock::now() + options_.kvstore_timeout);
}

absl::Status RouterService::ValidateRequest(const v1::ExtendRequest& req) const {
  if (req.sequence_id() == 0) return absl::InvalidArgumentError("sequence_id is 0");
  if (tokenizer_ == nullptr && (req.has_text() || req.params().stop_size() > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(req.has_text() ? "text" : "params.stop",
                     " needs a tokenizer, and the model folder has none: send token_ids"));
  }
  const int vocab = weights_->config().vocab_size;
  if (req.has_text() && static_cast<int>(req.text().size()) > options_.max_text_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "text of ", req.text().size(), " bytes is over the limit of ", options_.max_text_bytes));
  }
  if (req.has_token_ids()) {
    const auto& ids = req.token_ids().ids();
    if (ids.size() > options_.engine.max_seq_tokens) {
      return absl::InvalidArgumentError(absl::StrCat("token_ids holds ", ids.size(),
                                                     " ids, over max_seq_tokens ",
                                                     options_.engine.max_seq_tokens));
    }
    for (int i = 0; i < ids.size(); ++i) {
      if (ids[i] < 0 || ids[i] >= vocab) {
        return absl::InvalidArgumentError(absl::StrCat("token_ids.ids[", i, "] = ", ids[i],
                                                       " outside the vocabulary [0, ", vocab, ")"));
      }
    }
  }
  const v1::GenerationParams& p = req.params();
  if (p.max_tokens() < 0 || p.max_tokens() > options_.max_new_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "params.max_tokens ", p.max_tokens(), " out of range [0, ", options_.max_new_tokens, "]"));
  }
  if (p.top_k() < 0 || p.top_k() > vocab) {
    return absl::InvalidArgumentError(
        absl::StrCat("params.top_k ", p.top_k(), " out of range [0, ", vocab, "]"));
  }
  // The rest of the ranges are the generator's own.
  if (absl::Status st = ParamsFromProto(p).Validate(); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("params.", st.message()));
  }
  return absl::OkStatus();
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
  absl::Status st = ValidateRequest(*req);
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
  if (tokenizer_ == nullptr) {
    const absl::Status st =
        absl::FailedPreconditionError("the model folder has no tokenizer.model");
    rpc_metrics_.Record("Tokenize", st, SecondsSince(t0));
    reactor->Finish(rpc::ToGrpcStatus(st));
    return reactor;
  }
  if (static_cast<int>(req->text().size()) > options_.max_text_bytes) {
    const absl::Status st = absl::InvalidArgumentError(absl::StrCat(
        "text of ", req->text().size(), " bytes is over the limit of ", options_.max_text_bytes));
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
  v1::GetPathRequest preq;
  preq.set_sequence_id(job->seq);
  preq.set_include_token_ids(true);
  v1::GetPathResponse path;
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(*job));
  const grpc::Status gs = kvstore_->GetPath(&ctx, preq, &path);
  if (!gs.ok()) {
    Post([this, job, st = rpc::FromGrpcStatus(gs, "kv-store GetPath")] { Fail(job, st); });
    return;
  }
  job->path.assign(path.segments().begin(), path.segments().end());
  job->path_len = path.length();
  job->version = path.version();
  job->context.assign(path.token_ids().begin(), path.token_ids().end());
  if (static_cast<int>(job->context.size()) != job->path_len) {
    Post([this, job, n = path.token_ids_size()] {
      Fail(job,
           absl::InternalError(absl::StrCat("kv-store GetPath returned ", n,
                                            " token ids for a path of length ", job->path_len)));
    });
    return;
  }
  job->context.insert(job->context.end(), job->input.begin(), job->input.end());
  Post([this, job] { Admit(job); });
}

void RouterService::Fetch(std::shared_ptr<Job> job) {
  if (job->cancelled || stop_) {
    Post([this, job] { Fail(job, Interrupted(*job)); });
    return;
  }
  const kvcache::KvLayout& layout = engine_->kv_tree().layout();  // immutable
  const size_t row = layout.token_floats();
  const int from = job->fetch_from, to = job->fetch_to;
  v1::ReadSegmentsRequest req;
  std::vector<int> range_start;  // absolute position of each range's first token
  for (const v1::PathSegment& s : job->path) {
    const int lo = std::max(from, s.start()), hi = std::min(to, s.start() + s.length());
    if (lo >= hi) continue;
    v1::ReadSegmentsRequest::Range* r = req.add_segments();
    r->set_segment_id(s.segment_id());
    r->set_first(lo - s.start());
    r->set_length(hi - lo);
    range_start.push_back(s.start());
  }
  job->fetched.assign(static_cast<size_t>(to - from) * row, 0.0f);
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(*job));
  auto reader = kvstore_->ReadSegments(&ctx, req);
  v1::SegmentChunk chunk;
  int received = 0, range = 0;
  absl::Status st;
  while (reader->Read(&chunk)) {
    while (range < req.segments_size() && req.segments(range).segment_id() != chunk.segment_id()) {
      ++range;
    }
    const v1::Tensor& kv = chunk.kv();
    const int n = kv.shape_size() == 5 ? static_cast<int>(kv.shape(0)) : -1;
    const int pos = range < req.segments_size() ? range_start[range] + chunk.first_token() : -1;
    if (range == req.segments_size() || kv.dtype() != v1::DTYPE_F32 || n < 1 ||
        std::vector<int64_t>(kv.shape().begin(), kv.shape().end()) != layout.TokensShape(n) ||
        kv.data().size() != n * row * sizeof(float) || pos < from || pos + n > to) {
      st = absl::InternalError(absl::StrCat("kv-store sent a malformed chunk of segment ",
                                            chunk.segment_id(), " at token ", chunk.first_token()));
      ctx.TryCancel();
      break;
    }
    std::memcpy(job->fetched.data() + (pos - from) * row, kv.data().data(), kv.data().size());
    received += n;
  }
  const grpc::Status fs = reader->Finish();
  if (st.ok()) st = rpc::FromGrpcStatus(fs, "kv-store ReadSegments");
  if (st.ok() && received != to - from) {
    st = absl::InternalError(
        absl::StrCat("kv-store sent ", received, " tokens of KV, not ", to - from));
  }
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
    v1::CommitResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline(*job));
    const grpc::Status cs = kvstore_->Commit(&ctx, job->commit, &resp);
    if (!cs.ok()) {
      End(*job, rpc::FromGrpcStatus(cs, "kv-store Commit"));
      return;
    }
    job->result.set_version(resp.version());
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
  // The most KV blocks this job can ever hold: its whole context (shared prefixes counted as if
  // they were not), every token it may generate, and a partial block at each end.
  const kvcache::KvLayout& layout = engine_->kv_tree().layout();
  const int bt = layout.block_tokens;
  const int longest = std::min(n + job->params.max_tokens + 1, options_.engine.max_seq_tokens);
  job->reserved_blocks = layout.BlocksFor(longest) + 2;
  if (job->reserved_blocks > capacity_blocks_) {
    const int need = job->reserved_blocks;
    job->reserved_blocks = 0;
    Fail(job, absl::ResourceExhaustedError(
                  absl::StrCat("sequence ", job->seq, " with ", n,
                               " context tokens and params.max_tokens ", job->params.max_tokens,
                               " may need ", need * bt, " tokens of KV; the router's cache holds ",
                               capacity_blocks_ * bt, " (--kv_cache_tokens)")));
    return;
  }
  waiting_.push_back(std::move(job));
  AdmitWaiting();
}

void RouterService::AdmitWaiting() {
  while (!waiting_.empty() &&
         reserved_blocks_ + waiting_.front()->reserved_blocks <= capacity_blocks_) {
    std::shared_ptr<Job> job = std::move(waiting_.front());
    waiting_.pop_front();
    reserved_blocks_ += job->reserved_blocks;
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
  absl::StatusOr<kvcache::KvTree::Created> created = engine_->AddSequence(job->context);
  if (!created.ok()) {
    Fail(job, created.status());
    return;
  }
  job->local = created->seq;
  job->cached = created->reused_tokens;
  // KV for positions [cached, path_len) exists in the kv-store. The last context token is
  // always computed here (its logits start the generation), so at most n - 1 are fetched.
  job->fetch_from = job->cached;
  job->fetch_to = std::max(job->cached, std::min(job->path_len, n - 1));
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
  for (size_t i = job.sent_tokens; i < r.token_ids.size(); ++i) {
    v1::ExtendEvent e;
    v1::GeneratedToken* t = e.mutable_token();
    t->set_id(r.token_ids[i]);
    t->set_logprob(r.logprobs[i]);
    const size_t k = static_cast<size_t>(job.params.top_logprobs);
    for (size_t j = i * k; j < (i + 1) * k && j < r.top_ids.size(); ++j) {
      v1::TokenLogprob* top = t->add_top_logprobs();
      top->set_id(r.top_ids[j]);
      top->set_logprob(r.top_logprobs[j]);
    }
    if (i + 1 == r.token_ids.size() && stable > job.sent_bytes) {
      t->set_text(r.text.substr(job.sent_bytes, stable - job.sent_bytes));
      job.sent_bytes = stable;
    }
    job.stream->Push(std::move(e));
  }
  job.sent_tokens = r.token_ids.size();
}

void RouterService::Complete(std::shared_ptr<Job> job) {
  Emit(*job, /*finished=*/true);
  const engine::GenerationResult& r = generator_->result(job->gen_id);
  const int first = job->path_len;
  const int end = engine_->Length(job->local);
  const int count = end - first;
  const kvcache::KvLayout& layout = engine_->kv_tree().layout();
  v1::CommitRequest& commit = job->commit;
  commit.set_sequence_id(job->seq);
  commit.set_expected_version(job->version);
  commit.mutable_token_ids()->Add(job->context.begin() + first, job->context.end());
  commit.mutable_token_ids()->Add(r.token_ids.begin(), r.token_ids.end());
  absl::Status st;
  if (commit.token_ids_size() != count) {
    st = absl::InternalError(absl::StrCat("the local sequence holds ", count,
                                          " new tokens of KV, not ", commit.token_ids_size()));
  } else if (count > 0) {
    v1::Tensor* kv = commit.mutable_kv();
    kv->set_dtype(v1::DTYPE_F32);
    const std::vector<int64_t> shape = layout.TokensShape(count);
    kv->mutable_shape()->Add(shape.begin(), shape.end());
    kv->mutable_data()->resize(count * layout.token_floats() * sizeof(float));
    st = engine_->kv_tree().ReadKv(job->local, first, count,
                                   reinterpret_cast<float*>(kv->mutable_data()->data()));
  }
  v1::ExtendResult& res = job->result;
  res.set_finish_reason(ToProto(r.finish));
  res.set_input_tokens(static_cast<int>(job->input.size()));
  res.set_generated_tokens(static_cast<int>(r.token_ids.size()));
  const int fetched = job->fetch_to - job->fetch_from;
  res.set_reused_tokens(job->cached + fetched);
  res.set_fetched_tokens(fetched);
  res.set_prefilled_tokens(static_cast<int>(job->context.size()) - job->cached - fetched);
  res.set_text(r.text);
  cached_tokens_.Increment(job->cached);
  fetched_tokens_.Increment(fetched);
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
  reserved_blocks_ -= job.reserved_blocks;
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

void RouterService::ExportMetrics() {
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
    if (rc.calls > calls_seen_)
      expert_calls_.Increment(static_cast<double>(rc.calls - calls_seen_));
    if (rc.retries > retries_seen_) {
      expert_retries_.Increment(static_cast<double>(rc.retries - retries_seen_));
    }
    calls_seen_ = rc.calls;
    retries_seen_ = rc.retries;
  }
  const kvcache::KvTreeStats s = engine_->kv_tree().stats();
  kv_usage_.Set(s.blocks_capacity > 0 ? static_cast<double>(s.blocks_in_use) / s.blocks_capacity
                                      : 0.0);
  live_sequences_.Set(static_cast<double>(running_.size()));
}

void RouterService::StepOnce() {
  // Drop what was cancelled.
  std::vector<std::shared_ptr<Job>> cancelled;
  for (const auto& [id, job] : running_) {
    if (job->cancelled || stop_) cancelled.push_back(job);
  }
  for (const auto& job : cancelled) Fail(job, Interrupted(*job));
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if ((*it)->cancelled || stop_) {
      std::shared_ptr<Job> job = std::move(*it);
      it = waiting_.erase(it);
      Fail(job, Interrupted(*job));
    } else {
      ++it;
    }
  }
  if (generator_->live() == 0) return;

  const engine::GeneratorStats before = generator_->stats();
  const auto t0 = Clock::now();
  absl::StatusOr<int> live = generator_->Step();
  step_seconds_.Observe(SecondsSince(t0));
  if (!live.ok()) {
    // The step changed nothing; every job in it fails (e.g. an expert with no live replica).
    std::vector<std::shared_ptr<Job>> all;
    for (const auto& [id, job] : running_) all.push_back(job);
    for (const auto& job : all) Fail(job, live.status());
    ExportMetrics();
    return;
  }
  const engine::GeneratorStats& after = generator_->stats();
  const int64_t prefill = after.prefill_tokens - before.prefill_tokens;
  const int64_t decode = after.decode_tokens - before.decode_tokens;
  prefill_tokens_.Increment(static_cast<double>(prefill));
  decode_tokens_.Increment(static_cast<double>(decode));
  step_tokens_.Observe(static_cast<double>(prefill + decode));
  std::vector<std::shared_ptr<Job>> done;
  for (const auto& [id, job] : running_) {
    if (generator_->finished(id)) {
      done.push_back(job);
    } else {
      Emit(*job, /*finished=*/false);
    }
  }
  for (const auto& job : done) Complete(job);
  ExportMetrics();
}

void RouterService::Loop() {
  for (;;) {
    std::deque<std::function<void()>> work;
    {
      absl::MutexLock lock(&mu_);
      if (generator_->live() == 0) {
        // Idle: sleep until something arrives (or a cancellation sweep is due).
        mu_.AwaitWithTimeout(absl::Condition(
                                 +[](RouterService* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) {
                                   return !s->inbox_.empty() || s->stopping_;
                                 },
                                 this),
                             absl::Milliseconds(100));
      }
      work.swap(inbox_);
      // Shutting down: every stage fails its job, so pending_ drains to 0.
      if (stopping_ && work.empty() && pending_ == 0) break;
    }
    for (auto& fn : work) fn();
    StepOnce();
  }
}

}  // namespace arbor::router
