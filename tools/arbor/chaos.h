// `arbor chaos game24`: solves through a mesh `arbor up` supervises, calm and then while its
// services are killed one after another; counts what completed, failed or was lost, and how many
// answers were right in each phase.
#pragma once

#include <string>
#include <vector>

namespace arbor::cli {

// Flags are parsed by main; `args` are the positional arguments ("game24"). Returns the process
// exit code: 0 when no solve failed or was lost, 1 otherwise, 2 on bad usage.
int Chaos(const std::vector<std::string>& args);

}  // namespace arbor::cli
