// Cross-service fault test with real processes: three arbor-expert workers (experts 0-1 on one,
// experts 2-3 on two replicas), an engine dispatching to them through RemoteExpertBackend, and
// kill -9. With a replica left, decoding goes on with the in-process engine's exact logits;
// without one, the step fails UNAVAILABLE naming the expert and the sequence is unchanged.
#include <csignal>

#include "arbor/engine/engine.h"
#include "arbor/model/checkpoint.h"
#include "arbor/statestore/redis_server_for_test.h"
#include "child_process.h"
#include "gtest/gtest.h"
#include "remote_expert_backend.h"

namespace arbor {
namespace {

const std::string kModel = std::string(ARBOR_SOURCE_DIR) + "/models/test-moe";

engine::EngineOptions Options() {
  engine::EngineOptions o;
  o.max_batch_tokens = 64;
  o.max_seqs = 2;
  o.max_seq_tokens = 128;
  o.kv_cache_tokens = 256;
  return o;
}

TEST(ExpertFailoverTest, KillNineOfAReplicaIsInvisibleAndOfTheLastIsUnavailable) {
  std::vector<std::unique_ptr<testing::ChildProcess>> workers;
  std::vector<std::string> addresses;
  const std::string log = ::testing::TempDir() + "arbor_expert_failover.log";
  for (const char* spec : {"*:0-1", "*:2-3", "*:2-3"}) {
    const std::string address = absl::StrCat("127.0.0.1:", statestore::testing::FreeLoopbackPort());
    const std::string metrics = absl::StrCat("127.0.0.1:", statestore::testing::FreeLoopbackPort());
    workers.push_back(std::make_unique<testing::ChildProcess>(
        std::vector<std::string>{ARBOR_EXPERT_BIN, "--model", kModel, "--experts", spec,
                                 "--address", address, "--metrics_address", metrics},
        log));
    addresses.push_back(address);
  }
  for (size_t i = 0; i < workers.size(); ++i) {
    ASSERT_TRUE(workers[i]->WaitServing(addresses[i], std::chrono::seconds(30)).ok())
        << "see " << log;
  }

  auto ckpt = *model::Checkpoint::Open(kModel);
  auto full = *model::ModelWeights::Load(*ckpt, {});
  auto router_weights =
      *model::ModelWeights::Load(*ckpt, {.experts = std::vector<model::ExpertKey>{}});
  auto local_experts = *engine::CpuExpertBackend::Create(full.get(), 64);
  auto local = *engine::Engine::Create(full.get(), local_experts.get(), Options());
  auto remote_experts = *router::RemoteExpertBackend::Create(
      addresses, ckpt->config(), {.call_timeout = std::chrono::seconds(2)});
  auto remote = *engine::Engine::Create(router_weights.get(), remote_experts.get(), Options());

  const engine::SeqId rs = remote->AddSequence(), ls = local->AddSequence();
  const int vocab = ckpt->config().vocab_size;
  std::vector<int> feed = {1, 40, 41, 42, 43, 44};
  auto step = [&]() -> absl::Status {
    engine::StepInput ri{rs, feed, true}, li{ls, feed, true};
    const absl::Status st = remote->Step({&ri, 1});
    if (!st.ok()) return st;
    EXPECT_TRUE(local->Step({&li, 1}).ok());
    for (int v = 0; v < vocab; ++v) EXPECT_NEAR(remote->logits(0)[v], local->logits(0)[v], 1e-5);
    feed = {static_cast<int>(std::max_element(local->logits(0), local->logits(0) + vocab) -
                             local->logits(0))};
    return absl::OkStatus();
  };
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(step().ok());

  const int status = workers[1]->Signal(SIGKILL);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(step().ok());
  EXPECT_GE(remote_experts->counters().retries, 1);

  workers[2]->Signal(SIGKILL);
  const int before = remote->Length(rs);
  const absl::Status lost = step();
  EXPECT_EQ(lost.code(), absl::StatusCode::kUnavailable) << lost;
  // Experts 2 and 3 both lost their last replica; whichever is routed first is named.
  EXPECT_TRUE(lost.message().find("expert 2)") != absl::string_view::npos ||
              lost.message().find("expert 3)") != absl::string_view::npos)
      << lost;
  EXPECT_EQ(remote->Length(rs), before);
}

}  // namespace
}  // namespace arbor
