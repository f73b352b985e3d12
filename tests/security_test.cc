// Tenants and trust through a real mesh (`arbor up` on loopback without a planner, plus a planner
// process with a tokens file), as an untrusted client would try it:
// - every planner RPC without a token, with a wrong one, with another scheme, or with a token
//   revoked by rewriting the tokens file: UNAUTHENTICATED;
// - tenant B names tenant A's task in every planner RPC: NOT_FOUND (or, for Solve, B's own task
//   of that id), A's task unchanged; a request naming another tenant: PERMISSION_DENIED;
// - quotas from the tokens file (running tasks, nodes per task): RESOURCE_EXHAUSTED naming them;
// - the kv-store and the router cache: another tenant's sequence is NOT_FOUND through the
//   router, and a prompt one tenant ran is not reused for another;
// - mTLS: each service answers only the roles it serves (no certificate, a certificate of
//   another CA, the wrong role's certificate: refused, and nothing changes).
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "arbor/rpc/tls.h"
#include "arbor/rpc/tokens.h"
#include "arbor/v1/expert.grpc.pb.h"
#include "arbor/v1/kvstore.grpc.pb.h"
#include "arbor/v1/planner.grpc.pb.h"
#include "arbor/v1/router.grpc.pb.h"
#include "child_process.h"
#include "game24_requests.h"
#include "gtest/gtest.h"
#include "mesh_certs.h"
#include "nlohmann/json.hpp"

namespace arbor {
namespace {

using testing::WaitFor;

const std::string kModel = std::string(ARBOR_SOURCE_DIR) + "/models/test-moe";

std::string TokensFile(bool with_carol) {
  std::string text =
      absl::StrCat(rpc::TokenHash("alice-token"), " tenant=alice max_tasks=1 max_nodes=50\n",
                   rpc::TokenHash("bob-token"), " tenant=bob\n", rpc::TokenHash("dave-token"),
                   " tenant=dave tokens_per_minute=1\n", rpc::TokenHash("eve-token"),
                   " tenant=eve expires=2020-01-01T00:00:00Z\n");
  if (with_carol) absl::StrAppend(&text, rpc::TokenHash("carol-token"), " tenant=carol\n");
  return text;
}

class SecurityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ =
        new std::string(::testing::TempDir() + "arbor_security_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(*dir_);
    const std::string ready = *dir_ + "/ready.json";
    up_ = new testing::ChildProcess({ARBOR_CLI_BIN, "up", "--ports=auto", "--model=" + kModel,
                                     "--workers=1", "--with_planner=false", "--ready_file=" + ready,
                                     "--log_dir=" + *dir_, "--data_dir=" + *dir_},
                                    *dir_ + "/up.log");
    if (!WaitFor([&] { return std::filesystem::exists(ready); }, std::chrono::seconds(90))) return;
    std::ifstream in(ready);
    const nlohmann::json j = nlohmann::json::parse(in);
    kvstore_ = new std::string(j["kvstore"].get<std::string>());
    router_ = new std::string(j["router"].get<std::string>());
    for (const auto& s : j["services"]) {
      if (s["name"] == "expert-0") expert_ = new std::string(s["address"].get<std::string>());
    }
    tls_ = new std::string(j["tls_dir"].get<std::string>());
    // This process's health checks go as an operator.
    rpc::SetDefaultChannelCredentials(Creds(rpc::Role::kOperator));
    WriteTokens(true);
    planner_address_ = new std::string(absl::StrCat("127.0.0.1:", FreeLoopbackPort()));
    planner_ = new testing::ChildProcess(
        {ARBOR_PLANNER_BIN, "--model=" + kModel, "--address=" + *planner_address_,
         absl::StrCat("--metrics_address=127.0.0.1:", FreeLoopbackPort()), "--kvstore=" + *kvstore_,
         "--router=" + *router_, "--tokens_file=" + *dir_ + "/tokens",
         "--tls_cert=" + *tls_ + "/planner.crt", "--tls_key=" + *tls_ + "/planner.key",
         "--tls_ca=" + *tls_ + "/ca.crt"},
        *dir_ + "/planner.log");
    ok_ = planner_->WaitServing(*planner_address_, std::chrono::seconds(60)).ok();
  }
  static void TearDownTestSuite() {
    delete planner_;
    if (up_ != nullptr) up_->Signal(SIGTERM);
    delete up_;
  }
  static void WriteTokens(bool with_carol) {
    std::ofstream(*dir_ + "/tokens.tmp") << TokensFile(with_carol);
    std::filesystem::rename(*dir_ + "/tokens.tmp", *dir_ + "/tokens");
  }

  // TLS trusting the mesh's CA and presenting `role`'s certificate.
  static std::shared_ptr<grpc::ChannelCredentials> Creds(rpc::Role role) {
    return rpc::MakeChannelCredentials(cli::MeshTlsFiles(*tls_, role));
  }

  void SetUp() override {
    ASSERT_TRUE(ok_) << "the mesh did not start; see " << *dir_;
    // A client of the planner presents no certificate: it has a token.
    planner_stub_ = v1::Planner::NewStub(grpc::CreateChannel(
        *planner_address_, rpc::MakeChannelCredentials({.ca = *tls_ + "/ca.crt"})));
    // Below the planner the test acts as a planner would.
    kv_ = v1::KvStore::NewStub(grpc::CreateChannel(*kvstore_, Creds(rpc::Role::kPlanner)));
    router_stub_ = v1::Router::NewStub(grpc::CreateChannel(*router_, Creds(rpc::Role::kPlanner)));
  }

  // A context carrying `authorization` (none when empty), with a deadline.
  static std::unique_ptr<grpc::ClientContext> Ctx(const std::string& authorization,
                                                  int seconds = 60) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    if (!authorization.empty()) ctx->AddMetadata("authorization", authorization);
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
    return ctx;
  }
  static std::string Bearer(const std::string& token) { return "Bearer " + token; }

  struct Solved {
    grpc::Status status;
    std::vector<v1::SolveEvent> events;
  };
  Solved Solve(const std::string& auth, const v1::SolveRequest& req) {
    Solved out;
    auto ctx = Ctx(auth, 120);
    auto stream = planner_stub_->Solve(ctx.get(), req);
    v1::SolveEvent e;
    while (stream->Read(&e)) out.events.push_back(e);
    out.status = stream->Finish();
    return out;
  }
  grpc::Status Get(const std::string& auth, const std::string& id, v1::Task* task) {
    v1::GetTaskRequest req;
    req.set_task_id(id);
    return planner_stub_->GetTask(Ctx(auth).get(), req, task);
  }
  grpc::Status Watch(const std::string& auth, const std::string& id) {
    v1::WatchTaskRequest req;
    req.set_task_id(id);
    auto ctx = Ctx(auth);
    auto stream = planner_stub_->WatchTask(ctx.get(), req);
    v1::SolveEvent e;
    while (stream->Read(&e)) {
    }
    return stream->Finish();
  }
  grpc::Status Cancel(const std::string& auth, const std::string& id) {
    v1::CancelTaskRequest req;
    req.set_task_id(id);
    v1::Task task;
    return planner_stub_->CancelTask(Ctx(auth).get(), req, &task);
  }
  grpc::Status List(const std::string& auth, v1::ListTasksResponse* resp,
                    const std::string& tenant = "") {
    v1::ListTasksRequest req;
    req.set_tenant(tenant);
    return planner_stub_->ListTasks(Ctx(auth).get(), req, resp);
  }

  static v1::SolveRequest Bfs(const std::string& id, int breadth, int proposals, int depth,
                              int thought_tokens = 8) {
    v1::SolveRequest req = testing::Game24Bfs(breadth, proposals, depth, thought_tokens, 3);
    req.set_task_id(id);
    return req;
  }

  static inline std::string *dir_, *kvstore_, *router_, *expert_, *planner_address_, *tls_;
  static inline testing::ChildProcess *up_ = nullptr, *planner_ = nullptr;
  static inline bool ok_ = false;
  std::unique_ptr<v1::Planner::Stub> planner_stub_;
  std::unique_ptr<v1::KvStore::Stub> kv_;
  std::unique_ptr<v1::Router::Stub> router_stub_;
};

TEST_F(SecurityTest, EveryPlannerRpcRefusesCallersWithoutAValidToken) {
  for (const std::string& auth :
       {std::string(""), Bearer("guess"), Bearer(""), std::string("Basic bob-token"),
        std::string("bob-token"), Bearer("eve-token") /* expired */}) {
    SCOPED_TRACE(auth);
    const Solved s = Solve(auth, Bfs("", 1, 1, 1));
    EXPECT_EQ(s.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_TRUE(s.events.empty());
    v1::Task task;
    EXPECT_EQ(Get(auth, "any", &task).error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(Watch(auth, "any").error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(Cancel(auth, "any").error_code(), grpc::StatusCode::UNAUTHENTICATED);
    v1::ListTasksResponse list;
    EXPECT_EQ(List(auth, &list).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
}

TEST_F(SecurityTest, ARevokedTokenStopsWorkingWithoutARestart) {
  v1::ListTasksResponse list;
  ASSERT_TRUE(List(Bearer("carol-token"), &list).ok());
  WriteTokens(false);
  EXPECT_TRUE(WaitFor(
      [&] {
        return List(Bearer("carol-token"), &list).error_code() == grpc::StatusCode::UNAUTHENTICATED;
      },
      std::chrono::seconds(10)));
  EXPECT_TRUE(List(Bearer("bob-token"), &list).ok());  // the others still work
  WriteTokens(true);
  EXPECT_TRUE(
      WaitFor([&] { return List(Bearer("carol-token"), &list).ok(); }, std::chrono::seconds(10)));
}

TEST_F(SecurityTest, ATenantCannotSeeTouchOrAttachToAnothersTask) {
  const std::string alice = Bearer("alice-token"), bob = Bearer("bob-token");
  const Solved mine = Solve(alice, Bfs("shared-id", 1, 2, 1));
  ASSERT_TRUE(mine.status.ok()) << mine.status.error_message();
  v1::Task before;
  ASSERT_TRUE(Get(alice, "shared-id", &before).ok());
  EXPECT_EQ(before.tenant(), "alice");

  v1::Task task;
  grpc::Status st = Get(bob, "shared-id", &task);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(st.error_message(), "task \"shared-id\" unknown");
  EXPECT_EQ(Watch(bob, "shared-id").error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Cancel(bob, "shared-id").error_code(), grpc::StatusCode::NOT_FOUND);
  v1::ListTasksResponse list;
  ASSERT_TRUE(List(bob, &list).ok());
  for (const v1::Task& t : list.tasks()) EXPECT_EQ(t.tenant(), "bob");
  EXPECT_EQ(List(bob, &list, "alice").error_code(), grpc::StatusCode::PERMISSION_DENIED);

  // Bob's Solve of the same id runs Bob's own task; it does not attach to Alice's.
  const Solved his = Solve(bob, Bfs("shared-id", 1, 3, 1));
  ASSERT_TRUE(his.status.ok()) << his.status.error_message();
  int created = 0;
  for (const auto& e : his.events) created += e.has_node_created();
  EXPECT_EQ(created, 3);  // his search's 3 proposals, not a replay of Alice's 2
  ASSERT_TRUE(Get(bob, "shared-id", &task).ok());
  EXPECT_EQ(task.tenant(), "bob");
  v1::Task after;
  ASSERT_TRUE(Get(alice, "shared-id", &after).ok());
  EXPECT_EQ(after.SerializeAsString(), before.SerializeAsString());

  // The tenant is the token's, never the request's.
  v1::SolveRequest posing = Bfs("", 1, 1, 1);
  posing.set_tenant("alice");
  const Solved s = Solve(bob, posing);
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(s.status.error_message().find("tenant"), std::string::npos);
}

TEST_F(SecurityTest, QuotasFromTheTokensFileNameTheLimit) {
  const std::string alice = Bearer("alice-token");
  v1::SolveRequest big = Bfs("", 1, 1, 1);
  big.mutable_budget()->set_max_nodes(51);
  Solved s = Solve(alice, big);
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(s.status.error_message().find("max_nodes=50 in the tokens file"), std::string::npos)
      << s.status.error_message();

  // max_tasks=1: a second task while one runs is refused, naming the quota.
  auto ctx = Ctx(alice, 120);
  auto running = planner_stub_->Solve(ctx.get(), Bfs("long-one", 4, 4, 3, 48));
  v1::SolveEvent first;
  ASSERT_TRUE(running->Read(&first));  // admitted and running
  s = Solve(alice, Bfs("", 1, 1, 1));
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(s.status.error_message().find("max_tasks in the tokens file"), std::string::npos)
      << s.status.error_message();
  // Another tenant is not held back by Alice's quota.
  EXPECT_TRUE(Solve(Bearer("bob-token"), Bfs("", 1, 1, 1)).status.ok());
  ASSERT_TRUE(Cancel(alice, "long-one").ok());
  while (running->Read(&first)) {
  }
  EXPECT_EQ(running->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

// tokens_per_minute: a tenant over it gets RESOURCE_EXHAUSTED naming the quota, and its running
// task waits before its next expansion (here until its deadline ends it).
TEST_F(SecurityTest, ATenantOverItsTokensPerMinuteWaits) {
  const std::string dave = Bearer("dave-token");
  v1::SolveRequest req = Bfs("", 1, 2, 3);
  req.mutable_budget()->set_deadline_ms(3000);
  const Solved first = Solve(dave, req);  // its first round passes the quota; then it waits
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  ASSERT_TRUE(first.events.back().has_result());
  EXPECT_LT(first.events.back().result().counts().nodes(), 1 + 2 + 2 + 2);  // not every round
  const Solved second = Solve(dave, Bfs("", 1, 1, 1));
  EXPECT_EQ(second.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(second.status.error_message().find("tokens_per_minute=1"), std::string::npos)
      << second.status.error_message();
  EXPECT_TRUE(Solve(Bearer("bob-token"), Bfs("", 1, 1, 1)).status.ok());  // others unaffected
}

// Below the planner: the router and kv-store act for the tenant each call names (the planner
// sets it from the token; mTLS keeps others from calling them at all).
TEST_F(SecurityTest, KvAndRouterCacheArePartitionedByTenant) {
  auto create = [&](const std::string& tenant) {
    v1::CreateSequenceRequest req;
    req.set_tenant(tenant);
    v1::CreateSequenceResponse resp;
    EXPECT_TRUE(kv_->CreateSequence(Ctx("").get(), req, &resp).ok());
    return resp.sequence_id();
  };
  auto extend = [&](uint64_t seq, const std::string& tenant, v1::ExtendResult* result) {
    v1::ExtendRequest req;
    req.set_sequence_id(seq);
    req.set_tenant(tenant);
    req.set_text("Use numbers and basic arithmetic operations to obtain 24. 4 9 10 13 steps:");
    req.set_add_bos(true);
    req.mutable_params()->set_max_tokens(2);
    auto ctx = Ctx("");
    auto stream = router_stub_->Extend(ctx.get(), req);
    v1::ExtendEvent e;
    while (stream->Read(&e)) {
      if (e.has_result()) *result = e.result();
    }
    return stream->Finish();
  };
  v1::ExtendResult r;
  const uint64_t x1 = create("x");
  ASSERT_TRUE(extend(x1, "x", &r).ok());
  const uint64_t y1 = create("y");
  // Tenant y cannot extend (or read) x's sequence...
  grpc::Status st = extend(x1, "y", &r);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND) << st.error_message();
  // ...and its own sequence with the same prompt reuses none of x's KV.
  ASSERT_TRUE(extend(y1, "y", &r).ok());
  EXPECT_EQ(r.reused_tokens(), 0);
  EXPECT_GT(r.prefilled_tokens(), 16);
  // x's second sequence does reuse x's own prompt.
  const uint64_t x2 = create("x");
  ASSERT_TRUE(extend(x2, "x", &r).ok());
  EXPECT_GT(r.reused_tokens(), 0);
  EXPECT_NE(x1 + 1, x2);  // ids are not counted (random 64-bit)
  v1::ReleaseRequest rel;
  v1::ReleaseResponse rr;
  for (auto [seq, tenant] : {std::pair{x1, "x"}, std::pair{x2, "x"}, std::pair{y1, "y"}}) {
    rel.clear_sequence_ids();
    rel.add_sequence_ids(seq);
    rel.set_tenant(tenant);
    ASSERT_TRUE(kv_->Release(Ctx("").get(), rel, &rr).ok());
    EXPECT_EQ(rr.unknown_ids_size(), 0);
  }
}

// mTLS: who may call what. Refusals change nothing: the sequence count and the state store are
// as they were.
TEST_F(SecurityTest, EachServiceAnswersOnlyTheRolesItServes) {
  auto kv_as = [&](std::shared_ptr<grpc::ChannelCredentials> creds) {
    return v1::KvStore::NewStub(grpc::CreateChannel(*kvstore_, std::move(creds)));
  };
  auto stats = [&] {
    v1::StatsResponse s;
    EXPECT_TRUE(kv_->Stats(Ctx("").get(), {}, &s).ok());
    return s;
  };
  const int live = stats().live_sequences();
  auto create = [&](v1::KvStore::Stub& stub) {
    v1::CreateSequenceResponse resp;
    return stub.CreateSequence(Ctx("", 5).get(), {}, &resp);
  };
  auto put = [&](v1::KvStore::Stub& stub) {
    v1::PutStateRequest req;
    req.set_key("planner/task/alice/forged");
    req.set_value("x");
    v1::PutStateResponse resp;
    return stub.PutState(Ctx("", 5).get(), req, &resp);
  };

  // No certificate, or one from another CA: the handshake fails.
  const std::string other = *dir_ + "/other-ca";
  ASSERT_TRUE(cli::EnsureMeshCertificates(other).ok());
  for (auto creds :
       {grpc::InsecureChannelCredentials(), rpc::MakeChannelCredentials({.ca = *tls_ + "/ca.crt"}),
        rpc::MakeChannelCredentials(cli::MeshTlsFiles(other, rpc::Role::kPlanner))}) {
    auto stub = kv_as(creds);
    const grpc::Status st = create(*stub);
    EXPECT_FALSE(st.ok());
    EXPECT_TRUE(st.error_code() == grpc::StatusCode::UNAVAILABLE ||
                st.error_code() == grpc::StatusCode::UNAUTHENTICATED)
        << st.error_code() << " " << st.error_message();
  }
  // The wrong role: PERMISSION_DENIED, naming it.
  grpc::Status st = create(*kv_as(Creds(rpc::Role::kExpert)));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(st.error_message().find("arbor-expert"), std::string::npos) << st.error_message();
  for (rpc::Role r : {rpc::Role::kRouter, rpc::Role::kOperator, rpc::Role::kExpert}) {
    EXPECT_EQ(put(*kv_as(Creds(r))).error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << rpc::RoleName(r);
  }
  EXPECT_EQ(stats().live_sequences(), live);
  v1::GetStateRequest get;
  get.set_key("planner/task/alice/forged");
  v1::GetStateResponse got;
  EXPECT_EQ(kv_->GetState(Ctx("").get(), get, &got).error_code(), grpc::StatusCode::NOT_FOUND);

  // The router serves planners and operators, not routers or experts.
  auto tokenize = [&](rpc::Role r) {
    auto stub = v1::Router::NewStub(grpc::CreateChannel(*router_, Creds(r)));
    v1::TokenizeRequest req;
    req.set_text("4 9 10 13");
    v1::TokenizeResponse resp;
    return stub->Tokenize(Ctx("", 5).get(), req, &resp).error_code();
  };
  EXPECT_EQ(tokenize(rpc::Role::kOperator), grpc::StatusCode::OK);
  EXPECT_EQ(tokenize(rpc::Role::kPlanner), grpc::StatusCode::OK);
  EXPECT_EQ(tokenize(rpc::Role::kRouter), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(tokenize(rpc::Role::kExpert), grpc::StatusCode::PERMISSION_DENIED);

  // Expert workers serve routers only.
  ASSERT_NE(expert_, nullptr);
  auto describe = [&](rpc::Role r) {
    auto stub = v1::ExpertWorker::NewStub(grpc::CreateChannel(*expert_, Creds(r)));
    v1::DescribeResponse resp;
    return stub->Describe(Ctx("", 5).get(), {}, &resp).error_code();
  };
  EXPECT_EQ(describe(rpc::Role::kRouter), grpc::StatusCode::OK);
  for (rpc::Role r : {rpc::Role::kPlanner, rpc::Role::kOperator, rpc::Role::kKvStore}) {
    EXPECT_EQ(describe(r), grpc::StatusCode::PERMISSION_DENIED) << rpc::RoleName(r);
  }

  // The planner's public port is TLS too: plaintext does not reach it.
  auto plain = v1::Planner::NewStub(
      grpc::CreateChannel(*planner_address_, grpc::InsecureChannelCredentials()));
  v1::ListTasksResponse list;
  v1::ListTasksRequest lreq;
  EXPECT_FALSE(plain->ListTasks(Ctx(Bearer("bob-token"), 5).get(), lreq, &list).ok());
}

}  // namespace
}  // namespace arbor
