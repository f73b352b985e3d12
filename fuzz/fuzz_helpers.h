// What every fuzz target shares: the input as a string view, and a check that a parser's error
// is well formed (a status with a message), never a crash. Fuzz targets are built with clang's
// libFuzzer under AddressSanitizer and UndefinedBehaviorSanitizer (fuzz/CMakeLists.txt).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace arbor::fuzz {

inline absl::string_view Text(const uint8_t* data, size_t size) {
  return absl::string_view(reinterpret_cast<const char*>(data), size);
}

// A refusal must say why: bad input gets a message naming the field, never an empty error.
inline void CheckRefusal(const absl::Status& st) {
  if (!st.ok() && st.message().empty()) std::abort();
}

}  // namespace arbor::fuzz
