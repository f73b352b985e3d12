#include "arbor/search/task_language.h"

#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "arbor/common/mapped_file.h"
#include "arbor/common/status_macros.h"
#include "nlohmann/json.hpp"

namespace arbor::search {

std::string Render(const std::string& t, const std::string& problem, const std::string& state,
                   const std::string& thought) {
  return absl::StrReplaceAll(t,
                             {{"{problem}", problem}, {"{state}", state}, {"{thought}", thought}});
}

absl::StatusOr<Templates> ParsePreset(const std::string& path) {
  ARBOR_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return ParsePresetText(text, path);
}

absl::StatusOr<Templates> ParsePresetText(absl::string_view text, const std::string& path) {
  const nlohmann::json j =
      nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  Templates t;
  for (auto [field, out] : {std::pair{"propose", &t.propose}, std::pair{"value", &t.value},
                            std::pair{"answer", &t.answer}, std::pair{"step_stop", &t.step_stop},
                            std::pair{"answer_prefix", &t.answer_prefix}}) {
    if (!j.contains(field)) continue;
    if (!j[field].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": \"", field, "\" must be a string"));
    }
    *out = j[field].get<std::string>();
  }
  if (t.propose.empty() || t.step_stop.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": \"propose\" and \"step_stop\" must be non-empty"));
  }
  if (j.contains("value_labels")) {
    if (!j["value_labels"].is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": \"value_labels\" must be an object"));
    }
    for (const auto& [label, score] : j["value_labels"].items()) {
      if (!score.is_number()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": value_labels.", label, " must be a number"));
      }
      t.value_labels[label] = score.get<float>();
    }
  }
  return t;
}

absl::StatusOr<std::map<std::string, Templates>> LoadPresets(const std::string& model_dir) {
  std::map<std::string, Templates> presets;
  const std::filesystem::path dir = std::filesystem::path(model_dir) / "presets";
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return presets;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() != ".json") continue;
    ARBOR_ASSIGN_OR_RETURN(Templates t, ParsePreset(entry.path().string()));
    presets[entry.path().stem().string()] = std::move(t);
  }
  return presets;
}

double ExpectedLabelScore(const std::vector<TokenLogprob>& top,
                          const std::map<int, float>& label_tokens, double none) {
  double mass = 0, weighted = 0;
  for (const TokenLogprob& t : top) {
    auto it = label_tokens.find(t.id);
    if (it == label_tokens.end()) continue;
    const double p = std::exp(t.logprob);
    mass += p;
    weighted += p * it->second;
  }
  return mass > 0 ? weighted / mass : none;
}

}  // namespace arbor::search
