#include "arbor/rpc/server_host.h"

#include <cstdlib>
#include <future>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "arbor/rpc/flags_env.h"
#include "arbor/rpc/http_get_for_test.h"
#include "arbor/rpc/metrics_server.h"
#include "arbor/rpc/status.h"
#include "arbor/v1/planner.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"

ABSL_FLAG(int, rpc_test_limit, 5, "a flag for the env override test");

namespace arbor::rpc {
namespace {

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

TEST(StatusTest, EveryCodeAndMessageRoundTrips) {
  for (int c = 0; c <= 16; ++c) {
    const absl::Status s(static_cast<absl::StatusCode>(c), c == 0 ? "" : "breadth 0 out of range");
    const grpc::Status g = ToGrpcStatus(s);
    EXPECT_EQ(static_cast<int>(g.error_code()), c);
    EXPECT_EQ(FromGrpcStatus(g), s);
  }
}

absl::StatusOr<HealthCheckResponse::ServingStatus> Check(const std::string& address) {
  auto stub = Health::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  HealthCheckResponse resp;
  const grpc::Status st = stub->Check(&ctx, HealthCheckRequest(), &resp);
  if (!st.ok()) return FromGrpcStatus(st);
  return resp.status();
}

// Shuts `host` down and checks `address` on the way: during the grace period it still answers,
// and answers NOT_SERVING; then it is closed.
void ExpectNotServingThenClosedOnShutdown(ServerHost& host, const std::string& address) {
  std::thread stopper([&] { host.Shutdown(); });
  bool saw_not_serving = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!saw_not_serving && std::chrono::steady_clock::now() < deadline) {
    auto s = Check(address);
    saw_not_serving = s.ok() && *s == HealthCheckResponse::NOT_SERVING;
  }
  stopper.join();
  EXPECT_TRUE(saw_not_serving);
  EXPECT_EQ(Check(address).status().code(), absl::StatusCode::kUnavailable);
}

TEST(ServerHostTest, HealthServesThenReportsNotServingBeforeDraining) {
  ServerHostOptions opts;
  opts.shutdown_grace = absl::Milliseconds(600);
  auto host = ServerHost::Start(opts, {}, nullptr);
  ASSERT_TRUE(host.ok()) << host.status();
  const std::string address = (*host)->address();
  EXPECT_GT((*host)->port(), 0);
  EXPECT_EQ(*Check(address), HealthCheckResponse::SERVING);

  ExpectNotServingThenClosedOnShutdown(**host, address);
}

// A planner whose ListTasks answers: present on the main port, absent from the health port.
class ListingPlanner : public v1::Planner::Service {
  grpc::Status ListTasks(grpc::ServerContext*, const v1::ListTasksRequest*,
                         v1::ListTasksResponse*) override {
    return grpc::Status::OK;
  }
};

grpc::Status ListTasksAt(const std::string& address) {
  auto stub =
      v1::Planner::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  v1::ListTasksResponse resp;
  return stub->ListTasks(&ctx, v1::ListTasksRequest(), &resp);
}

TEST(ServerHostTest, TheHealthPortServesOnlyHealthAndFollowsTheServiceToItsEnd) {
  ListingPlanner planner;
  ServerHostOptions opts;
  opts.health_address = "127.0.0.1:0";
  opts.shutdown_grace = absl::Milliseconds(600);
  opts.serving = false;
  auto host = ServerHost::Start(opts, {&planner}, nullptr);
  ASSERT_TRUE(host.ok()) << host.status();
  ASSERT_GT((*host)->health_port(), 0);
  const std::string health = absl::StrCat("127.0.0.1:", (*host)->health_port());
  EXPECT_EQ(*Check(health), HealthCheckResponse::NOT_SERVING);  // still loading
  (*host)->SetServing(true);
  EXPECT_EQ(*Check(health), HealthCheckResponse::SERVING);
  EXPECT_TRUE(ListTasksAt((*host)->address()).ok());
  EXPECT_EQ(ListTasksAt(health).error_code(), grpc::StatusCode::UNIMPLEMENTED);

  ExpectNotServingThenClosedOnShutdown(**host, health);
}

TEST(ServerHostTest, AHealthAddressThatCannotBeBoundIsAnError) {
  ServerHostOptions opts;
  opts.health_address = "256.0.0.1:1";
  auto host = ServerHost::Start(opts, {}, nullptr);
  ASSERT_FALSE(host.ok());
  EXPECT_NE(host.status().message().find("health checks on 256.0.0.1:1"), std::string::npos)
      << host.status();
}

TEST(ServerHostTest, MetricsEndpointServesTheRegistry) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto& family = prometheus::BuildCounter()
                     .Name("arbor_test_requests_total")
                     .Help("requests seen by the test")
                     .Register(*registry);
  family.Add({{"method", "Check"}}).Increment(3);
  ServerHostOptions opts;
  opts.metrics_address = "127.0.0.1:0";
  auto host = ServerHost::Start(opts, {}, registry);
  ASSERT_TRUE(host.ok()) << host.status();
  ASSERT_GT((*host)->metrics_port(), 0);
  const std::string body = testing::HttpGet((*host)->metrics_port(), "/metrics");
  EXPECT_NE(body.find("200 OK"), std::string::npos) << body;
  EXPECT_NE(body.find("arbor_test_requests_total{method=\"Check\"} 3"), std::string::npos) << body;
}

TEST(ServerHostTest, MetricsEndpointRefusesOtherPathsAndMethodsAndKeepsServing) {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildGauge().Name("arbor_test_up").Help("1").Register(*registry).Add({}).Set(1);
  auto server = MetricsServer::Start("127.0.0.1:0", registry);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  EXPECT_NE(testing::HttpGet(port, "/").find("404 Not Found"), std::string::npos);
  // A client that connects and sends nothing times out without blocking the next scrape
  // for longer than the 2 s read timeout.
  const int idle = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  ASSERT_EQ(::connect(idle, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const std::string body = testing::HttpGet(port, "/metrics");
  ::close(idle);
  EXPECT_NE(body.find("arbor_test_up 1"), std::string::npos) << body;
  EXPECT_NE(body.find("Content-Length: "), std::string::npos) << body;
  // The same port twice: the second bind is refused, naming the address.
  auto twice = MetricsServer::Start(absl::StrCat("127.0.0.1:", port), registry);
  ASSERT_FALSE(twice.ok());
  EXPECT_EQ(twice.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(twice.status().message().find(absl::StrCat("127.0.0.1:", port)),
            absl::string_view::npos);
  EXPECT_FALSE(MetricsServer::Start("no-port", registry).ok());
}

TEST(ServerHostTest, UnusableAddressesAreUnavailable) {
  ServerHostOptions opts;
  opts.address = "no-such-host.invalid:1";
  auto host = ServerHost::Start(opts, {}, nullptr);
  EXPECT_EQ(host.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(host.status().message().find("no-such-host.invalid"), absl::string_view::npos);
}

// A service with one unary and one server-streaming method, each taking a string field.
class EchoTasks final : public v1::Planner::CallbackService {
 public:
  grpc::ServerUnaryReactor* GetTask(grpc::CallbackServerContext* ctx, const v1::GetTaskRequest* req,
                                    v1::Task*) override {
    auto* r = ctx->DefaultReactor();
    r->Finish(req->task_id() == "t1" ? grpc::Status::OK
                                     : grpc::Status(grpc::StatusCode::NOT_FOUND, "no such task"));
    return r;
  }
  grpc::ServerWriteReactor<v1::SolveEvent>* WatchTask(grpc::CallbackServerContext*,
                                                      const v1::WatchTaskRequest*) override {
    class Done : public grpc::ServerWriteReactor<v1::SolveEvent> {
     public:
      Done() { Finish(grpc::Status::OK); }
      void OnDone() override { delete this; }
    };
    return new Done();
  }
};

// A request whose string field is not UTF-8 gets INVALID_ARGUMENT naming the field (gRPC alone
// answers UNIMPLEMENTED with no message); bytes that are no message at all get INVALID_ARGUMENT
// naming the method; a method the service does not implement is still UNIMPLEMENTED, and good
// requests are untouched.
TEST(ServerHostTest, UnparsableRequestsAreInvalidArgumentNamingTheField) {
  EchoTasks service;
  auto host = ServerHost::Start({}, {&service}, nullptr);
  ASSERT_TRUE(host.ok()) << host.status();
  auto channel = grpc::CreateChannel((*host)->address(), grpc::InsecureChannelCredentials());
  auto stub = v1::Planner::NewStub(channel);
  const std::string bad_utf8 = "t\xc3\x28\xff";

  {
    grpc::ClientContext ctx;
    v1::GetTaskRequest req;
    req.set_task_id(bad_utf8);
    v1::Task resp;
    grpc::Status st = stub->GetTask(&ctx, req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(st.error_message(),
              "string field arbor.v1.GetTaskRequest.task_id is not valid UTF-8");
  }
  {
    grpc::ClientContext ctx;
    v1::WatchTaskRequest req;
    req.set_task_id(bad_utf8);
    auto reader = stub->WatchTask(&ctx, req);
    v1::SolveEvent e;
    EXPECT_FALSE(reader->Read(&e));
    grpc::Status st = reader->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(st.error_message(),
              "string field arbor.v1.WatchTaskRequest.task_id is not valid UTF-8");
  }
  {  // a truncated message: field 1, length 9, three bytes
    grpc::GenericStub generic(channel);
    grpc::ClientContext ctx;
    const std::string wire =
        "\x0a\x09"
        "abc";
    grpc::Slice slice(wire);
    grpc::ByteBuffer request(&slice, 1), response;
    std::promise<grpc::Status> done;
    generic.UnaryCall(&ctx, "/arbor.v1.Planner/GetTask", grpc::StubOptions(), &request, &response,
                      [&done](grpc::Status s) { done.set_value(std::move(s)); });
    grpc::Status st = done.get_future().get();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(st.error_message(),
              "the request to /arbor.v1.Planner/GetTask is not a valid message of its type");
  }
  for (const std::string& id : {std::string("t1"), std::string("t\xc3\xa9")}) {  // é is fine
    grpc::ClientContext ctx;
    v1::GetTaskRequest req;
    req.set_task_id(id);
    v1::Task resp;
    grpc::Status st = stub->GetTask(&ctx, req, &resp);
    EXPECT_EQ(st.error_code(), id == "t1" ? grpc::StatusCode::OK : grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    v1::CancelTaskRequest req;
    v1::Task resp;
    EXPECT_EQ(stub->CancelTask(&ctx, req, &resp).error_code(), grpc::StatusCode::UNIMPLEMENTED);
  }
  (*host)->Shutdown();
}

TEST(FlagsEnvTest, EnvironmentSetsFlagsAndBadValuesNameTheVariable) {
  ::setenv("ARBOR_RPC_TEST_LIMIT", "42", 1);
  ASSERT_TRUE(ApplyFlagEnvOverrides().ok());
  EXPECT_EQ(absl::GetFlag(FLAGS_rpc_test_limit), 42);
  ::setenv("ARBOR_RPC_TEST_LIMIT", "many", 1);
  const absl::Status st = ApplyFlagEnvOverrides();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("ARBOR_RPC_TEST_LIMIT"), absl::string_view::npos) << st;
  ::unsetenv("ARBOR_RPC_TEST_LIMIT");
}

}  // namespace
}  // namespace arbor::rpc
