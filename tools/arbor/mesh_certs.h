// The throwaway certificates `arbor up` runs its mesh with (libs/rpc/include/arbor/rpc/tls.h): a
// CA and one certificate per role (kvstore, router, expert, planner, operator), each named
// arbor-<role>, valid for localhost and 127.0.0.1, signed by the CA, made with OpenSSL's library.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "arbor/rpc/tls.h"

namespace arbor::cli {

// Makes sure `dir` holds ca.crt and <role>.crt / <role>.key for every role, all valid for at
// least a day more; makes a new set (atomically: a new folder renamed into place) otherwise.
// Several `arbor up` starting at once end up sharing one set. INTERNAL naming the step that
// failed.
absl::Status EnsureMeshCertificates(const std::string& dir);

// The files of `role` in a folder EnsureMeshCertificates made.
rpc::TlsFiles MeshTlsFiles(const std::string& dir, rpc::Role role);

}  // namespace arbor::cli
