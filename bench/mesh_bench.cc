// Mesh benchmarks, printed as one JSON object:
//   remote_fork: Fork RPC latency (p50/p99 in microseconds) against a kv-store service over
//   gRPC on loopback, for sequences of 16 .. 1M tokens of context.
//   decode (with --model): decode tokens/s of the same batch of greedy generations in this
//   process (engine + Generator) and through the mesh (`arbor up`: kv-store, --workers expert
//   workers and the router as processes on loopback, driven by concurrent Extend calls), and
//   their ratio. Both are timed the same way: from the moment every sequence of the batch has
//   its first token to the last token, counting the tokens in between.
//
//   arbor_bench_mesh [--forks 2000] [--contexts 16,1024,65536,1048576]
//                    [--model DIR --batches 1,16,64 --decode_tokens 32 --workers 2]
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "arbor/common/logging.h"
#include "arbor/common/process.h"
#include "arbor/engine/generator.h"
#include "arbor/engine/local_model.h"
#include "arbor/mesh/kv_wire.h"
#include "arbor/rpc/server_host.h"
#include "arbor/v1/router.grpc.pb.h"
#include "kvstore_service.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(int, forks, 2000, "timed Fork RPCs per context length");
ABSL_FLAG(std::vector<std::string>, contexts,
          std::vector<std::string>({"16", "1024", "65536", "1048576"}), "context lengths");
ABSL_FLAG(std::string, model, "", "decode section: model folder (empty skips it)");
ABSL_FLAG(std::vector<std::string>, batches, std::vector<std::string>({"1", "16", "64"}),
          "decode section: batch sizes");
ABSL_FLAG(int, prompt_tokens, 16, "decode section: prompt length of every sequence");
ABSL_FLAG(int, decode_tokens, 32, "decode section: tokens generated per sequence");
ABSL_FLAG(int, workers, 2, "decode section: expert workers of the mesh");
ABSL_FLAG(int, threads, 0,
          "decode section: OpenBLAS threads in process and of every service; 0 = default");
ABSL_FLAG(std::string, arbor, "", "decode section: the arbor binary (default: beside this one)");

namespace {

using Clock = std::chrono::steady_clock;

// Small KV rows (1 layer, 1 kv head, head_dim 8): fork cost does not depend on them, and 1M
// tokens then fit in 64 MB.
const arbor::kvcache::KvLayout kLayout{1, 1, 8, 16};
constexpr int kCommitChunk = 32768;  // tokens per Commit RPC (2 MiB of KV)

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

// Distinct prompts (no shared prefix), ids well inside any vocabulary of 384+.
std::vector<int> Prompt(int i, int n) {
  std::vector<int> p = {1};
  for (int t = 1; t < n; ++t) p.push_back(3 + (i * 7 + t * 13) % 300);
  return p;
}

// In-process: B greedy generations in one Generator.
double DecodeInProcess(arbor::engine::LocalModel& m, int batch, int prompt, int tokens) {
  arbor::engine::Generator gen(m.engine.get(), nullptr);
  arbor::engine::GenerationParams p;
  p.max_tokens = tokens;
  p.ignore_eos = true;
  std::vector<int> ids;
  for (int i = 0; i < batch; ++i) ids.push_back(*gen.Submit(Prompt(i, prompt), p));
  auto all_started = [&] {
    for (int id : ids) {
      if (gen.result(id).token_ids.empty()) return false;
    }
    return true;
  };
  while (!all_started()) (void)gen.Step();
  int64_t before = 0;
  for (int id : ids) before += static_cast<int64_t>(gen.result(id).token_ids.size());
  const auto t0 = Clock::now();
  (void)gen.RunToCompletion();
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  int64_t after = 0;
  for (int id : ids) after += static_cast<int64_t>(gen.result(id).token_ids.size());
  return (after - before) / secs;
}

// Through the mesh: B concurrent Extend calls on B new kv-store sequences.
double DecodeMesh(arbor::v1::KvStore::Stub& kv, arbor::v1::Router::Stub& router, int batch,
                  int prompt, int tokens) {
  std::vector<std::vector<Clock::time_point>> times(batch);
  std::vector<std::thread> threads;
  std::vector<uint64_t> seqs;
  for (int i = 0; i < batch; ++i) {
    grpc::ClientContext ctx;
    arbor::v1::CreateSequenceResponse created;
    if (!kv.CreateSequence(&ctx, {}, &created).ok()) return -1;
    seqs.push_back(created.sequence_id());
  }
  std::atomic<int> failed{0};
  for (int i = 0; i < batch; ++i) {
    threads.emplace_back([&, i] {
      arbor::v1::ExtendRequest req;
      req.set_sequence_id(seqs[i]);
      for (int t : Prompt(i, prompt)) req.mutable_token_ids()->add_ids(t);
      req.mutable_params()->set_max_tokens(tokens);
      req.mutable_params()->set_ignore_eos(true);
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
      auto stream = router.Extend(&ctx, req);
      arbor::v1::ExtendEvent e;
      while (stream->Read(&e)) {
        if (e.has_token()) times[i].push_back(Clock::now());
      }
      const grpc::Status st = stream->Finish();
      if (!st.ok()) {
        std::fprintf(stderr, "Extend: %s\n", st.error_message().c_str());
        ++failed;
      }
    });
  }
  for (auto& t : threads) t.join();
  arbor::v1::ReleaseRequest rel;
  for (uint64_t s : seqs) rel.add_sequence_ids(s);
  arbor::v1::ReleaseResponse rr;
  grpc::ClientContext rctx;
  (void)kv.Release(&rctx, rel, &rr);
  if (failed > 0) return -1;
  Clock::time_point start = Clock::time_point::min(), end = Clock::time_point::min();
  for (const auto& t : times) {
    if (t.empty()) return -1;
    start = std::max(start, t.front());
    end = std::max(end, t.back());
  }
  int64_t n = 0;
  for (const auto& t : times)
    n += std::count_if(t.begin(), t.end(), [&](auto x) { return x > start; });
  return n / std::chrono::duration<double>(end - start).count();
}

// Runs `arbor up` on free loopback ports until the returned process is sent SIGTERM.
pid_t StartMesh(const std::string& arbor, const std::string& model, int workers, int threads,
                int max_seqs, const std::string& ready) {
  return arbor::SpawnProcess(
      {arbor, "up", "--ports=auto", "--model=" + model, absl::StrCat("--workers=", workers),
       absl::StrCat("--blas_threads=", threads), absl::StrCat("--max_seqs=", max_seqs),
       "--log_level=warn", "--ready_file=" + ready},
      {.log_path = ready + ".log"});
}

int RunDecode(nlohmann::json* out) {
  const std::string model = absl::GetFlag(FLAGS_model);
  std::vector<int> batches;
  for (const std::string& s : absl::GetFlag(FLAGS_batches)) {
    int v;
    if (!absl::SimpleAtoi(s, &v) || v <= 0) {
      std::fprintf(stderr, "--batches: \"%s\" is not a positive integer\n", s.c_str());
      return 2;
    }
    batches.push_back(v);
  }
  const int max_batch = *std::max_element(batches.begin(), batches.end());
  const int prompt = absl::GetFlag(FLAGS_prompt_tokens),
            tokens = absl::GetFlag(FLAGS_decode_tokens);
  const int threads = absl::GetFlag(FLAGS_threads);

  std::vector<double> local_tps;
  {
    arbor::engine::EngineOptions o;
    o.max_seqs = max_batch;
    o.max_batch_tokens = std::max(512, max_batch);
    o.max_seq_tokens = prompt + tokens + 16;
    o.kv_cache_tokens = max_batch * (prompt + tokens + 32);
    o.num_threads = threads;
    auto m = arbor::engine::LocalModel::Load(model, o);
    if (!m.ok()) {
      std::fprintf(stderr, "%s\n", m.status().ToString().c_str());
      return 1;
    }
    DecodeInProcess(**m, 1, prompt, 4);  // warm-up
    for (int b : batches) local_tps.push_back(DecodeInProcess(**m, b, prompt, tokens));
  }

  std::string arbor = absl::GetFlag(FLAGS_arbor);
  if (arbor.empty())
    arbor = std::filesystem::read_symlink("/proc/self/exe").parent_path() / "arbor";
  const std::string ready = absl::StrCat(std::filesystem::temp_directory_path().string(),
                                         "/arbor_bench_mesh_", ::getpid(), ".json");
  const pid_t up = StartMesh(arbor, model, absl::GetFlag(FLAGS_workers), threads, max_batch, ready);
  const auto deadline = Clock::now() + std::chrono::minutes(5);
  while (!std::filesystem::exists(ready)) {
    int status;
    if (::waitpid(up, &status, WNOHANG) == up || Clock::now() > deadline) {
      std::fprintf(stderr, "arbor up did not start; see %s.log\n", ready.c_str());
      ::kill(up, SIGTERM);
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::ifstream in(ready);
  const nlohmann::json endpoints = nlohmann::json::parse(in);
  auto kv = arbor::v1::KvStore::NewStub(grpc::CreateChannel(endpoints["kvstore"].get<std::string>(),
                                                            grpc::InsecureChannelCredentials()));
  auto router = arbor::v1::Router::NewStub(grpc::CreateChannel(
      endpoints["router"].get<std::string>(), grpc::InsecureChannelCredentials()));
  DecodeMesh(*kv, *router, 1, prompt, 4);  // warm-up
  nlohmann::json rows = nlohmann::json::array();
  for (size_t i = 0; i < batches.size(); ++i) {
    const double mesh = DecodeMesh(*kv, *router, batches[i], prompt, tokens);
    rows.push_back({{"batch", batches[i]},
                    {"in_process_tokens_per_s", local_tps[i]},
                    {"mesh_tokens_per_s", mesh},
                    {"ratio", mesh > 0 ? mesh / local_tps[i] : 0.0}});
  }
  ::kill(up, SIGTERM);
  int status;
  ::waitpid(up, &status, 0);
  (*out)["decode"] = {{"model", model},          {"prompt_tokens", prompt},
                      {"decode_tokens", tokens}, {"workers", absl::GetFlag(FLAGS_workers)},
                      {"blas_threads", threads}, {"rows", rows}};
  return 0;
}

// A context of `ctx_tokens` tokens committed to the kv-store, then --forks timed Forks of it
// (after 100 untimed): the row of its latencies. UNAVAILABLE naming the RPC that failed.
absl::StatusOr<nlohmann::json> ForkLatency(arbor::v1::KvStore::Stub& stub, int ctx_tokens) {
  auto call = [](auto fn) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return fn(&ctx);
  };
  arbor::v1::CreateSequenceResponse created;
  if (!call([&](auto* c) {
         return stub.CreateSequence(c, arbor::v1::CreateSequenceRequest(), &created);
       }).ok()) {
    return absl::UnavailableError("CreateSequence failed");
  }
  uint64_t version = created.version();
  for (int done = 0; done < ctx_tokens; done += kCommitChunk) {
    const int n = std::min(kCommitChunk, ctx_tokens - done);
    arbor::v1::CommitRequest req;
    req.set_sequence_id(created.sequence_id());
    req.set_expected_version(version);
    for (int i = 0; i < n; ++i) req.add_token_ids(5);
    float* rows = arbor::mesh::PrepareKv(kLayout, n, req.mutable_kv());
    std::fill(rows, rows + static_cast<size_t>(n) * kLayout.token_floats(), 0.0f);
    arbor::v1::CommitResponse resp;
    const grpc::Status st = call([&](auto* c) { return stub.Commit(c, req, &resp); });
    if (!st.ok()) {
      return absl::UnavailableError(absl::StrCat("commit: ", st.error_message()));
    }
    version = resp.version();
  }
  std::vector<double> us;
  std::vector<uint64_t> kids;
  arbor::v1::ForkRequest fork;
  fork.set_sequence_id(created.sequence_id());
  fork.set_n(1);
  auto release = [&] {
    arbor::v1::ReleaseRequest rel;
    for (uint64_t k : kids) rel.add_sequence_ids(k);
    arbor::v1::ReleaseResponse rr;
    if (!kids.empty()) (void)call([&](auto* c) { return stub.Release(c, rel, &rr); });
    kids.clear();
  };
  for (int i = 0; i < absl::GetFlag(FLAGS_forks) + 100; ++i) {  // first 100: warm-up
    arbor::v1::ForkResponse resp;
    const auto t0 = Clock::now();
    const grpc::Status st = call([&](auto* c) { return stub.Fork(c, fork, &resp); });
    const double t = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    if (!st.ok()) return absl::UnavailableError(absl::StrCat("fork: ", st.error_message()));
    if (i >= 100) us.push_back(t);
    kids.push_back(resp.sequence_ids(0));
    if (kids.size() == 1000) release();  // untimed
  }
  release();
  kids.push_back(created.sequence_id());  // the context itself
  release();
  return nlohmann::json{{"context_tokens", ctx_tokens},
                        {"forks", us.size()},
                        {"p50_us", Percentile(us, 0.50)},
                        {"p99_us", Percentile(us, 0.99)}};
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  (void)arbor::InitLogging("warn");  // logs on stderr; stdout carries only the JSON
  std::vector<int> contexts;
  for (const std::string& s : absl::GetFlag(FLAGS_contexts)) {
    int v;
    if (!absl::SimpleAtoi(s, &v) || v <= 0) {
      std::fprintf(stderr, "--contexts: \"%s\" is not a positive integer\n", s.c_str());
      return 2;
    }
    contexts.push_back(v);
  }
  const int max_ctx = *std::max_element(contexts.begin(), contexts.end());
  auto tree = arbor::kvcache::KvTree::Create(
      kLayout, kLayout.BlocksFor(max_ctx) + 64,
      {.max_fork = 64, .max_seq_tokens = max_ctx + 16, .prefix_index = false});
  auto state = arbor::statestore::NewInMemoryStateStore();
  auto registry = std::make_shared<prometheus::Registry>();
  arbor::kvstore::KvStoreService service(tree->get(), state.get(), {.vocab_size = 32000},
                                         *registry);
  auto host = arbor::rpc::ServerHost::Start({}, {&service}, registry);
  if (!host.ok()) {
    std::fprintf(stderr, "%s\n", host.status().ToString().c_str());
    return 1;
  }
  auto stub = arbor::v1::KvStore::NewStub(
      grpc::CreateChannel((*host)->address(), grpc::InsecureChannelCredentials()));
  nlohmann::json rows = nlohmann::json::array();
  for (int ctx_tokens : contexts) {
    absl::StatusOr<nlohmann::json> row = ForkLatency(*stub, ctx_tokens);
    if (!row.ok()) {
      std::fprintf(stderr, "%s\n", row.status().ToString().c_str());
      return 1;
    }
    rows.push_back(*std::move(row));
  }
  nlohmann::json out = {{"bench", "mesh"},
                        {"transport", "gRPC over loopback, in-process kv-store service"},
                        {"remote_fork", rows}};
  (*host)->Shutdown();
  if (!absl::GetFlag(FLAGS_model).empty()) {
    if (const int rc = RunDecode(&out); rc != 0) return rc;
  }
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}
