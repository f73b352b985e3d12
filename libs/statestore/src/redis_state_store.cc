// RedisStateStore: each key is a Redis hash {val, ver} under `key_prefix`; writes run as Lua
// scripts so that version bumps and compare-and-set are atomic on the server.
#include <hiredis/hiredis.h>

#include <algorithm>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "arbor/common/status_macros.h"
#include "arbor/statestore/state_store.h"
#include "spdlog/spdlog.h"

namespace arbor::statestore {
namespace {

constexpr char kPutScript[] =
    "local v = redis.call('HINCRBY', KEYS[1], 'ver', 1) "
    "redis.call('HSET', KEYS[1], 'val', ARGV[1]) return v";
constexpr char kCasScript[] =
    "local cur = tonumber(redis.call('HGET', KEYS[1], 'ver') or '0') "
    "if cur ~= tonumber(ARGV[1]) then return {0, cur} end "
    "local v = redis.call('HINCRBY', KEYS[1], 'ver', 1) "
    "redis.call('HSET', KEYS[1], 'val', ARGV[2]) return {1, v}";

struct RedisUrl {
  std::string host;
  int port = 6379;
  int db = 0;
  std::string password;
};

absl::StatusOr<RedisUrl> ParseUrl(absl::string_view url) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("redis url \"", url, "\": ", why));
  };
  constexpr absl::string_view kScheme = "redis://";
  if (url.substr(0, kScheme.size()) != kScheme) return bad("must start with redis://");
  absl::string_view rest = url.substr(kScheme.size());
  RedisUrl u;
  if (const size_t at = rest.rfind('@'); at != absl::string_view::npos) {
    absl::string_view auth = rest.substr(0, at);
    if (auth.empty() || auth[0] != ':') return bad("credentials must be :password@");
    u.password = std::string(auth.substr(1));
    rest = rest.substr(at + 1);
  }
  if (const size_t slash = rest.find('/'); slash != absl::string_view::npos) {
    if (!absl::SimpleAtoi(rest.substr(slash + 1), &u.db) || u.db < 0 || u.db > 15) {
      return bad("database must be a number in [0, 15]");
    }
    rest = rest.substr(0, slash);
  }
  if (const size_t colon = rest.rfind(':'); colon != absl::string_view::npos) {
    if (!absl::SimpleAtoi(rest.substr(colon + 1), &u.port) || u.port < 1 || u.port > 65535) {
      return bad("port must be in [1, 65535]");
    }
    rest = rest.substr(0, colon);
  }
  if (rest.empty()) return bad("host is missing");
  u.host = std::string(rest);
  return u;
}

// Owns a reply; frees it on scope exit.
struct Reply {
  redisReply* r = nullptr;
  ~Reply() {
    if (r != nullptr) freeReplyObject(r);
  }
};

class RedisStateStore : public StateStore {
 public:
  RedisStateStore(RedisOptions options, RedisUrl url)
      : options_(std::move(options)), url_(std::move(url)) {}
  ~RedisStateStore() override {
    if (ctx_ != nullptr) redisFree(ctx_);
  }

  absl::Status Connect() {
    absl::MutexLock lock(&mu_);
    return ConnectLocked();
  }

  absl::StatusOr<int64_t> Put(absl::string_view key, absl::string_view value) override {
    ARBOR_RETURN_IF_ERROR(ValidateKey(key));
    ARBOR_RETURN_IF_ERROR(ValidateValue(value));
    const std::string k = options_.key_prefix + std::string(key);
    absl::MutexLock lock(&mu_);
    Reply reply;
    ARBOR_RETURN_IF_ERROR(Command(&reply, "EVAL %s 1 %b %b", kPutScript, k.data(), k.size(),
                                  value.data(), value.size()));
    if (reply.r->type != REDIS_REPLY_INTEGER) return Unexpected("Put");
    return static_cast<int64_t>(reply.r->integer);
  }

  absl::StatusOr<VersionedValue> Get(absl::string_view key) override {
    ARBOR_RETURN_IF_ERROR(ValidateKey(key));
    const std::string k = options_.key_prefix + std::string(key);
    absl::MutexLock lock(&mu_);
    Reply reply;
    ARBOR_RETURN_IF_ERROR(Command(&reply, "HMGET %b val ver", k.data(), k.size()));
    if (reply.r->type != REDIS_REPLY_ARRAY || reply.r->elements != 2) return Unexpected("Get");
    const redisReply* val = reply.r->element[0];
    const redisReply* ver = reply.r->element[1];
    if (val->type == REDIS_REPLY_NIL || ver->type == REDIS_REPLY_NIL) {
      return absl::NotFoundError(absl::StrCat("key \"", key, "\" not found"));
    }
    VersionedValue out;
    out.value.assign(val->str, val->len);
    if (!absl::SimpleAtoi(absl::string_view(ver->str, ver->len), &out.version)) {
      return Unexpected("Get version");
    }
    return out;
  }

  absl::Status Delete(absl::string_view key) override {
    ARBOR_RETURN_IF_ERROR(ValidateKey(key));
    const std::string k = options_.key_prefix + std::string(key);
    absl::MutexLock lock(&mu_);
    Reply reply;
    ARBOR_RETURN_IF_ERROR(Command(&reply, "DEL %b", k.data(), k.size()));
    if (reply.r->type != REDIS_REPLY_INTEGER) return Unexpected("Delete");
    if (reply.r->integer == 0) {
      return absl::NotFoundError(absl::StrCat("key \"", key, "\" not found"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<int64_t> CompareAndSet(absl::string_view key, int64_t expected_version,
                                        absl::string_view value) override {
    ARBOR_RETURN_IF_ERROR(ValidateKey(key));
    ARBOR_RETURN_IF_ERROR(ValidateValue(value));
    const std::string k = options_.key_prefix + std::string(key);
    const std::string expected = absl::StrCat(expected_version);
    absl::MutexLock lock(&mu_);
    Reply reply;
    ARBOR_RETURN_IF_ERROR(Command(&reply, "EVAL %s 1 %b %b %b", kCasScript, k.data(), k.size(),
                                  expected.data(), expected.size(), value.data(), value.size()));
    if (reply.r->type != REDIS_REPLY_ARRAY || reply.r->elements != 2 ||
        reply.r->element[0]->type != REDIS_REPLY_INTEGER ||
        reply.r->element[1]->type != REDIS_REPLY_INTEGER) {
      return Unexpected("CompareAndSet");
    }
    const int64_t version = reply.r->element[1]->integer;
    if (reply.r->element[0]->integer == 0) {
      return absl::AbortedError(absl::StrCat("key \"", key, "\" is at version ", version,
                                             ", not the expected ", expected_version));
    }
    return version;
  }

  absl::StatusOr<std::vector<std::string>> ListKeys(absl::string_view prefix, int limit,
                                                    absl::string_view start_after) override {
    // SCAN's MATCH is a glob: escape the prefix's special characters.
    std::string pattern;
    for (char c : options_.key_prefix + std::string(prefix)) {
      if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') pattern.push_back('\\');
      pattern.push_back(c);
    }
    pattern.push_back('*');
    std::vector<std::string> keys;
    absl::MutexLock lock(&mu_);
    std::string cursor = "0";
    do {
      Reply reply;
      ARBOR_RETURN_IF_ERROR(Command(&reply, "SCAN %b MATCH %b COUNT 1000", cursor.data(),
                                    cursor.size(), pattern.data(), pattern.size()));
      if (reply.r->type != REDIS_REPLY_ARRAY || reply.r->elements != 2) return Unexpected("Scan");
      cursor.assign(reply.r->element[0]->str, reply.r->element[0]->len);
      const redisReply* batch = reply.r->element[1];
      for (size_t i = 0; i < batch->elements; ++i) {
        keys.emplace_back(batch->element[i]->str + options_.key_prefix.size(),
                          batch->element[i]->len - options_.key_prefix.size());
      }
    } while (cursor != "0");
    std::sort(keys.begin(), keys.end());
    keys.erase(keys.begin(), std::upper_bound(keys.begin(), keys.end(), start_after));
    if (static_cast<int>(keys.size()) > limit) keys.resize(std::max(limit, 0));
    return keys;
  }

 private:
  std::string UrlForErrors() const { return absl::StrCat("redis://", url_.host, ":", url_.port); }

  absl::Status Unexpected(absl::string_view op) const {
    return absl::InternalError(absl::StrCat(UrlForErrors(), ": unexpected reply to ", op));
  }

  absl::Status ConnectLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (ctx_ != nullptr) {
      redisFree(ctx_);
      ctx_ = nullptr;
    }
    const timeval tv{options_.timeout_ms / 1000, (options_.timeout_ms % 1000) * 1000};
    redisContext* c = redisConnectWithTimeout(url_.host.c_str(), url_.port, tv);
    if (c == nullptr || c->err) {
      const std::string why = c == nullptr ? "out of memory" : c->errstr;
      if (c != nullptr) redisFree(c);
      return absl::UnavailableError(absl::StrCat(UrlForErrors(), ": cannot connect: ", why));
    }
    redisSetTimeout(c, tv);
    ctx_ = c;
    absl::Status st;
    if (!url_.password.empty()) {
      Reply auth;
      st = RawCommand(&auth, "AUTH %b", url_.password.data(), url_.password.size());
    }
    if (st.ok() && url_.db != 0) {
      Reply select;
      st = RawCommand(&select, "SELECT %d", url_.db);
    }
    if (!st.ok() && ctx_ != nullptr) {  // a half-set-up connection is not kept
      redisFree(ctx_);
      ctx_ = nullptr;
    }
    return st;
  }

  // One command on the current connection; a transport error drops the connection.
  template <typename... Args>
  absl::Status RawCommand(Reply* reply, const char* fmt, Args... args)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    reply->r = static_cast<redisReply*>(redisCommand(ctx_, fmt, args...));
    if (reply->r == nullptr) {
      const std::string why = ctx_->errstr;
      redisFree(ctx_);
      ctx_ = nullptr;
      return absl::UnavailableError(absl::StrCat(UrlForErrors(), ": ", why));
    }
    if (reply->r->type == REDIS_REPLY_ERROR) {
      const absl::string_view error(reply->r->str, reply->r->len);
      // A server still loading its append-only file, or busy: it answers soon.
      const bool transient =
          absl::StartsWith(error, "LOADING") || absl::StartsWith(error, "BUSY") ||
          absl::StartsWith(error, "TRYAGAIN") || absl::StartsWith(error, "MASTERDOWN");
      return absl::Status(transient ? absl::StatusCode::kUnavailable : absl::StatusCode::kInternal,
                          absl::StrCat(UrlForErrors(), ": ", error));
    }
    return absl::OkStatus();
  }

  // Reconnects if needed, then runs the command.
  template <typename... Args>
  absl::Status Command(Reply* reply, const char* fmt, Args... args)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (ctx_ == nullptr) ARBOR_RETURN_IF_ERROR(ConnectLocked());
    return RawCommand(reply, fmt, args...);
  }

  const RedisOptions options_;
  const RedisUrl url_;
  absl::Mutex mu_;
  redisContext* ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace

absl::StatusOr<std::unique_ptr<StateStore>> NewRedisStateStore(const RedisOptions& options) {
  ARBOR_ASSIGN_OR_RETURN(RedisUrl url, ParseUrl(options.url));
  if (!options.password.empty()) url.password = options.password;
  auto store = std::make_unique<RedisStateStore>(options, std::move(url));
  if (absl::Status st = store->Connect(); !st.ok()) {
    if (options.require_connection || !absl::IsUnavailable(st)) return st;
    spdlog::warn("{}; state store calls fail UNAVAILABLE until it answers", st.ToString());
  }
  return store;
}

}  // namespace arbor::statestore
