#include "client_auth.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "arbor/common/mapped_file.h"
#include "arbor/common/random_id.h"
#include "arbor/rpc/tls.h"
#include "arbor/rpc/tokens.h"

ABSL_FLAG(std::string, tls_dir, "",
          "every command but up: the mesh's certificates (ca.crt, operator.crt/.key); default "
          "$ARBOR_TLS_DIR, then ~/.arbor/tls when it exists; none: plaintext");
// --tls_server_name (service_main.cc, linked in): for the CLI, the name the services'
// certificates carry when they name no address (deploy/k8s/secrets.sh: arbor-mesh); default
// $ARBOR_TLS_SERVER_NAME.
ABSL_DECLARE_FLAG(std::string, tls_server_name);
ABSL_FLAG(std::string, token_file, "",
          "solve/tasks/watch/cancel/eval: the file holding the planner's bearer token (default: "
          "$ARBOR_TOKEN_FILE, $ARBOR_TOKEN, then ~/.arbor/token)");

namespace arbor::cli {
namespace {

absl::StatusOr<std::string> ReadToken(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  std::string token(absl::StripAsciiWhitespace(*text));
  if (token.empty())
    return absl::InvalidArgumentError(absl::StrCat("token file ", path, " is empty"));
  return token;
}

}  // namespace

absl::Status WriteAtomically(const std::string& path, const std::string& text, mode_t mode) {
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return absl::PermissionDeniedError(absl::StrCat("cannot write ", tmp));
  const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  if (!written || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("cannot write ", path));
  }
  return absl::OkStatus();
}

std::string DefaultDataDir() {
  const char* home = std::getenv("HOME");
  if (home != nullptr && *home != '\0') return absl::StrCat(home, "/.arbor");
  return absl::StrCat("/tmp/arbor-", ::getuid());
}

absl::StatusOr<std::string> BearerToken() {
  if (const std::string f = absl::GetFlag(FLAGS_token_file); !f.empty()) return ReadToken(f);
  if (const char* f = std::getenv("ARBOR_TOKEN_FILE"); f != nullptr && *f != '\0') {
    return ReadToken(f);
  }
  if (const char* t = std::getenv("ARBOR_TOKEN"); t != nullptr && *t != '\0') {
    return std::string(absl::StripAsciiWhitespace(t));
  }
  const std::string local = DefaultDataDir() + "/token";
  if (std::filesystem::exists(local)) return ReadToken(local);
  return std::string();
}

absl::Status ConfigureClientTls() {
  std::string dir = absl::GetFlag(FLAGS_tls_dir);
  if (dir.empty()) {
    if (const char* env = std::getenv("ARBOR_TLS_DIR"); env != nullptr && *env != '\0') {
      dir = env;
    } else if (std::filesystem::exists(DefaultDataDir() + "/tls/ca.crt")) {
      dir = DefaultDataDir() + "/tls";
    }
  }
  if (dir.empty() || dir == "none") return absl::OkStatus();
  const rpc::TlsFiles files = {
      .cert = dir + "/operator.crt", .key = dir + "/operator.key", .ca = dir + "/ca.crt"};
  if (absl::Status st = rpc::CheckTlsFiles(files, "--tls_dir " + dir); !st.ok()) return st;
  rpc::SetDefaultChannelCredentials(rpc::MakeChannelCredentials(files));
  std::string name = absl::GetFlag(FLAGS_tls_server_name);
  if (const char* env = std::getenv("ARBOR_TLS_SERVER_NAME"); name.empty() && env != nullptr) {
    name = env;
  }
  rpc::SetDefaultServerName(name);
  return absl::OkStatus();
}

absl::StatusOr<std::string> EnsureLocalToken(const std::string& data_dir) {
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", data_dir));
  ::chmod(data_dir.c_str(), 0700);
  const std::string token_path = data_dir + "/token", tokens_path = data_dir + "/tokens";
  absl::StatusOr<std::string> token = ReadToken(token_path);
  if (!token.ok()) {
    // O_EXCL: two `arbor up` starting at once agree on one token.
    const std::string fresh = RandomHex(32);
    const int fd = ::open(token_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
      const std::string line = fresh + "\n";
      const bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
      ::close(fd);
      if (!ok) return absl::InternalError(absl::StrCat("cannot write ", token_path));
    }
    token = ReadToken(token_path);
    if (!token.ok()) return token.status();
  }
  if (!std::filesystem::exists(tokens_path)) {
    const std::string text = absl::StrCat(
        "# Arbor planner tokens: sha256:<hash of a token> tenant=<name> [max_tasks=N] "
        "[max_nodes=N] [max_tokens=N] [tokens_per_minute=N] [expires=RFC 3339 time]\n",
        rpc::TokenHash(*token), " tenant=local\n");
    if (absl::Status st = WriteAtomically(tokens_path, text, 0600); !st.ok()) return st;
  }
  return tokens_path;
}

}  // namespace arbor::cli
