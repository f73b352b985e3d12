// The task checkpoint (v1::TaskCheckpoint, key "planner/task/<id>" in the state store): the search
// tree as of the last round, each node with its kv-store sequence and its own token ids, so a
// planner that restarts rebuilds the tree and any sequence the kv-store lost. This file is the
// codec both ways: recording a node into a checkpoint, and restoring a tree from one. Checkpoints
// are read back from the state store, so every byte is checked: a checkpoint that does not
// describe a tree is DATA_LOSS naming the key and the field, never a crash.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "arbor/search/search.h"
#include "arbor/v1/planner.pb.h"
#include "mesh_thought_source.h"

namespace arbor::planner {

// Where task checkpoints live in the state store, and the kv-store owner tag of every sequence
// of the task (the same string: whatever a crash left behind is released with the task):
// "planner/task/<tenant>/<task_id>", or "planner/task/<task_id>" for the unnamed tenant of an
// --insecure planner. Task ids are per tenant: two tenants may both use "job-1".
inline constexpr char kTaskKeyPrefix[] = "planner/task/";
std::string TaskKey(const std::string& task_id, const std::string& tenant = "");
// The tenant a state key belongs to: TaskKey's tenant, "" for any other key (the planner's own).
std::string TenantOfTaskKey(absl::string_view key);

v1::Node NodeToProto(const search::SearchNode& n);

// Writes node `n` (and its own token ids, once) into `cp->nodes(n.id)`, growing the list.
void RecordNode(const search::SearchNode& n, const std::vector<int>& own_token_ids,
                v1::TaskCheckpoint* cp);

// Parses the bytes stored under `key`. DATA_LOSS naming the key when they are not a checkpoint
// of a task (no task_id, or a task_id or tenant another key's).
absl::StatusOr<v1::TaskCheckpoint> ParseCheckpoint(const std::string& key,
                                                   const std::string& bytes);

// The tree `cp` holds. A round a crash cut short left unscored nodes at the end (ids grow round
// by round): they are dropped from `cp` too, and their parents marked unexpanded so they are
// expanded again. DATA_LOSS naming the node and field when the nodes do not form a tree (ids out
// of order, a parent that is not an earlier node).
absl::StatusOr<search::SearchTree> RestoreTree(v1::TaskCheckpoint* cp);

// The token ids of node `id`'s whole sequence: its path's own token ids, root first.
std::vector<int> PathTokens(const v1::TaskCheckpoint& cp, const search::SearchTree& tree, int id);

// Gives every node the search may still fork (not pruned, not an answer, not expanded) a live
// sequence: those the kv-store no longer holds are rebuilt from their path's token ids under
// `owner`, and their new ids written to `tree` and `cp`. Returns how many were rebuilt; the
// first error of the mesh otherwise.
absl::StatusOr<int> RebuildLostSequences(MeshThoughtSource& source, const std::string& owner,
                                         search::SearchTree& tree, v1::TaskCheckpoint* cp);

}  // namespace arbor::planner
