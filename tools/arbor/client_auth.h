// The credentials `arbor` sends a planner, and the ones `arbor up` makes for a local mesh.
#pragma once

#include <sys/types.h>

#include <string>

#include "absl/status/statusor.h"

namespace arbor::cli {

// The bearer token for the planner: the file --token_file names, else the file
// $ARBOR_TOKEN_FILE names, else $ARBOR_TOKEN itself, else ~/.arbor/token when it exists (what
// `arbor up` writes). Empty when there is none (an --insecure planner needs none). An error
// names a file that cannot be read or holds no token.
absl::StatusOr<std::string> BearerToken();

// Writes `text` to `path` (created with `mode`, e.g. 0600 for a secret) through a temporary file
// and a rename, so a reader never sees half of it.
absl::Status WriteAtomically(const std::string& path, const std::string& text, mode_t mode);

// The folder `arbor up` keeps its credentials in by default: $HOME/.arbor (/tmp/arbor-<uid>
// without a home).
std::string DefaultDataDir();

// Makes sure `data_dir` holds a token (`token`, mode 0600, made from 32 random bytes when
// absent) and a tokens file (`tokens`, naming the token's hash as tenant "local" when absent);
// the path of the tokens file. An existing tokens file is the operator's and is left alone.
absl::StatusOr<std::string> EnsureLocalToken(const std::string& data_dir);

// The mesh's TLS for this command (every channel it makes): --tls_dir, else $ARBOR_TLS_DIR, else
// ~/.arbor/tls when it exists (what `arbor up` makes); the folder's ca.crt is trusted and its
// operator certificate presented. "none" (or no folder at all): plaintext. An error names a
// folder without its files.
absl::Status ConfigureClientTls();

}  // namespace arbor::cli
