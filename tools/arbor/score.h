// `arbor score`: the log-probability of every token of a given text (or of a file of token ids)
// under the model, and their perplexity, in process or through a running mesh (--router).
#pragma once

namespace arbor::cli {

// Flags are parsed by main; returns the process exit code.
int Score();

}  // namespace arbor::cli
