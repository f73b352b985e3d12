// Element types Arbor reads from checkpoints and the conversions between them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace arbor {

enum class DType { kF32, kF16, kBF16 };

// Size of one element in bytes.
size_t DTypeSize(DType dtype);

// Safetensors / torch spelling: "F32", "F16", "BF16".
absl::string_view DTypeName(DType dtype);

// Parses the safetensors spelling ("F32", "F16", "BF16"). Other names, including valid
// safetensors types Arbor does not compute with (e.g. "I64"), give INVALID_ARGUMENT.
absl::StatusOr<DType> ParseDType(absl::string_view name);

// Parses a torch dtype name as config.json spells it ("float32", "float16", "bfloat16").
absl::StatusOr<DType> ParseTorchDType(absl::string_view name);

inline float BF16ToF32(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// Round-to-nearest-even; NaN stays NaN.
uint16_t F32ToBF16(float value);

// IEEE binary16 to binary32, including subnormals, infinities and NaN.
float F16ToF32(uint16_t bits);

// Converts `count` elements at `src` (of type `dtype`, any alignment) to f32 at `dst`.
void ConvertToF32(DType dtype, const void* src, size_t count, float* dst);

}  // namespace arbor
