#include "planner_service.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "arbor/common/status_macros.h"
#include "arbor/planner/search.h"
#include "arbor/rpc/status.h"
#include "spdlog/spdlog.h"

namespace arbor::planner {
namespace {

constexpr char kPrefix[] = "planner/task/";
using Clock = std::chrono::steady_clock;

bool ValidTaskId(const std::string& id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) return false;
  }
  return true;
}

absl::Status Range(const std::string& field, double v, double lo, double hi) {
  if (!(v >= lo && v <= hi)) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " ", v, " out of range [", lo, ", ", hi, "]"));
  }
  return absl::OkStatus();
}

absl::Status Bytes(const std::string& field, const std::string& v, size_t lo, size_t hi) {
  if (v.size() < lo || v.size() > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " of ", v.size(), " bytes out of range [", lo, ", ", hi, "]"));
  }
  return absl::OkStatus();
}

// The strategy's oneof name, as in field paths ("bfs", "dfs", "beam", "mcts").
const char* StrategyField(const v1::SearchSpec& s) {
  switch (s.strategy_case()) {
    case v1::SearchSpec::kBfs:
      return "bfs";
    case v1::SearchSpec::kDfs:
      return "dfs";
    case v1::SearchSpec::kBeam:
      return "beam";
    case v1::SearchSpec::kMcts:
      return "mcts";
    default:
      return "?";
  }
}

// The search library's spec for a request's (MCTS expands 2 children per node).
absl::StatusOr<SearchSpec> SpecFromProto(const v1::SearchSpec& s) {
  switch (s.strategy_case()) {
    case v1::SearchSpec::kBfs:
      return SearchSpec{.strategy = Strategy::kBfs,
                        .breadth = s.bfs().breadth(),
                        .proposals_per_node = s.bfs().proposals_per_node(),
                        .root_proposals = s.bfs().root_proposals(),
                        .depth = s.bfs().depth()};
    case v1::SearchSpec::kDfs:
      return SearchSpec{.strategy = Strategy::kDfs,
                        .proposals_per_node = s.dfs().proposals_per_node(),
                        .root_proposals = s.dfs().root_proposals(),
                        .depth = s.dfs().depth(),
                        .value_threshold = s.dfs().value_threshold()};
    case v1::SearchSpec::kBeam:
      return SearchSpec{.strategy = Strategy::kBeam,
                        .breadth = s.beam().beam_width(),
                        .proposals_per_node = s.beam().proposals_per_node(),
                        .root_proposals = s.beam().root_proposals(),
                        .depth = s.beam().depth()};
    case v1::SearchSpec::kMcts:
      return SearchSpec{.strategy = Strategy::kMcts,
                        .proposals_per_node = 2,
                        .depth = s.mcts().depth(),
                        .uct_c = s.mcts().uct_c(),
                        .rollouts = s.mcts().rollouts()};
    default:
      return absl::InvalidArgumentError("search has no strategy (bfs, dfs, beam or mcts)");
  }
}

v1::Node ToProto(const SearchNode& n) {
  v1::Node p;
  p.set_id(n.id);
  p.set_parent_id(n.parent);
  p.set_depth(n.depth);
  p.set_thought(n.thought);
  p.set_state(n.state);
  p.set_score(n.score);
  p.set_pruned(n.pruned);
  p.set_logprob(n.logprob);
  return p;
}

}  // namespace

struct PlannerService::Task {
  std::string id, tenant;
  v1::SolveRequest request;
  std::atomic<bool> cancel{false};
  std::thread thread;
  std::atomic<int64_t> finished_at{0};  // when final_status was set (steady clock ticks)

  mutable absl::Mutex mu;
  v1::TaskStatus status ABSL_GUARDED_BY(mu) = v1::TASK_STATUS_RUNNING;
  std::string error ABSL_GUARDED_BY(mu);
  std::vector<v1::SolveEvent> events ABSL_GUARDED_BY(mu);
  std::vector<std::shared_ptr<Stream>> watchers ABSL_GUARDED_BY(mu);
  std::optional<absl::Status> final_status ABSL_GUARDED_BY(mu);
  v1::SolveResult result ABSL_GUARDED_BY(mu);
  // The checkpoint: the tree as of the last round, and the sequences the task holds.
  v1::TaskCheckpoint checkpoint ABSL_GUARDED_BY(mu);

  v1::Task Snapshot() const {
    absl::MutexLock lock(&mu);
    v1::Task t;
    t.set_task_id(id);
    t.set_tenant(tenant);
    t.set_status(status);
    t.set_problem(request.problem());
    for (const auto& n : checkpoint.nodes()) *t.add_nodes() = n.node();
    if (status == v1::TASK_STATUS_SUCCEEDED) *t.mutable_result() = result;
    t.set_error(error);
    return t;
  }
};

absl::StatusOr<std::unique_ptr<PlannerService>> PlannerService::Create(
    std::shared_ptr<grpc::Channel> kvstore, std::shared_ptr<grpc::Channel> router,
    statestore::StateStore* state, const PlannerOptions& options, prometheus::Registry& registry) {
  std::unique_ptr<PlannerService> s(
      new PlannerService(std::move(kvstore), std::move(router), state, options, registry));
  const std::filesystem::path dir = std::filesystem::path(options.model_dir) / "presets";
  std::error_code ec;
  if (std::filesystem::is_directory(dir, ec)) {
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
      if (entry.path().extension() != ".json") continue;
      ARBOR_ASSIGN_OR_RETURN(Templates t, ParsePreset(entry.path().string()));
      s->presets_[entry.path().stem().string()] = std::move(t);
    }
  }
  ARBOR_RETURN_IF_ERROR(s->Resume());
  return s;
}

PlannerService::PlannerService(std::shared_ptr<grpc::Channel> kvstore,
                               std::shared_ptr<grpc::Channel> router, statestore::StateStore* state,
                               const PlannerOptions& options, prometheus::Registry& registry)
    : kv_(v1::KvStore::NewStub(std::move(kvstore))),
      router_(v1::Router::NewStub(std::move(router))),
      state_(state),
      options_(options),
      rpc_metrics_("planner", registry),
      tasks_total_(prometheus::BuildCounter()
                       .Name("arbor_planner_tasks_total")
                       .Help("tasks finished, by status")
                       .Register(registry)),
      running_gauge_(prometheus::BuildGauge()
                         .Name("arbor_planner_running_tasks")
                         .Help("tasks running now")
                         .Register(registry)
                         .Add({})),
      tokens_total_(prometheus::BuildCounter()
                        .Name("arbor_planner_tokens_total")
                        .Help("tokens of finished tasks: generated, prefilled, reused")
                        .Register(registry)),
      io_(options.io_threads) {}

PlannerService::~PlannerService() {
  stopping_ = true;
  std::vector<std::shared_ptr<Task>> all;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [id, t] : tasks_) all.push_back(t);
  }
  for (auto& t : all) t->cancel = true;
  for (auto& t : all) {
    if (t->thread.joinable()) t->thread.join();
  }
}

absl::Status PlannerService::ValidateRequest(const v1::SolveRequest& req) const {
  if (!req.task_id().empty() && !ValidTaskId(req.task_id())) {
    return absl::InvalidArgumentError("task_id must be 1..128 characters of [A-Za-z0-9_-]");
  }
  ARBOR_RETURN_IF_ERROR(Bytes("tenant", req.tenant(), 0, 64));
  ARBOR_RETURN_IF_ERROR(Bytes("problem", req.problem(), 1, 4096));
  if (req.has_templates()) {
    const v1::TaskTemplates& t = req.templates();
    ARBOR_RETURN_IF_ERROR(Bytes("templates.propose", t.propose(), 1, 16384));
    ARBOR_RETURN_IF_ERROR(Bytes("templates.value", t.value(), 0, 16384));
    ARBOR_RETURN_IF_ERROR(Bytes("templates.answer", t.answer(), 0, 16384));
    ARBOR_RETURN_IF_ERROR(Bytes("templates.step_stop", t.step_stop(), 1, 64));
    ARBOR_RETURN_IF_ERROR(Bytes("templates.answer_prefix", t.answer_prefix(), 0, 256));
  } else if (!presets_.count(req.preset())) {
    return absl::InvalidArgumentError(
        absl::StrCat("preset \"", req.preset(), "\" unknown to this model"));
  }
  const v1::SearchSpec& s = req.search();
  ARBOR_ASSIGN_OR_RETURN(SearchSpec spec, SpecFromProto(s));
  if (absl::Status st = spec.Validate(); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("search.", StrategyField(s), ".", st.message()));
  }
  if (s.value().has_sampled()) {
    ARBOR_RETURN_IF_ERROR(
        Range("search.value.sampled.samples", s.value().sampled().samples(), 1, 16));
  }
  ARBOR_RETURN_IF_ERROR(
      Range("search.generation.temperature", s.generation().temperature(), 0, 100));
  ARBOR_RETURN_IF_ERROR(Range("search.generation.top_k", s.generation().top_k(), 0, 1 << 20));
  ARBOR_RETURN_IF_ERROR(Range("search.generation.top_p", s.generation().top_p(), 0, 1));
  if (s.generation().max_thought_tokens() != 0) {
    ARBOR_RETURN_IF_ERROR(Range("search.generation.max_thought_tokens",
                                s.generation().max_thought_tokens(), 1, 1024));
  }
  const v1::Budget& b = req.budget();
  if (b.max_nodes() != 0)
    ARBOR_RETURN_IF_ERROR(Range("budget.max_nodes", b.max_nodes(), 1, 100000));
  if (b.max_tokens() != 0) {
    ARBOR_RETURN_IF_ERROR(Range("budget.max_tokens", static_cast<double>(b.max_tokens()), 1, 1e8));
  }
  if (b.deadline_ms() != 0) {
    ARBOR_RETURN_IF_ERROR(Range("budget.deadline_ms", b.deadline_ms(), 1, 3600000));
  }
  return absl::OkStatus();
}

absl::StatusOr<Templates> PlannerService::TemplatesFor(const v1::SolveRequest& req) const {
  if (!req.has_templates()) {
    auto it = presets_.find(req.preset());
    if (it == presets_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("preset \"", req.preset(), "\" unknown"));
    }
    return it->second;
  }
  const v1::TaskTemplates& p = req.templates();
  Templates t{.propose = p.propose(),
              .value = p.value(),
              .answer = p.answer(),
              .step_stop = p.step_stop(),
              .answer_prefix = p.answer_prefix()};
  for (const auto& [label, score] : p.value_labels()) t.value_labels[label] = score;
  return t;
}

std::shared_ptr<PlannerService::Task> PlannerService::Find(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  auto it = tasks_.find(id);
  return it == tasks_.end() ? nullptr : it->second;
}

void PlannerService::Attach(Task& task, std::shared_ptr<Stream> stream) {
  absl::MutexLock lock(&task.mu);
  for (const v1::SolveEvent& e : task.events) stream->Push(e);
  if (task.final_status) {
    stream->Close(*task.final_status);
  } else {
    task.watchers.push_back(std::move(stream));
  }
}

void PlannerService::Publish(Task& task, v1::SolveEvent event) {
  absl::MutexLock lock(&task.mu);
  for (auto& w : task.watchers) w->Push(event);
  task.events.push_back(std::move(event));
}

void PlannerService::Checkpoint(Task& task) {
  std::string bytes;
  {
    absl::MutexLock lock(&task.mu);
    task.checkpoint.set_status(task.status);
    task.checkpoint.set_error(task.error);
    bytes = task.checkpoint.SerializeAsString();
  }
  if (auto st = state_->Put(kPrefix + task.id, bytes); !st.ok()) {
    spdlog::warn("task={} checkpoint failed: {}", task.id, st.status().ToString());
  }
}

grpc::ServerWriteReactor<v1::SolveEvent>* PlannerService::Solve(grpc::CallbackServerContext* ctx,
                                                                const v1::SolveRequest* req) {
  auto stream = Stream::Create();
  const auto t0 = Clock::now();
  auto fail = [&](const absl::Status& st) {
    rpc_metrics_.Record("Solve", st, std::chrono::duration<double>(Clock::now() - t0).count());
    stream->Close(st);
    return stream.get();
  };
  if (absl::Status st = ValidateRequest(*req); !st.ok()) return fail(st);
  if (!req->task_id().empty()) {
    if (auto existing = Find(req->task_id())) {  // idempotent: attach to it
      Attach(*existing, stream);
      return stream.get();
    }
  }
  auto task = std::make_shared<Task>();
  task->id = req->task_id().empty()
                 ? absl::StrCat("t", std::chrono::system_clock::now().time_since_epoch().count(),
                                "-", next_id_++)
                 : req->task_id();
  task->tenant = req->tenant();
  task->request = *req;
  task->request.set_task_id(task->id);
  {
    absl::MutexLock lock(&mu_);
    int running = 0, tenant_running = 0;
    for (const auto& [id, t] : tasks_) {
      if (t->cancel) continue;
      {
        absl::MutexLock tl(&t->mu);
        if (t->final_status) continue;
      }
      ++running;
      tenant_running += t->tenant == task->tenant;
    }
    if (running >= options_.max_tasks) {
      return fail(absl::ResourceExhaustedError(absl::StrCat(
          "the planner runs ", running, " tasks, its limit (--max_tasks); retry later")));
    }
    if (tenant_running >= options_.max_tasks_per_tenant) {
      return fail(absl::ResourceExhaustedError(
          absl::StrCat("tenant \"", task->tenant, "\" runs ", tenant_running,
                       " tasks, its limit (--max_tasks_per_tenant)")));
    }
    if (tasks_.count(task->id)) {  // raced with another Solve of the same id
      Attach(*tasks_[task->id], stream);
      return stream.get();
    }
    tasks_[task->id] = task;
    // Finished tasks are kept for GetTask / ListTasks / Solve by id, the oldest dropped first.
    std::vector<std::shared_ptr<Task>> finished;
    for (const auto& [id, t] : tasks_) {
      absl::MutexLock tl(&t->mu);
      if (t->final_status) finished.push_back(t);
    }
    if (static_cast<int>(finished.size()) > options_.max_finished_tasks) {
      std::sort(finished.begin(), finished.end(),
                [](const auto& a, const auto& b) { return a->finished_at < b->finished_at; });
      for (size_t i = 0; i + options_.max_finished_tasks < finished.size(); ++i) {
        if (finished[i]->thread.joinable()) finished[i]->thread.join();  // it has ended
        tasks_.erase(finished[i]->id);
      }
    }
  }
  Attach(*task, stream);
  Start(task, nullptr);
  return stream.get();
}

void PlannerService::Start(std::shared_ptr<Task> task, const v1::TaskCheckpoint* checkpoint) {
  v1::TaskCheckpoint cp;
  if (checkpoint != nullptr) cp = *checkpoint;
  running_gauge_.Increment();
  task->thread =
      std::thread([this, task, cp = std::move(cp)]() mutable { Run(task, std::move(cp)); });
}

void PlannerService::Run(std::shared_ptr<Task> task, v1::TaskCheckpoint restored) {
  const auto t0 = Clock::now();
  const v1::SolveRequest& req = task->request;
  const v1::SearchSpec& s = req.search();
  const absl::StatusOr<SearchSpec> spec = SpecFromProto(s);  // Solve validated it
  Budget budget;
  budget.max_nodes =
      req.budget().max_nodes() > 0 ? req.budget().max_nodes() : options_.default_max_nodes;
  budget.max_tokens =
      req.budget().max_tokens() > 0 ? req.budget().max_tokens() : options_.default_max_tokens;
  SourceOptions so;
  so.value = s.value().has_label()     ? ValueMode::kLabel
             : s.value().has_sampled() ? ValueMode::kSampled
                                       : ValueMode::kLogProb;
  so.value_samples = std::max(1, s.value().sampled().samples());
  so.label_expected = s.value().label().expected();
  so.temperature = s.generation().temperature() > 0 ? s.generation().temperature() : 0.8f;
  so.top_k = s.generation().top_k();
  so.top_p = s.generation().top_p() > 0 ? s.generation().top_p() : 1.0f;
  so.max_thought_tokens =
      s.generation().max_thought_tokens() > 0 ? s.generation().max_thought_tokens() : 64;
  so.seed = s.generation().seed();
  so.call_timeout = options_.call_timeout;
  if (req.budget().deadline_ms() > 0) {
    so.deadline =
        std::chrono::system_clock::now() + std::chrono::milliseconds(req.budget().deadline_ms());
    budget.deadline = Clock::now() + std::chrono::milliseconds(req.budget().deadline_ms());
  }

  absl::StatusOr<Templates> templates = TemplatesFor(req);
  MeshThoughtSource source(kv_.get(), router_.get(), &io_, req.problem(),
                           templates.ok() ? *templates : Templates{}, so,
                           [task] { return task->cancel.load(); });
  // Every sequence of the task carries this owner tag in the kv-store.
  const std::string owner = kPrefix + task->id;
  auto release = [&](const std::vector<uint64_t>& seqs) {
    if (!seqs.empty()) source.Release(seqs).IgnoreError();
  };

  absl::Status status = templates.ok() ? spec.status() : templates.status();
  SearchTree tree("");
  if (status.ok() && restored.nodes_size() > 0) {
    // Resume: the tree as checkpointed (sequences a crash left unrecorded carry the task's
    // owner tag and go when the task ends).
    source.set_counts({restored.counts().tokens_generated(), restored.counts().tokens_prefilled(),
                       restored.counts().tokens_reused()});
    // A round the crash cut short left unscored nodes at the end (ids grow round by round):
    // drop them, and let their parents be expanded again.
    int keep = restored.nodes_size();
    for (int i = 1; i < restored.nodes_size(); ++i) {
      if (!restored.nodes(i).scored()) {
        keep = i;
        break;
      }
    }
    for (int i = 0; i < keep; ++i) {
      const auto& cn = restored.nodes(i);
      if (i > 0) {
        tree.AddChild(cn.node().parent_id(), {.thought = cn.node().thought(),
                                              .state = cn.node().state(),
                                              .answer = cn.answer(),
                                              .answer_text = cn.answer_text(),
                                              .handle = cn.sequence_id(),
                                              .logprob = cn.node().logprob()});
      }
      SearchNode& n = tree.mutable_node(i);
      if (i == 0) {  // children got these from AddChild
        n.state = cn.node().state();
        n.handle = cn.sequence_id();
      }
      n.score = cn.node().score();
      n.scored = cn.scored();
      n.pruned = cn.node().pruned();
      n.expanded = cn.expanded();
    }
    for (int i = keep; i < restored.nodes_size(); ++i) {
      const int parent = restored.nodes(i).node().parent_id();
      tree.mutable_node(parent).expanded = false;
      restored.mutable_nodes(parent)->set_expanded(false);
    }
    while (restored.nodes_size() > keep) restored.mutable_nodes()->RemoveLast();
    // Nodes the search may still expand need their sequences; any the kv-store lost (it
    // restarted, or evicted them) are rebuilt from the checkpointed token ids.
    int rebuilt = 0;
    for (int i = 0; i < tree.size() && status.ok(); ++i) {
      const SearchNode& n = tree.node(i);
      if (n.pruned || n.answer || n.expanded) continue;  // only these are forked again
      absl::StatusOr<bool> exists = source.Exists(n.handle);
      if (!exists.ok()) {
        status = exists.status();
        break;
      }
      if (*exists) continue;
      std::vector<int> tokens;
      for (int id : tree.PathTo(i)) {
        const auto& own = restored.nodes(id).token_ids();
        tokens.insert(tokens.end(), own.begin(), own.end());
      }
      absl::StatusOr<uint64_t> seq = source.Rebuild(tokens, owner);
      if (!seq.ok()) {
        status = seq.status();
        break;
      }
      tree.mutable_node(i).handle = *seq;
      restored.mutable_nodes(i)->set_sequence_id(*seq);
      ++rebuilt;
    }
    {
      absl::MutexLock lock(&task->mu);
      task->checkpoint = restored;
    }
    spdlog::info("task={} resumed with {} nodes, {} sequences rebuilt from token ids", task->id,
                 tree.size(), rebuilt);
  } else if (status.ok()) {
    absl::StatusOr<uint64_t> root = source.CreateRoot(owner);
    status = root.status();
    if (root.ok()) tree.mutable_node(0).handle = *root;
  }

  // Events, and the checkpoint kept in step with the tree.
  auto record = [&](const SearchNode& n) {
    absl::MutexLock lock(&task->mu);
    while (task->checkpoint.nodes_size() <= n.id) task->checkpoint.add_nodes();
    auto* cn = task->checkpoint.mutable_nodes(n.id);
    *cn->mutable_node() = ToProto(n);
    cn->set_sequence_id(n.pruned ? 0 : n.handle);
    cn->set_scored(n.scored);
    cn->set_answer(n.answer);
    cn->set_answer_text(n.answer_text);
    cn->set_expanded(n.expanded);
    if (cn->token_ids_size() == 0) {
      const std::vector<int>& ids = source.token_ids(n.handle);
      cn->mutable_token_ids()->Add(ids.begin(), ids.end());
    }
  };
  auto event = [&](const SearchNode& n, auto setter) {
    v1::SolveEvent e;
    *(e.*setter)() = ToProto(n);
    Publish(*task, std::move(e));
  };
  auto counts = [&] {
    v1::SearchCounts c;
    c.set_nodes(tree.size());
    c.set_tokens_generated(source.counts().generated);
    c.set_tokens_prefilled(source.counts().prefilled);
    c.set_tokens_reused(source.counts().reused);
    c.set_wall_seconds(std::chrono::duration<double>(Clock::now() - t0).count());
    return c;
  };
  SearchObserver observer{.created =
                              [&](const SearchNode& n) {
                                record(tree.node(n.parent));  // now expanded
                                record(n);
                                event(n, &v1::SolveEvent::mutable_node_created);
                              },
                          .scored =
                              [&](const SearchNode& n) {
                                record(n);
                                event(n, &v1::SolveEvent::mutable_node_scored);
                              },
                          .pruned =
                              [&](const SearchNode& n) {
                                record(n);
                                event(n, &v1::SolveEvent::mutable_node_pruned);
                                release({n.handle});
                              },
                          .answer =
                              [&](const SearchNode& n) {
                                v1::SolveEvent e;
                                e.set_answer_found(n.answer_text);
                                Publish(*task, std::move(e));
                              },
                          .round =
                              [&] {
                                // Every change of the round is recorded already (a parent's
                                // expanded flag with its first child).
                                {
                                  absl::MutexLock lock(&task->mu);
                                  *task->checkpoint.mutable_counts() = counts();
                                }
                                Checkpoint(*task);
                                v1::SolveEvent e;
                                *e.mutable_progress() = counts();
                                Publish(*task, std::move(e));
                              }};

  v1::SolveResult result;
  if (status.ok()) {
    record(tree.node(0));
    {
      absl::MutexLock lock(&task->mu);
      *task->checkpoint.mutable_request() = req;
    }
    Checkpoint(*task);
    absl::StatusOr<SearchResult> r = RunSearch(*spec, budget, source, tree, observer);
    status = r.status();
    if (r.ok()) {
      const SearchNode& best = tree.node(r->best_node);
      result.set_task_id(task->id);
      result.set_solved(r->answer_node >= 0);
      result.set_answer(r->answer_node >= 0 ? best.answer_text : best.state);
      for (int id : r->best_path) result.add_best_path(id);
      result.set_score(best.score);
      *result.mutable_counts() = counts();
      spdlog::info("task={} done: {} nodes, stop={}, solved={}", task->id, tree.size(),
                   StopReasonName(r->stop), result.solved());
    }
  }
  // Ends the task: releases every sequence it holds (by owner, so whatever a crash left behind
  // too), records the outcome, tells the watchers.
  const bool cancelled = task->cancel.load();
  if (cancelled && stopping_) {
    // The planner is shutting down: leave the checkpoint RUNNING so a restart resumes the task.
    running_gauge_.Decrement();
    absl::MutexLock lock(&task->mu);
    task->final_status = absl::UnavailableError(
        "the planner is shutting down; the task resumes "
        "when it restarts");
    for (auto& w : task->watchers) w->Close(*task->final_status);
    task->watchers.clear();
    return;
  }
  if (absl::Status st = source.ReleaseOwner(owner); !st.ok()) {
    spdlog::warn("task={} could not release its sequences: {}", task->id, st.ToString());
  }
  v1::TaskStatus final_status;
  if (status.ok()) {
    final_status = v1::TASK_STATUS_SUCCEEDED;
  } else if (cancelled || status.code() == absl::StatusCode::kCancelled) {
    final_status = v1::TASK_STATUS_CANCELLED;
    status = absl::CancelledError(absl::StrCat("task ", task->id, " was cancelled"));
  } else {
    final_status = v1::TASK_STATUS_FAILED;
    spdlog::warn("task={} failed: {}", task->id, status.ToString());
  }
  {
    absl::MutexLock lock(&task->mu);
    task->status = final_status;
    task->error = status.ok() ? "" : std::string(status.message());
    task->result = result;
    *task->checkpoint.mutable_result() = result;
  }
  Checkpoint(*task);
  if (status.ok()) {
    v1::SolveEvent e;
    *e.mutable_result() = result;
    Publish(*task, std::move(e));
  }
  tasks_total_.Add({{"status", v1::TaskStatus_Name(final_status)}}).Increment();
  tokens_total_.Add({{"kind", "generated"}})
      .Increment(static_cast<double>(source.counts().generated));
  tokens_total_.Add({{"kind", "prefilled"}})
      .Increment(static_cast<double>(source.counts().prefilled));
  tokens_total_.Add({{"kind", "reused"}}).Increment(static_cast<double>(source.counts().reused));
  running_gauge_.Decrement();
  {
    absl::MutexLock lock(&task->mu);
    task->final_status = status;
    task->finished_at = Clock::now().time_since_epoch().count();
    for (auto& w : task->watchers) w->Close(status);
    task->watchers.clear();
  }
  rpc_metrics_.Record("Solve", status, std::chrono::duration<double>(Clock::now() - t0).count());
}

absl::Status PlannerService::Resume() {
  ARBOR_ASSIGN_OR_RETURN(std::vector<std::string> keys, state_->ListKeys(kPrefix, 10000));
  int resumed = 0;
  for (const std::string& key : keys) {
    absl::StatusOr<statestore::VersionedValue> v = state_->Get(key);
    if (!v.ok()) continue;
    v1::TaskCheckpoint cp;
    if (!cp.ParseFromString(v->value) || cp.request().task_id().empty()) {
      spdlog::warn("{}: not a task checkpoint; skipped", key);
      continue;
    }
    auto task = std::make_shared<Task>();
    task->id = cp.request().task_id();
    task->tenant = cp.request().tenant();
    task->request = cp.request();
    {
      absl::MutexLock lock(&task->mu);
      task->status = cp.status();
      task->error = cp.error();
      task->result = cp.result();
      task->checkpoint = cp;
      // What a watcher of the resumed task sees first: the tree as restored.
      for (const auto& cn : cp.nodes()) {
        v1::SolveEvent e;
        *e.mutable_node_created() = cn.node();
        task->events.push_back(e);
      }
      if (cp.status() == v1::TASK_STATUS_SUCCEEDED) {
        v1::SolveEvent e;
        *e.mutable_result() = cp.result();
        task->events.push_back(e);
      }
      if (cp.status() != v1::TASK_STATUS_RUNNING) {
        task->final_status = cp.status() == v1::TASK_STATUS_SUCCEEDED
                                 ? absl::OkStatus()
                                 : absl::Status(absl::StatusCode::kAborted, cp.error());
      }
    }
    {
      absl::MutexLock lock(&mu_);
      tasks_[task->id] = task;
    }
    if (cp.status() == v1::TASK_STATUS_RUNNING) {
      Start(task, &cp);
      ++resumed;
    }
  }
  if (resumed > 0) spdlog::info("resumed {} running tasks", resumed);
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* PlannerService::GetTask(grpc::CallbackServerContext* ctx,
                                                  const v1::GetTaskRequest* req, v1::Task* resp) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  auto task = Find(req->task_id());
  if (task == nullptr) {
    reactor->Finish(rpc::ToGrpcStatus(
        absl::NotFoundError(absl::StrCat("task \"", req->task_id(), "\" unknown"))));
    return reactor;
  }
  *resp = task->Snapshot();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<v1::SolveEvent>* PlannerService::WatchTask(
    grpc::CallbackServerContext* ctx, const v1::WatchTaskRequest* req) {
  auto stream = Stream::Create();
  auto task = Find(req->task_id());
  if (task == nullptr) {
    stream->Close(absl::NotFoundError(absl::StrCat("task \"", req->task_id(), "\" unknown")));
  } else {
    Attach(*task, stream);
  }
  return stream.get();
}

grpc::ServerUnaryReactor* PlannerService::CancelTask(grpc::CallbackServerContext* ctx,
                                                     const v1::CancelTaskRequest* req,
                                                     v1::Task* resp) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  auto task = Find(req->task_id());
  if (task == nullptr) {
    reactor->Finish(rpc::ToGrpcStatus(
        absl::NotFoundError(absl::StrCat("task \"", req->task_id(), "\" unknown"))));
    return reactor;
  }
  task->cancel = true;  // the task's thread stops at its next call and releases its KV
  *resp = task->Snapshot();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* PlannerService::ListTasks(grpc::CallbackServerContext* ctx,
                                                    const v1::ListTasksRequest* req,
                                                    v1::ListTasksResponse* resp) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  const int limit = req->limit() == 0 ? 100 : req->limit();
  if (limit < 1 || limit > 1000) {
    reactor->Finish(rpc::ToGrpcStatus(absl::InvalidArgumentError(
        absl::StrCat("limit ", req->limit(), " out of range [1, 1000]"))));
    return reactor;
  }
  std::vector<std::shared_ptr<Task>> all;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, t] : tasks_) {
      if (req->tenant().empty() || t->tenant == req->tenant()) all.push_back(t);
    }
  }
  for (const auto& t : all) {
    if (resp->tasks_size() == limit) break;
    v1::Task snap = t->Snapshot();
    snap.clear_nodes();  // the list stays small; GetTask has the tree
    *resp->add_tasks() = std::move(snap);
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace arbor::planner
