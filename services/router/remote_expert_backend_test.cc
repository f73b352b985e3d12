// The router's dispatch against real expert workers on loopback: an engine whose experts run
// remotely gives the in-process logits and greedy tokens; a dead worker with a replica costs a
// retry and changes nothing; a dead worker without one is UNAVAILABLE naming the expert, and
// the sequence is left as it was.
#include "remote_expert_backend.h"

#include "arbor/engine/engine.h"
#include "arbor/model/checkpoint.h"
#include "arbor/model/expert_spec.h"
#include "arbor/rpc/server_host.h"
#include "expert_worker_service.h"
#include "gtest/gtest.h"

namespace arbor::router {
namespace {

const std::string kModel = std::string(ARBOR_SOURCE_DIR) + "/models/test-moe";

struct TestWorker {
  std::unique_ptr<model::ModelWeights> weights;
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<expert_worker::ExpertWorkerService> service;
  std::unique_ptr<rpc::ServerHost> host;
};

class RemoteExpertBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ckpt_ = *model::Checkpoint::Open(kModel);
    const auto& c = ckpt_->config();
    for (const char* spec : {"*:0-1", "*:2-3", "*:2-3"}) {  // the third replicates the second
      auto w = std::make_unique<TestWorker>();
      w->weights = *model::ModelWeights::Load(
          *ckpt_,
          {.non_expert = false,
           .experts = *model::ParseExpertSpec(spec, c.num_hidden_layers, c.num_local_experts)});
      w->service = *expert_worker::ExpertWorkerService::Create(w->weights.get(), "test-moe", {},
                                                               *w->registry);
      w->host = *rpc::ServerHost::Start({}, {w->service.get()}, w->registry);
      workers_.push_back(std::move(w));
    }
    full_ = *model::ModelWeights::Load(*ckpt_, {});
    router_weights_ =
        *model::ModelWeights::Load(*ckpt_, {.experts = std::vector<model::ExpertKey>{}});
    local_experts_ = *engine::CpuExpertBackend::Create(full_.get(), 64);
    local_ = *engine::Engine::Create(full_.get(), local_experts_.get(), Options());
  }

  static engine::EngineOptions Options() {
    engine::EngineOptions o;
    o.max_batch_tokens = 64;
    o.max_seqs = 4;
    o.max_seq_tokens = 128;
    o.kv_cache_tokens = 512;
    return o;
  }

  std::vector<std::string> Addresses(std::initializer_list<int> which) {
    std::vector<std::string> out;
    for (int i : which) out.push_back(workers_[i]->host->address());
    return out;
  }

  // Feeds `tokens` to both engines and compares the logits; returns the greedy next token.
  int StepBoth(engine::Engine& remote, engine::SeqId rs, engine::SeqId ls,
               const std::vector<int>& tokens) {
    engine::StepInput ri{rs, tokens, true}, li{ls, tokens, true};
    const absl::Status st = remote.Step({&ri, 1});
    EXPECT_TRUE(st.ok()) << st;
    EXPECT_TRUE(local_->Step({&li, 1}).ok());
    const int v = local_->config().vocab_size;
    for (int i = 0; i < v; ++i) EXPECT_NEAR(remote.logits(0)[i], local_->logits(0)[i], 1e-5);
    const int a = static_cast<int>(std::max_element(remote.logits(0), remote.logits(0) + v) -
                                   remote.logits(0));
    EXPECT_EQ(a, static_cast<int>(std::max_element(local_->logits(0), local_->logits(0) + v) -
                                  local_->logits(0)));
    return a;
  }

  std::unique_ptr<model::Checkpoint> ckpt_;
  std::vector<std::unique_ptr<TestWorker>> workers_;
  std::unique_ptr<model::ModelWeights> full_, router_weights_;
  std::unique_ptr<engine::CpuExpertBackend> local_experts_;
  std::unique_ptr<engine::Engine> local_;
};

TEST_F(RemoteExpertBackendTest, RemoteExpertsMatchLocalAndSurviveALostReplica) {
  auto remote_experts = RemoteExpertBackend::Create(Addresses({0, 1, 2}), ckpt_->config(),
                                                    {.call_timeout = std::chrono::seconds(2)});
  ASSERT_TRUE(remote_experts.ok()) << remote_experts.status();
  auto remote = *engine::Engine::Create(router_weights_.get(), remote_experts->get(), Options());
  const engine::SeqId rs = remote->AddSequence(), ls = local_->AddSequence();
  int next = StepBoth(*remote, rs, ls, {1, 30, 31, 32, 33, 34, 35, 36, 37});
  for (int i = 0; i < 4; ++i) next = StepBoth(*remote, rs, ls, {next});
  const RemoteExpertCounters& c = (*remote_experts)->counters();
  EXPECT_GT(c.rows_per_worker[1], 0);  // experts 2-3 spread over both replicas
  EXPECT_GT(c.rows_per_worker[2], 0);
  EXPECT_EQ(c.retries, 0);
  EXPECT_EQ((*remote_experts)->WorkersHealthy(), std::vector<bool>({true, true, true}));

  workers_[1]->host->Shutdown();  // one replica of experts 2-3 goes away
  for (int i = 0; i < 3; ++i) next = StepBoth(*remote, rs, ls, {next});
  EXPECT_GE((*remote_experts)->counters().retries, 1);
  // The metric arbor_router_expert_worker_up reads this: the dead replica stays unhealthy
  // however long it is skipped; the others stay healthy.
  EXPECT_EQ((*remote_experts)->WorkersHealthy(), std::vector<bool>({true, false, true}));
  EXPECT_EQ((*remote_experts)->worker_addresses()[1], Addresses({0, 1, 2})[1]);

  workers_[2]->host->Shutdown();  // and now the last one
  const int before = remote->Length(rs);
  engine::StepInput in{rs, {&next, 1}, true};
  const absl::Status st = remote->Step({&in, 1});
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  // Experts 2 and 3 both lost their last replica; whichever is routed first is named.
  EXPECT_TRUE(st.message().find("expert 2)") != absl::string_view::npos ||
              st.message().find("expert 3)") != absl::string_view::npos)
      << st;
  EXPECT_EQ(remote->Length(rs), before);  // nothing half-committed
}

// With bf16 on the wire the rows and the partial sums cross rounded to bf16: the logits stay
// within bf16's rounding of the f32 engine's (2^-8 relative per crossing, a few crossings per
// layer) and each RunExperts carries half the bytes.
TEST_F(RemoteExpertBackendTest, Bf16OnTheWireStaysCloseToTheF32Engine) {
  auto remote_experts =
      RemoteExpertBackend::Create(Addresses({0, 1}), ckpt_->config(), {.wire_dtype = DType::kBF16});
  ASSERT_TRUE(remote_experts.ok()) << remote_experts.status();
  auto remote = *engine::Engine::Create(router_weights_.get(), remote_experts->get(), Options());
  const engine::SeqId rs = remote->AddSequence(), ls = local_->AddSequence();
  const std::vector<int> prompt = {1, 30, 31, 32, 33, 34, 35, 36, 37};
  engine::StepInput ri{rs, prompt, true}, li{ls, prompt, true};
  ASSERT_TRUE(remote->Step({&ri, 1}).ok());
  ASSERT_TRUE(local_->Step({&li, 1}).ok());
  const int v = local_->config().vocab_size;
  double max_ref = 0, max_diff = 0;
  for (int i = 0; i < v; ++i) {
    max_ref = std::max(max_ref, std::abs(static_cast<double>(local_->logits(0)[i])));
    max_diff = std::max(max_diff,
                        std::abs(static_cast<double>(remote->logits(0)[i]) - local_->logits(0)[i]));
  }
  EXPECT_LE(max_diff, 3e-2 * max_ref);
  EXPECT_GT(max_diff, 0.0);  // the rows really crossed in bf16
  EXPECT_GT((*remote_experts)->counters().calls, 0);
}

TEST_F(RemoteExpertBackendTest, StartRefusesAPlacementWithAGapOrADeadWorker) {
  auto gap = RemoteExpertBackend::Create(Addresses({0}), ckpt_->config());
  EXPECT_EQ(gap.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(gap.status().message().find("no expert worker hosts (layer 0, expert 2)"),
            absl::string_view::npos)
      << gap.status();
  auto dead = RemoteExpertBackend::Create({"127.0.0.1:1"}, ckpt_->config(),
                                          {.describe_timeout = std::chrono::milliseconds(300)});
  EXPECT_EQ(dead.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(dead.status().message().find("127.0.0.1:1"), absl::string_view::npos);
}

}  // namespace
}  // namespace arbor::router
