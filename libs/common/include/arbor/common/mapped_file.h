// A read-only memory map of a whole file. Pages are read from disk only when touched, which is
// what lets a worker load a few tensors out of a large checkpoint. Immutable; thread-safe.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace arbor {

class MappedFile {
 public:
  // Maps `path`. NOT_FOUND if it does not exist, INVALID_ARGUMENT if it is not a regular file,
  // INTERNAL if mmap fails. An empty file maps to size() == 0 and data() == nullptr.
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);

  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const unsigned char* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const unsigned char* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}

  std::string path_;
  const unsigned char* data_;
  size_t size_;
};

// Reads a whole (small) file into a string. NOT_FOUND / INTERNAL name the path.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace arbor
