// The mesh end to end with real processes on loopback: arbor-kvstore, arbor-expert workers and
// arbor-router, driven over gRPC the way a client (the planner) drives them, and checked against
// the in-process engine on the same model:
// - greedy parity: tokens identical, log-probs within 1e-5, for three checkpoints;
// - continuing a sequence on a second router, whose cache is empty, fetches its KV from the
//   kv-store and still matches the engine on the full text;
// - fork parity: a sequence forked into 4 and extended concurrently with different text;
// - kill -9 of an expert worker during an Extend, with and without a replica;
// - bad input, a stale commit, cancellation and an oversized message: the right code, a message
//   naming the field, nothing committed, and the router keeps serving;
// - `arbor up`: starts everything, serves, and stops every child on SIGTERM or when its parent
//   dies.
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "arbor/common/test_names.h"
#include "arbor/engine/generator.h"
#include "arbor/engine/local_model.h"
#include "arbor/kernels/gpu.h"
#include "arbor/model/config.h"
#include "arbor/model/expert_spec.h"
#include "arbor/rpc/http_get_for_test.h"
#include "arbor/rpc/tls.h"
#include "arbor/statestore/redis_server_for_test.h"
#include "arbor/v1/kvstore.grpc.pb.h"
#include "arbor/v1/router.grpc.pb.h"
#include "child_process.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace arbor {
namespace {

using testing::WaitFor;

using statestore::testing::FreeLoopbackPort;

const std::string kSource = ARBOR_SOURCE_DIR;

std::string Loopback() { return absl::StrCat("127.0.0.1:", FreeLoopbackPort()); }

// One mesh: a kv-store, expert workers with the given --experts specs, and `routers` routers,
// workers and routers on `backend` (cpu unless a test asks: auto would pick cuda on a GPU).
class Mesh {
 public:
  Mesh(const std::string& model, std::vector<std::string> worker_specs, int routers = 1,
       std::vector<std::string> router_flags = {}, const std::string& backend = "cpu")
      : model_(model), log_(::testing::TempDir() + "arbor_mesh_test.log") {
    kvstore_ = Loopback();
    Start({ARBOR_KVSTORE_BIN, "--model=" + model, "--address=" + kvstore_,
           "--metrics_address=" + Loopback(), "--max_seq_tokens=4096", "--kv_cache_tokens=65536"},
          kvstore_);
    for (const std::string& spec : worker_specs) {
      workers_.push_back(Loopback());
      worker_argv_.push_back({ARBOR_EXPERT_BIN, "--model=" + model, "--experts=" + spec,
                              "--address=" + workers_.back(), "--metrics_address=" + Loopback(),
                              "--backend=" + backend});
      worker_procs_.push_back(Start(worker_argv_.back(), workers_.back()));
    }
    for (int r = 0; r < routers; ++r) {
      routers_.push_back(Loopback());
      router_metrics_.push_back(FreeLoopbackPort());
      std::vector<std::string> argv = {
          ARBOR_ROUTER_BIN,
          "--model=" + model,
          "--address=" + routers_.back(),
          absl::StrCat("--metrics_address=127.0.0.1:", router_metrics_.back()),
          "--kvstore=" + kvstore_,
          "--workers=" + absl::StrJoin(workers_, ","),
          "--max_seq_tokens=2048",
          "--kv_cache_tokens=16384",
          "--max_message_mb=4",
          "--expert_timeout_ms=3000",
          "--io_threads=4",
          "--backend=" + backend};
      argv.insert(argv.end(), router_flags.begin(), router_flags.end());  // later flags win
      Start(argv, routers_.back());
    }
    kv_ = v1::KvStore::NewStub(grpc::CreateChannel(kvstore_, grpc::InsecureChannelCredentials()));
    for (const std::string& a : routers_) {
      router_stubs_.push_back(
          v1::Router::NewStub(grpc::CreateChannel(a, grpc::InsecureChannelCredentials())));
    }
  }

  bool ok() const { return ok_; }
  const std::string& log() const { return log_; }
  v1::KvStore::Stub& kv() { return *kv_; }
  v1::Router::Stub& router(int i = 0) { return *router_stubs_[i]; }
  int router_metrics_port(int i = 0) const { return router_metrics_[i]; }
  testing::ChildProcess& worker(int i) { return *worker_procs_[i]; }
  // Starts worker `i` again at its address (after it was killed); false if it does not serve.
  bool RestartWorker(int i) {
    auto proc = std::make_unique<testing::ChildProcess>(worker_argv_[i], log_);
    if (!proc->WaitServing(workers_[i], std::chrono::seconds(60)).ok()) return false;
    worker_procs_[i] = proc.get();
    restarted_.push_back(std::move(proc));
    return true;
  }

  uint64_t NewSequence() {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::CreateSequenceResponse resp;
    EXPECT_TRUE(kv_->CreateSequence(&ctx, {}, &resp).ok());
    return resp.sequence_id();
  }
  v1::GetPathResponse Path(uint64_t seq) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::GetPathRequest req;
    req.set_sequence_id(seq);
    req.set_include_token_ids(true);
    v1::GetPathResponse resp;
    EXPECT_TRUE(kv_->GetPath(&ctx, req, &resp).ok());
    return resp;
  }

 private:
  testing::ChildProcess* Start(std::vector<std::string> argv, const std::string& address) {
    procs_.push_back(std::make_unique<testing::ChildProcess>(std::move(argv), log_));
    if (!procs_.back()->WaitServing(address, std::chrono::seconds(60)).ok()) ok_ = false;
    return procs_.back().get();
  }

  std::string model_, log_, kvstore_;
  bool ok_ = true;
  std::vector<std::unique_ptr<testing::ChildProcess>> procs_;
  std::vector<std::string> workers_, routers_;
  std::vector<testing::ChildProcess*> worker_procs_;
  std::vector<std::vector<std::string>> worker_argv_;
  std::vector<std::unique_ptr<testing::ChildProcess>> restarted_;
  std::vector<int> router_metrics_;
  std::unique_ptr<v1::KvStore::Stub> kv_;
  std::vector<std::unique_ptr<v1::Router::Stub>> router_stubs_;
};

struct Extended {
  grpc::Status status;
  std::vector<int> ids;
  std::vector<float> logprobs;
  std::string streamed_text;                        // the text pieces, concatenated
  std::vector<std::vector<v1::TokenLogprob>> tops;  // each token's top_logprobs
  v1::ExtendResult result;
  int results = 0;
};

v1::ExtendRequest Request(uint64_t seq, const std::vector<int>& input, int max_tokens) {
  v1::ExtendRequest req;
  req.set_sequence_id(seq);
  for (int t : input) req.mutable_token_ids()->add_ids(t);
  req.mutable_params()->set_max_tokens(max_tokens);
  req.mutable_params()->set_ignore_eos(true);
  return req;
}

// Runs an Extend to the end. `on_token(i)` is called after token i arrives.
Extended Extend(v1::Router::Stub& router, const v1::ExtendRequest& req,
                std::chrono::milliseconds timeout = std::chrono::seconds(60),
                const std::function<void(int)>& on_token = nullptr) {
  Extended out;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  auto stream = router.Extend(&ctx, req);
  v1::ExtendEvent e;
  while (stream->Read(&e)) {
    if (e.has_token()) {
      out.ids.push_back(e.token().id());
      out.logprobs.push_back(e.token().logprob());
      out.tops.emplace_back(e.token().top_logprobs().begin(), e.token().top_logprobs().end());
      out.streamed_text += e.token().text();
      if (on_token) on_token(static_cast<int>(out.ids.size()) - 1);
    } else {
      out.result = e.result();
      ++out.results;
    }
  }
  out.status = stream->Finish();
  return out;
}

// The in-process engine's greedy generation from `prompt`.
engine::GenerationResult Reference(const std::string& model, const std::vector<int>& prompt,
                                   int max_tokens) {
  engine::EngineOptions o;
  o.max_seq_tokens = 2048;
  o.kv_cache_tokens = 8192;
  auto m = engine::LocalModel::Load(model, o);
  EXPECT_TRUE(m.ok()) << m.status();
  engine::Generator gen((*m)->engine.get(), (*m)->tokenizer.get());
  engine::GenerationParams p;
  p.max_tokens = max_tokens;
  p.ignore_eos = true;
  auto id = gen.Submit(prompt, p);
  EXPECT_TRUE(id.ok()) << id.status();
  EXPECT_TRUE(gen.RunToCompletion().ok());
  return gen.result(*id);
}

// Tokens identical; log-probs within `tol`. 1e-5 holds wherever the mesh batches like the
// reference does; a step that mixes sequences at different positions changes the GEMMs' row
// counts (OpenBLAS blocks by them), which moves the last bits of a log-prob (~1e-5 relative).
void ExpectSameGeneration(const Extended& got, const engine::GenerationResult& want,
                          const std::string& what, double tol = 1e-5) {
  ASSERT_TRUE(got.status.ok()) << what << ": " << got.status.error_message();
  EXPECT_EQ(got.ids, want.token_ids) << what;
  ASSERT_EQ(got.logprobs.size(), want.logprobs.size()) << what;
  for (size_t i = 0; i < got.logprobs.size(); ++i) {
    EXPECT_NEAR(got.logprobs[i], want.logprobs[i], tol) << what << " token " << i;
  }
  EXPECT_EQ(got.results, 1) << what;
  EXPECT_EQ(got.result.generated_tokens(), static_cast<int>(want.token_ids.size())) << what;
}

std::vector<int> Concat(std::vector<int> a, const std::vector<int>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

class MeshParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(MeshParityTest, GreedyThroughTheMeshIsTheInProcessEngine) {
  const std::string model = kSource + "/" + GetParam();
  auto config = model::ModelConfig::Load(model);
  ASSERT_TRUE(config.ok()) << config.status();
  std::vector<std::string> specs;  // two workers, the experts split evenly
  for (const auto& shard :
       model::SplitExpertsEvenly(config->num_hidden_layers, config->num_local_experts, 2)) {
    specs.push_back(model::FormatExpertSpec(shard));
  }
  Mesh mesh(model, specs, /*routers=*/2);
  ASSERT_TRUE(mesh.ok()) << "see " << mesh.log();
  const std::vector<int> prompt = {1, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50};

  // A new sequence: the router prefills the input and decodes; everything is committed.
  const uint64_t seq = mesh.NewSequence();
  const Extended first = Extend(mesh.router(0), Request(seq, prompt, 20));
  ExpectSameGeneration(first, Reference(model, prompt, 20), "first extend");
  EXPECT_EQ(first.result.input_tokens(), static_cast<int>(prompt.size()));
  EXPECT_EQ(first.result.prefilled_tokens(), static_cast<int>(prompt.size()));
  EXPECT_EQ(first.result.version(), 2u);
  const v1::GetPathResponse path = mesh.Path(seq);
  EXPECT_EQ(path.length(), static_cast<int>(prompt.size() + first.ids.size()));
  EXPECT_EQ(std::vector<int>(path.token_ids().begin(), path.token_ids().end()),
            Concat(prompt, first.ids));

  // Continue on the other router: its cache is empty, so it fetches the whole path's KV from
  // the kv-store and computes only the new input.
  const std::vector<int> more = {60, 61, 62};
  const Extended second = Extend(mesh.router(1), Request(seq, more, 12));
  ExpectSameGeneration(second, Reference(model, Concat(Concat(prompt, first.ids), more), 12),
                       "continued on a second router");
  EXPECT_EQ(second.result.fetched_tokens(), path.length());
  EXPECT_EQ(second.result.prefilled_tokens(), static_cast<int>(more.size()));
  EXPECT_EQ(second.result.version(), 3u);

  // Continue on the first router with no input at all: the last token is recomputed. Asking
  // for the three most likely tokens changes nothing else; greedy, the first is the token.
  v1::ExtendRequest with_tops = Request(seq, {}, 5);
  with_tops.mutable_params()->set_top_logprobs(3);
  const Extended third = Extend(mesh.router(0), with_tops);
  const std::vector<int> all = Concat(Concat(Concat(prompt, first.ids), more), second.ids);
  ExpectSameGeneration(third, Reference(model, all, 5), "continued without input");
  EXPECT_EQ(third.result.prefilled_tokens(), 1);
  ASSERT_EQ(third.tops.size(), third.ids.size());
  for (size_t i = 0; i < third.tops.size(); ++i) {
    ASSERT_EQ(third.tops[i].size(), 3u) << i;
    EXPECT_EQ(third.tops[i][0].id(), third.ids[i]) << i;
    EXPECT_FLOAT_EQ(third.tops[i][0].logprob(), third.logprobs[i]) << i;
    EXPECT_GE(third.tops[i][1].logprob(), third.tops[i][2].logprob()) << i;
  }
  EXPECT_TRUE(first.tops[0].empty());  // none unless asked for

  // Metrics, scraped the way Prometheus does.
  const std::string metrics = rpc::testing::HttpGet(mesh.router_metrics_port(0), "/metrics");
  for (const char* name : {"arbor_router_requests_total{code=\"OK\",method=\"Extend\"} 2",
                           "arbor_router_tokens_total{kind=\"decode\"}",
                           "arbor_router_expert_tokens_total{", "arbor_router_expert_calls_total",
                           "arbor_router_kv_usage", "arbor_router_step_duration_seconds_bucket"}) {
    EXPECT_NE(metrics.find(name), std::string::npos) << name << " in\n" << metrics;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, MeshParityTest,
                         ::testing::Values("models/test-moe", "tests/data/tiny-mha-top1",
                                           "tests/data/tiny-gqa4-tied", "models/game24-moe"),
                         [](const auto& info) { return ModelTestName(info.param); });

// On a GPU machine: workers and routers on --backend=cuda (bf16 experts and KV) give the CPU
// engine's greedy tokens, including after a second router fetches the path's KV.
class MeshCudaParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(MeshCudaParityTest, GreedyThroughACudaMeshIsTheCpuEngine) {
  if (kernels::CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  const std::string model = kSource + "/" + GetParam();
  Mesh mesh(model, {"all"}, /*routers=*/2, {}, "cuda");
  ASSERT_TRUE(mesh.ok()) << "see " << mesh.log();
  const std::vector<int> prompt = {1, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50};
  const uint64_t seq = mesh.NewSequence();
  const Extended first = Extend(mesh.router(0), Request(seq, prompt, 20));
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  EXPECT_EQ(first.ids, Reference(model, prompt, 20).token_ids);
  const std::vector<int> more = {60, 61, 62};
  const Extended second = Extend(mesh.router(1), Request(seq, more, 12));
  ASSERT_TRUE(second.status.ok()) << second.status.error_message();
  EXPECT_EQ(second.ids, Reference(model, Concat(Concat(prompt, first.ids), more), 12).token_ids);
}

INSTANTIATE_TEST_SUITE_P(Models, MeshCudaParityTest,
                         ::testing::Values("models/test-moe", "models/game24-moe"),
                         [](const auto& info) { return ModelTestName(info.param); });

const std::string kModel = kSource + "/models/test-moe";

TEST(MeshTest, ForkIntoFourAndExtendEachConcurrently) {
  Mesh mesh(kModel, {"*:0-1", "*:2-3"});
  ASSERT_TRUE(mesh.ok()) << "see " << mesh.log();
  const std::vector<int> prompt = {1,  70, 71, 72, 73, 74, 75, 76, 77, 78,
                                   79, 80, 81, 82, 83, 84, 85, 86, 87, 88};
  const uint64_t root = mesh.NewSequence();
  const Extended prefill = Extend(mesh.router(), Request(root, prompt, 0));
  ASSERT_TRUE(prefill.status.ok()) << prefill.status.error_message();
  EXPECT_TRUE(prefill.ids.empty());
  EXPECT_EQ(mesh.Path(root).length(), static_cast<int>(prompt.size()));

  v1::ForkRequest freq;
  freq.set_sequence_id(root);
  freq.set_n(4);
  v1::ForkResponse kids;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(mesh.kv().Fork(&ctx, freq, &kids).ok());
  }
  ASSERT_EQ(kids.sequence_ids_size(), 4);
  std::vector<std::future<Extended>> runs;
  for (int i = 0; i < 4; ++i) {
    runs.push_back(std::async(std::launch::async, [&, i] {
      return Extend(mesh.router(), Request(kids.sequence_ids(i), {100 + i, 110 + 2 * i}, 10));
    }));
  }
  for (int i = 0; i < 4; ++i) {
    const Extended got = runs[i].get();
    const std::vector<int> text = Concat(prompt, {100 + i, 110 + 2 * i});
    // Concurrent: how the four share steps depends on timing (see ExpectSameGeneration).
    ExpectSameGeneration(got, Reference(kModel, text, 10), absl::StrCat("child ", i),
                         /*tol=*/1e-4);
    // The shared prompt's KV is reused (cached by the router or fetched), never recomputed.
    EXPECT_GE(got.result.reused_tokens(), static_cast<int>(prompt.size()) - 16) << i;
    EXPECT_EQ(got.result.prefilled_tokens(),
              static_cast<int>(text.size()) - got.result.reused_tokens());
  }
  EXPECT_EQ(mesh.Path(root).length(), static_cast<int>(prompt.size()));  // untouched
}

// A router whose KV cache holds 64 blocks: 8 concurrent Extends that may each need 11 wait
// their turn instead of failing a step, and all come out right; one that could never fit is
// RESOURCE_EXHAUSTED up front.
TEST(MeshTest, ExtendsWaitForKvRoomAndOversizedOnesAreRefused) {
  Mesh mesh(kModel, {"all"}, 1, {"--kv_cache_tokens=1024", "--kv_block_tokens=16"});
  ASSERT_TRUE(mesh.ok()) << "see " << mesh.log();
  std::vector<std::future<Extended>> runs;
  std::vector<std::vector<int>> prompts;
  for (int i = 0; i < 8; ++i) {
    prompts.push_back({1,  90 + i, 91,  92,  93,  94,  95,  96,  97,  98,
                       99, 100,    101, 102, 103, 104, 105, 106, 107, 108});
    const uint64_t seq = mesh.NewSequence();
    runs.push_back(std::async(std::launch::async, [&mesh, seq, p = prompts.back()] {
      return Extend(mesh.router(), Request(seq, p, 100));
    }));
  }
  for (int i = 0; i < 8; ++i) {
    ExpectSameGeneration(runs[i].get(), Reference(kModel, prompts[i], 100),
                         absl::StrCat("queued extend ", i), /*tol=*/1e-4);
  }
  const Extended big = Extend(mesh.router(), Request(mesh.NewSequence(), {1, 2, 3}, 1500));
  EXPECT_EQ(big.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(big.status.error_message().find("--kv_cache_tokens"), std::string::npos)
      << big.status.error_message();
}

TEST(MeshTest, KillNineDuringAnExtendWithAndWithoutAReplica) {
  // Workers 1 and 2 are replicas; a step without a live replica is retried for 1 s only.
  Mesh mesh(kModel, {"*:0-1", "*:2-3", "*:2-3"}, 1, {"--expert_wait_ms=1000"});
  ASSERT_TRUE(mesh.ok()) << "see " << mesh.log();
  const std::vector<int> prompt = {1, 40, 41, 42, 43};
  const int n = 300;

  const uint64_t seq = mesh.NewSequence();
  const Extended survived =
      Extend(mesh.router(), Request(seq, prompt, n), std::chrono::seconds(60), [&](int i) {
        if (i == 5) mesh.worker(1).Signal(SIGKILL);
      });
  ExpectSameGeneration(survived, Reference(kModel, prompt, n), "a replica was killed");
  const v1::GetPathResponse before = mesh.Path(seq);
  EXPECT_EQ(before.length(), static_cast<int>(prompt.size()) + n);

  // Now the last host of experts 2-3 dies mid-Extend: UNAVAILABLE naming the expert, and the
  // kv-store sequence is exactly as it was.
  const Extended lost =
      Extend(mesh.router(), Request(seq, {50, 51}, n), std::chrono::seconds(60), [&](int i) {
        if (i == 5) mesh.worker(2).Signal(SIGKILL);
      });
  EXPECT_EQ(lost.status.error_code(), grpc::StatusCode::UNAVAILABLE) << lost.status.error_message();
  EXPECT_TRUE(lost.status.error_message().find("expert 2)") != std::string::npos ||
              lost.status.error_message().find("expert 3)") != std::string::npos)
      << lost.status.error_message();
  EXPECT_EQ(lost.results, 0);
  const v1::GetPathResponse after = mesh.Path(seq);
  EXPECT_EQ(after.length(), before.length());
  EXPECT_EQ(after.version(), before.version());
}

// The only host of experts 2-3 dies mid-Extend and comes back at its address: the router's step
// waits for it (--expert_wait_ms) instead of failing, and the Extend completes exactly.
TEST(MeshTest, AStepWaitsForAWorkerWithoutAReplicaToComeBack) {
  Mesh mesh(kModel, {"*:0-1", "*:2-3"}, 1, {"--expert_wait_ms=60000"});
  ASSERT_TRUE(mesh.ok()) << "see " << mesh.log();
  const std::vector<int> prompt = {1, 40, 41, 42, 43};
  const int n = 200;
  std::thread restart;
  std::atomic<bool> restarted{false};
  const Extended got = Extend(mesh.router(), Request(mesh.NewSequence(), prompt, n),
                              std::chrono::seconds(90), [&](int i) {
                                if (i != 5) return;
                                mesh.worker(1).Signal(SIGKILL);
                                restart = std::thread([&] { restarted = mesh.RestartWorker(1); });
                              });
  if (restart.joinable()) restart.join();
  EXPECT_TRUE(restarted.load());
  ExpectSameGeneration(got, Reference(kModel, prompt, n), "the worker came back");
}

TEST(MeshTest, BadInputGetsTheRightCodeAndTheRouterKeepsServing) {
  Mesh mesh(kModel, {"all"});
  ASSERT_TRUE(mesh.ok()) << "see " << mesh.log();
  const uint64_t seq = mesh.NewSequence();
  struct Case {
    v1::ExtendRequest req;
    grpc::StatusCode code;
    std::string needle;
  };
  std::vector<Case> cases;
  cases.push_back({Request(987654, {1, 2}, 4), grpc::StatusCode::NOT_FOUND, "987654"});
  cases.push_back({Request(0, {1}, 4), grpc::StatusCode::INVALID_ARGUMENT, "sequence_id"});
  cases.push_back(
      {Request(seq, {1, 384}, 4), grpc::StatusCode::INVALID_ARGUMENT, "token_ids.ids[1] = 384"});
  cases.push_back(
      {Request(seq, {1}, 9000), grpc::StatusCode::INVALID_ARGUMENT, "params.max_tokens 9000"});
  cases.push_back({Request(seq, {}, 4), grpc::StatusCode::INVALID_ARGUMENT, "is empty"});
  cases.push_back({Request(seq, std::vector<int>(3000, 5), 4), grpc::StatusCode::INVALID_ARGUMENT,
                   "max_seq_tokens"});
  {
    v1::ExtendRequest r = Request(seq, {1}, 4);
    r.mutable_params()->set_temperature(-1);
    cases.push_back({r, grpc::StatusCode::INVALID_ARGUMENT, "params.temperature"});
    r = Request(seq, {1}, 4);
    r.mutable_params()->set_top_p(1.5);
    cases.push_back({r, grpc::StatusCode::INVALID_ARGUMENT, "params.top_p"});
    r = Request(seq, {1}, 4);
    r.mutable_params()->set_top_logprobs(21);
    cases.push_back({r, grpc::StatusCode::INVALID_ARGUMENT, "params.top_logprobs 21"});
    r = Request(seq, {1}, 4);
    r.mutable_params()->add_stop("");
    cases.push_back({r, grpc::StatusCode::INVALID_ARGUMENT, "params.stop[0]"});
    r = Request(seq, {}, 4);
    r.set_text(std::string(70000, 'a'));
    cases.push_back({r, grpc::StatusCode::INVALID_ARGUMENT, "text of 70000 bytes"});
    r = Request(seq, {}, 4);  // over the router's 4 MiB message limit
    r.set_text(std::string(5 << 20, 'a'));
    cases.push_back({r, grpc::StatusCode::RESOURCE_EXHAUSTED, ""});
  }
  for (const Case& c : cases) {
    const Extended got = Extend(mesh.router(), c.req);
    EXPECT_EQ(got.status.error_code(), c.code) << c.needle << ": " << got.status.error_message();
    EXPECT_NE(got.status.error_message().find(c.needle), std::string::npos)
        << got.status.error_message();
    EXPECT_TRUE(got.ids.empty()) << c.needle;
  }
  EXPECT_EQ(mesh.Path(seq).version(), 1u);  // nothing was committed

  // A stale commit: B extends the sequence while A is still generating from the old version.
  const v1::GetPathResponse start = mesh.Path(seq);
  Extended b;
  const Extended a =
      Extend(mesh.router(), Request(seq, {1, 40, 41}, 400), std::chrono::seconds(60), [&](int i) {
        if (i == 0) b = Extend(mesh.router(), Request(seq, {1, 50}, 2));
      });
  ASSERT_TRUE(b.status.ok()) << b.status.error_message();
  EXPECT_EQ(a.status.error_code(), grpc::StatusCode::ABORTED) << a.status.error_message();
  EXPECT_NE(a.status.error_message().find("not the expected"), std::string::npos)
      << a.status.error_message();
  const v1::GetPathResponse now = mesh.Path(seq);
  EXPECT_EQ(now.version(), start.version() + 1);  // only B's commit
  EXPECT_EQ(now.length(), 4);

  // A deadline that passes mid-generation commits nothing.
  const Extended late =
      Extend(mesh.router(), Request(seq, {60}, 8000), std::chrono::milliseconds(200));
  EXPECT_EQ(late.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(mesh.Path(seq).version(), now.version());

  // Still serving, and what it serves is right.
  const Extended fine = Extend(mesh.router(), Request(seq, {60}, 6));
  ExpectSameGeneration(fine, Reference(kModel, Concat(Concat({1, 50}, b.ids), {60}), 6),
                       "after bad input");
}

// `arbor up` as a user runs it (two routers): every service comes up on loopback, a generation
// works through each router, and every child goes away on SIGTERM, and when `arbor up`'s own
// parent is killed.
std::vector<int> ServicePids(const std::string& ready_file) {
  std::ifstream in(ready_file);
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  std::vector<int> pids;
  if (j.is_discarded()) return pids;
  for (const auto& s : j["services"]) pids.push_back(s["pid"].get<int>());
  return pids;
}

bool Alive(int pid) { return ::kill(pid, 0) == 0; }

TEST(ArborUpTest, StartsServesAndStopsEveryChild) {
  const std::string dir = ::testing::TempDir() + "arbor_up_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  const std::string ready = dir + "/ready.json";
  testing::ChildProcess up(
      {ARBOR_CLI_BIN, "up", "--ports=auto", "--model=" + kModel, "--workers=2", "--replicas=2",
       "--routers=2", "--ready_file=" + ready, "--log_dir=" + dir, "--data_dir=" + dir},
      dir + "/up.log");
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(ready); }, std::chrono::seconds(90)))
      << "see " << dir;
  std::ifstream in(ready);
  const nlohmann::json j = nlohmann::json::parse(in);
  const std::vector<int> pids = ServicePids(ready);
  ASSERT_EQ(pids.size(), 9u);  // Redis, kv-store, 2 x 2 workers, 2 routers, planner
  ASSERT_EQ(j["routers"].size(), 2u);
  EXPECT_EQ(j["router"], j["routers"][0]);
  EXPECT_EQ(j["state"], "redis");
  EXPECT_TRUE(std::filesystem::exists(dir + "/redis/appendonlydir") ||
              std::filesystem::exists(dir + "/redis/appendonly.aof"));

  // The mesh runs mTLS: an operator's certificate from the CA `arbor up` made.
  const std::string tls = j["tls_dir"].get<std::string>();
  auto creds = rpc::MakeChannelCredentials(
      {.cert = tls + "/operator.crt", .key = tls + "/operator.key", .ca = tls + "/ca.crt"});
  auto kv = v1::KvStore::NewStub(grpc::CreateChannel(j["kvstore"].get<std::string>(), creds));
  auto router = v1::Router::NewStub(grpc::CreateChannel(j["router"].get<std::string>(), creds));
  grpc::ClientContext ctx;
  v1::CreateSequenceResponse created;
  ASSERT_TRUE(kv->CreateSequence(&ctx, {}, &created).ok());
  // Without a certificate the kv-store does not even complete the handshake.
  auto plain = v1::KvStore::NewStub(
      grpc::CreateChannel(j["kvstore"].get<std::string>(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext plain_ctx;
  plain_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::CreateSequenceResponse refused;
  EXPECT_FALSE(plain->CreateSequence(&plain_ctx, {}, &refused).ok());
  const std::vector<int> prompt = {1, 40, 41, 42};
  ExpectSameGeneration(Extend(*router, Request(created.sequence_id(), prompt, 8)),
                       Reference(kModel, prompt, 8), "through arbor up");
  // The second router serves the same mesh.
  auto router1 =
      v1::Router::NewStub(grpc::CreateChannel(j["routers"][1].get<std::string>(), creds));
  grpc::ClientContext ctx1;
  v1::CreateSequenceResponse created1;
  ASSERT_TRUE(kv->CreateSequence(&ctx1, {}, &created1).ok());
  ExpectSameGeneration(Extend(*router1, Request(created1.sequence_id(), prompt, 8)),
                       Reference(kModel, prompt, 8), "through arbor up's second router");

  const int status = up.Signal(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  for (int pid : pids) EXPECT_FALSE(Alive(pid)) << pid;
  EXPECT_FALSE(std::filesystem::exists(ready));
}

// kill -9 of a child: `arbor up` restarts it (the expert worker without a replica, then the
// router), counts it in the ready file, and the mesh serves again at the same addresses.
TEST(ArborUpTest, RestartsAChildThatDies) {
  const std::string dir = ::testing::TempDir() + "arbor_up_restart_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  const std::string ready = dir + "/ready.json";
  testing::ChildProcess up(
      {ARBOR_CLI_BIN, "up", "--ports=auto", "--model=" + kModel, "--workers=1",
       "--with_planner=false", "--ready_file=" + ready, "--log_dir=" + dir, "--data_dir=" + dir},
      dir + "/up.log");
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(ready); }, std::chrono::seconds(90)))
      << "see " << dir;
  auto service = [&](const std::string& name) {
    std::ifstream in(ready);
    const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_discarded()) return nlohmann::json();
    for (const auto& s : j["services"]) {
      if (s["name"] == name) return s;
    }
    return nlohmann::json();
  };
  std::ifstream in(ready);
  const nlohmann::json j = nlohmann::json::parse(in);
  const std::string tls = j["tls_dir"].get<std::string>();
  auto creds = rpc::MakeChannelCredentials(
      {.cert = tls + "/operator.crt", .key = tls + "/operator.key", .ca = tls + "/ca.crt"});
  auto kv = v1::KvStore::NewStub(grpc::CreateChannel(j["kvstore"].get<std::string>(), creds));
  auto router = v1::Router::NewStub(grpc::CreateChannel(j["router"].get<std::string>(), creds));
  auto serving = [&](const std::string& address) {
    auto health = grpc::health::v1::Health::NewStub(grpc::CreateChannel(address, creds));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    grpc::health::v1::HealthCheckResponse resp;
    return health->Check(&ctx, {}, &resp).ok() &&
           resp.status() == grpc::health::v1::HealthCheckResponse::SERVING;
  };
  const std::vector<int> prompt = {1, 40, 41, 42};
  auto generate = [&] {
    grpc::ClientContext ctx;
    v1::CreateSequenceResponse created;
    EXPECT_TRUE(kv->CreateSequence(&ctx, {}, &created).ok());
    return Extend(*router, Request(created.sequence_id(), prompt, 8));
  };
  ExpectSameGeneration(generate(), Reference(kModel, prompt, 8), "before");

  for (const std::string name : {"expert-0", "router"}) {
    const int pid = service(name)["pid"].get<int>();
    ASSERT_EQ(::kill(pid, SIGKILL), 0) << name;
    ASSERT_TRUE(WaitFor(
        [&] {
          const nlohmann::json s = service(name);
          return s.is_object() && s["restarts"].get<int>() == 1 && s["pid"].get<int>() != pid &&
                 serving(s["address"].get<std::string>());
        },
        std::chrono::seconds(60)))
        << name << " was not restarted; see " << dir;
    // The router skips a worker that failed for a moment, then calls it again.
    Extended again;
    WaitFor(
        [&] {
          again = generate();
          return again.status.ok();
        },
        std::chrono::seconds(30));
    ExpectSameGeneration(again, Reference(kModel, prompt, 8), "after " + name + " restarted");
  }
  EXPECT_EQ(service("kvstore")["restarts"].get<int>(), 0);
  const int status = up.Signal(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

// A child that keeps dying (here killed each time it is back: 6 exits within 2 minutes) cannot
// stay up: `arbor up` says so, stops the rest and exits 1.
TEST(ArborUpTest, StopsWhenAChildCannotStayUp) {
  const std::string dir = ::testing::TempDir() + "arbor_up_crashloop_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  const std::string ready = dir + "/ready.json";
  testing::ChildProcess up({ARBOR_CLI_BIN, "up", "--ports=auto", "--model=" + kModel, "--workers=1",
                            "--with_planner=false", "--insecure", "--ready_file=" + ready,
                            "--log_dir=" + dir, "--data_dir=" + dir},
                           dir + "/up.log");
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(ready); }, std::chrono::seconds(90)))
      << "see " << dir;
  const std::vector<int> first = ServicePids(ready);
  auto expert_pid = [&] {
    std::ifstream in(ready);
    const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_discarded()) return -1;
    for (const auto& s : j["services"]) {
      if (s["name"] == "expert-0") return s["pid"].get<int>();
    }
    return -1;
  };
  int last = -1;
  for (int kill = 0; kill < 6; ++kill) {
    ASSERT_TRUE(WaitFor(
        [&] {
          const int pid = expert_pid();
          return pid > 0 && pid != last && Alive(pid);
        },
        std::chrono::seconds(60)))
        << "kill " << kill << "; see " << dir;
    last = expert_pid();
    ::kill(last, SIGKILL);
  }
  const int status = up.Wait(std::chrono::seconds(60));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status;
  for (int pid : first) EXPECT_FALSE(Alive(pid)) << pid;
  std::ifstream log(dir + "/up.log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("expert-0 exited (killed by signal 9), 6 times in 120 s: it cannot stay up"),
            std::string::npos)
      << text;
}

TEST(ArborUpTest, StopsEveryChildWhenItsParentDies) {
  const std::string dir = ::testing::TempDir() + "arbor_up_orphan_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  const std::string ready = dir + "/ready.json";
  // A shell that is the parent of `arbor up` (not exec'd into it), then killed with -9.
  testing::ChildProcess shell(
      {"/bin/sh", "-c",
       absl::StrCat("'", ARBOR_CLI_BIN, "' up --ports=auto --model='", kModel,
                    "' --workers=1 --ready_file='", ready, "' --log_dir='", dir, "' --data_dir='",
                    dir, "'; true")},
      dir + "/up.log");
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(ready); }, std::chrono::seconds(90)))
      << "see " << dir;
  const std::vector<int> pids = ServicePids(ready);
  ASSERT_EQ(pids.size(), 5u);  // Redis, kv-store, a worker, router, planner
  shell.Signal(SIGKILL);
  EXPECT_TRUE(WaitFor(
      [&] {
        for (int pid : pids) {
          if (Alive(pid)) return false;
        }
        return true;
      },
      std::chrono::seconds(60)));
}

}  // namespace
}  // namespace arbor
