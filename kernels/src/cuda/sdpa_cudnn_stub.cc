// SdpaEngine for builds without the cuDNN front end headers (tools/setup.sh fetches them).
#include "cuda/sdpa_engine.h"

namespace atp::kernels::cuda {

absl::StatusOr<std::unique_ptr<SdpaEngine>> SdpaEngine::Create(int device, cudaStream_t stream) {
  (void)device;
  (void)stream;
  return absl::UnimplementedError(
      "this build has no cuDNN front end (run tools/setup.sh and reconfigure); using the own "
      "attention path");
}

}  // namespace atp::kernels::cuda
