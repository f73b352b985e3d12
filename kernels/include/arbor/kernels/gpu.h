// What every kernel header needs to name the GPU without including the CUDA headers: the stream
// type, and whether this build has CUDA and the machine a device. Safe to include in any build;
// the *Cuda launch functions declared beside the CPU references are defined only when Arbor is
// built with ARBOR_ENABLE_CUDA (ARBOR_HAVE_CUDA is then 1).
#pragma once

#include <cstdint>
#include <string>

// The CUDA runtime's own spelling of a stream handle; redeclaring the identical typedef is legal.
struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;

namespace arbor::kernels {

// Raw bfloat16 bits (arbor::F32ToBF16 / BF16ToF32 convert on the host).
using bf16_t = uint16_t;

// True when this build compiled the CUDA kernels.
bool CudaBuilt();

// CUDA devices visible to this process: 0 when the build has no CUDA, there is no driver, or
// no device. Never fails.
int CudaDeviceCount();

// "NVIDIA H100 80GB HBM3 (sm_90, 79 GiB)" for `device`, or why it cannot be described.
std::string CudaDeviceName(int device);

}  // namespace arbor::kernels
