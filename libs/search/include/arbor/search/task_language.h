// The planner's task language: the prompts a task is written in (a preset file of the model, or
// the request's own), how they are rendered for a node, and how the labels the model writes
// after the value prompt become a node's value. Pure functions; thread-safe.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace arbor::search {

// A task's prompts; "{problem}", "{state}" and "{thought}" are replaced where they appear.
struct Templates {
  std::string propose, value, answer, step_stop = "\n", answer_prefix;
  std::map<std::string, float> value_labels;  // label the model writes -> score
};

// A preset file (<model>/presets/<name>.json: the Templates fields, value_labels an object of
// numbers). INVALID_ARGUMENT naming the file and the field that is wrong.
absl::StatusOr<Templates> ParsePreset(const std::string& path);
// The same for a preset's text; `path` names it in errors.
absl::StatusOr<Templates> ParsePresetText(absl::string_view text, const std::string& path);

// Every <model_dir>/presets/*.json by name (the file's stem); none when the folder is absent.
// INVALID_ARGUMENT naming the first preset file that does not parse.
absl::StatusOr<std::map<std::string, Templates>> LoadPresets(const std::string& model_dir);

// "{problem}", "{state}", "{thought}" replaced in `t`.
std::string Render(const std::string& t, const std::string& problem, const std::string& state,
                   const std::string& thought);

// One candidate token and its log-probability.
struct TokenLogprob {
  int id = 0;
  double logprob = 0;
};

// The expected label value: the labels' scores (by first token id) weighted by their
// probabilities among `top`, renormalised over the labels found; `none` when no label's token
// is among them.
double ExpectedLabelScore(const std::vector<TokenLogprob>& top,
                          const std::map<int, float>& label_tokens, double none);

}  // namespace arbor::search
