// Bearer tokens for the planner's public API. A tokens file maps the SHA-256 of each token (never
// the token itself) to a tenant and its quotas, one client per line:
//
//   # comment
//   sha256:<64 hex digits> tenant=<name> [max_tasks=N] [max_nodes=N] [max_tokens=N]
//                                        [tokens_per_minute=N] [expires=<RFC 3339 time>]
//
// A tenant name is 1..64 characters of [A-Za-z0-9._-]; several tokens may name one tenant (with
// the same quotas); a quota left out (or 0) is the server's own limit. `TokenAuthenticator` reads
// such a file and re-reads it when it changes (checked at most once a second), so tokens are
// added and revoked without a restart; a file that no longer parses keeps the last good table
// and says why in the log. Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"

namespace arbor::rpc {

// What a tenant may use; 0 = the server's limit.
struct TenantQuota {
  int max_tasks = 0;              // running tasks at once
  int max_nodes = 0;              // Budget.max_nodes of one task
  int64_t max_tokens = 0;         // Budget.max_tokens of one task
  int64_t tokens_per_minute = 0;  // tokens generated and prefilled, over all its tasks
};

struct Identity {
  std::string tenant;
  TenantQuota quota;
  absl::Time expires = absl::InfiniteFuture();  // the token is refused from then on
};

// "sha256:<hex>" of `token`, as a tokens file names it.
std::string TokenHash(absl::string_view token);

// Whether `tenant` is 1..64 characters of [A-Za-z0-9._-].
bool ValidTenantName(absl::string_view tenant);

// A parsed tokens file: token hash -> identity. INVALID_ARGUMENT naming `source` and the line.
using TokenTable = std::map<std::string, Identity>;
absl::StatusOr<TokenTable> ParseTokens(absl::string_view text, absl::string_view source);

// The gRPC metadata key and scheme a client sends its token with.
inline constexpr char kAuthorizationKey[] = "authorization";
inline constexpr char kBearerPrefix[] = "Bearer ";

class TokenAuthenticator {
 public:
  // Reads `path` (INVALID_ARGUMENT or NOT_FOUND naming it when it cannot).
  static absl::StatusOr<std::unique_ptr<TokenAuthenticator>> Open(const std::string& path);
  // A fixed table, for tests.
  explicit TokenAuthenticator(TokenTable table);

  // The caller's identity from its `authorization: Bearer <token>` metadata; UNAUTHENTICATED
  // (saying what is missing, never which tokens exist) otherwise.
  absl::StatusOr<Identity> Authenticate(
      const std::multimap<grpc::string_ref, grpc::string_ref>& metadata);
  absl::StatusOr<Identity> AuthenticateToken(absl::string_view token);
  // The quotas of `tenant` in the tokens file as it is now; nullopt when none of its tokens is
  // valid (unexpired). For work that runs without a caller, e.g. a task resumed after a restart.
  std::optional<TenantQuota> QuotaOf(absl::string_view tenant);

 private:
  TokenAuthenticator(std::string path, TokenTable table, std::string stamp);
  void MaybeReload() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;  // empty: a fixed table
  absl::Mutex mu_;
  TokenTable table_ ABSL_GUARDED_BY(mu_);
  std::string stamp_ ABSL_GUARDED_BY(mu_);  // the file's inode, size and mtime when read
  absl::Time next_check_ ABSL_GUARDED_BY(mu_);
};

}  // namespace arbor::rpc
