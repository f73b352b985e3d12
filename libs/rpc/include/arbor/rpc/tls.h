// Mutual TLS inside the mesh. Every service holds a certificate signed by the mesh's CA whose
// common name is its role: "arbor-kvstore", "arbor-router", "arbor-expert", "arbor-planner",
// or "arbor-operator" (a person's command-line client); a name may go on after a dot
// ("arbor-router.pod-7"). With TLS on, a service serves TLS and, except the planner (whose
// public API authenticates with bearer tokens), requires a client certificate from the CA; it
// dials the others with its own certificate. Each RPC then checks the caller's role
// (PeerRoles): the kv-store serves routers and planners (and operators, for `arbor generate`),
// its state store planners only; expert workers serve routers; the router serves planners and
// operators. Certificates, keys and the CA are files re-read when they change (rotation without
// a restart). Thread-safe.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"

namespace arbor::rpc {

enum class Role : uint32_t {
  kKvStore = 1,
  kRouter = 2,
  kExpert = 4,
  kPlanner = 8,
  kOperator = 16,
};
const char* RoleName(Role role);  // "kvstore", ...
// The role a certificate common name states, or NOT_FOUND.
absl::StatusOr<Role> RoleOfCommonName(const std::string& cn);

// A service's (or a client's) certificate, key and the CA that signs the mesh, as file paths.
struct TlsFiles {
  std::string cert, key, ca;
  bool enabled() const { return !ca.empty(); }
};
// INVALID_ARGUMENT naming what is missing or unreadable: all three or none (`what` names the
// flags, e.g. "--tls_cert/--tls_key/--tls_ca").
absl::Status CheckTlsFiles(const TlsFiles& files, const std::string& what);

// Server credentials: TLS with `files`, and (require_client_cert) a client certificate signed by
// the CA. Insecure credentials when TLS is off.
std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(const TlsFiles& files,
                                                               bool require_client_cert);
// Channel credentials presenting `files.cert` (when set) and trusting `files.ca`; insecure when
// TLS is off.
std::shared_ptr<grpc::ChannelCredentials> MakeChannelCredentials(const TlsFiles& files);

// The channel credentials every mesh channel of this process uses (mesh::NewChannel): set once
// at start (a service's main, the CLI) before any channel is made; insecure until then.
void SetDefaultChannelCredentials(std::shared_ptr<grpc::ChannelCredentials> creds);
std::shared_ptr<grpc::ChannelCredentials> DefaultChannelCredentials();
// The name mesh channels check the peer's certificate against instead of the address's host
// (empty: the host, the default). Set when peers are dialled by addresses no certificate can
// name in advance, such as pod IPs behind a headless Service: every mesh certificate then
// carries this name as a DNS subject alternative name.
void SetDefaultServerName(const std::string& name);
std::string DefaultServerName();

// Which callers an RPC accepts. Default: TLS off, every caller (an insecure mesh, tests in one
// process). Required(): the caller must present a CA-signed certificate of an allowed role.
class PeerRoles {
 public:
  PeerRoles() = default;
  static PeerRoles Required() {
    PeerRoles p;
    p.required_ = true;
    return p;
  }
  bool required() const { return required_; }
  // OK, or UNAUTHENTICATED (no verified certificate) / PERMISSION_DENIED (naming the caller's
  // role and `method`).
  absl::Status Check(const grpc::ServerContextBase& ctx, std::initializer_list<Role> allowed,
                     const char* method) const;

 private:
  bool required_ = false;
};

}  // namespace arbor::rpc
