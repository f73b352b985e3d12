// `arbor eval game24`: measures the model on the held-out Game of 24 puzzles through the mesh.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "arbor/v1/planner.pb.h"
#include "game24.h"

namespace arbor::cli {

// Flags are parsed by main; `args` are the positional arguments ("game24"). Returns the process
// exit code: 0 when every puzzle ran (solved or not), 1 on RPC errors, 2 on bad usage.
int Eval(const std::vector<std::string>& args);

// The text after the first `prefix` ("Answer:") in `text`, to the end of its line, trimmed.
std::string AnswerAfter(const std::string& text, const std::string& prefix);
// The planner request eval's bfsN mode sends for puzzle `p` (--proposals, --wide_root, --value
// and the thought sampling flags applied; the caller checks --value).
v1::SolveRequest Game24BfsRequest(const game24::Puzzle& p, int breadth, uint64_t seed);
// `want` held-out puzzles spread evenly over the set (all of them for 0).
std::vector<game24::Puzzle> SpreadPuzzles(int want);

}  // namespace arbor::cli
