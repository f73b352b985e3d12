// Mesh benchmarks, printed as one JSON object:
//   remote_fork: Fork RPC latency (p50/p99 in microseconds) against a kv-store service over
//   gRPC on loopback, for sequences of 16 .. 1M tokens of context.
// (Decode tokens/s through router + expert workers joins this program with the router.)
//
//   arbor_bench_mesh [--forks 2000] [--contexts 16,1024,65536,1048576]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "arbor/common/logging.h"
#include "arbor/rpc/server_host.h"
#include "kvstore_service.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(int, forks, 2000, "timed Fork RPCs per context length");
ABSL_FLAG(std::vector<std::string>, contexts,
          std::vector<std::string>({"16", "1024", "65536", "1048576"}), "context lengths");

namespace {

using Clock = std::chrono::steady_clock;

// Small KV rows (1 layer, 1 kv head, head_dim 8): fork cost does not depend on them, and 1M
// tokens then fit in 64 MB.
const arbor::kvcache::KvLayout kLayout{1, 1, 8, 16};
constexpr int kRowFloats = 16;
constexpr int kCommitChunk = 32768;  // tokens per Commit RPC (2 MiB of KV)

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
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
  auto call = [](auto fn) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return fn(&ctx);
  };

  nlohmann::json rows = nlohmann::json::array();
  for (int ctx_tokens : contexts) {
    arbor::v1::CreateSequenceResponse created;
    if (!call([&](auto* c) {
           return stub->CreateSequence(c, arbor::v1::CreateSequenceRequest(), &created);
         }).ok()) {
      return 1;
    }
    uint64_t version = created.version();
    for (int done = 0; done < ctx_tokens; done += kCommitChunk) {
      const int n = std::min(kCommitChunk, ctx_tokens - done);
      arbor::v1::CommitRequest req;
      req.set_sequence_id(created.sequence_id());
      req.set_expected_version(version);
      for (int i = 0; i < n; ++i) req.add_token_ids(5);
      auto* kv = req.mutable_kv();
      kv->set_dtype(arbor::v1::DTYPE_F32);
      for (int64_t d : {static_cast<int64_t>(n), int64_t{1}, int64_t{2}, int64_t{1}, int64_t{8}}) {
        kv->add_shape(d);
      }
      kv->mutable_data()->assign(static_cast<size_t>(n) * kRowFloats * 4, '\0');
      arbor::v1::CommitResponse resp;
      const grpc::Status st = call([&](auto* c) { return stub->Commit(c, req, &resp); });
      if (!st.ok()) {
        std::fprintf(stderr, "commit: %s\n", st.error_message().c_str());
        return 1;
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
      if (!kids.empty()) (void)call([&](auto* c) { return stub->Release(c, rel, &rr); });
      kids.clear();
    };
    for (int i = 0; i < absl::GetFlag(FLAGS_forks) + 100; ++i) {  // first 100: warm-up
      arbor::v1::ForkResponse resp;
      const auto t0 = Clock::now();
      const grpc::Status st = call([&](auto* c) { return stub->Fork(c, fork, &resp); });
      const double t = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
      if (!st.ok()) return 1;
      if (i >= 100) us.push_back(t);
      kids.push_back(resp.sequence_ids(0));
      if (kids.size() == 1000) release();  // untimed
    }
    release();
    kids.push_back(created.sequence_id());  // the context itself
    release();
    rows.push_back({{"context_tokens", ctx_tokens},
                    {"forks", us.size()},
                    {"p50_us", Percentile(us, 0.50)},
                    {"p99_us", Percentile(us, 0.99)}});
  }
  nlohmann::json out = {{"bench", "mesh"},
                        {"transport", "gRPC over loopback, in-process kv-store service"},
                        {"remote_fork", rows}};
  std::printf("%s\n", out.dump(2).c_str());
  (*host)->Shutdown();
  return 0;
}
