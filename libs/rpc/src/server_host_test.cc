#include "arbor/rpc/server_host.h"

#include <cstdlib>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "arbor/rpc/flags_env.h"
#include "arbor/rpc/http_get_for_test.h"
#include "arbor/rpc/metrics_server.h"
#include "arbor/rpc/status.h"
#include "grpc/health/v1/health.grpc.pb.h"
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

TEST(ServerHostTest, HealthServesThenReportsNotServingBeforeDraining) {
  ServerHostOptions opts;
  opts.shutdown_grace = absl::Milliseconds(600);
  auto host = ServerHost::Start(opts, {}, nullptr);
  ASSERT_TRUE(host.ok()) << host.status();
  const std::string address = (*host)->address();
  EXPECT_GT((*host)->port(), 0);
  EXPECT_EQ(*Check(address), HealthCheckResponse::SERVING);

  std::thread stopper([&] { (*host)->Shutdown(); });
  // During the grace period the server still answers, and answers NOT_SERVING.
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
