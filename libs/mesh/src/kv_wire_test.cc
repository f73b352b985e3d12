#include "arbor/mesh/kv_wire.h"

#include "gtest/gtest.h"

namespace arbor::mesh {
namespace {

const kvcache::KvLayout kLayout{2, 2, 4, 4};  // 32 floats per token

TEST(KvWireTest, WhatIsPreparedIsAccepted) {
  v1::Tensor t;
  float* rows = PrepareKv(kLayout, 3, &t);
  for (int i = 0; i < 3 * 32; ++i) rows[i] = static_cast<float>(i);
  EXPECT_EQ(std::vector<int64_t>(t.shape().begin(), t.shape().end()),
            (std::vector<int64_t>{3, 2, 2, 2, 4}));
  absl::StatusOr<int> n = CheckKv(t, kLayout, 3, "kv");
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 3);
  EXPECT_EQ(*CheckKv(t, kLayout, -1, "kv"), 3);  // any count
  std::vector<float> back(3 * 32);
  CopyKvRows(t, back.data());
  EXPECT_EQ(back[95], 95.0f);
}

TEST(KvWireTest, BadTensorsNameTheField) {
  v1::Tensor t;
  PrepareKv(kLayout, 3, &t);
  EXPECT_EQ(CheckKv(t, kLayout, 4, "kv").status().message(),
            "kv.shape [3, 2, 2, 2, 4] is not [4, 2, 2, 2, 4]");
  v1::Tensor bf16 = t;
  bf16.set_dtype(v1::DTYPE_BF16);
  EXPECT_EQ(CheckKv(bf16, kLayout, 3, "kv").status().message(),
            "kv.dtype DTYPE_BF16 is not DTYPE_F32");
  v1::Tensor short_data = t;
  short_data.mutable_data()->resize(10);
  EXPECT_EQ(CheckKv(short_data, kLayout, 3, "chunk.kv").status().message(),
            "chunk.kv.data holds 10 bytes; chunk.kv.shape needs 384");
  v1::Tensor no_shape = t;
  no_shape.clear_shape();
  EXPECT_EQ(CheckKv(no_shape, kLayout, -1, "kv").status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::Tensor empty;
  PrepareKv(kLayout, 0, &empty);
  EXPECT_FALSE(CheckKv(empty, kLayout, -1, "kv").ok());  // a chunk holds at least one token
  v1::Tensor other_layout;
  PrepareKv({2, 1, 4, 4}, 3, &other_layout);
  EXPECT_FALSE(CheckKv(other_layout, kLayout, -1, "kv").ok());
}

}  // namespace
}  // namespace arbor::mesh
