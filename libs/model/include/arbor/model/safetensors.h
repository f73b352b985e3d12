// Reader for the safetensors format: an 8-byte little-endian header length, a JSON header
// mapping tensor names to {dtype, shape, data_offsets}, then the raw tensor bytes.
//
// The file is memory-mapped; tensor bytes are touched only when a caller reads them, so opening
// a large checkpoint costs only its header. Immutable after Open(); thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "arbor/common/dtype.h"
#include "arbor/common/mapped_file.h"

namespace arbor::model {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t offset = 0;  // from the start of the file
  uint64_t nbytes = 0;
  int64_t numel() const;
};

// Parses and validates the header of a safetensors file whose full contents are `bytes`.
// Every error is INVALID_ARGUMENT and names `source` and, where there is one, the tensor:
// header length past the end of the file, malformed JSON, unknown dtype, a shape whose size
// disagrees with its byte range, offsets out of range, overlapping tensors.
absl::StatusOr<std::vector<TensorInfo>> ParseSafetensors(absl::string_view bytes,
                                                         absl::string_view source);

class SafetensorsFile {
 public:
  // Maps and parses `path`. Errors as ParseSafetensors, or NOT_FOUND when the file is missing.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  const std::string& path() const { return file_->path(); }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }

  // nullptr when absent.
  const TensorInfo* Find(absl::string_view name) const;

  // The tensor's raw bytes (unaligned), inside the mapping.
  const unsigned char* Data(const TensorInfo& info) const { return file_->data() + info.offset; }

 private:
  SafetensorsFile(std::unique_ptr<MappedFile> file, std::vector<TensorInfo> tensors);

  std::unique_ptr<MappedFile> file_;
  std::vector<TensorInfo> tensors_;
  absl::flat_hash_map<std::string, size_t> index_;  // name -> position in tensors_
};

}  // namespace arbor::model
