#include "mesh_certs.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "arbor/common/random_id.h"

namespace arbor::cli {
namespace {

constexpr rpc::Role kRoles[] = {rpc::Role::kKvStore, rpc::Role::kRouter, rpc::Role::kExpert,
                                rpc::Role::kPlanner, rpc::Role::kOperator};
constexpr long kValidSeconds = 30L * 24 * 3600;
constexpr long kRenewBeforeSeconds = 24L * 3600;

struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct CertFree {
  void operator()(X509* c) const { X509_free(c); }
};
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;
using Cert = std::unique_ptr<X509, CertFree>;

absl::Status Failed(const std::string& step) {
  return absl::InternalError(absl::StrCat("making the mesh's certificates: ", step, " failed"));
}

Key NewKey() { return Key(EVP_EC_gen("P-256")); }

bool AddExt(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (ext == nullptr) return false;
  const bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

// A certificate for `key` named `cn`, signed by `issuer_key` (as `issuer`, or itself when null).
Cert NewCert(EVP_PKEY* key, const std::string& cn, X509* issuer, EVP_PKEY* issuer_key) {
  Cert cert(X509_new());
  if (!cert) return nullptr;
  X509_set_version(cert.get(), 2);
  uint64_t serial = RandomNonZeroU64() >> 1;  // positive
  ASN1_INTEGER_set_uint64(X509_get_serialNumber(cert.get()), serial);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -300);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), kValidSeconds);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("Arbor mesh"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509* signer = issuer != nullptr ? issuer : cert.get();
  X509_set_issuer_name(cert.get(), X509_get_subject_name(signer));
  bool ok = true;
  if (issuer == nullptr) {
    ok = AddExt(cert.get(), signer, NID_basic_constraints, "critical,CA:TRUE") &&
         AddExt(cert.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign") &&
         AddExt(cert.get(), signer, NID_subject_key_identifier, "hash");
  } else {
    ok = AddExt(cert.get(), signer, NID_basic_constraints, "critical,CA:FALSE") &&
         AddExt(cert.get(), signer, NID_key_usage, "critical,digitalSignature,keyEncipherment") &&
         AddExt(cert.get(), signer, NID_ext_key_usage, "serverAuth,clientAuth") &&
         AddExt(cert.get(), signer, NID_subject_alt_name,
                "DNS:localhost,IP:127.0.0.1,IP:0:0:0:0:0:0:0:1") &&
         AddExt(cert.get(), signer, NID_authority_key_identifier, "keyid");
  }
  if (!ok || X509_sign(cert.get(), issuer_key, EVP_sha256()) == 0) return nullptr;
  return cert;
}

bool WritePem(const std::string& path, X509* cert, EVP_PKEY* key) {
  const int fd =
      ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, key != nullptr ? 0600 : 0644);
  if (fd < 0) return false;
  FILE* f = ::fdopen(fd, "w");
  if (f == nullptr) {
    ::close(fd);
    return false;
  }
  const bool ok = cert != nullptr
                      ? PEM_write_X509(f, cert) == 1
                      : PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr) == 1;
  return std::fclose(f) == 0 && ok;
}

// Whether `path` is a certificate still valid a day from now.
bool StillValid(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return false;
  Cert cert(PEM_read_X509(f, nullptr, nullptr, nullptr));
  std::fclose(f);
  if (!cert) return false;
  time_t later = std::time(nullptr) + kRenewBeforeSeconds;
  return X509_cmp_time(X509_get0_notAfter(cert.get()), &later) > 0;
}

bool Complete(const std::string& dir) {
  if (!StillValid(dir + "/ca.crt")) return false;
  for (rpc::Role r : kRoles) {
    const rpc::TlsFiles f = MeshTlsFiles(dir, r);
    if (!StillValid(f.cert) || ::access(f.key.c_str(), R_OK) != 0) return false;
  }
  return true;
}

absl::Status MakeSet(const std::string& dir) {
  Key ca_key = NewKey();
  if (!ca_key) return Failed("the CA key");
  Cert ca = NewCert(ca_key.get(), "Arbor mesh CA", nullptr, ca_key.get());
  if (!ca) return Failed("the CA certificate");
  if (!WritePem(dir + "/ca.crt", ca.get(), nullptr)) return Failed("writing ca.crt");
  for (rpc::Role r : kRoles) {
    Key key = NewKey();
    if (!key) return Failed(absl::StrCat("the ", rpc::RoleName(r), " key"));
    Cert cert =
        NewCert(key.get(), absl::StrCat("arbor-", rpc::RoleName(r)), ca.get(), ca_key.get());
    if (!cert) return Failed(absl::StrCat("the ", rpc::RoleName(r), " certificate"));
    const rpc::TlsFiles f = MeshTlsFiles(dir, r);
    if (!WritePem(f.cert, cert.get(), nullptr) || !WritePem(f.key, nullptr, key.get())) {
      return Failed(absl::StrCat("writing ", f.cert));
    }
  }
  return absl::OkStatus();  // the CA's key is not kept: nothing more can be signed
}

}  // namespace

rpc::TlsFiles MeshTlsFiles(const std::string& dir, rpc::Role role) {
  return {.cert = absl::StrCat(dir, "/", rpc::RoleName(role), ".crt"),
          .key = absl::StrCat(dir, "/", rpc::RoleName(role), ".key"),
          .ca = dir + "/ca.crt"};
}

absl::Status EnsureMeshCertificates(const std::string& dir) {
  if (Complete(dir)) return absl::OkStatus();
  const std::string tmp = absl::StrCat(dir, ".new.", ::getpid());
  std::error_code ec;
  std::filesystem::remove_all(tmp, ec);
  if (!std::filesystem::create_directories(tmp, ec) || ::chmod(tmp.c_str(), 0700) != 0) {
    return Failed(absl::StrCat("creating ", tmp));
  }
  if (absl::Status st = MakeSet(tmp); !st.ok()) {
    std::filesystem::remove_all(tmp, ec);
    return st;
  }
  // Move an old (expired or partial) set aside, then put the new one in its place; if another
  // `arbor up` got there first, use its set.
  const std::string old = absl::StrCat(dir, ".old.", ::getpid());
  if (std::filesystem::exists(dir)) std::filesystem::rename(dir, old, ec);
  std::filesystem::rename(tmp, dir, ec);
  std::filesystem::remove_all(tmp, ec);
  std::filesystem::remove_all(old, ec);
  return Complete(dir) ? absl::OkStatus() : Failed(absl::StrCat("installing ", dir));
}

}  // namespace arbor::cli
