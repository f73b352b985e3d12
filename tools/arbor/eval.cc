// `arbor eval game24`: the held-out Game of 24 puzzles through a running mesh, scored by exact
// rational arithmetic (game24.h), never by the model. Modes:
//   greedy  one Extend at temperature 0 from the propose prompt, to the model's end of text;
//           the first "Answer:" line is the answer (a single path, no search).
//   bfsN    the planner's BFS keeping N states per level, proposals and values from the model
//           (value prompt, label read greedily), the root drawing N x --proposals thoughts
//           (--wide_root); the planner's top answer is the answer. Also counted, apart:
//           whether any answer line the search wrote is right (what an arithmetic verifier
//           choosing among them would get).
// Puzzles run --concurrency at a time (the router batches them into shared steps). Prints one
// line per puzzle and a summary per mode; --json_out writes the summary and every puzzle.
#include "eval.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <thread>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "arbor/common/clock.h"
#include "arbor/mesh/planner_client.h"
#include "arbor/search/task_language.h"
#include "client_auth.h"
#include "game24.h"
#include "generate.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "solve.h"

ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(std::string, router);
ABSL_DECLARE_FLAG(std::string, kvstore);
ABSL_DECLARE_FLAG(std::string, planner);
ABSL_DECLARE_FLAG(int, proposals);
ABSL_DECLARE_FLAG(std::string, value);
ABSL_DECLARE_FLAG(double, thought_temperature);
ABSL_DECLARE_FLAG(int, thought_top_k);
ABSL_DECLARE_FLAG(double, thought_top_p);
ABSL_DECLARE_FLAG(uint64_t, search_seed);

ABSL_FLAG(std::string, modes, "greedy,bfs1,bfs5", "eval: comma-separated greedy and bfsN");
ABSL_FLAG(int, puzzles, 0, "eval: how many held-out puzzles, spread evenly (0: all)");
ABSL_FLAG(int, concurrency, 4, "eval: puzzles in flight at once");
ABSL_FLAG(std::string, json_out, "", "eval: write the results here as JSON");
ABSL_FLAG(bool, wide_root, true,
          "eval: bfsN's root draws N x --proposals thoughts (at most 64), as many as each later "
          "level draws from its N states; false: --proposals like every node");

namespace arbor::cli {
namespace {

struct Outcome {
  bool solved = false;      // the top answer checks out
  bool any_solved = false;  // some answer the search wrote checks out (a verifier would pick it)
  std::string answer;       // what the model (or planner) answered, "" if none
  std::string error;        // an RPC failure
  int64_t tokens = 0;       // generated
  double seconds = 0;
};

std::vector<int> Numbers(const game24::Puzzle& p) { return {p[0], p[1], p[2], p[3]}; }

Outcome Greedy(const game24::Puzzle& p, const search::Templates& preset, mesh::KvStoreClient& kv,
               mesh::RouterClient& router) {
  Outcome o;
  const auto t0 = std::chrono::steady_clock::now();
  v1::ExtendRequest req;
  req.set_text(search::Render(preset.propose, game24::PuzzleText(p), "", ""));
  req.set_add_bos(true);
  req.mutable_params()->set_max_tokens(128);
  req.mutable_params()->set_temperature(0);
  const absl::StatusOr<v1::ExtendResult> result = ExtendNewSequence(
      kv, router, std::move(req), std::chrono::system_clock::now() + std::chrono::minutes(5),
      /*keep=*/false, nullptr);
  o.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!result.ok()) {
    o.error = result.status().ToString();
    return o;
  }
  o.tokens = result->generated_tokens();
  o.answer = AnswerAfter(result->text(), preset.answer_prefix);
  o.solved = !o.answer.empty() && game24::Check(o.answer, Numbers(p));
  o.any_solved = o.solved;
  return o;
}

Outcome Bfs(const game24::Puzzle& p, const search::Templates& preset, int breadth, uint64_t seed,
            mesh::PlannerClient& planner) {
  Outcome o;
  const v1::SolveRequest req = Game24BfsRequest(p, breadth, seed);
  v1::SolveResult result;
  std::vector<std::string> answers;  // every answer line the search wrote
  const absl::Status st = planner.Solve(
      req, std::chrono::system_clock::now() + std::chrono::minutes(10),
      [&](const v1::SolveEvent& e) {
        if (e.has_result()) result = e.result();
        if (e.has_node_created()) {
          std::string a = AnswerAfter(e.node_created().thought(), preset.answer_prefix);
          if (!a.empty()) answers.push_back(std::move(a));
        }
        return true;
      });
  for (const std::string& a : answers) o.any_solved |= game24::Check(a, Numbers(p));
  if (!st.ok()) {
    o.error = std::string(st.message());
    return o;
  }
  o.tokens = result.counts().tokens_generated();
  o.seconds = result.counts().wall_seconds();
  if (result.solved()) o.answer = result.answer();
  o.solved = result.solved() && game24::Check(o.answer, Numbers(p));
  return o;
}

struct Mode {
  std::string name;
  int breadth = 0;  // 0: greedy
};

// --modes, or a message naming the bad one.
absl::StatusOr<std::vector<Mode>> ParseModes() {
  std::vector<Mode> modes;
  for (absl::string_view m : absl::StrSplit(absl::GetFlag(FLAGS_modes), ',')) {
    int b = 0;
    if (m == "greedy") {
      modes.push_back({"greedy", 0});
    } else if (absl::ConsumePrefix(&m, "bfs") && absl::SimpleAtoi(m, &b) && b >= 1 && b <= 64) {
      modes.push_back({absl::StrCat("bfs", b), b});
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--modes: \"", std::string(m), "\" is not greedy or bfsN (N in 1..64)"));
    }
  }
  return modes;
}

// The clients Eval's modes call, with the longest any one call may take here.
struct EvalClients {
  // Only the planner sees the bearer token.
  EvalClients(mesh::ClientOptions options, const std::string& token)
      : kv(mesh::NewChannel(absl::GetFlag(FLAGS_kvstore)), options),
        router(mesh::NewChannel(absl::GetFlag(FLAGS_router)), options),
        planner(mesh::NewChannel(absl::GetFlag(FLAGS_planner)), WithToken(options, token)) {}
  static mesh::ClientOptions WithToken(mesh::ClientOptions o, const std::string& token) {
    o.bearer_token = token;
    return o;
  }
  mesh::KvStoreClient kv;
  mesh::RouterClient router;
  mesh::PlannerClient planner;
};

// Every puzzle in `mode`, --concurrency at a time, printing each outcome as it comes.
std::vector<Outcome> RunMode(const Mode& mode, const std::vector<game24::Puzzle>& puzzles,
                             const search::Templates& preset, EvalClients& clients) {
  std::vector<Outcome> out(puzzles.size());
  std::atomic<size_t> next{0};
  std::mutex print_mu;
  auto work = [&] {
    for (size_t i; (i = next++) < puzzles.size();) {
      out[i] = mode.breadth == 0 ? Greedy(puzzles[i], preset, clients.kv, clients.router)
                                 : Bfs(puzzles[i], preset, mode.breadth,
                                       absl::GetFlag(FLAGS_search_seed) + i, clients.planner);
      std::lock_guard<std::mutex> lock(print_mu);
      std::printf("%-7s %-12s %-8s %s%s\n", mode.name.c_str(),
                  game24::PuzzleText(puzzles[i]).c_str(),
                  out[i].solved ? "solved" : (out[i].error.empty() ? "wrong" : "error"),
                  out[i].answer.c_str(), out[i].error.c_str());
      std::fflush(stdout);
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < std::max(1, absl::GetFlag(FLAGS_concurrency)); ++t) {
    threads.emplace_back(work);
  }
  for (std::thread& t : threads) t.join();
  return out;
}

// Prints a mode's summary line and returns its report entry; counts its errors into `errors`.
nlohmann::json Summarize(const Mode& mode, const std::vector<game24::Puzzle>& puzzles,
                         const std::vector<Outcome>& out, double wall, int* errors) {
  int solved = 0, any_solved = 0, failed = 0;
  int64_t tokens = 0;
  double seconds = 0;
  nlohmann::json rows = nlohmann::json::array();
  for (size_t i = 0; i < puzzles.size(); ++i) {
    solved += out[i].solved;
    any_solved += out[i].any_solved;
    failed += !out[i].error.empty();
    tokens += out[i].tokens;
    seconds += out[i].seconds;
    rows.push_back({{"puzzle", game24::PuzzleText(puzzles[i])},
                    {"solved", out[i].solved},
                    {"any_answer_right", out[i].any_solved},
                    {"answer", out[i].answer},
                    {"error", out[i].error},
                    {"tokens", out[i].tokens},
                    {"seconds", out[i].seconds}});
  }
  *errors += failed;
  const double n = static_cast<double>(puzzles.size());
  std::printf(
      "== %s: %d/%zu solved (%.1f%%), %d errors; some answer right in %d (%.1f%%); "
      "%.0f tokens and %.2f s per puzzle; %.1f s wall at concurrency %d\n",
      mode.name.c_str(), solved, puzzles.size(), 100.0 * solved / n, failed, any_solved,
      100.0 * any_solved / n, tokens / n, seconds / n, wall, absl::GetFlag(FLAGS_concurrency));
  return {{"mode", mode.name},
          {"solved", solved},
          {"success_rate", solved / n},
          {"any_answer_right", any_solved},
          {"errors", failed},
          {"tokens_per_puzzle", tokens / n},
          {"seconds_per_puzzle", seconds / n},
          {"wall_seconds", wall},
          {"results", rows}};
}

}  // namespace

std::string AnswerAfter(const std::string& text, const std::string& prefix) {
  const size_t at = text.find(prefix);
  if (at == std::string::npos) return "";
  const size_t from = at + prefix.size();
  std::string a = text.substr(from, text.find('\n', from) - from);
  a.erase(0, a.find_first_not_of(' '));
  return a;
}

v1::SolveRequest Game24BfsRequest(const game24::Puzzle& p, int breadth, uint64_t seed) {
  v1::SolveRequest req;
  req.set_problem(game24::PuzzleText(p));
  req.set_preset("game24");
  v1::SearchSpec* s = req.mutable_search();
  s->mutable_bfs()->set_breadth(breadth);
  s->mutable_bfs()->set_proposals_per_node(absl::GetFlag(FLAGS_proposals));
  if (absl::GetFlag(FLAGS_wide_root)) {
    s->mutable_bfs()->set_root_proposals(std::min(64, breadth * absl::GetFlag(FLAGS_proposals)));
  }
  s->mutable_bfs()->set_depth(4);  // three steps, then the answer line
  SetValueAndGeneration(*s);       // --value checked by the caller
  s->mutable_generation()->set_seed(seed);
  return req;
}

std::vector<game24::Puzzle> SpreadPuzzles(int want) {
  const std::vector<game24::Puzzle> all = game24::HeldOutPuzzles();
  if (want <= 0 || want >= static_cast<int>(all.size())) return all;
  std::vector<game24::Puzzle> puzzles;
  for (int i = 0; i < want; ++i) puzzles.push_back(all[i * all.size() / want]);
  return puzzles;
}

int Eval(const std::vector<std::string>& args) {
  if (args.size() != 1 || args[0] != "game24") {
    std::fprintf(stderr, "usage: arbor eval [flags] game24\n");
    return 2;
  }
  const std::vector<game24::Puzzle> puzzles = SpreadPuzzles(absl::GetFlag(FLAGS_puzzles));
  const absl::StatusOr<std::vector<Mode>> modes = ParseModes();
  if (!modes.ok()) {
    std::fprintf(stderr, "arbor eval: %s\n", std::string(modes.status().message()).c_str());
    return 2;
  }
  v1::SearchSpec check;
  if (!SetValueAndGeneration(check)) {
    std::fprintf(stderr, "arbor eval: --value must be logprob, label, expected or sampled\n");
    return 2;
  }
  // The model's game24 preset, as the planner reads it: the greedy pass starts from its propose
  // prompt, as the planner's root does, and its answer prefix marks answers in both modes.
  const absl::StatusOr<search::Templates> preset =
      search::ParsePreset(absl::GetFlag(FLAGS_model) + "/presets/game24.json");
  if (!preset.ok()) {
    std::fprintf(stderr, "arbor eval: %s\n", preset.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<std::string> token = BearerToken();
  if (!token.ok()) {
    std::fprintf(stderr, "arbor eval: %s\n", std::string(token.status().message()).c_str());
    return 2;
  }
  EvalClients clients({.timeout = std::chrono::minutes(10)}, *token);
  nlohmann::json report = {{"puzzles", puzzles.size()},
                           {"proposals_per_node", absl::GetFlag(FLAGS_proposals)},
                           {"wide_root", absl::GetFlag(FLAGS_wide_root)},
                           {"value", absl::GetFlag(FLAGS_value)},
                           {"thought_temperature", absl::GetFlag(FLAGS_thought_temperature)},
                           {"thought_top_k", absl::GetFlag(FLAGS_thought_top_k)},
                           {"thought_top_p", absl::GetFlag(FLAGS_thought_top_p)},
                           {"modes", nlohmann::json::array()}};
  int errors = 0;
  for (const Mode& mode : *modes) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::vector<Outcome> out = RunMode(mode, puzzles, *preset, clients);
    report["modes"].push_back(Summarize(mode, puzzles, out, SecondsSince(t0), &errors));
  }
  if (const std::string path = absl::GetFlag(FLAGS_json_out); !path.empty()) {
    std::ofstream f(path);
    f << report.dump(1) << "\n";
    if (!f) {
      std::fprintf(stderr, "arbor eval: cannot write %s\n", path.c_str());
      return 1;
    }
  }
  return errors == 0 ? 0 : 1;
}

}  // namespace arbor::cli
