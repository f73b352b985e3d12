// A Hugging Face checkpoint directory: `config.json` plus either `model.safetensors` or the
// shards listed in `model.safetensors.index.json`. Opening reads only headers; tensors are read
// (converted to f32, or as stored) one at a time by Read and ReadF32. Immutable after Open();
// thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "arbor/model/config.h"
#include "arbor/model/safetensors.h"

namespace arbor::model {

// `model.safetensors.index.json`'s text: tensor name -> shard file name (a plain file name in
// the model folder). INVALID_ARGUMENT naming `path` and the entry that is wrong.
absl::StatusOr<std::map<std::string, std::string>> ParseSafetensorsIndex(absl::string_view text,
                                                                         const std::string& path);

class Checkpoint {
 public:
  // Errors name the file: missing/malformed config.json or index, a shard that fails to parse,
  // an index entry naming a tensor its shard does not hold.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);

  const ModelConfig& config() const { return config_; }
  const std::string& dir() const { return dir_; }

  // The tensor's header entry, or NOT_FOUND naming the file that should hold it and the tensor.
  absl::StatusOr<const TensorInfo*> Find(absl::string_view name) const;

  // Converts tensor `name` to f32 into `dst` (numel floats). INVALID_ARGUMENT, naming the file and
  // tensor, if its shape is not `shape`. Counts the bytes read in bytes_read().
  absl::Status ReadF32(absl::string_view name, const std::vector<int64_t>& shape, float* dst) const;
  // Reads tensor `name` into `dst` as `as`: f32 converts from any stored type; a 16-bit type
  // copies the stored elements and is INVALID_ARGUMENT, naming the tensor, if they are another
  // type. Shape checks and counting as ReadF32.
  absl::Status Read(absl::string_view name, const std::vector<int64_t>& shape, DType as,
                    void* dst) const;

  // Total tensor bytes read through Read and ReadF32 so far.
  uint64_t bytes_read() const { return bytes_read_; }

 private:
  struct Location {
    const SafetensorsFile* file;
    const TensorInfo* info;
  };
  Checkpoint(std::string dir, ModelConfig config) : dir_(std::move(dir)), config_(config) {}

  std::string dir_;
  ModelConfig config_;
  std::string index_source_;  // the file that maps names to shards, for error messages
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  absl::flat_hash_map<std::string, Location> tensors_;
  mutable std::atomic<uint64_t> bytes_read_{0};
};

}  // namespace arbor::model
