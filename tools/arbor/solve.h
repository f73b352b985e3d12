// `arbor solve`, `arbor tasks`, `arbor watch`, `arbor cancel`: the planner's client commands.
#pragma once

#include <string>
#include <vector>

namespace arbor::cli {

// Flags are parsed by main; `args` are the positional arguments after the command. Each
// returns the process exit code.
int Solve(const std::vector<std::string>& args);
int Tasks(const std::vector<std::string>& args);
int Watch(const std::vector<std::string>& args);
int Cancel(const std::vector<std::string>& args);

}  // namespace arbor::cli
