#include "generate.h"

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "arbor/engine/generator.h"
#include "arbor/engine/local_model.h"
#include "arbor/rpc/status.h"
#include "arbor/v1/kvstore.grpc.pb.h"
#include "arbor/v1/router.grpc.pb.h"
#include "grpcpp/grpcpp.h"

ABSL_FLAG(std::string, model, "models/game24-moe", "model folder (Hugging Face Mixtral layout)");
ABSL_FLAG(std::string, prompt, "", "prompt text");
ABSL_FLAG(int, max_tokens, 64, "tokens to generate at most");
ABSL_FLAG(float, temperature, 0.0f, "sampling temperature; 0 = greedy");
ABSL_FLAG(int, top_k, 0, "keep the k most likely tokens; 0 = all");
ABSL_FLAG(float, top_p, 1.0f, "nucleus sampling mass in (0, 1]");
ABSL_FLAG(uint64_t, seed, 0, "sampling seed");
ABSL_FLAG(std::vector<std::string>, stop, {}, "comma-separated stop strings");
ABSL_FLAG(bool, ignore_eos, false, "keep generating past the end-of-sequence token");
ABSL_FLAG(int, threads, 0, "OpenBLAS threads; 0 = OpenBLAS default");
ABSL_DECLARE_FLAG(std::string, backend);  // defined in up.cc; shared by the subcommands
ABSL_FLAG(bool, logprobs, false, "print each generated token with its log-probability");
ABSL_FLAG(std::string, router, "",
          "generate through a running mesh: the router's address (e.g. 127.0.0.1:50071); "
          "empty runs the model in this process");
ABSL_FLAG(std::string, kvstore, "127.0.0.1:50051", "with --router: the kv-store's address");
ABSL_FLAG(int, timeout_s, 300, "with --router: deadline of the whole generation");
ABSL_FLAG(bool, keep_sequence, false,
          "with --router: keep the kv-store sequence (its id is printed) instead of releasing it");

namespace arbor::cli {
namespace {

// The same generation through a running mesh: a new kv-store sequence, one Extend on the router
// with the prompt as text, tokens printed as they stream in.
int GenerateRemote() {
  const auto deadline =
      std::chrono::system_clock::now() + std::chrono::seconds(absl::GetFlag(FLAGS_timeout_s));
  mesh::KvStoreClient kvstore(mesh::NewChannel(absl::GetFlag(FLAGS_kvstore)));
  mesh::RouterClient router(mesh::NewChannel(absl::GetFlag(FLAGS_router)));
  v1::ExtendRequest req;
  const std::string prompt = absl::GetFlag(FLAGS_prompt);
  req.set_text(prompt);
  req.set_add_bos(true);
  v1::GenerationParams* p = req.mutable_params();
  p->set_max_tokens(absl::GetFlag(FLAGS_max_tokens));
  p->set_temperature(absl::GetFlag(FLAGS_temperature));
  p->set_top_k(absl::GetFlag(FLAGS_top_k));
  p->set_top_p(absl::GetFlag(FLAGS_top_p));
  p->set_seed(absl::GetFlag(FLAGS_seed));
  for (const std::string& s : absl::GetFlag(FLAGS_stop)) p->add_stop(s);
  p->set_ignore_eos(absl::GetFlag(FLAGS_ignore_eos));

  const auto t0 = std::chrono::steady_clock::now();
  double first_token_s = -1;
  std::printf("%s", prompt.c_str());
  std::fflush(stdout);
  std::vector<v1::GeneratedToken> tokens;
  uint64_t sequence_id = 0;
  const absl::StatusOr<v1::ExtendResult> result = ExtendNewSequence(
      kvstore, router, std::move(req), deadline, absl::GetFlag(FLAGS_keep_sequence),
      [&](const v1::GeneratedToken& t) {
        if (first_token_s < 0) {
          first_token_s =
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        }
        std::printf("%s", t.text().c_str());
        std::fflush(stdout);
        tokens.push_back(t);
      },
      &sequence_id);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("\n");
  if (!result.ok()) {
    std::fprintf(stderr, "arbor generate: %s (kv-store %s, router %s)\n",
                 result.status().ToString().c_str(), absl::GetFlag(FLAGS_kvstore).c_str(),
                 absl::GetFlag(FLAGS_router).c_str());
    return 1;
  }
  if (absl::GetFlag(FLAGS_logprobs)) {
    for (const v1::GeneratedToken& t : tokens) {
      std::printf("  token %6d  %-16s  logprob %.4f\n", t.id(),
                  absl::StrFormat("\"%s\"", absl::CHexEscape(t.text())).c_str(), t.logprob());
    }
  }
  std::printf("---\nfinish: %s\nsequence: %llu version %llu%s\n",
              v1::FinishReason_Name(result->finish_reason()).c_str(),
              static_cast<unsigned long long>(sequence_id),
              static_cast<unsigned long long>(result->version()),
              absl::GetFlag(FLAGS_keep_sequence) ? " (kept)" : " (released)");
  std::printf("tokens: %d input (%d prefilled, %d reused), %d generated\n", result->input_tokens(),
              result->prefilled_tokens(), result->reused_tokens(), result->generated_tokens());
  std::printf("time: %.4f s, first token after %.4f s (%.1f tokens/s after it)\n", secs,
              first_token_s,
              result->generated_tokens() > 1 && secs > first_token_s
                  ? (result->generated_tokens() - 1) / (secs - first_token_s)
                  : 0.0);
  return 0;
}

}  // namespace

absl::StatusOr<v1::ExtendResult> ExtendNewSequence(
    mesh::KvStoreClient& kv, mesh::RouterClient& router, v1::ExtendRequest req,
    std::chrono::system_clock::time_point deadline, bool keep,
    const std::function<void(const v1::GeneratedToken&)>& on_token, uint64_t* sequence_id) {
  absl::StatusOr<v1::CreateSequenceResponse> created = kv.CreateSequence({}, deadline);
  if (!created.ok()) return created.status();
  if (sequence_id != nullptr) *sequence_id = created->sequence_id();
  req.set_sequence_id(created->sequence_id());
  v1::ExtendResult result;
  const absl::Status st = router.Extend(req, deadline, [&](const v1::ExtendEvent& event) {
    if (event.has_token() && on_token) on_token(event.token());
    if (event.has_result()) result = event.result();
    return true;
  });
  if (!keep) {
    // Best effort, whatever the deadline; the error is not the caller's.
    kv.Release({created->sequence_id()}, mesh::kNoDeadline).IgnoreError();
  }
  if (!st.ok()) return st;
  return result;
}

int Generate() {
  if (!absl::GetFlag(FLAGS_router).empty()) return GenerateRemote();
  engine::EngineOptions opts;
  opts.num_threads = absl::GetFlag(FLAGS_threads);
  opts.max_seqs = 1;
  opts.backend = absl::GetFlag(FLAGS_backend);
  const std::string dir = absl::GetFlag(FLAGS_model);
  auto loaded = engine::LocalModel::Load(dir, opts);
  if (!loaded.ok()) {
    std::fprintf(stderr, "arbor generate: %s\n", loaded.status().ToString().c_str());
    return 1;
  }
  engine::LocalModel& m = **loaded;
  if (m.tokenizer == nullptr) {
    std::fprintf(stderr, "arbor generate: %s/tokenizer.model is missing\n", dir.c_str());
    return 1;
  }
  engine::GenerationParams params;
  params.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  params.sampling.temperature = absl::GetFlag(FLAGS_temperature);
  params.sampling.top_k = absl::GetFlag(FLAGS_top_k);
  params.sampling.top_p = absl::GetFlag(FLAGS_top_p);
  params.sampling.seed = absl::GetFlag(FLAGS_seed);
  params.stop = absl::GetFlag(FLAGS_stop);
  params.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);

  const std::string prompt = absl::GetFlag(FLAGS_prompt);
  engine::Generator gen(m.engine.get(), m.tokenizer.get());
  auto id = gen.Submit(m.tokenizer->Encode(prompt), params);
  if (!id.ok()) {
    std::fprintf(stderr, "arbor generate: %s\n", id.status().ToString().c_str());
    return 2;
  }
  if (auto st = gen.RunToCompletion(); !st.ok()) {
    std::fprintf(stderr, "arbor generate: %s\n", st.ToString().c_str());
    return 1;
  }
  const engine::GenerationResult& r = gen.result(*id);
  std::printf("%s%s\n", prompt.c_str(), r.text.c_str());
  if (absl::GetFlag(FLAGS_logprobs)) {
    for (size_t i = 0; i < r.token_ids.size(); ++i) {
      std::printf(
          "  token %6d  %-16s  logprob %.4f\n", r.token_ids[i],
          absl::StrFormat("\"%s\"", absl::CHexEscape(m.tokenizer->PieceBytes(r.token_ids[i])))
              .c_str(),
          r.logprobs[i]);
    }
  }
  const engine::GeneratorStats& s = gen.stats();
  std::printf("---\nfinish: %s\nprefill: %lld tokens in %.4f s (%.1f tokens/s)\n",
              engine::FinishReasonName(r.finish), static_cast<long long>(s.prefill_tokens),
              s.prefill_seconds, s.prefill_seconds > 0 ? s.prefill_tokens / s.prefill_seconds : 0);
  std::printf("decode:  %lld tokens in %.4f s (%.1f tokens/s)\n",
              static_cast<long long>(s.decode_tokens), s.decode_seconds,
              s.decode_seconds > 0 ? s.decode_tokens / s.decode_seconds : 0);
  return 0;
}

}  // namespace arbor::cli
