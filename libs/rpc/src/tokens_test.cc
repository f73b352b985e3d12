#include "arbor/rpc/tokens.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "gtest/gtest.h"

namespace arbor::rpc {
namespace {

// SHA-256("abc"), FIPS 180-2's first example.
constexpr char kAbcHash[] =
    "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

TEST(Tokens, HashIsSha256) { EXPECT_EQ(TokenHash("abc"), kAbcHash); }

TEST(Tokens, ParsesTenantsAndQuotas) {
  const std::string text =
      absl::StrCat("# clients\n\n", kAbcHash, " tenant=alice max_tasks=2 max_nodes=500\n", "  ",
                   TokenHash("b"), "\ttenant=bob tokens_per_minute=60000 \n");
  absl::StatusOr<TokenTable> t = ParseTokens(text, "tokens");
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->size(), 2u);
  const Identity& a = t->at(kAbcHash);
  EXPECT_EQ(a.tenant, "alice");
  EXPECT_EQ(a.quota.max_tasks, 2);
  EXPECT_EQ(a.quota.max_nodes, 500);
  EXPECT_EQ(a.quota.max_tokens, 0);
  EXPECT_EQ(t->at(TokenHash("b")).quota.tokens_per_minute, 60000);
}

TEST(Tokens, BadLinesNameTheLineAndTheProblem) {
  const std::string h = TokenHash("x");
  const std::pair<std::string, std::string> cases[] = {
      {"abc tenant=a", "line 1: the first field must be sha256"},
      {"sha256:ABC tenant=a", "the first field must be sha256"},
      {"\n" + h, "line 2: tenant= is missing"},
      {h + " tenant=a/b", "tenant must be 1..64 characters"},
      {h + " tenant=", "tenant must be 1..64 characters"},
      {h + " tenant=a max_tasks=-1", "max_tasks=-1 is not a non-negative integer"},
      {h + " tenant=a max_nodes=9999999999999", "max_nodes=9999999999999"},
      {h + " tenant=a quota", "\"quota\" is not key=value"},
      {h + " tenant=a color=red", "unknown key \"color\""},
      {h + " tenant=a\n" + h + " tenant=b", "line 2: the same token hash twice"},
      {h + " tenant=a max_tasks=1\n" + TokenHash("y") + " tenant=a max_tasks=2",
       "tenant a has other quotas"},
  };
  for (const auto& [text, want] : cases) {
    absl::StatusOr<TokenTable> t = ParseTokens(text, "f");
    ASSERT_FALSE(t.ok()) << text;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(t.status().message().find(want), std::string::npos)
        << t.status().message() << " / want " << want;
  }
}

TEST(Tokens, AuthenticatesBearerMetadata) {
  TokenAuthenticator auth(*ParseTokens(absl::StrCat(kAbcHash, " tenant=alice"), "t"));
  std::multimap<grpc::string_ref, grpc::string_ref> md;
  EXPECT_EQ(auth.Authenticate(md).status().code(), absl::StatusCode::kUnauthenticated);
  const std::string good = "Bearer abc", bad = "Bearer abd", basic = "Basic abc";
  md.emplace("authorization", good);
  absl::StatusOr<Identity> id = auth.Authenticate(md);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->tenant, "alice");
  for (const std::string* v : {&bad, &basic}) {
    md.clear();
    md.emplace("authorization", *v);
    EXPECT_EQ(auth.Authenticate(md).status().code(), absl::StatusCode::kUnauthenticated) << *v;
  }
  EXPECT_EQ(auth.AuthenticateToken("").status().code(), absl::StatusCode::kUnauthenticated);
}

TEST(Tokens, AnExpiredTokenIsRefused) {
  TokenAuthenticator auth(
      *ParseTokens(absl::StrCat(TokenHash("old"), " tenant=a expires=2020-01-01T00:00:00Z\n",
                                TokenHash("new"), " tenant=b expires=2999-01-01T00:00:00Z\n"),
                   "t"));
  const absl::Status old = auth.AuthenticateToken("old").status();
  EXPECT_EQ(old.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(old.message(), "the bearer token has expired");
  EXPECT_TRUE(auth.AuthenticateToken("new").ok());
  EXPECT_NE(ParseTokens(absl::StrCat(TokenHash("x"), " tenant=a expires=tomorrow"), "t")
                .status()
                .message()
                .find("expires=tomorrow is not an RFC 3339 time"),
            std::string::npos);
}

// Work without a caller (a resumed task) takes its tenant's quotas from any of its unexpired
// tokens (a tenant has one set); none for a tenant with no valid token.
TEST(Tokens, QuotaOfATenantComesFromItsValidTokens) {
  TokenAuthenticator auth(
      *ParseTokens(absl::StrCat(TokenHash("a1"), " tenant=a max_nodes=20 tokens_per_minute=900\n",
                                TokenHash("a2"), " tenant=a max_nodes=20 tokens_per_minute=900\n",
                                TokenHash("b"), " tenant=b\n", TokenHash("c"),
                                " tenant=c max_nodes=5 expires=2020-01-01T00:00:00Z\n"),
                   "t"));
  std::optional<TenantQuota> a = auth.QuotaOf("a");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->max_nodes, 20);
  EXPECT_EQ(a->tokens_per_minute, 900);
  EXPECT_EQ(a->max_tokens, 0);
  std::optional<TenantQuota> b = auth.QuotaOf("b");
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->max_nodes, 0);
  EXPECT_FALSE(auth.QuotaOf("c").has_value());
  EXPECT_FALSE(auth.QuotaOf("nobody").has_value());
}

TEST(Tokens, ReloadsAChangedFileAndKeepsTheLastGoodOne) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/tokens-", ::getpid());
  auto write = [&](const std::string& text) {
    std::ofstream(path + ".tmp") << text;
    std::filesystem::rename(path + ".tmp", path);
  };
  write(absl::StrCat(TokenHash("one"), " tenant=a\n"));
  absl::StatusOr<std::unique_ptr<TokenAuthenticator>> auth = TokenAuthenticator::Open(path);
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_TRUE((*auth)->AuthenticateToken("one").ok());
  EXPECT_FALSE((*auth)->AuthenticateToken("two").ok());

  // Revoke "one", add "two": in effect within the one-second check interval.
  write(absl::StrCat(TokenHash("two"), " tenant=b\n"));
  bool switched = false;
  for (int i = 0; i < 40 && !switched; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    switched = (*auth)->AuthenticateToken("two").ok();
  }
  ASSERT_TRUE(switched);
  EXPECT_EQ((*auth)->AuthenticateToken("two")->tenant, "b");
  EXPECT_EQ((*auth)->AuthenticateToken("one").status().code(), absl::StatusCode::kUnauthenticated);

  // A broken rewrite keeps the last good table.
  write("not a tokens file\n");
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  EXPECT_TRUE((*auth)->AuthenticateToken("two").ok());
  std::filesystem::remove(path);

  EXPECT_EQ(TokenAuthenticator::Open(path).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace arbor::rpc
