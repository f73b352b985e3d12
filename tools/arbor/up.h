// `arbor up`: the whole mesh on one machine, as child processes on loopback.
#pragma once

namespace arbor::cli {

// Flags are parsed by main; returns the process exit code.
int Up();

}  // namespace arbor::cli
