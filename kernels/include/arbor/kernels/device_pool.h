// Device memory for the CUDA backends: Arbor's own pool over plain cudaMalloc (no managed
// memory). A freed buffer goes back to the free list of its size class and is handed out again
// without another cudaMalloc, so steady-state steps never call the driver's allocator. Size
// classes: powers of two from 256 B up to 1 MiB, then whole MiB. Memory goes back to the driver
// only on Trim() or destruction. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace arbor::kernels {

class DevicePool;

// A block of device memory from a DevicePool; returns it to the pool when destroyed. Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer&& other) noexcept { *this = std::move(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { Reset(); }

  void* data() const { return data_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  size_t size() const { return size_; }  // bytes asked for
  void Reset();

 private:
  friend class DevicePool;
  DevicePool* pool_ = nullptr;
  void* data_ = nullptr;
  size_t size_ = 0;
  size_t class_bytes_ = 0;
};

class DevicePool {
 public:
  struct Stats {
    size_t reserved_bytes = 0;  // held from cudaMalloc, in use or free
    size_t in_use_bytes = 0;    // size classes of live buffers
    size_t peak_in_use_bytes = 0;
    int64_t device_mallocs = 0;  // cudaMalloc calls
    int64_t reuses = 0;          // allocations served from a free list
  };

  // A pool on `device` that reserves at most `limit_bytes` (0: no limit of its own).
  // INVALID_ARGUMENT for a device that does not exist.
  static absl::StatusOr<std::unique_ptr<DevicePool>> Create(int device, size_t limit_bytes = 0);
  ~DevicePool();  // every DeviceBuffer must be gone

  // `bytes` (> 0) of device memory, 256-byte aligned, not initialised. RESOURCE_EXHAUSTED past
  // the limit or when the device is full (after trimming the free lists once).
  absl::StatusOr<DeviceBuffer> Allocate(size_t bytes);
  // Allocate(max(bytes, 1)) holding a copy of `bytes` of host memory (synchronous copy).
  absl::StatusOr<DeviceBuffer> Upload(const void* host, size_t bytes);
  // Allocates every (buffer, bytes) pair into its buffer; the first error stops.
  absl::Status AllocateAll(std::initializer_list<std::pair<DeviceBuffer*, size_t>> wants);
  // Returns every free block to the driver.
  void Trim();
  Stats stats() const;
  int device() const { return device_; }

  // The size class a request of `bytes` is served from.
  static size_t ClassBytes(size_t bytes);

 private:
  friend class DeviceBuffer;
  DevicePool(int device, size_t limit) : device_(device), limit_(limit) {}
  void Release(void* ptr, size_t class_bytes);
  void TrimLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int device_;
  const size_t limit_;
  mutable absl::Mutex mu_;
  std::map<size_t, std::vector<void*>> free_ ABSL_GUARDED_BY(mu_);  // class bytes -> blocks
  Stats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace arbor::kernels
