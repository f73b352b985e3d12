#include "arbor/model/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "arbor/common/status_macros.h"
#include "nlohmann/json.hpp"

namespace arbor::model {
namespace {

using nlohmann::json;

// A header larger than this is treated as corrupt (real checkpoints stay far below).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

absl::Status Invalid(absl::string_view source, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", what));
}

absl::Status TensorError(absl::string_view source, absl::string_view tensor,
                         absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": tensor \"", tensor, "\" ", what));
}

absl::StatusOr<TensorInfo> ParseEntry(const std::string& name, const json& entry,
                                      uint64_t data_start, uint64_t data_size,
                                      absl::string_view source) {
  if (!entry.is_object()) return TensorError(source, name, "entry is not an object");
  TensorInfo info;
  info.name = name;

  auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end() || !dtype_it->is_string()) {
    return TensorError(source, name, "has no dtype string");
  }
  auto dtype = ParseDType(dtype_it->get<std::string>());
  if (!dtype.ok()) return TensorError(source, name, dtype.status().message());
  info.dtype = *dtype;

  auto shape_it = entry.find("shape");
  if (shape_it == entry.end() || !shape_it->is_array()) {
    return TensorError(source, name, "has no shape array");
  }
  uint64_t numel = 1;
  for (const json& d : *shape_it) {
    if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0)) {
      return TensorError(source, name, "has a shape entry that is not a non-negative integer");
    }
    const uint64_t dim = d.get<uint64_t>();
    if (dim != 0 && numel > (std::numeric_limits<uint64_t>::max() >> 4) / dim) {
      return TensorError(source, name, "has a shape whose element count overflows");
    }
    numel *= dim;
    info.shape.push_back(static_cast<int64_t>(dim));
  }

  auto off_it = entry.find("data_offsets");
  if (off_it == entry.end() || !off_it->is_array() || off_it->size() != 2 ||
      !(*off_it)[0].is_number_unsigned() || !(*off_it)[1].is_number_unsigned()) {
    return TensorError(source, name, "has no data_offsets [begin, end] of non-negative integers");
  }
  const uint64_t begin = (*off_it)[0].get<uint64_t>();
  const uint64_t end = (*off_it)[1].get<uint64_t>();
  if (begin > end) {
    return TensorError(source, name,
                       absl::StrCat("data_offsets [", begin, ", ", end, "] end before they begin"));
  }
  if (end > data_size) {
    return TensorError(source, name,
                       absl::StrCat("data_offsets [", begin, ", ", end,
                                    "] run past the end of the data (", data_size, " bytes)"));
  }
  const uint64_t expected = numel * DTypeSize(info.dtype);
  if (end - begin != expected) {
    return TensorError(source, name,
                       absl::StrCat("has shape [", absl::StrJoin(info.shape, ", "), "] of ",
                                    DTypeName(info.dtype), " (", expected,
                                    " bytes) but its data "
                                    "range holds ",
                                    end - begin, " bytes"));
  }
  info.offset = data_start + begin;
  info.nbytes = end - begin;
  return info;
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<std::vector<TensorInfo>> ParseSafetensors(absl::string_view bytes,
                                                         absl::string_view source) {
  if (bytes.size() < 8) {
    return Invalid(source, absl::StrCat("file of ", bytes.size(),
                                        " bytes is too short for a safetensors header"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) {
    header_len = (header_len << 8) | static_cast<unsigned char>(bytes[i]);
  }
  if (header_len > bytes.size() - 8 || header_len > kMaxHeaderBytes) {
    return Invalid(source,
                   absl::StrCat("header length ", header_len, " runs past the end of the file (",
                                bytes.size(), " bytes)"));
  }
  const json header = json::parse(bytes.substr(8, header_len), nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) return Invalid(source, "header is not valid JSON");
  if (!header.is_object()) return Invalid(source, "header is not a JSON object");

  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = bytes.size() - data_start;
  std::vector<TensorInfo> tensors;
  tensors.reserve(header.size());
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    ARBOR_ASSIGN_OR_RETURN(TensorInfo info,
                           ParseEntry(it.key(), it.value(), data_start, data_size, source));
    tensors.push_back(std::move(info));
  }

  // Tensors must not share bytes: sort by start and check each ends before the next begins.
  std::vector<const TensorInfo*> by_offset;
  by_offset.reserve(tensors.size());
  for (const TensorInfo& t : tensors) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->offset != b->offset ? a->offset < b->offset : a->nbytes < b->nbytes;
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& prev = *by_offset[i - 1];
    const TensorInfo& cur = *by_offset[i];
    if (cur.nbytes != 0 && prev.offset + prev.nbytes > cur.offset) {
      return TensorError(source, cur.name,
                         absl::StrCat("overlaps tensor \"", prev.name, "\" in the data section"));
    }
  }
  return tensors;
}

SafetensorsFile::SafetensorsFile(std::unique_ptr<MappedFile> file, std::vector<TensorInfo> tensors)
    : file_(std::move(file)), tensors_(std::move(tensors)) {
  for (size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  ARBOR_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  absl::string_view bytes(reinterpret_cast<const char*>(file->data()), file->size());
  ARBOR_ASSIGN_OR_RETURN(std::vector<TensorInfo> tensors, ParseSafetensors(bytes, path));
  return std::unique_ptr<SafetensorsFile>(new SafetensorsFile(std::move(file), std::move(tensors)));
}

const TensorInfo* SafetensorsFile::Find(absl::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace arbor::model
