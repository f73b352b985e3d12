// `arbor health ADDRESS...`: asks each address's grpc.health.v1 service for the status of the
// whole server (service ""), once, as a kubelet's grpc probe does, and prints one line each:
//   ADDRESS SERVING | NOT_SERVING | UNKNOWN | SERVICE_UNKNOWN | UNREACHABLE <gRPC status>
// Exit status 0 when every address is SERVING, 1 otherwise. --health_timeout_ms bounds each
// check (default 1000, a kubelet's default probe timeout). Uses the mesh's TLS as every command
// does; a plaintext health port (--health_address) needs --tls_dir=none.
#pragma once

#include <string>
#include <vector>

namespace arbor::cli {

int Health(const std::vector<std::string>& addresses);

}  // namespace arbor::cli
