#include "generate.h"

#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "arbor/engine/generator.h"
#include "arbor/engine/local_model.h"

ABSL_FLAG(std::string, model, "models/test-moe", "model folder (Hugging Face Mixtral layout)");
ABSL_FLAG(std::string, prompt, "", "prompt text");
ABSL_FLAG(int, max_tokens, 64, "tokens to generate at most");
ABSL_FLAG(float, temperature, 0.0f, "sampling temperature; 0 = greedy");
ABSL_FLAG(int, top_k, 0, "keep the k most likely tokens; 0 = all");
ABSL_FLAG(float, top_p, 1.0f, "nucleus sampling mass in (0, 1]");
ABSL_FLAG(uint64_t, seed, 0, "sampling seed");
ABSL_FLAG(std::vector<std::string>, stop, {}, "comma-separated stop strings");
ABSL_FLAG(bool, ignore_eos, false, "keep generating past the end-of-sequence token");
ABSL_FLAG(int, threads, 0, "OpenBLAS threads; 0 = OpenBLAS default");
ABSL_FLAG(bool, logprobs, false, "print each generated token with its log-probability");

namespace arbor::cli {

int Generate() {
  engine::EngineOptions opts;
  opts.num_threads = absl::GetFlag(FLAGS_threads);
  opts.max_seqs = 1;
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
