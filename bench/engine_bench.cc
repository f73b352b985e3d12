// Prefill and decode throughput of the CPU engine at several batch sizes. Prints one JSON
// object (machine-readable) with a row per batch size:
//
//   arbor_bench_engine --model models/test-moe --batches 1,16,64
//
// Prefill: `batch` sequences of --prompt_tokens random tokens each, fed in steps of up to
// --max_batch_tokens tokens. Decode: --decode_steps steps of one token for each sequence.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "arbor/engine/local_model.h"
#include "arbor/kernels/parallel.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, model, "models/test-moe", "model folder");
ABSL_FLAG(std::vector<std::string>, batches, std::vector<std::string>({"1", "16", "64"}),
          "batch sizes (sequences per step)");
ABSL_FLAG(int, prompt_tokens, 128, "prompt tokens per sequence");
ABSL_FLAG(int, decode_steps, 32, "decode steps measured per batch size");
ABSL_FLAG(int, max_batch_tokens, 512, "tokens per prefill step");
ABSL_FLAG(int, threads, 0, "OpenBLAS threads; 0 = OpenBLAS default");
ABSL_FLAG(std::string, weights, "stored",
          "stored (a 16-bit checkpoint's projections stay 16-bit) or f32 (converted at load)");
ABSL_FLAG(int, probe_mb, 1024, "memory the read-bandwidth probe sums; 0 skips the probe");
ABSL_FLAG(std::string, backend, "cpu",
          "cpu, or cuda (engine and experts on GPU 0), or auto (cuda when a device is present)");

namespace {

using Clock = std::chrono::steady_clock;
using arbor::engine::Engine;
using arbor::engine::StepInput;

double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// --batches, or a message naming the bad entry.
absl::StatusOr<std::vector<int>> ParseBatches() {
  std::vector<int> batches;
  for (const std::string& b : absl::GetFlag(FLAGS_batches)) {
    int v;
    if (!absl::SimpleAtoi(b, &v) || v <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--batches: \"", b, "\" is not a positive integer"));
    }
    batches.push_back(v);
  }
  if (batches.empty()) return absl::InvalidArgumentError("--batches is empty");
  return batches;
}

// One batch size: `batch` random prompts of `prompt` tokens prefilled in steps of at most
// `max_batch_tokens` tokens, then `steps` decode steps of one token per sequence.
absl::StatusOr<nlohmann::json> MeasureBatch(Engine& engine, int batch, int prompt, int steps,
                                            int max_batch_tokens, std::mt19937& rng) {
  std::uniform_int_distribution<int> tok(3, engine.config().vocab_size - 1);
  std::vector<arbor::engine::SeqId> seqs(batch);
  std::vector<std::vector<int>> prompts(batch, std::vector<int>(prompt));
  for (auto& p : prompts) std::generate(p.begin(), p.end(), [&] { return tok(rng); });
  for (auto& s : seqs) s = engine.AddSequence();

  const auto t0 = Clock::now();
  std::vector<StepInput> inputs;
  std::vector<int> fed(batch, 0);
  for (int done = 0; done < batch;) {
    inputs.clear();
    int budget = max_batch_tokens;
    for (int i = 0; i < batch && budget > 0; ++i) {
      const int n = std::min(prompt - fed[i], budget);
      if (n <= 0) continue;
      inputs.push_back(
          {seqs[i], {prompts[i].data() + fed[i], static_cast<size_t>(n)}, fed[i] + n == prompt});
      fed[i] += n;
      budget -= n;
      done += fed[i] == prompt;
    }
    if (auto st = engine.Step(inputs); !st.ok()) {
      return absl::Status(st.code(), absl::StrCat("prefill: ", st.message()));
    }
  }
  const double prefill_s = Seconds(t0);

  std::vector<int> next(batch);
  for (auto& t : next) t = tok(rng);
  inputs.resize(batch);
  const arbor::engine::StepCounters before = engine.counters();
  const auto t1 = Clock::now();
  for (int s = 0; s < steps; ++s) {
    for (int i = 0; i < batch; ++i) inputs[i] = {seqs[i], {&next[i], 1}, true};
    if (auto st = engine.Step(inputs); !st.ok()) {
      return absl::Status(st.code(), absl::StrCat("decode: ", st.message()));
    }
  }
  const double decode_s = Seconds(t1);
  const arbor::engine::StepCounters& after = engine.counters();
  const double step_s = after.step_seconds - before.step_seconds;
  const double overhead_s = step_s - (after.forward_seconds - before.forward_seconds);
  for (auto s : seqs) (void)engine.Release(s);
  return nlohmann::json{{"batch", batch},
                        {"prefill_tokens", batch * prompt},
                        {"prefill_seconds", prefill_s},
                        {"prefill_tokens_per_s", batch * prompt / prefill_s},
                        {"decode_tokens", batch * steps},
                        {"decode_seconds", decode_s},
                        {"decode_tokens_per_s", batch * steps / decode_s},
                        // The engine's own work per decode step besides the forward pass.
                        {"decode_step_overhead_ms", 1e3 * overhead_s / steps},
                        {"decode_step_overhead_fraction", overhead_s / step_s}};
}

// Bytes of weights a batch-1 decode step reads for its one token.
double WeightBytesPerToken(const arbor::model::ModelWeights& w) {
  const arbor::model::ModelConfig& c = w.config();
  const arbor::model::NonExpertWeights& ne = *w.non_expert();
  double bytes = 0;
  for (const arbor::model::LayerWeights& lw : ne.layers) {
    bytes += lw.wqkv.bytes() + lw.wo.bytes() + lw.gate.bytes();
  }
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const arbor::model::ExpertWeights* e = w.expert(l, 0);
    bytes += c.num_experts_per_tok * static_cast<double>(e->w13.bytes() + e->w2.bytes());
  }
  bytes += ne.lm_head.empty() ? 4.0 * c.vocab_size * c.hidden_size : ne.lm_head.bytes();
  return bytes;
}

// Read bandwidth in GB/s: the best of 3 sums over `mb` MiB, split over the kernels' threads.
double ReadBandwidthGBs(int mb) {
  const size_t n = static_cast<size_t>(mb) * (1 << 20) / sizeof(uint64_t);
  std::vector<uint64_t> data(n);
  for (size_t i = 0; i < n; ++i) data[i] = i;
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    std::vector<uint64_t> sums(64, 0);
    const auto t0 = Clock::now();
    arbor::kernels::ParallelFor(64, 1, [&](int begin, int end) {
      for (int p = begin; p < end; ++p) {
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;  // independent sums: loads, not adds, bound it
        size_t i = n * p / 64;
        const size_t end_i = n * (p + 1) / 64;
        for (; i + 4 <= end_i; i += 4) {
          s0 += data[i], s1 += data[i + 1], s2 += data[i + 2], s3 += data[i + 3];
        }
        for (; i < end_i; ++i) s0 += data[i];
        sums[p] = s0 + s1 + s2 + s3;
      }
    });
    const double s = Seconds(t0);
    uint64_t total = 0;
    for (uint64_t v : sums) total += v;
    if (total == 1) std::printf("\n");  // keeps the sums
    best = std::max(best, n * sizeof(uint64_t) / s / 1e9);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int prompt = absl::GetFlag(FLAGS_prompt_tokens);
  const int steps = absl::GetFlag(FLAGS_decode_steps);
  const absl::StatusOr<std::vector<int>> batches = ParseBatches();
  if (!batches.ok()) {
    std::fprintf(stderr, "%s\n", std::string(batches.status().message()).c_str());
    return 2;
  }
  const int max_batch = *std::max_element(batches->begin(), batches->end());

  arbor::engine::EngineOptions opts;
  opts.max_seqs = max_batch;
  opts.max_batch_tokens = std::max(absl::GetFlag(FLAGS_max_batch_tokens), max_batch);
  opts.max_seq_tokens = prompt + steps + 8;
  opts.kv_cache_tokens = max_batch * (prompt + steps + 16);
  opts.num_threads = absl::GetFlag(FLAGS_threads);
  opts.backend = absl::GetFlag(FLAGS_backend);
  const std::string weights = absl::GetFlag(FLAGS_weights);
  if (weights != "stored" && weights != "f32") {
    std::fprintf(stderr, "--weights: \"%s\" is neither stored nor f32\n", weights.c_str());
    return 2;
  }
  const auto t_load = Clock::now();
  auto loaded = arbor::engine::LocalModel::Load(absl::GetFlag(FLAGS_model), opts,
                                                {.keep_16bit = weights == "stored"});
  if (!loaded.ok()) {
    std::fprintf(stderr, "arbor_bench_engine: %s\n", loaded.status().ToString().c_str());
    return 1;
  }
  const double load_s = Seconds(t_load);
  Engine& engine = *(*loaded)->engine;
  const auto& cfg = engine.config();

  std::mt19937 rng(7);
  nlohmann::json rows = nlohmann::json::array();
  for (int batch : *batches) {
    absl::StatusOr<nlohmann::json> row =
        MeasureBatch(engine, batch, prompt, steps, opts.max_batch_tokens, rng);
    if (!row.ok()) {
      std::fprintf(stderr, "%s\n", row.status().ToString().c_str());
      return 1;
    }
    rows.push_back(*std::move(row));
  }
  const double bytes_per_token = WeightBytesPerToken(*(*loaded)->weights);
  const int probe_mb = absl::GetFlag(FLAGS_probe_mb);
  const double bandwidth = probe_mb > 0 ? ReadBandwidthGBs(probe_mb) : 0.0;
  for (nlohmann::json& row : rows) {
    if (row["batch"] != 1) continue;
    const double gbs = bytes_per_token * row["decode_tokens_per_s"].get<double>() / 1e9;
    row["weight_gb_per_s"] = gbs;
    if (bandwidth > 0) row["fraction_of_read_bandwidth"] = gbs / bandwidth;
  }
  nlohmann::json out = {{"bench", "engine"},
                        {"model", absl::GetFlag(FLAGS_model)},
                        {"backend", engine.options().backend},  // auto resolved
                        {"config",
                         {{"hidden", cfg.hidden_size},
                          {"intermediate", cfg.intermediate_size},
                          {"layers", cfg.num_hidden_layers},
                          {"heads", cfg.num_attention_heads},
                          {"kv_heads", cfg.num_key_value_heads},
                          {"experts", cfg.num_local_experts},
                          {"top_k", cfg.num_experts_per_tok},
                          {"vocab", cfg.vocab_size}}},
                        {"prompt_tokens", prompt},
                        {"decode_steps", steps},
                        {"threads", opts.num_threads},
                        {"hardware_threads", std::thread::hardware_concurrency()},
                        {"load_seconds", load_s},
                        {"weights", weights},
                        {"weight_bytes_per_token", bytes_per_token},
                        {"read_bandwidth_gb_per_s", bandwidth},
                        {"results", rows}};
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}
