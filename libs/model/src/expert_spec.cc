#include "arbor/model/expert_spec.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace arbor::model {
namespace {

// "*", "N" or "N-M" within [0, limit) -> [first, last].
bool ParseRange(absl::string_view s, int limit, int* first, int* last) {
  if (s == "*") {
    *first = 0;
    *last = limit - 1;
    return limit > 0;
  }
  const std::vector<absl::string_view> ends = absl::StrSplit(s, '-');
  if (ends.size() > 2 || !absl::SimpleAtoi(ends[0], first)) return false;
  *last = *first;
  if (ends.size() == 2 && !absl::SimpleAtoi(ends[1], last)) return false;
  return *first >= 0 && *first <= *last && *last < limit;
}

}  // namespace

absl::StatusOr<std::vector<ExpertKey>> ParseExpertSpec(absl::string_view spec, int layers,
                                                       int experts) {
  std::vector<ExpertKey> keys;
  spec = absl::StripAsciiWhitespace(spec);
  if (spec == "all") spec = "*:*";
  if (spec.empty()) return absl::InvalidArgumentError("experts spec is empty");
  for (absl::string_view item : absl::StrSplit(spec, ',')) {
    const std::vector<absl::string_view> sides = absl::StrSplit(item, ':');
    int l0, l1, e0, e1;
    if (sides.size() != 2 || !ParseRange(sides[0], layers, &l0, &l1) ||
        !ParseRange(sides[1], experts, &e0, &e1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("experts item \"", item, "\" is not LAYERS:EXPERTS within ", layers,
                       " layers x ", experts, " experts (each side *, N or N-M)"));
    }
    for (int l = l0; l <= l1; ++l) {
      for (int e = e0; e <= e1; ++e) keys.push_back({l, e});
    }
  }
  std::sort(keys.begin(), keys.end(), [](const ExpertKey& a, const ExpertKey& b) {
    return a.layer != b.layer ? a.layer < b.layer : a.expert < b.expert;
  });
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  return keys;
}

std::string FormatExpertSpec(const std::vector<ExpertKey>& keys) {
  std::vector<std::string> items;
  for (size_t i = 0; i < keys.size();) {
    size_t j = i;
    while (j + 1 < keys.size() && keys[j + 1].layer == keys[i].layer &&
           keys[j + 1].expert == keys[j].expert + 1) {
      ++j;
    }
    items.push_back(keys[i].expert == keys[j].expert
                        ? absl::StrCat(keys[i].layer, ":", keys[i].expert)
                        : absl::StrCat(keys[i].layer, ":", keys[i].expert, "-", keys[j].expert));
    i = j + 1;
  }
  return absl::StrJoin(items, ",");
}

std::vector<std::vector<ExpertKey>> SplitExpertsEvenly(int layers, int experts, int workers) {
  std::vector<std::vector<ExpertKey>> shards(std::max(workers, 1));
  for (int l = 0; l < layers; ++l) {
    for (int e = 0; e < experts; ++e) {
      // Experts [w * experts / workers, (w + 1) * experts / workers) of every layer go to w.
      const int w = static_cast<int>(static_cast<int64_t>(e) * shards.size() / experts);
      shards[w].push_back({l, e});
    }
  }
  return shards;
}

absl::StatusOr<std::vector<WorkerPlacement>> ParsePlacement(absl::string_view text,
                                                            const std::string& path, int layers,
                                                            int experts) {
  const nlohmann::json j =
      nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  if (!j.is_object() || !j.contains("workers") || !j["workers"].is_array() ||
      j["workers"].empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": \"workers\" must be a non-empty array"));
  }
  std::vector<WorkerPlacement> out;
  for (size_t i = 0; i < j["workers"].size(); ++i) {
    const nlohmann::json& w = j["workers"][i];
    const std::string where = absl::StrCat(path, ": workers[", i, "]");
    if (!w.is_object() || !w.contains("address") || !w["address"].is_string() ||
        w["address"].get<std::string>().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".address must be a host:port string"));
    }
    WorkerPlacement p{.address = w["address"].get<std::string>()};
    if (w.contains("experts")) {
      if (!w["experts"].is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(where, ".experts must be a string"));
      }
      auto keys = ParseExpertSpec(w["experts"].get<std::string>(), layers, experts);
      if (!keys.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ".experts: ", keys.status().message()));
      }
      p.experts = std::move(*keys);
    }
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace arbor::model
