#include "arbor/kernels/device_pool.h"

#include <cuda_runtime_api.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "arbor/kernels/cuda_check.h"

namespace arbor::kernels {

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    Reset();
    pool_ = other.pool_;
    data_ = other.data_;
    size_ = other.size_;
    class_bytes_ = other.class_bytes_;
    other.pool_ = nullptr;
    other.data_ = nullptr;
    other.size_ = other.class_bytes_ = 0;
  }
  return *this;
}

void DeviceBuffer::Reset() {
  if (pool_ != nullptr && data_ != nullptr) pool_->Release(data_, class_bytes_);
  pool_ = nullptr;
  data_ = nullptr;
  size_ = class_bytes_ = 0;
}

size_t DevicePool::ClassBytes(size_t bytes) {
  constexpr size_t kMiB = size_t{1} << 20;
  if (bytes <= 256) return 256;
  if (bytes <= kMiB) {
    size_t c = 256;
    while (c < bytes) c <<= 1;
    return c;
  }
  return (bytes + kMiB - 1) / kMiB * kMiB;
}

absl::StatusOr<std::unique_ptr<DevicePool>> DevicePool::Create(int device, size_t limit_bytes) {
  int n = 0;
  ARBOR_CUDA_RETURN_IF_ERROR(cudaGetDeviceCount(&n));
  if (device < 0 || device >= n) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA device ", device, " out of range [0, ", n, ")"));
  }
  return std::unique_ptr<DevicePool>(new DevicePool(device, limit_bytes));
}

DevicePool::~DevicePool() {
  absl::MutexLock lock(&mu_);
  TrimLocked();
}

absl::StatusOr<DeviceBuffer> DevicePool::Allocate(size_t bytes) {
  if (bytes == 0) return absl::InvalidArgumentError("device allocation of 0 bytes");
  const size_t cls = ClassBytes(bytes);
  absl::MutexLock lock(&mu_);
  void* ptr = nullptr;
  auto it = free_.find(cls);
  if (it != free_.end() && !it->second.empty()) {
    ptr = it->second.back();
    it->second.pop_back();
    ++stats_.reuses;
  } else {
    if (limit_ > 0 && stats_.reserved_bytes + cls > limit_) TrimLocked();
    if (limit_ > 0 && stats_.reserved_bytes + cls > limit_) {
      return absl::ResourceExhaustedError(absl::StrCat("device pool: ", cls, " bytes more exceed ",
                                                       "the limit of ", limit_, " (",
                                                       stats_.reserved_bytes, " reserved)"));
    }
    ARBOR_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    cudaError_t err = cudaMalloc(&ptr, cls);
    if (err == cudaErrorMemoryAllocation) {  // the free lists may hold what is missing
      cudaGetLastError();
      TrimLocked();
      err = cudaMalloc(&ptr, cls);
    }
    if (err != cudaSuccess) {
      cudaGetLastError();
      return CudaStatus(err, absl::StrCat("cudaMalloc(", cls, " bytes)").c_str());
    }
    stats_.reserved_bytes += cls;
    ++stats_.device_mallocs;
  }
  stats_.in_use_bytes += cls;
  stats_.peak_in_use_bytes = std::max(stats_.peak_in_use_bytes, stats_.in_use_bytes);
  DeviceBuffer buf;
  buf.pool_ = this;
  buf.data_ = ptr;
  buf.size_ = bytes;
  buf.class_bytes_ = cls;
  return buf;
}

absl::StatusOr<DeviceBuffer> DevicePool::Upload(const void* host, size_t bytes) {
  absl::StatusOr<DeviceBuffer> buf = Allocate(std::max<size_t>(bytes, 1));
  if (!buf.ok() || bytes == 0) return buf;
  ARBOR_CUDA_RETURN_IF_ERROR(cudaMemcpy(buf->data(), host, bytes, cudaMemcpyHostToDevice));
  return buf;
}

absl::Status DevicePool::AllocateAll(
    std::initializer_list<std::pair<DeviceBuffer*, size_t>> wants) {
  for (const auto& [buf, bytes] : wants) {
    absl::StatusOr<DeviceBuffer> b = Allocate(bytes);
    if (!b.ok()) return b.status();
    *buf = std::move(*b);
  }
  return absl::OkStatus();
}

void DevicePool::Release(void* ptr, size_t class_bytes) {
  absl::MutexLock lock(&mu_);
  free_[class_bytes].push_back(ptr);
  stats_.in_use_bytes -= class_bytes;
}

void DevicePool::Trim() {
  absl::MutexLock lock(&mu_);
  TrimLocked();
}

void DevicePool::TrimLocked() {
  cudaSetDevice(device_);
  for (auto& [cls, blocks] : free_) {
    for (void* p : blocks) {
      cudaFree(p);
      stats_.reserved_bytes -= cls;
    }
    blocks.clear();
  }
}

DevicePool::Stats DevicePool::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace arbor::kernels
