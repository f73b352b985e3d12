// The Solve requests the cross-service tests send: BFS over the test model's game24 preset.
#pragma once

#include <cstdint>

#include "arbor/v1/planner.pb.h"

namespace arbor::testing {

inline v1::SolveRequest Game24Bfs(int breadth, int proposals, int depth, int thought_tokens = 8,
                                  uint64_t seed = 7) {
  v1::SolveRequest req;
  req.set_problem("4 9 10 13");
  req.set_preset("game24");
  v1::Bfs* bfs = req.mutable_search()->mutable_bfs();
  bfs->set_breadth(breadth);
  bfs->set_proposals_per_node(proposals);
  bfs->set_depth(depth);
  req.mutable_search()->mutable_generation()->set_max_thought_tokens(thought_tokens);
  req.mutable_search()->mutable_generation()->set_seed(seed);
  return req;
}

}  // namespace arbor::testing
