// The CUDA backend (placeholder until the CUDA issue): reports that no usable device backend exists
// yet, so `auto` falls back to the CPU backend.
#include <cuda_runtime.h>

#include "atp/kernels/backend.h"

namespace atp::kernels {

bool CudaBackendCompiled() { return true; }

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int device) {
  int count = 0;  // cudaGetDeviceCount leaves it unwritten without a driver (BUILD-NOTES.md)
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || device >= count) {
    return absl::FailedPreconditionError("no usable CUDA device");
  }
  return absl::UnimplementedError("the CUDA backend is not implemented yet");
}

}  // namespace atp::kernels
