// `arbor eval game24`: measures the model on the held-out Game of 24 puzzles through the mesh.
#pragma once

#include <string>
#include <vector>

namespace arbor::cli {

// Flags are parsed by main; `args` are the positional arguments ("game24"). Returns the process
// exit code: 0 when every puzzle ran (solved or not), 1 on RPC errors, 2 on bad usage.
int Eval(const std::vector<std::string>& args);

}  // namespace arbor::cli
