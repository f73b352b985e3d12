#include "arbor/rpc/tokens.h"

#include <openssl/evp.h>
#include <sys/stat.h>

#include <cctype>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "arbor/common/mapped_file.h"
#include "spdlog/spdlog.h"

namespace arbor::rpc {
namespace {

constexpr char kHashPrefix[] = "sha256:";

bool IsLowerHex(absl::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// The file's identity and last change, to notice a rewrite (including an atomic rename).
std::string Stamp(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return "";
  return absl::StrCat(st.st_ino, ":", st.st_size, ":", st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec);
}

template <typename T>
absl::Status ParseLimit(absl::string_view value, absl::string_view key, absl::string_view where,
                        T* out) {
  T v = 0;
  if (!absl::SimpleAtoi(value, &v) || v < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": ", key, "=", value, " is not a non-negative integer"));
  }
  *out = v;
  return absl::OkStatus();
}

}  // namespace

std::string TokenHash(absl::string_view token) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(token.data(), token.size(), digest, &len, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = kHashPrefix;
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(kHex[digest[i] >> 4]);
    out.push_back(kHex[digest[i] & 15]);
  }
  return out;
}

bool ValidTenantName(absl::string_view tenant) {
  if (tenant.empty() || tenant.size() > 64) return false;
  for (char c : tenant) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) {
      return false;
    }
  }
  return true;
}

absl::StatusOr<TokenTable> ParseTokens(absl::string_view text, absl::string_view source) {
  TokenTable table;
  std::map<std::string, TenantQuota> quotas;  // one tenant, one set of quotas
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    const std::string where = absl::StrCat(source, " line ", line_no);
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    const absl::string_view hash = fields[0];
    if (!absl::StartsWith(hash, kHashPrefix) || hash.size() != sizeof(kHashPrefix) - 1 + 64 ||
        !IsLowerHex(hash.substr(sizeof(kHashPrefix) - 1))) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": the first field must be sha256:<64 lowercase hex digits> (the token's hash)"));
    }
    Identity id;
    bool has_tenant = false;
    for (size_t i = 1; i < fields.size(); ++i) {
      const size_t eq = fields[i].find('=');
      if (eq == absl::string_view::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": \"", fields[i], "\" is not key=value"));
      }
      const absl::string_view key = fields[i].substr(0, eq), value = fields[i].substr(eq + 1);
      absl::Status st;
      if (key == "tenant") {
        if (!ValidTenantName(value)) {
          return absl::InvalidArgumentError(
              absl::StrCat(where, ": tenant must be 1..64 characters of [A-Za-z0-9._-]"));
        }
        id.tenant = std::string(value);
        has_tenant = true;
      } else if (key == "max_tasks") {
        st = ParseLimit(value, key, where, &id.quota.max_tasks);
      } else if (key == "max_nodes") {
        st = ParseLimit(value, key, where, &id.quota.max_nodes);
      } else if (key == "max_tokens") {
        st = ParseLimit(value, key, where, &id.quota.max_tokens);
      } else if (key == "tokens_per_minute") {
        st = ParseLimit(value, key, where, &id.quota.tokens_per_minute);
      } else if (key == "expires") {
        std::string err;
        if (!absl::ParseTime(absl::RFC3339_full, value, &id.expires, &err)) {
          return absl::InvalidArgumentError(absl::StrCat(
              where, ": expires=", value, " is not an RFC 3339 time (2027-01-31T00:00:00Z)"));
        }
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": unknown key \"", key,
            "\" (tenant, max_tasks, max_nodes, max_tokens, tokens_per_minute, expires)"));
      }
      if (!st.ok()) return st;
    }
    if (!has_tenant) return absl::InvalidArgumentError(absl::StrCat(where, ": tenant= is missing"));
    if (table.count(std::string(hash))) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": the same token hash twice"));
    }
    auto [it, fresh] = quotas.emplace(id.tenant, id.quota);
    const TenantQuota& q = it->second;
    if (!fresh && (q.max_tasks != id.quota.max_tasks || q.max_nodes != id.quota.max_nodes ||
                   q.max_tokens != id.quota.max_tokens ||
                   q.tokens_per_minute != id.quota.tokens_per_minute)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": tenant ", id.tenant,
                       " has other quotas on an earlier line (one tenant, one "
                       "set of quotas)"));
    }
    table.emplace(std::string(hash), std::move(id));
  }
  return table;
}

absl::StatusOr<std::unique_ptr<TokenAuthenticator>> TokenAuthenticator::Open(
    const std::string& path) {
  const std::string stamp = Stamp(path);
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<TokenTable> table = ParseTokens(*text, path);
  if (!table.ok()) return table.status();
  if (table->empty()) spdlog::warn("tokens file {} has no tokens: every call is refused", path);
  return std::unique_ptr<TokenAuthenticator>(
      new TokenAuthenticator(path, *std::move(table), stamp));
}

TokenAuthenticator::TokenAuthenticator(TokenTable table) : table_(std::move(table)) {}

TokenAuthenticator::TokenAuthenticator(std::string path, TokenTable table, std::string stamp)
    : path_(std::move(path)),
      table_(std::move(table)),
      stamp_(std::move(stamp)),
      next_check_(absl::Now() + absl::Seconds(1)) {}

void TokenAuthenticator::MaybeReload() {
  if (path_.empty() || absl::Now() < next_check_) return;
  next_check_ = absl::Now() + absl::Seconds(1);
  const std::string stamp = Stamp(path_);
  if (stamp == stamp_) return;
  stamp_ = stamp;
  absl::StatusOr<std::string> text = ReadFileToString(path_);
  absl::StatusOr<TokenTable> table =
      text.ok() ? ParseTokens(*text, path_) : absl::StatusOr<TokenTable>(text.status());
  if (!table.ok()) {
    spdlog::error("tokens file changed but is not usable; keeping the last good one: {}",
                  table.status().ToString());
    return;
  }
  spdlog::info("tokens file {} reloaded: {} tokens", path_, table->size());
  table_ = *std::move(table);
}

absl::StatusOr<Identity> TokenAuthenticator::AuthenticateToken(absl::string_view token) {
  if (token.empty()) return absl::UnauthenticatedError("empty bearer token");
  const std::string hash = TokenHash(token);
  absl::MutexLock lock(&mu_);
  MaybeReload();
  auto it = table_.find(hash);
  if (it == table_.end()) return absl::UnauthenticatedError("the bearer token is not valid");
  if (absl::Now() >= it->second.expires) {
    return absl::UnauthenticatedError("the bearer token has expired");
  }
  return it->second;
}

std::optional<TenantQuota> TokenAuthenticator::QuotaOf(absl::string_view tenant) {
  absl::MutexLock lock(&mu_);
  MaybeReload();
  const absl::Time now = absl::Now();
  for (const auto& [hash, id] : table_) {
    // ParseTokens gives every token of a tenant the same quotas.
    if (id.tenant == tenant && now < id.expires) return id.quota;
  }
  return std::nullopt;
}

absl::StatusOr<Identity> TokenAuthenticator::Authenticate(
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) {
  auto it = metadata.find(kAuthorizationKey);
  if (it == metadata.end()) {
    return absl::UnauthenticatedError(
        "no authorization metadata: send \"authorization: Bearer <token>\"");
  }
  const absl::string_view value(it->second.data(), it->second.size());
  if (!absl::StartsWith(value, kBearerPrefix)) {
    return absl::UnauthenticatedError("the authorization metadata is not \"Bearer <token>\"");
  }
  return AuthenticateToken(value.substr(sizeof(kBearerPrefix) - 1));
}

}  // namespace arbor::rpc
