#include "arbor/mesh/kv_wire.h"

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace arbor::mesh {

float* PrepareKv(const kvcache::KvLayout& layout, int tokens, v1::Tensor* out) {
  out->Clear();
  out->set_dtype(v1::DTYPE_F32);
  const std::vector<int64_t> shape = layout.TokensShape(tokens);
  out->mutable_shape()->Add(shape.begin(), shape.end());
  std::string* data = out->mutable_data();
  data->resize(static_cast<size_t>(tokens) * layout.token_floats() * sizeof(float));
  return reinterpret_cast<float*>(data->data());
}

absl::StatusOr<int> CheckKv(const v1::Tensor& t, const kvcache::KvLayout& layout, int tokens,
                            const std::string& field) {
  if (t.dtype() != v1::DTYPE_F32) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".dtype ", v1::DType_Name(t.dtype()), " is not DTYPE_F32"));
  }
  const std::vector<int64_t> got(t.shape().begin(), t.shape().end());
  const int64_t n = tokens >= 0 ? tokens : (got.size() == 5 ? got[0] : 0);
  const std::vector<int64_t> want = layout.TokensShape(n);
  if (got != want || (tokens < 0 && n < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".shape [", absl::StrJoin(got, ", "),
                                                   "] is not [", absl::StrJoin(want, ", "), "]"));
  }
  const size_t bytes = static_cast<size_t>(n) * layout.token_floats() * sizeof(float);
  if (t.data().size() != bytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".data holds ", t.data().size(),
                                                   " bytes; ", field, ".shape needs ", bytes));
  }
  return static_cast<int>(n);
}

absl::Status CheckKvFinite(const v1::Tensor& t, const std::string& field) {
  // An f32 is NaN or infinite exactly when its exponent bits are all ones.
  const char* p = t.data().data();
  const size_t n = t.data().size() / sizeof(uint32_t);
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, p + i * sizeof(bits), sizeof(bits));
    if ((bits & 0x7f800000u) == 0x7f800000u) {
      float v;
      std::memcpy(&v, &bits, sizeof(v));
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".data value ", i, " is ", v, ": KV must be finite"));
    }
  }
  return absl::OkStatus();
}

const void* KvRowBytes(const v1::Tensor& t) { return t.data().data(); }

void CopyKvRows(const v1::Tensor& t, float* out) {
  std::memcpy(out, KvRowBytes(t), t.data().size());
}

}  // namespace arbor::mesh
