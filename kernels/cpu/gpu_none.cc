// gpu.h for builds without CUDA: no device, ever.
#include "arbor/kernels/gpu.h"

namespace arbor::kernels {

bool CudaBuilt() { return false; }
int CudaDeviceCount() { return 0; }
std::string CudaDeviceName(int device) { return "no CUDA in this build"; }

}  // namespace arbor::kernels
