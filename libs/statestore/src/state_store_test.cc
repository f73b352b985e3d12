// One contract, two backends: every test runs against the in-memory store and against a real
// redis-server started by the test on a free loopback port.
#include "arbor/statestore/state_store.h"

#include <thread>

#include "arbor/statestore/redis_server_for_test.h"
#include "gtest/gtest.h"

namespace arbor::statestore {
namespace {

enum class Backend { kInMemory, kRedis };

class StateStoreTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    if (GetParam() == Backend::kInMemory) {
      store_ = NewInMemoryStateStore();
      return;
    }
    auto server = testing::RedisServerForTest::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    redis_ = std::move(*server);
    auto store = NewRedisStateStore({.url = redis_->url()});
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  std::unique_ptr<testing::RedisServerForTest> redis_;
  std::unique_ptr<StateStore> store_;
};

TEST_P(StateStoreTest, PutGetDeleteWithVersions) {
  EXPECT_EQ(store_->Get("task/1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*store_->Put("task/1", "a"), 1);
  EXPECT_EQ(*store_->Put("task/1", "bb"), 2);
  auto v = store_->Get("task/1");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->value, "bb");
  EXPECT_EQ(v->version, 2);
  ASSERT_TRUE(store_->Delete("task/1").ok());
  EXPECT_EQ(store_->Get("task/1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Delete("task/1").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*store_->Put("task/1", "again"), 1);  // a new key starts over
}

TEST_P(StateStoreTest, BinaryValuesRoundTrip) {
  std::string bytes;
  for (int i = 0; i < 256; ++i) bytes.push_back(static_cast<char>(i));
  bytes += std::string(100000, '\0');
  ASSERT_TRUE(store_->Put("bin", bytes).ok());
  EXPECT_EQ(store_->Get("bin")->value, bytes);
  ASSERT_TRUE(store_->Put("empty", "").ok());
  EXPECT_EQ(store_->Get("empty")->value, "");
}

TEST_P(StateStoreTest, CompareAndSetWinsOnlyAtTheExpectedVersion) {
  EXPECT_EQ(*store_->CompareAndSet("k", 0, "created"), 1);
  auto stale = store_->CompareAndSet("k", 0, "again");
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kAborted);
  EXPECT_NE(stale.status().message().find("version 1, not the expected 0"), absl::string_view::npos)
      << stale.status();
  EXPECT_EQ(*store_->CompareAndSet("k", 1, "second"), 2);
  EXPECT_EQ(store_->CompareAndSet("k", 1, "lost").status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(store_->Get("k")->value, "second");  // the losing write changed nothing
  EXPECT_EQ(store_->CompareAndSet("missing", 3, "x").status().code(), absl::StatusCode::kAborted);
}

TEST_P(StateStoreTest, ConcurrentCompareAndSetHasExactlyOneWinnerPerVersion) {
  ASSERT_TRUE(store_->Put("counter", "0").ok());
  constexpr int kThreads = 4, kIncrements = 50;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int done = 0; done < kIncrements;) {  // bounded: each retry follows a lost race
        auto cur = store_->Get("counter");
        ASSERT_TRUE(cur.ok());
        const int next = std::stoi(cur->value) + 1;
        if (store_->CompareAndSet("counter", cur->version, std::to_string(next)).ok()) ++done;
      }
    });
  }
  for (auto& th : threads) th.join();
  auto v = store_->Get("counter");
  EXPECT_EQ(v->value, std::to_string(kThreads * kIncrements));
  EXPECT_EQ(v->version, 1 + kThreads * kIncrements);
}

TEST_P(StateStoreTest, ListKeysByPrefixSortedAndLimited) {
  for (const char* k : {"task/b", "task/a", "task/c", "tasks*x", "other/a"}) {
    ASSERT_TRUE(store_->Put(k, "v").ok());
  }
  EXPECT_EQ(*store_->ListKeys("task/", 10),
            (std::vector<std::string>{"task/a", "task/b", "task/c"}));
  EXPECT_EQ(*store_->ListKeys("task/", 2), (std::vector<std::string>{"task/a", "task/b"}));
  EXPECT_EQ(*store_->ListKeys("tasks*", 10), (std::vector<std::string>{"tasks*x"}));  // no glob
  EXPECT_TRUE(store_->ListKeys("none/", 10)->empty());
  // Pages: each starts after the previous page's last key.
  EXPECT_EQ(*store_->ListKeys("task/", 2, "task/b"), (std::vector<std::string>{"task/c"}));
  EXPECT_EQ(*store_->ListKeys("task/", 2, "task/a"),
            (std::vector<std::string>{"task/b", "task/c"}));
  EXPECT_EQ(*store_->ListKeys("task/", 2, "a"), (std::vector<std::string>{"task/a", "task/b"}));
  EXPECT_TRUE(store_->ListKeys("task/", 2, "task/c")->empty());
  EXPECT_TRUE(store_->ListKeys("task/", 2, "u")->empty());
}

TEST_P(StateStoreTest, BadKeysAndValuesNameTheField) {
  auto empty = store_->Put("", "v");
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(empty.status().message().find("key of 0 bytes"), absl::string_view::npos);
  EXPECT_EQ(store_->Get(std::string(kMaxKeyBytes + 1, 'k')).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto big = store_->Put("k", std::string(kMaxValueBytes + 1, 'v'));
  EXPECT_NE(big.status().message().find("value of"), absl::string_view::npos);
  EXPECT_EQ(store_->Get("k").status().code(), absl::StatusCode::kNotFound);  // nothing stored
}

INSTANTIATE_TEST_SUITE_P(Backends, StateStoreTest,
                         ::testing::Values(Backend::kInMemory, Backend::kRedis),
                         [](const auto& info) {
                           return info.param == Backend::kInMemory ? "InMemory" : "Redis";
                         });

TEST(RedisStateStoreTest, ServerLossIsUnavailableAndARestartedServerIsUsedAgain) {
  auto server = *testing::RedisServerForTest::Start();
  auto store = *NewRedisStateStore({.url = server->url(), .timeout_ms = 500});
  ASSERT_TRUE(store->Put("k", "v").ok());
  const int port = server->port();
  server->Kill();
  auto down = store->Get("k");
  EXPECT_EQ(down.status().code(), absl::StatusCode::kUnavailable) << down.status();
  EXPECT_NE(down.status().message().find(absl::StrCat(port)), absl::string_view::npos);
  auto again = *testing::RedisServerForTest::Start();  // a new, empty server
  auto store2 = *NewRedisStateStore({.url = again->url()});
  EXPECT_EQ(*store2->Put("k", "v"), 1);
}

TEST(RedisStateStoreTest, BadUrlsAndUnreachableServers) {
  for (const char* url : {"http://x", "redis://", "redis://h:0", "redis://h:99999", "redis://h/99",
                          "redis://user@h"}) {
    auto s = NewRedisStateStore({.url = url});
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << url;
    EXPECT_NE(s.status().message().find(url), absl::string_view::npos) << s.status();
  }
  const int port = testing::FreeLoopbackPort();
  auto s = NewRedisStateStore({.url = absl::StrCat("redis://127.0.0.1:", port), .timeout_ms = 300});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kUnavailable);
}

TEST(RedisStateStoreTest, KeyPrefixesKeepNamespacesApart) {
  auto server = *testing::RedisServerForTest::Start();
  auto a = *NewRedisStateStore({.url = server->url(), .key_prefix = "a:"});
  auto b = *NewRedisStateStore({.url = server->url() + "/0", .key_prefix = "b:"});
  ASSERT_TRUE(a->Put("k", "from a").ok());
  EXPECT_EQ(b->Get("k").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*a->ListKeys("", 10), std::vector<std::string>{"k"});
  EXPECT_TRUE(b->ListKeys("", 10)->empty());
}

}  // namespace
}  // namespace arbor::statestore
