// GoogleTest fixture for the CUDA twins: skips without a device, and moves vectors to and from
// device memory through a DevicePool.
#pragma once

#include <cuda_runtime_api.h>

#include <memory>
#include <vector>

#include "arbor/kernels/cuda_check.h"
#include "arbor/kernels/device_pool.h"
#include "arbor/kernels/gpu.h"
#include "gtest/gtest.h"

namespace arbor::kernels::testing {

class CudaTest : public ::testing::Test {
 public:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device: the CPU references ran instead";
    auto pool = DevicePool::Create(0);
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = std::move(*pool);
  }

  template <typename T>
  DeviceBuffer Up(const std::vector<T>& v) {
    auto buf = pool_->Upload(v.data(), v.size() * sizeof(T));
    EXPECT_TRUE(buf.ok()) << buf.status();
    return std::move(*buf);
  }

  template <typename T>
  std::vector<T> Down(const DeviceBuffer& buf, size_t n) {
    std::vector<T> v(n);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    if (n > 0) {
      EXPECT_EQ(cudaMemcpy(v.data(), buf.data(), n * sizeof(T), cudaMemcpyDeviceToHost),
                cudaSuccess);
    }
    return v;
  }

  std::unique_ptr<DevicePool> pool_;
};

}  // namespace arbor::kernels::testing
