// DeviceContext: one CUDA device as the backend uses it — a stream, a stream-ordered memory pool,
// cuBLAS and cuSOLVER handles bound to that stream, and the cuDNN attention engine (created on
// first use; absent when cuDNN or its front end is missing).
//
// Every operation of the CUDA backend runs on the one stream of its context. Not thread-safe: the
// owner (CudaBackend) serialises all use with a mutex.
#ifndef ATP_KERNELS_CUDA_DEVICE_CONTEXT_H_
#define ATP_KERNELS_CUDA_DEVICE_CONTEXT_H_

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cuda/device_memory.h"
#include "cuda/device_types.h"

namespace atp::kernels::cuda {

class SdpaEngine;  // sdpa_engine.h

struct DeviceMemoryInfo {
  uint64_t total_bytes = 0;
  uint64_t free_bytes = 0;  // cudaMemGetInfo's free plus what the pool holds unused
};

class DeviceContext {
 public:
  // FAILED_PRECONDITION naming the reason when `device` is not a usable CUDA device.
  static absl::StatusOr<std::unique_ptr<DeviceContext>> Create(int device);
  ~DeviceContext();
  DeviceContext(const DeviceContext&) = delete;
  DeviceContext& operator=(const DeviceContext&) = delete;

  int device() const { return device_; }
  const cudaDeviceProp& props() const { return props_; }
  cudaStream_t stream() const { return stream_.get(); }
  cublasHandle_t cublas() const { return cublas_.get(); }
  cusolverDnHandle_t cusolver() const { return cusolver_.get(); }
  cusolverDnParams_t cusolver_params() const { return cusolver_params_.get(); }

  // The cuDNN SDPA engine, or null when it is unavailable (see sdpa_status()).
  SdpaEngine* sdpa();
  // Why sdpa() is null (OK when it is not, or before the first sdpa() call).
  const absl::Status& sdpa_status() const { return sdpa_status_; }
  // Turns the cuDNN path off (the own attention path is then used everywhere).
  void DisableSdpa();

  // Makes this device current on the calling thread (both CUDA runtimes when cuDNN is loaded).
  absl::Status MakeCurrent() const;

  // Stream-ordered scratch memory. When poisoning is on, its bytes are 0xFF (NaN in every float
  // type) so that an unwritten element shows up in results.
  absl::StatusOr<DeviceBuffer> Alloc(size_t bytes);
  absl::StatusOr<DeviceBuffer> Alloc(DevType t, int64_t elements) {
    return Alloc(static_cast<size_t>(elements) * DevTypeSize(t));
  }

  absl::Status CopyToDevice(void* dst, const void* src, size_t bytes);
  absl::Status CopyToHost(void* dst, const void* src, size_t bytes);  // waits for the stream
  absl::Status Synchronize();
  // Translates a launcher's result.
  static absl::Status Launched(cudaError_t err, absl::string_view what);

  // Returns unused pool memory above `keep_bytes` to the device (after Synchronize()).
  void TrimPool(size_t keep_bytes);
  DeviceMemoryInfo memory() const;

  bool poison() const { return poison_; }
  void set_poison(bool on) { poison_ = on; }

  // "NVIDIA H200 (sm_90, 139 GiB)".
  std::string Description() const;

 private:
  DeviceContext() = default;

  int device_ = 0;
  cudaDeviceProp props_{};
  CudaStream stream_;
  CudaMemPool pool_;
  CublasHandle cublas_;
  DeviceBuffer cublas_workspace_;
  CusolverHandle cusolver_;
  CusolverParams cusolver_params_;
  std::unique_ptr<SdpaEngine> sdpa_;
  bool sdpa_tried_ = false;
  absl::Status sdpa_status_;
  bool poison_ = false;
};

}  // namespace atp::kernels::cuda

#endif  // ATP_KERNELS_CUDA_DEVICE_CONTEXT_H_
