#include "solve_request.h"

#include <algorithm>
#include <cctype>

#include "absl/strings/str_cat.h"
#include "arbor/common/status_macros.h"
#include "arbor/rpc/tokens.h"

namespace arbor::planner {
namespace {

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
    case v1::SearchSpec::STRATEGY_NOT_SET:
      break;
  }
  return "?";
}

// The search library's spec for a request's (MCTS expands 2 children per node).
absl::StatusOr<search::SearchSpec> SpecFromProto(const v1::SearchSpec& s) {
  switch (s.strategy_case()) {
    case v1::SearchSpec::kBfs:
      return search::SearchSpec{.strategy = search::Strategy::kBfs,
                                .breadth = s.bfs().breadth(),
                                .proposals_per_node = s.bfs().proposals_per_node(),
                                .root_proposals = s.bfs().root_proposals(),
                                .depth = s.bfs().depth()};
    case v1::SearchSpec::kDfs:
      return search::SearchSpec{.strategy = search::Strategy::kDfs,
                                .proposals_per_node = s.dfs().proposals_per_node(),
                                .root_proposals = s.dfs().root_proposals(),
                                .depth = s.dfs().depth(),
                                .value_threshold = s.dfs().value_threshold()};
    case v1::SearchSpec::kBeam:
      return search::SearchSpec{.strategy = search::Strategy::kBeam,
                                .breadth = s.beam().beam_width(),
                                .proposals_per_node = s.beam().proposals_per_node(),
                                .root_proposals = s.beam().root_proposals(),
                                .depth = s.beam().depth()};
    case v1::SearchSpec::kMcts:
      return search::SearchSpec{.strategy = search::Strategy::kMcts,
                                .proposals_per_node = 2,
                                .depth = s.mcts().depth(),
                                .uct_c = s.mcts().uct_c(),
                                .rollouts = s.mcts().rollouts()};
    case v1::SearchSpec::STRATEGY_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("search has no strategy (bfs, dfs, beam or mcts)");
}

absl::Status CheckTemplates(const v1::SolveRequest& req,
                            const std::map<std::string, search::Templates>& presets) {
  if (!req.has_templates()) {
    if (!presets.count(req.preset())) {
      return absl::InvalidArgumentError(
          absl::StrCat("preset \"", req.preset(), "\" unknown to this model"));
    }
    return absl::OkStatus();
  }
  const v1::TaskTemplates& t = req.templates();
  ARBOR_RETURN_IF_ERROR(Bytes("templates.propose", t.propose(), 1, 16384));
  ARBOR_RETURN_IF_ERROR(Bytes("templates.value", t.value(), 0, 16384));
  ARBOR_RETURN_IF_ERROR(Bytes("templates.answer", t.answer(), 0, 16384));
  ARBOR_RETURN_IF_ERROR(Bytes("templates.step_stop", t.step_stop(), 1, 64));
  return Bytes("templates.answer_prefix", t.answer_prefix(), 0, 256);
}

absl::Status CheckGeneration(const v1::SearchSpec& s) {
  if (s.value().has_sampled()) {
    ARBOR_RETURN_IF_ERROR(
        Range("search.value.sampled.samples", s.value().sampled().samples(), 1, 16));
  }
  const v1::GenerationSettings& g = s.generation();
  ARBOR_RETURN_IF_ERROR(Range("search.generation.temperature", g.temperature(), 0, 100));
  ARBOR_RETURN_IF_ERROR(Range("search.generation.top_k", g.top_k(), 0, 1 << 20));
  ARBOR_RETURN_IF_ERROR(Range("search.generation.top_p", g.top_p(), 0, 1));
  if (g.max_thought_tokens() != 0) {
    ARBOR_RETURN_IF_ERROR(
        Range("search.generation.max_thought_tokens", g.max_thought_tokens(), 1, 1024));
  }
  return absl::OkStatus();
}

absl::Status CheckBudget(const v1::Budget& b) {
  if (b.max_nodes() != 0) {
    ARBOR_RETURN_IF_ERROR(Range("budget.max_nodes", b.max_nodes(), 1, 100000));
  }
  if (b.max_tokens() != 0) {
    ARBOR_RETURN_IF_ERROR(Range("budget.max_tokens", static_cast<double>(b.max_tokens()), 1, 1e8));
  }
  if (b.deadline_ms() != 0) {
    ARBOR_RETURN_IF_ERROR(Range("budget.deadline_ms", b.deadline_ms(), 1, 3600000));
  }
  return absl::OkStatus();
}

SourceOptions SourceFromProto(const v1::SearchSpec& s) {
  SourceOptions so;
  so.value = s.value().has_label()     ? ValueMode::kLabel
             : s.value().has_sampled() ? ValueMode::kSampled
                                       : ValueMode::kLogProb;
  so.value_samples = std::max(1, s.value().sampled().samples());
  so.label_expected = s.value().label().expected();
  const v1::GenerationSettings& g = s.generation();
  so.temperature = g.temperature() > 0 ? g.temperature() : 0.8f;
  so.top_k = g.top_k();
  so.top_p = g.top_p() > 0 ? g.top_p() : 1.0f;
  so.max_thought_tokens = g.max_thought_tokens() > 0 ? g.max_thought_tokens() : 64;
  so.seed = g.seed();
  return so;
}

search::Templates TemplatesFromProto(const v1::TaskTemplates& p) {
  search::Templates t{.propose = p.propose(),
                      .value = p.value(),
                      .answer = p.answer(),
                      .step_stop = p.step_stop(),
                      .answer_prefix = p.answer_prefix()};
  for (const auto& [label, score] : p.value_labels()) t.value_labels[label] = score;
  return t;
}

}  // namespace

bool ValidTaskId(const std::string& id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) return false;
  }
  return true;
}

void TaskPlan::Start() {
  if (deadline_ms <= 0) return;
  source.deadline = std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms);
  budget.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(deadline_ms);
}

absl::StatusOr<TaskPlan> PlanTask(const v1::SolveRequest& req,
                                  const std::map<std::string, search::Templates>& presets,
                                  const PlanDefaults& defaults) {
  if (!req.task_id().empty() && !ValidTaskId(req.task_id())) {
    return absl::InvalidArgumentError("task_id must be 1..128 characters of [A-Za-z0-9_-]");
  }
  if (!req.tenant().empty() && !rpc::ValidTenantName(req.tenant())) {
    return absl::InvalidArgumentError("tenant must be empty or 1..64 characters of [A-Za-z0-9._-]");
  }
  ARBOR_RETURN_IF_ERROR(Bytes("problem", req.problem(), 1, 4096));
  ARBOR_RETURN_IF_ERROR(CheckTemplates(req, presets));
  const v1::SearchSpec& s = req.search();
  TaskPlan plan;
  ARBOR_ASSIGN_OR_RETURN(plan.spec, SpecFromProto(s));
  if (absl::Status st = plan.spec.Validate(); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("search.", StrategyField(s), ".", st.message()));
  }
  ARBOR_RETURN_IF_ERROR(CheckGeneration(s));
  const v1::Budget& b = req.budget();
  ARBOR_RETURN_IF_ERROR(CheckBudget(b));

  plan.budget.max_nodes = b.max_nodes() > 0 ? b.max_nodes() : defaults.max_nodes;
  plan.budget.max_tokens = b.max_tokens() > 0 ? b.max_tokens() : defaults.max_tokens;
  plan.deadline_ms = b.deadline_ms();
  plan.source = SourceFromProto(s);
  plan.templates =
      req.has_templates() ? TemplatesFromProto(req.templates()) : presets.at(req.preset());
  return plan;
}

absl::Status ApplyQuota(const rpc::TenantQuota& quota, const std::string& tenant,
                        const v1::Budget& asked, TaskPlan* plan) {
  // One budget field against its quota (0: none): over it is refused, a default is capped.
  auto cap = [&](const char* field, int64_t asked_value, int64_t limit, auto* budget) {
    if (limit <= 0) return absl::OkStatus();
    if (asked_value > limit) {
      return absl::ResourceExhaustedError(absl::StrCat("budget.", field, " ", asked_value,
                                                       " is over tenant \"", tenant, "\"'s quota (",
                                                       field, "=", limit, " in the tokens file)"));
    }
    *budget = std::min<int64_t>(*budget, limit);
    return absl::OkStatus();
  };
  ARBOR_RETURN_IF_ERROR(
      cap("max_nodes", asked.max_nodes(), quota.max_nodes, &plan->budget.max_nodes));
  return cap("max_tokens", asked.max_tokens(), quota.max_tokens, &plan->budget.max_tokens);
}

}  // namespace arbor::planner
