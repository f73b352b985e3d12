// `arbor solve`, `arbor tasks`, `arbor watch`, `arbor cancel`: the planner's client commands.
#pragma once

#include <string>
#include <vector>

#include "arbor/v1/planner.pb.h"

namespace arbor::cli {

// Flags are parsed by main; `args` are the positional arguments after the command. Each
// returns the process exit code.
int Solve(const std::vector<std::string>& args);
int Tasks(const std::vector<std::string>& args);
int Watch(const std::vector<std::string>& args);
int Cancel(const std::vector<std::string>& args);

// The search's value mode (--value, --samples) and generation settings (--thought_temperature,
// --thought_top_k, --thought_top_p, --max_thought_tokens, --search_seed) from the flags; false if
// --value is not one of logprob, label, expected or sampled.
bool SetValueAndGeneration(v1::SearchSpec& s);

}  // namespace arbor::cli
