// Test helpers: write safetensors files and copy model folders into a scratch directory.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace arbor::model::testing {

struct RawTensor {
  std::string name;
  std::string dtype;  // as written in the header, e.g. "BF16" (may be invalid on purpose)
  std::vector<int64_t> shape;
  std::string bytes;
};

// Serialises `tensors` back to back; returns the file's bytes.
inline std::string SerializeSafetensors(const std::vector<RawTensor>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const RawTensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string h = header.dump();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((h.size() >> (8 * i)) & 0xff);
  out += h;
  for (const RawTensor& t : tensors) out += t.bytes;
  return out;
}

inline void WriteFile(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// A fresh, empty directory under the system temp dir, unique to this test.
inline std::filesystem::path ScratchDir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() /
             ("arbor_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// Copies model folder `src` (subfolders such as presets/ included) into a fresh scratch dir.
inline std::filesystem::path CopyModel(const std::string& src, const std::string& name) {
  auto dir = ScratchDir(name);
  std::filesystem::copy(src, dir, std::filesystem::copy_options::recursive);
  return dir;
}

}  // namespace arbor::model::testing
