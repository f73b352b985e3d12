// `arbor`: the command-line entry point. Subcommands:
//   arbor generate --model DIR --prompt "..."   generate text with the CPU engine
//   arbor generate --router ADDR --prompt "..."  generate through a running mesh
//   arbor score --model DIR --text "..."        per-token log-probs and perplexity of a text
//   arbor up [--workers N] [--replicas R]        run the mesh on loopback until Ctrl-C
//   arbor eval game24 / arbor chaos game24       accuracy, and accuracy while services die
//   arbor health ADDRESS...                      grpc.health.v1 status, as a probe asks
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/synchronization/mutex.h"
#include "arbor/rpc/service_main.h"
#include "chaos.h"
#include "client_auth.h"
#include "eval.h"
#include "generate.h"
#include "health.h"
#include "score.h"
#include "solve.h"
#include "up.h"

namespace {

constexpr char kUsage[] =
    "usage: arbor <command> [flags]\n"
    "commands:\n"
    "  generate   generate text from a prompt, in process or through a mesh (--router)\n"
    "  score      per-token log-probs and perplexity of a text or a file of token ids, in "
    "process\n"
    "             or through a mesh (--router)\n"
    "  up         start kv-store, expert workers, router and planner on loopback until Ctrl-C\n"
    "  solve      solve a problem with the planner (tree-of-thought search): arbor solve \"4 9 10 "
    "13\"\n"
    "  tasks      list the planner's tasks;  watch ID: follow one;  cancel ID: cancel one\n"
    "  eval       score the model on held-out Game of 24 puzzles: arbor eval game24\n"
    "  chaos      Game of 24 solves while `arbor up`'s services are killed: arbor chaos "
    "--up_ready_file F game24\n"
    "  health     grpc.health.v1 status of each address, as a probe asks: arbor health HOST:PORT\n"
    "run `arbor <command> --help` for a command's flags";

}  // namespace

int main(int argc, char** argv) {
#ifdef NDEBUG
  // absl's lock-order graph is a debugging aid; Debug and sanitizer builds keep it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
  arbor::rpc::PrepareGrpcClients();  // before any channel: reconnections within 50 ms
  absl::SetProgramUsageMessage(kUsage);
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "help") == 0) {
    std::puts(kUsage);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  // Parse the command's flags as if it were the program.
  std::vector<char*> args = {argv[0]};
  for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
  const std::vector<char*> rest =
      absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  const std::vector<std::string> positional(rest.begin() + 1, rest.end());
  if (command != "up") {
    if (absl::Status st = arbor::cli::ConfigureClientTls(); !st.ok()) {
      std::fprintf(stderr, "arbor %s: %s\n", command.c_str(), std::string(st.message()).c_str());
      return 2;
    }
  }
  if (command == "generate") return arbor::cli::Generate();
  if (command == "score") return arbor::cli::Score();
  if (command == "up") return arbor::cli::Up();
  if (command == "solve") return arbor::cli::Solve(positional);
  if (command == "tasks") return arbor::cli::Tasks(positional);
  if (command == "watch") return arbor::cli::Watch(positional);
  if (command == "cancel") return arbor::cli::Cancel(positional);
  if (command == "eval") return arbor::cli::Eval(positional);
  if (command == "chaos") return arbor::cli::Chaos(positional);
  if (command == "health") return arbor::cli::Health(positional);
  std::fprintf(stderr, "arbor: unknown command \"%s\"\n%s\n", command.c_str(), kUsage);
  return 2;
}
