#include "arbor/model/checkpoint.h"

#include <cstring>
#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "arbor/common/mapped_file.h"
#include "arbor/common/status_macros.h"
#include "nlohmann/json.hpp"

namespace arbor::model {
namespace {

using nlohmann::json;

absl::StatusOr<std::map<std::string, std::string>> ReadIndex(const std::string& path) {
  ARBOR_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return ParseSafetensorsIndex(text, path);
}

}  // namespace

absl::StatusOr<std::map<std::string, std::string>> ParseSafetensorsIndex(absl::string_view text,
                                                                         const std::string& path) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  auto it = j.find("weight_map");
  if (it == j.end() || !it->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": weight_map is missing"));
  }
  std::map<std::string, std::string> map;
  for (auto e = it->begin(); e != it->end(); ++e) {
    if (!e.value().is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": weight_map entry \"", e.key(), "\" is not a file name"));
    }
    const std::string file = e.value().get<std::string>();
    if (file.empty() || file.find('/') != std::string::npos || file == "..") {
      return absl::InvalidArgumentError(absl::StrCat(path, ": weight_map entry \"", e.key(),
                                                     "\" names \"", file,
                                                     "\", not a file in the dir"));
    }
    map.emplace(e.key(), file);
  }
  return map;
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  ARBOR_ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::Load(dir));
  std::unique_ptr<Checkpoint> ckpt(new Checkpoint(dir, config));

  const std::string index_path = dir + "/model.safetensors.index.json";
  if (std::filesystem::exists(index_path)) {
    ckpt->index_source_ = index_path;
    ARBOR_ASSIGN_OR_RETURN(auto weight_map, ReadIndex(index_path));
    absl::flat_hash_map<std::string, const SafetensorsFile*> opened;
    for (const auto& [name, file] : weight_map) {
      auto [it, inserted] = opened.try_emplace(file, nullptr);
      if (inserted) {
        ARBOR_ASSIGN_OR_RETURN(auto shard, SafetensorsFile::Open(dir + "/" + file));
        it->second = shard.get();
        ckpt->shards_.push_back(std::move(shard));
      }
      const TensorInfo* info = it->second->Find(name);
      if (info == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(
            index_path, ": tensor \"", name, "\" is mapped to ", file, ", which does not hold it"));
      }
      ckpt->tensors_.emplace(name, Location{it->second, info});
    }
  } else {
    const std::string path = dir + "/model.safetensors";
    ckpt->index_source_ = path;
    ARBOR_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path));
    for (const TensorInfo& info : file->tensors()) {
      ckpt->tensors_.emplace(info.name, Location{file.get(), &info});
    }
    ckpt->shards_.push_back(std::move(file));
  }
  return ckpt;
}

absl::StatusOr<const TensorInfo*> Checkpoint::Find(absl::string_view name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat(index_source_, ": tensor \"", name, "\" is missing"));
  }
  return it->second.info;
}

absl::Status Checkpoint::ReadF32(absl::string_view name, const std::vector<int64_t>& shape,
                                 float* dst) const {
  return Read(name, shape, DType::kF32, dst);
}

absl::Status Checkpoint::Read(absl::string_view name, const std::vector<int64_t>& shape, DType as,
                              void* dst) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat(index_source_, ": tensor \"", name, "\" is missing"));
  }
  const auto& [file, info] = it->second;
  if (info->shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(
        file->path(), ": tensor \"", name, "\" has shape [", absl::StrJoin(info->shape, ", "),
        "], expected [", absl::StrJoin(shape, ", "), "]"));
  }
  if (as == DType::kF32) {
    ConvertToF32(info->dtype, file->Data(*info), static_cast<size_t>(info->numel()),
                 static_cast<float*>(dst));
  } else if (info->dtype == as) {
    std::memcpy(dst, file->Data(*info), info->nbytes);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(file->path(), ": tensor \"", name, "\" is ",
                                                   DTypeName(info->dtype), ", not ",
                                                   DTypeName(as)));
  }
  bytes_read_ += info->nbytes;
  return absl::OkStatus();
}

}  // namespace arbor::model
