// `arbor generate`: load a model folder and generate from a prompt on the CPU engine.
#pragma once

namespace arbor::cli {

// Flags are parsed by main; returns the process exit code.
int Generate();

}  // namespace arbor::cli
