#include "arbor/rpc/tls.h"

#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace arbor::rpc {
namespace {

// How often certificate files are re-read (a rotated certificate takes effect within this).
constexpr unsigned int kRefreshSeconds = 10;

constexpr std::pair<Role, const char*> kRoles[] = {{Role::kKvStore, "kvstore"},
                                                   {Role::kRouter, "router"},
                                                   {Role::kExpert, "expert"},
                                                   {Role::kPlanner, "planner"},
                                                   {Role::kOperator, "operator"}};

absl::Mutex default_mu(absl::kConstInit);
std::shared_ptr<grpc::ChannelCredentials>* default_creds ABSL_GUARDED_BY(default_mu) = nullptr;

}  // namespace

const char* RoleName(Role role) {
  for (const auto& [r, name] : kRoles) {
    if (r == role) return name;
  }
  return "unknown";
}

absl::StatusOr<Role> RoleOfCommonName(const std::string& cn) {
  for (const auto& [r, name] : kRoles) {
    const std::string want = absl::StrCat("arbor-", name);
    if (cn == want || absl::StartsWith(cn, want + ".")) return r;
  }
  return absl::NotFoundError(absl::StrCat("certificate name \"", cn, "\" states no Arbor role"));
}

absl::Status CheckTlsFiles(const TlsFiles& files, const std::string& what) {
  const bool any = !files.cert.empty() || !files.key.empty() || !files.ca.empty();
  if (!any) return absl::OkStatus();
  if (files.ca.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": a certificate without a CA"));
  }
  if (files.cert.empty() != files.key.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": a certificate needs its key"));
  }
  for (const std::string* f : {&files.cert, &files.key, &files.ca}) {
    if (!f->empty() && ::access(f->c_str(), R_OK) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": ", *f, " cannot be read"));
    }
  }
  return absl::OkStatus();
}

std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(const TlsFiles& files,
                                                               bool require_client_cert) {
  if (!files.enabled()) return grpc::InsecureServerCredentials();
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      files.key, files.cert, files.ca, kRefreshSeconds);
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_root_certs();
  options.watch_identity_key_cert_pairs();
  options.set_cert_request_type(require_client_cert
                                    ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                    : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  return grpc::experimental::TlsServerCredentials(options);
}

std::shared_ptr<grpc::ChannelCredentials> MakeChannelCredentials(const TlsFiles& files) {
  if (!files.enabled()) return grpc::InsecureChannelCredentials();
  std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider;
  if (files.cert.empty()) {
    provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        files.ca, kRefreshSeconds);
  } else {
    provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        files.key, files.cert, files.ca, kRefreshSeconds);
  }
  grpc::experimental::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(provider);
  options.watch_root_certs();
  if (!files.cert.empty()) options.watch_identity_key_cert_pairs();
  options.set_verify_server_certs(true);
  return grpc::experimental::TlsCredentials(options);
}

void SetDefaultChannelCredentials(std::shared_ptr<grpc::ChannelCredentials> creds) {
  absl::MutexLock lock(&default_mu);
  delete default_creds;
  default_creds = new std::shared_ptr<grpc::ChannelCredentials>(std::move(creds));
}

std::shared_ptr<grpc::ChannelCredentials> DefaultChannelCredentials() {
  absl::MutexLock lock(&default_mu);
  return default_creds != nullptr ? *default_creds : grpc::InsecureChannelCredentials();
}

namespace {
std::string* default_server_name ABSL_GUARDED_BY(default_mu) = nullptr;
}  // namespace

void SetDefaultServerName(const std::string& name) {
  absl::MutexLock lock(&default_mu);
  delete default_server_name;
  default_server_name = new std::string(name);
}

std::string DefaultServerName() {
  absl::MutexLock lock(&default_mu);
  return default_server_name != nullptr ? *default_server_name : "";
}

absl::Status PeerRoles::Check(const grpc::ServerContextBase& ctx,
                              std::initializer_list<Role> allowed, const char* method) const {
  if (!required_) return absl::OkStatus();
  const std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
  if (auth == nullptr || !auth->IsPeerAuthenticated()) {
    return absl::UnauthenticatedError(
        absl::StrCat(method, ": the caller presented no certificate of the mesh's CA"));
  }
  const std::vector<grpc::string_ref> names = auth->FindPropertyValues("x509_common_name");
  if (names.empty()) {
    return absl::PermissionDeniedError(
        absl::StrCat(method, ": the caller's certificate has no common name"));
  }
  const std::string cn(names.front().data(), names.front().size());
  absl::StatusOr<Role> role = RoleOfCommonName(cn);
  if (role.ok()) {
    for (Role r : allowed) {
      if (r == *role) return absl::OkStatus();
    }
  }
  std::string accepted;
  for (Role r : allowed) absl::StrAppend(&accepted, accepted.empty() ? "" : ", ", RoleName(r));
  return absl::PermissionDeniedError(
      absl::StrCat(method, " does not serve \"", cn, "\"; it serves ", accepted));
}

}  // namespace arbor::rpc
