// CreateCudaBackend for builds without CUDA (ATP_ENABLE_CUDA=OFF or no nvcc).
#include "atp/kernels/backend.h"

namespace atp::kernels {

bool CudaBackendCompiled() { return false; }

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int device) {
  (void)device;
  return absl::UnimplementedError(
      "this build of atp has no CUDA backend (configure with ATP_ENABLE_CUDA=ON and nvcc)");
}

}  // namespace atp::kernels
