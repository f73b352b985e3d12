// `arbor chaos game24`: how a mesh that `arbor up` supervises weathers services being killed.
// Two phases on the same held-out puzzles (eval's bfsN request, one seed per puzzle), every solve
// of a phase in flight at once:
//   calm   the solves with nothing killed;
//   chaos  the same solves again while a driver kills (SIGKILL) one service every
//          --kill_every_s seconds, --kills in all, cycling over the kinds named in --targets
//          in a shuffled order (a random instance of each kind; `arbor up` restarts it); each
//          puzzle is solved again (a new task) as long as kills are left, so every kill lands
//          on running solves.
// Each solve names its task id; a stream the planner's death breaks is reattached (Solve with
// the same id) until the solve's deadline. Outcomes: completed (a stream that ended with exactly
// one result), failed (the planner's error), lost (the task vanished: NOT_FOUND, or a deadline
// without an answer). Answers are judged with exact arithmetic (game24.h). Prints a table and,
// with --json_out, writes it. Exit status 0 when no solve failed or was lost in either phase.
#include "chaos.h"

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "arbor/common/random_id.h"
#include "arbor/mesh/planner_client.h"
#include "client_auth.h"
#include "eval.h"
#include "game24.h"
#include "nlohmann/json.hpp"
#include "solve.h"

ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(std::string, planner);
ABSL_DECLARE_FLAG(std::string, value);
ABSL_DECLARE_FLAG(std::string, json_out);
ABSL_DECLARE_FLAG(uint64_t, search_seed);

ABSL_FLAG(std::string, up_ready_file, "",
          "chaos: the ready file of the `arbor up` whose services are killed (--ready_file); its "
          "planner is the one called unless --planner is given");
ABSL_FLAG(int, solves, 40, "chaos: concurrent solves per phase (held-out puzzles, spread)");
ABSL_FLAG(int, bfs, 5, "chaos: each solve's BFS breadth N (eval's bfsN mode)");
ABSL_FLAG(int, kills, 10, "chaos: services killed during the chaos phase");
ABSL_FLAG(double, kill_every_s, 4, "chaos: seconds between kills (the first after one interval)");
ABSL_FLAG(std::string, targets, "planner,router,kvstore,redis,expert",
          "chaos: the kinds of service to kill, cycled through in a shuffled order");
ABSL_FLAG(uint64_t, chaos_seed, 1, "chaos: seeds the order and the choice of victims");
ABSL_FLAG(int, solve_timeout_s, 600, "chaos: a solve's deadline, reattaches included");

namespace arbor::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct SolveOutcome {
  std::string puzzle;
  enum Kind { kCompleted, kFailed, kLost } kind = kLost;
  bool right = false;
  int reattaches = 0;
  int results = 0;  // result events in the stream that completed
  std::string answer, error;
  double seconds = 0;
};

// One solve to its end, reattaching while the planner is away: with several planners, through
// the next one (any planner answers for any task).
SolveOutcome SolveOnce(const std::vector<std::unique_ptr<mesh::PlannerClient>>& planners,
                       size_t first, v1::SolveRequest req, const game24::Puzzle& puzzle) {
  SolveOutcome o;
  o.puzzle = game24::PuzzleText(puzzle);
  const auto t0 = Clock::now();
  const auto deadline =
      std::chrono::system_clock::now() + std::chrono::seconds(absl::GetFlag(FLAGS_solve_timeout_s));
  req.set_task_id(absl::StrCat("chaos-", RandomHex(8)));
  for (;; ++o.reattaches) {
    v1::SolveResult result;
    int results = 0;
    mesh::PlannerClient& planner = *planners[(first + o.reattaches) % planners.size()];
    const absl::Status st = planner.Solve(req, deadline, [&](const v1::SolveEvent& e) {
      if (e.has_result()) {
        result = e.result();
        ++results;
      }
      return true;
    });
    if (st.ok()) {
      o.kind = SolveOutcome::kCompleted;
      o.results = results;
      o.answer = result.solved() ? result.answer() : "";
      o.right =
          result.solved() && game24::Check(o.answer, {puzzle[0], puzzle[1], puzzle[2], puzzle[3]});
      break;
    }
    o.error = st.ToString();
    const bool away = absl::IsUnavailable(st) || absl::IsAborted(st) || absl::IsCancelled(st) ||
                      absl::IsInternal(st) || absl::IsUnknown(st);
    if (absl::IsNotFound(st) || absl::IsDeadlineExceeded(st) ||
        std::chrono::system_clock::now() + std::chrono::seconds(1) >= deadline) {
      o.kind = SolveOutcome::kLost;
      break;
    }
    if (!away) {
      o.kind = SolveOutcome::kFailed;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  o.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return o;
}

// The services of the `arbor up` behind `ready_file`: name -> pid.
std::map<std::string, int> Services(const std::string& ready_file) {
  std::map<std::string, int> out;
  std::ifstream in(ready_file);
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.contains("services")) return out;
  for (const auto& s : j["services"]) out[s["name"].get<std::string>()] = s["pid"].get<int>();
  return out;
}

// Whether service `name` ("expert-1") is of `kind` ("expert").
bool OfKind(const std::string& name, absl::string_view kind) {
  return absl::StartsWith(name, kind);
}

struct Kill {
  std::string service;
  double at_s = 0;  // since the phase started
};

// Kills one service of the next kind every `every`, `count` times.
std::vector<Kill> Killer(const std::string& ready_file, const std::vector<std::string>& kinds,
                         int count, std::chrono::milliseconds every, Clock::time_point t0) {
  std::vector<Kill> kills;
  std::mt19937_64 rng(absl::GetFlag(FLAGS_chaos_seed));
  std::vector<std::string> order;
  while (static_cast<int>(kills.size()) < count) {
    std::this_thread::sleep_for(every);
    if (order.empty()) {
      order = kinds;
      std::shuffle(order.begin(), order.end(), rng);
    }
    const std::string kind = order.back();
    order.pop_back();
    std::vector<std::pair<std::string, int>> candidates;
    for (const auto& [name, pid] : Services(ready_file)) {
      if (pid > 0 && OfKind(name, kind)) candidates.emplace_back(name, pid);
    }
    if (candidates.empty()) {  // that kind is down (restarting): its turn comes again
      order.push_back(kind);
      continue;
    }
    const auto& [name, pid] = candidates[rng() % candidates.size()];
    if (::kill(pid, SIGKILL) == 0) {
      kills.push_back({name, std::chrono::duration<double>(Clock::now() - t0).count()});
      std::printf("chaos: killed %s (pid %d) at %.1f s\n", name.c_str(), pid, kills.back().at_s);
      std::fflush(stdout);
    }
  }
  return kills;
}

struct Phase {
  std::string name;
  std::vector<SolveOutcome> outcomes;
  std::vector<Kill> kills;
  double wall = 0;
};

// Every puzzle at once. With `chaos`, the killer runs alongside, and each puzzle's solve is
// started again (a new task) as long as the killer has kills left, so that every kill lands on
// running solves.
Phase RunPhase(const std::string& name, const std::vector<game24::Puzzle>& puzzles,
               const std::vector<std::unique_ptr<mesh::PlannerClient>>& planners, bool chaos) {
  Phase phase{name};
  std::mutex mu;
  const auto t0 = Clock::now();
  std::atomic<bool> killing{chaos};
  std::thread killer;
  if (chaos) {
    killer = std::thread([&] {
      phase.kills = Killer(
          absl::GetFlag(FLAGS_up_ready_file),
          absl::StrSplit(absl::GetFlag(FLAGS_targets), ',', absl::SkipEmpty()),
          absl::GetFlag(FLAGS_kills),
          std::chrono::milliseconds(static_cast<int64_t>(1000 * absl::GetFlag(FLAGS_kill_every_s))),
          t0);
      killing = false;
    });
  }
  std::vector<std::thread> solvers;
  for (size_t i = 0; i < puzzles.size(); ++i) {
    solvers.emplace_back([&, i] {
      do {
        SolveOutcome o = SolveOnce(planners, i,
                                   Game24BfsRequest(puzzles[i], absl::GetFlag(FLAGS_bfs),
                                                    absl::GetFlag(FLAGS_search_seed) + i),
                                   puzzles[i]);
        std::lock_guard<std::mutex> lock(mu);
        phase.outcomes.push_back(std::move(o));
      } while (killing);
    });
  }
  for (std::thread& t : solvers) t.join();
  if (killer.joinable()) killer.join();
  phase.wall = std::chrono::duration<double>(Clock::now() - t0).count();
  return phase;
}

nlohmann::json Summary(const Phase& p) {
  int completed = 0, failed = 0, lost = 0, right = 0, reattaches = 0, not_once = 0;
  double seconds = 0;
  std::map<std::string, int> errors;
  nlohmann::json rows = nlohmann::json::array();
  for (const SolveOutcome& o : p.outcomes) {
    completed += o.kind == SolveOutcome::kCompleted;
    failed += o.kind == SolveOutcome::kFailed;
    lost += o.kind == SolveOutcome::kLost;
    right += o.right;
    reattaches += o.reattaches;
    not_once += o.kind == SolveOutcome::kCompleted && o.results != 1;
    seconds += o.seconds;
    if (o.kind != SolveOutcome::kCompleted) ++errors[o.error];
    rows.push_back({{"puzzle", o.puzzle},
                    {"outcome", o.kind == SolveOutcome::kCompleted ? "completed"
                                : o.kind == SolveOutcome::kFailed  ? "failed"
                                                                   : "lost"},
                    {"right", o.right},
                    {"answer", o.answer},
                    {"reattaches", o.reattaches},
                    {"seconds", o.seconds}});
  }
  std::map<std::string, int> killed;
  for (const Kill& k : p.kills) ++killed[k.service.substr(0, k.service.find('-'))];
  const double n = std::max<size_t>(1, p.outcomes.size());
  return {{"phase", p.name},
          {"submitted", p.outcomes.size()},
          {"completed", completed},
          {"failed", failed},
          {"lost", lost},
          {"results_not_once", not_once},
          {"right", right},
          {"right_share", right / n},
          {"reattaches", reattaches},
          {"mean_seconds", seconds / n},
          {"wall_seconds", p.wall},
          {"kills", p.kills.size()},
          {"killed", killed},
          {"errors", errors},
          {"solves", rows}};
}

}  // namespace

int Chaos(const std::vector<std::string>& args) {
  if (args.size() != 1 || args[0] != "game24") {
    std::fprintf(stderr, "usage: arbor chaos --up_ready_file FILE [flags] game24\n");
    return 2;
  }
  const std::string ready_file = absl::GetFlag(FLAGS_up_ready_file);
  std::ifstream ready_in(ready_file);
  const nlohmann::json ready = nlohmann::json::parse(ready_in, nullptr, false);
  if (ready_file.empty() || ready.is_discarded() || !ready.contains("services")) {
    std::fprintf(stderr, "arbor chaos: --up_ready_file: \"%s\" is no `arbor up` ready file\n",
                 ready_file.c_str());
    return 2;
  }
  if (absl::GetFlag(FLAGS_solves) < 1 || absl::GetFlag(FLAGS_solves) > 256 ||
      absl::GetFlag(FLAGS_kills) < 0 || absl::GetFlag(FLAGS_kill_every_s) <= 0) {
    std::fprintf(stderr,
                 "arbor chaos: --solves in [1, 256], --kills >= 0 and --kill_every_s > 0\n");
    return 2;
  }
  const std::map<std::string, int> services = Services(ready_file);
  for (absl::string_view kind :
       absl::StrSplit(absl::GetFlag(FLAGS_targets), ',', absl::SkipEmpty())) {
    bool found = false;
    for (const auto& [name, pid] : services) found |= OfKind(name, kind);
    if (!found) {
      std::fprintf(stderr, "arbor chaos: --targets: %s has no \"%s\" service\n", ready_file.c_str(),
                   std::string(kind).c_str());
      return 2;
    }
  }
  v1::SearchSpec check;
  if (!SetValueAndGeneration(check)) {
    std::fprintf(stderr, "arbor chaos: --value must be logprob, label, expected or sampled\n");
    return 2;
  }
  absl::StatusOr<std::string> token = BearerToken();
  if (!token.ok()) {
    std::fprintf(stderr, "arbor chaos: %s\n", std::string(token.status().message()).c_str());
    return 2;
  }
  std::vector<std::string> addresses =
      absl::StrSplit(absl::GetFlag(FLAGS_planner), ',', absl::SkipEmpty());
  if (ready.contains("planners") && absl::GetFlag(FLAGS_planner) == "127.0.0.1:50081") {
    addresses = ready["planners"].get<std::vector<std::string>>();  // the default: arbor up's
  }
  // Each Solve call is bounded by its solve's deadline; reattaching is SolveOnce's. Solves are
  // spread over the planners.
  std::vector<std::unique_ptr<mesh::PlannerClient>> planners;
  for (const std::string& address : addresses) {
    planners.push_back(std::make_unique<mesh::PlannerClient>(
        mesh::NewChannel(address),
        mesh::ClientOptions{.timeout = std::chrono::seconds(absl::GetFlag(FLAGS_solve_timeout_s)),
                            .bearer_token = *token}));
  }
  if (planners.empty()) {
    std::fprintf(stderr, "arbor chaos: --planner names no planner\n");
    return 2;
  }
  const std::vector<game24::Puzzle> puzzles = SpreadPuzzles(absl::GetFlag(FLAGS_solves));
  std::printf("chaos: %zu solves (bfs%d) per phase; calm first\n", puzzles.size(),
              absl::GetFlag(FLAGS_bfs));
  std::fflush(stdout);
  const Phase calm = RunPhase("calm", puzzles, planners, false);
  const Phase chaos = RunPhase("chaos", puzzles, planners, true);
  const nlohmann::json a = Summary(calm), b = Summary(chaos);
  std::printf("%-6s %9s %9s %6s %4s %9s %11s %10s %8s %5s\n", "phase", "submitted", "completed",
              "failed", "lost", "not_once", "right", "mean_s", "wall_s", "kills");
  for (const nlohmann::json& s : {a, b}) {
    std::printf("%-6s %9d %9d %6d %4d %9d %4d (%3.0f%%) %10.1f %8.1f %5d\n",
                s["phase"].get<std::string>().c_str(), s["submitted"].get<int>(),
                s["completed"].get<int>(), s["failed"].get<int>(), s["lost"].get<int>(),
                s["results_not_once"].get<int>(), s["right"].get<int>(),
                100 * s["right_share"].get<double>(), s["mean_seconds"].get<double>(),
                s["wall_seconds"].get<double>(), s["kills"].get<int>());
  }
  const int kills = b["kills"].get<int>();
  // Every chaos solve's time beyond the calm mean, summed, per kill.
  const double added = kills > 0
                           ? (b["mean_seconds"].get<double>() - a["mean_seconds"].get<double>()) *
                                 b["submitted"].get<double>() / kills
                           : 0;
  std::printf(
      "killed: %s; solve time added per kill: %.2f s in all, %.2f s per solve in flight "
      "(the chaos solves' time beyond the calm mean, over the kills)\n",
      b["killed"].dump().c_str(), added, added / static_cast<double>(puzzles.size()));
  for (const nlohmann::json& s : {a, b}) {
    for (const auto& [error, count] : s["errors"].items()) {
      std::printf("%s: %d x %s\n", s["phase"].get<std::string>().c_str(), count.get<int>(),
                  error.c_str());
    }
  }
  nlohmann::json report = {{"solves", puzzles.size()},
                           {"breadth", absl::GetFlag(FLAGS_bfs)},
                           {"kill_every_s", absl::GetFlag(FLAGS_kill_every_s)},
                           {"targets", absl::GetFlag(FLAGS_targets)},
                           {"added_solve_seconds_per_kill", added},
                           {"added_seconds_per_kill_per_solve", added / puzzles.size()},
                           {"phases", {a, b}}};
  if (const std::string path = absl::GetFlag(FLAGS_json_out); !path.empty()) {
    std::ofstream f(path);
    f << report.dump(1) << "\n";
  }
  const bool clean = a["failed"] == 0 && a["lost"] == 0 && b["failed"] == 0 && b["lost"] == 0 &&
                     a["results_not_once"] == 0 && b["results_not_once"] == 0;
  return clean ? 0 : 1;
}

}  // namespace arbor::cli
