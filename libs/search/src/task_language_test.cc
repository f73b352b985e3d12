#include "arbor/search/task_language.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"

namespace arbor::search {
namespace {

TEST(TaskLanguageTest, ExpectedLabelScoreWeighsTheLabelsByProbability) {
  auto top = [](std::vector<std::pair<int, double>> v) {
    std::vector<TokenLogprob> out;
    for (auto [id, p] : v) out.push_back({.id = id, .logprob = static_cast<float>(std::log(p))});
    return out;
  };
  const std::map<int, float> labels = {{5, 20.0f}, {9, 1.0f}, {11, 5.0f}};
  // Tokens that are no label (7) do not count; the labels' mass is renormalised.
  EXPECT_NEAR(ExpectedLabelScore(top({{5, 0.6}, {7, 0.3}, {9, 0.1}}), labels, -1),
              (0.6 * 20 + 0.1 * 1) / 0.7, 1e-6);
  EXPECT_NEAR(ExpectedLabelScore(top({{11, 0.5}}), labels, -1), 5, 1e-6);
  EXPECT_EQ(ExpectedLabelScore(top({{7, 0.9}, {8, 0.1}}), labels, -1), -1);  // none: the floor
  EXPECT_EQ(ExpectedLabelScore({}, labels, 0.5), 0.5);
}

TEST(TaskLanguageTest, RenderReplacesEveryPlaceholder) {
  EXPECT_EQ(Render("{problem}|{state}|{thought}|{problem}", "p", "s", "t"), "p|s|t|p");
  EXPECT_EQ(Render("no placeholders", "p", "s", "t"), "no placeholders");
}

TEST(TaskLanguageTest, TheEmbeddedModelsPresetsLoad) {
  absl::StatusOr<std::map<std::string, Templates>> presets = LoadPresets("models/game24-moe");
  ASSERT_TRUE(presets.ok()) << presets.status();
  ASSERT_TRUE(presets->count("game24"));
  const Templates& t = presets->at("game24");
  EXPECT_FALSE(t.propose.empty());
  EXPECT_FALSE(t.value_labels.empty());
  // A model folder without presets has none, and no error.
  presets = LoadPresets("tests/data/no-such-model");
  ASSERT_TRUE(presets.ok());
  EXPECT_TRUE(presets->empty());
}

TEST(TaskLanguageTest, BadPresetFilesNameTheFileAndField) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("arbor_presets_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir / "presets");
  auto write = [&](const std::string& text) {
    std::ofstream(dir / "presets" / "bad.json") << text;
  };
  struct Case {
    std::string text, message;
  } cases[] = {
      {"[1, 2]", "not a JSON object"},
      {"{\"propose\": 3, \"step_stop\": \"\\n\"}", "\"propose\" must be a string"},
      {"{\"step_stop\": \"\\n\"}", "\"propose\" and \"step_stop\" must be non-empty"},
      {"{\"propose\": \"x\", \"value_labels\": [1]}", "\"value_labels\" must be an object"},
      {"{\"propose\": \"x\", \"value_labels\": {\"sure\": \"high\"}}",
       "value_labels.sure must be a number"},
  };
  for (const Case& c : cases) {
    write(c.text);
    absl::StatusOr<std::map<std::string, Templates>> presets = LoadPresets(dir.string());
    ASSERT_FALSE(presets.ok()) << c.text;
    EXPECT_EQ(presets.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(presets.status().message().find("bad.json"), std::string::npos);
    EXPECT_NE(presets.status().message().find(c.message), std::string::npos)
        << presets.status().message();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace arbor::search
