// The Backend seam: every operation of DESIGN.md §1 on one compute device.
//
// The service and the CLI talk to a Backend only; the CPU backend (OpenBLAS/LAPACKE) runs
// everything anywhere, the CUDA backend (cuBLAS/cuSOLVER and own kernels) plugs in behind the same
// calls. Inputs and outputs are host tensors; layers are loaded once into the backend's memory and
// referenced through a LayerHandle.
//
// Thread-safety: LoadLayer and the compute calls may be called from several threads at once on the
// CPU backend; the CUDA backend serialises them internally. A LayerHandle must outlive every call
// that uses it and must be destroyed before its Backend.
#ifndef ATP_KERNELS_BACKEND_H_
#define ATP_KERNELS_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "atp/kernels/attention.h"
#include "atp/kernels/exec_context.h"
#include "atp/kernels/layer.h"
#include "atp/kernels/lowrank_linear.h"
#include "atp/kernels/principal_bases.h"
#include "atp/kernels/tensor.h"

namespace atp::kernels {

// A layer resident in a backend's memory.
class LayerHandle {
 public:
  virtual ~LayerHandle() = default;
  // The spec it was loaded from (weights included, on the host).
  virtual const LayerSpec& spec() const = 0;
  // Bytes it occupies in the backend's memory (device memory for CUDA).
  virtual uint64_t resident_bytes() const = 0;
};

struct MemoryInfo {
  uint64_t total_bytes = 0;
  uint64_t free_bytes = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  // "cpu" or "cuda".
  virtual std::string name() const = 0;
  // "NVIDIA H200 (sm_90, 139 GiB)", "CPU x16 (OpenBLAS 0.3.21)".
  virtual std::string device_description() const = 0;

  // Validates the spec (ValidateLayerSpec) and copies its weights into backend memory.
  // RESOURCE_EXHAUSTED when the device has no room.
  virtual absl::StatusOr<std::unique_ptr<LayerHandle>> LoadLayer(LayerSpec spec) = 0;

  virtual absl::StatusOr<PrincipalBases> Decompose(const PrincipalBasesArgs& args,
                                                   const ExecContext& ctx) = 0;
  // INVALID_ARGUMENT if the layer is not an attention layer.
  virtual absl::StatusOr<AtpAttentionResult> AtpAttention(const LayerHandle& layer,
                                                          const AtpAttentionArgs& args,
                                                          const ExecContext& ctx) = 0;
  virtual absl::StatusOr<Tensor> ExactAttention(const LayerHandle& layer,
                                                const ExactAttentionArgs& args,
                                                const ExecContext& ctx) = 0;
  virtual absl::StatusOr<LowRankLinearResult> LowRankLinear(const LayerHandle& layer,
                                                            const LowRankLinearArgs& args,
                                                            const ExecContext& ctx) = 0;

  // Memory of the compute device (system memory for the CPU backend).
  virtual MemoryInfo memory() const = 0;
  // OK while the device works; FAILED_PRECONDITION after a sticky device error (the worker then
  // reports NOT_SERVING).
  virtual absl::Status health() const = 0;
};

struct CpuBackendOptions {
  // Threads that one call splits its work over; 0 = the cores this process may use. The backend
  // runs OpenBLAS single-threaded (a process-wide setting it makes when created) and splits GEMMs,
  // heads and query blocks over its own threads: OpenBLAS's spinning pool fights them otherwise.
  int threads = 0;
  // Fill every output buffer with NaN before computing it, so a test sees unwritten elements.
  bool poison_outputs = false;
};

std::unique_ptr<Backend> CreateCpuBackend(const CpuBackendOptions& options = {});

// True when this build contains the CUDA backend.
bool CudaBackendCompiled();

// UNIMPLEMENTED in a build without CUDA; FAILED_PRECONDITION naming the reason when there is no
// usable device `device`.
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int device = 0);

// kind: "cpu", "cuda" or "auto" (CUDA when a device is usable, else CPU). INVALID_ARGUMENT for
// another kind.
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(absl::string_view kind, int device = 0);

}  // namespace atp::kernels

#endif  // ATP_KERNELS_BACKEND_H_
