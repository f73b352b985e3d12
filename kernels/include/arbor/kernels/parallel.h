// Fork-join parallel loops for the CPU kernels' own work (the 16-bit weight products), on one
// process-wide set of threads sized like OpenBLAS's (its thread count at first use, which the
// services' --blas_threads and EngineOptions::num_threads set), so that the two never ask for
// more cores than that between them: a loop runs between BLAS calls, never inside one.
#pragma once

#include "absl/functional/function_ref.h"

namespace arbor::kernels {

// Runs body(begin, end) over [0, n) in pieces of at least `grain` items, on the calling thread
// and the pool's workers, and returns when every piece is done. A call made while another
// thread's loop holds the pool (two engines in one process) runs inline on its own thread, as
// does a loop too small to split.
void ParallelFor(int n, int grain, absl::FunctionRef<void(int begin, int end)> body);

// Threads a loop uses (the caller included); 1 runs everything inline.
int ParallelThreads();

}  // namespace arbor::kernels
