// Which (layer, expert) pairs an expert worker hosts, as a flag value:
//   "all" | ITEM[,ITEM...]   with ITEM = LAYERS:EXPERTS and each side "*", "N" or "N-M"
// e.g. "0:0-3,1:*" or "*:4-7".
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "arbor/model/weights.h"

namespace arbor::model {

// Sorted, without duplicates. INVALID_ARGUMENT naming the item that does not parse or lies
// outside [0, layers) x [0, experts).
absl::StatusOr<std::vector<ExpertKey>> ParseExpertSpec(absl::string_view spec, int layers,
                                                       int experts);

// The canonical spec of a set of pairs (one item per layer and run of experts).
std::string FormatExpertSpec(const std::vector<ExpertKey>& keys);

// One expert worker of a router's placement: its address and, optionally, the pairs the router
// should send it (they must be among those it hosts); without them, everything it Describes.
struct WorkerPlacement {
  std::string address;
  std::optional<std::vector<ExpertKey>> experts;
};

// A placement file's text:
//   {"workers": [{"address": "host:port", "experts": "0:0-3,1:*"}, {"address": ...}, ...]}
// ("experts" optional, in the --experts syntax). INVALID_ARGUMENT naming `path` and the field.
absl::StatusOr<std::vector<WorkerPlacement>> ParsePlacement(absl::string_view text,
                                                            const std::string& path, int layers,
                                                            int experts);

// Splits every (layer, expert) pair over `workers` shards as evenly as possible, keeping each
// layer's experts contiguous within a shard.
std::vector<std::vector<ExpertKey>> SplitExpertsEvenly(int layers, int experts, int workers);

}  // namespace arbor::model
