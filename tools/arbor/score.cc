#include "score.h"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "arbor/engine/generator.h"
#include "arbor/engine/local_model.h"
#include "generate.h"
#include "nlohmann/json.hpp"
#include "token_ids.h"

ABSL_FLAG(std::string, text, "", "score: the text to score (BOS is prepended)");
ABSL_FLAG(std::string, ids_file, "",
          "score: a file of token ids to score as they are (decimal, whitespace or commas)");
ABSL_FLAG(int, top_logprobs, 0, "score: also show this many most likely tokens at each position");
// Shared with the other subcommands.
ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(std::string, router);
ABSL_DECLARE_FLAG(std::string, kvstore);
ABSL_DECLARE_FLAG(int, timeout_s);
ABSL_DECLARE_FLAG(int, threads);
ABSL_DECLARE_FLAG(std::string, backend);
ABSL_DECLARE_FLAG(bool, json);

namespace arbor::cli {
namespace {

// One scored token: its position in the scored ids, and its log-probability given those before.
struct ScoredToken {
  int index = 0;
  int id = 0;
  double logprob = 0;
  std::vector<std::pair<int, double>> top;  // --top_logprobs alternatives, most likely first
  std::string piece;                        // its bytes, when a tokenizer is at hand
};

struct Scores {
  int n_ids = 0;  // tokens in the input, the first included (it is not scored)
  std::vector<ScoredToken> tokens;
};

// What to score: token ids (from --ids_file) or text (from --text).
struct ScoreInput {
  std::vector<int> ids;
  std::string text;
  bool is_text = false;
};

absl::StatusOr<ScoreInput> ReadInput() {
  const std::string text = absl::GetFlag(FLAGS_text), file = absl::GetFlag(FLAGS_ids_file);
  if (text.empty() == file.empty()) {
    return absl::InvalidArgumentError("give exactly one of --text and --ids_file");
  }
  ScoreInput in;
  if (!text.empty()) {
    in.text = text;
    in.is_text = true;
    return in;
  }
  std::ifstream f(file, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrCat("--ids_file ", file, ": cannot be read"));
  std::stringstream bytes;
  bytes << f.rdbuf();
  absl::StatusOr<std::vector<int>> ids = ParseTokenIds(bytes.str(), file);
  if (!ids.ok()) return ids.status();
  in.ids = *std::move(ids);
  return in;
}

absl::StatusOr<Scores> ScoreInProcess(const ScoreInput& in, int top_k) {
  engine::EngineOptions opts;
  opts.num_threads = absl::GetFlag(FLAGS_threads);
  opts.max_seqs = 1;
  opts.max_logit_rows = opts.max_batch_tokens;  // a whole prefill chunk's rows in one step
  opts.backend = absl::GetFlag(FLAGS_backend);
  absl::StatusOr<std::unique_ptr<engine::LocalModel>> loaded =
      engine::LocalModel::Load(absl::GetFlag(FLAGS_model), opts);
  if (!loaded.ok()) return loaded.status();
  engine::LocalModel& m = **loaded;
  std::vector<int> ids = in.ids;
  if (in.is_text) {
    if (m.tokenizer == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat(absl::GetFlag(FLAGS_model), "/tokenizer.model is missing: use --ids_file"));
    }
    ids = m.tokenizer->Encode(in.text);
  }
  engine::GenerationParams params;
  params.max_tokens = 0;
  params.prompt_logprobs = true;
  params.top_logprobs = top_k;
  engine::Generator gen(m.engine.get(), m.tokenizer.get());
  absl::StatusOr<int> id = gen.Submit(ids, params);
  if (!id.ok()) return id.status();
  if (absl::Status st = gen.RunToCompletion(); !st.ok()) return st;
  const engine::GenerationResult& r = gen.result(*id);
  Scores out{.n_ids = static_cast<int>(ids.size())};
  for (size_t e = 0; e < r.prompt_logprobs.size(); ++e) {
    ScoredToken& t = out.tokens.emplace_back();
    t.index = r.prompt_logprobs_from + static_cast<int>(e);
    t.id = ids[t.index];
    t.logprob = r.prompt_logprobs[e];
    for (size_t j = e * top_k; j < (e + 1) * top_k; ++j) {
      t.top.emplace_back(r.prompt_top_ids[j], r.prompt_top_logprobs[j]);
    }
    if (m.tokenizer != nullptr) t.piece = m.tokenizer->PieceBytes(t.id);
  }
  return out;
}

// Through a mesh: a new kv-store sequence, one Extend with max_tokens 0 that scores its input.
absl::StatusOr<Scores> ScoreRemote(const ScoreInput& in, int top_k) {
  const auto deadline =
      std::chrono::system_clock::now() + std::chrono::seconds(absl::GetFlag(FLAGS_timeout_s));
  mesh::KvStoreClient kvstore(mesh::NewChannel(absl::GetFlag(FLAGS_kvstore)));
  mesh::RouterClient router(mesh::NewChannel(absl::GetFlag(FLAGS_router)));
  v1::ExtendRequest req;
  if (in.is_text) {
    req.set_text(in.text);
    req.set_add_bos(true);
  } else {
    req.mutable_token_ids()->mutable_ids()->Assign(in.ids.begin(), in.ids.end());
  }
  req.mutable_params()->set_max_tokens(0);
  req.mutable_params()->set_prompt_logprobs(true);
  req.mutable_params()->set_top_logprobs(top_k);
  absl::StatusOr<v1::ExtendResult> result =
      ExtendNewSequence(kvstore, router, std::move(req), deadline, /*keep=*/false, nullptr);
  if (!result.ok()) return result.status();
  Scores out{.n_ids = result->input_tokens()};
  // The sequence was empty, so the entries start at the input's second token.
  int index = 1;
  for (const v1::GeneratedToken& g : result->prompt_logprobs()) {
    ScoredToken& t = out.tokens.emplace_back();
    t.index = index++;
    t.id = g.id();
    t.logprob = g.logprob();
    for (const v1::TokenLogprob& alt : g.top_logprobs())
      t.top.emplace_back(alt.id(), alt.logprob());
  }
  if (static_cast<int>(out.tokens.size()) != out.n_ids - 1) {
    return absl::InternalError(absl::StrCat("the router scored ", out.tokens.size(), " of the ",
                                            out.n_ids, " input tokens, not all but the first"));
  }
  return out;
}

void Print(const Scores& s, bool json) {
  double sum = 0;
  for (const ScoredToken& t : s.tokens) sum += t.logprob;
  const int n = static_cast<int>(s.tokens.size());
  const double mean = n > 0 ? sum / n : 0;
  const double perplexity = std::exp(-mean);
  if (json) {
    nlohmann::json j;
    j["input_tokens"] = s.n_ids;
    j["scored_tokens"] = n;
    j["sum_logprob"] = sum;
    j["mean_logprob"] = mean;
    j["perplexity"] = perplexity;
    j["tokens"] = nlohmann::json::array();
    for (const ScoredToken& t : s.tokens) {
      nlohmann::json tok = {{"index", t.index}, {"id", t.id}, {"logprob", t.logprob}};
      if (!t.top.empty()) {
        tok["top_logprobs"] = nlohmann::json::array();
        for (const auto& [id, lp] : t.top)
          tok["top_logprobs"].push_back({{"id", id}, {"logprob", lp}});
      }
      j["tokens"].push_back(std::move(tok));
    }
    std::printf("%s\n", j.dump(1).c_str());
    return;
  }
  for (const ScoredToken& t : s.tokens) {
    std::string line = absl::StrFormat(
        "  %5d  token %6d  %-18s logprob %9.4f", t.index, t.id,
        t.piece.empty() ? std::string() : absl::StrFormat("\"%s\"", absl::CHexEscape(t.piece)),
        t.logprob);
    for (const auto& [id, lp] : t.top) absl::StrAppendFormat(&line, "  %d:%.3f", id, lp);
    std::printf("%s\n", line.c_str());
  }
  std::printf("---\ntokens: %d, %d scored (the first has no context)\n", s.n_ids, n);
  std::printf("sum logprob: %.6f  mean: %.6f  perplexity: %.6f\n", sum, mean, perplexity);
}

}  // namespace

int Score() {
  absl::StatusOr<ScoreInput> in = ReadInput();
  if (!in.ok()) {
    std::fprintf(stderr, "arbor score: %s\n", in.status().ToString().c_str());
    return 2;
  }
  const int top_k = absl::GetFlag(FLAGS_top_logprobs);
  if (top_k < 0 || top_k > 20) {
    std::fprintf(stderr, "arbor score: --top_logprobs %d out of range [0, 20]\n", top_k);
    return 2;
  }
  const bool remote = !absl::GetFlag(FLAGS_router).empty();
  absl::StatusOr<Scores> scores = remote ? ScoreRemote(*in, top_k) : ScoreInProcess(*in, top_k);
  if (!scores.ok()) {
    std::fprintf(stderr, "arbor score: %s\n", scores.status().ToString().c_str());
    return scores.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  Print(*scores, absl::GetFlag(FLAGS_json));
  return 0;
}

}  // namespace arbor::cli
