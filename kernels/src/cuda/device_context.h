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
  // The stream (and cuBLAS handle) work is enqueued on: the main one, or the side one while a
  // SideStreamScope is open.
  cudaStream_t stream() const { return on_side_ ? side_stream_.get() : stream_.get(); }
  cublasHandle_t cublas() const { return on_side_ ? side_cublas_.get() : cublas_.get(); }
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
  // Reading small results without draining the stream: StageToHost queues a copy of `bytes`
  // into the pinned staging area at `offset` (offset + bytes <= kStagingBytes); WaitStaged waits
  // until everything staged so far has arrived (not for work queued after it) and returns the
  // staging area. One reader at a time.
  static constexpr size_t kStagingBytes = 16384;
  absl::Status StageToHost(size_t offset, const void* src, size_t bytes);
  absl::StatusOr<const void*> WaitStaged();
  absl::Status Synchronize();
  // Translates a launcher's result.
  static absl::Status Launched(cudaError_t err, absl::string_view what);

  // Returns unused pool memory above `keep_bytes` to the device (after Synchronize()).
  void TrimPool(size_t keep_bytes);
  DeviceMemoryInfo memory() const;

  // The side stream overlaps work with the main stream's (the Q projection beside the
  // latency-bound part of the basis). ForkSide: the side stream waits for what the main stream has
  // queued; JoinSide: the main stream waits for what the side stream has queued.
  absl::Status ForkSide();
  absl::Status JoinSide();
  void set_on_side(bool on) { on_side_ = on; }
  // Starting side work together with a main-stream kernel: ArmStartFlag zeroes a device word on
  // the main stream and forks the side stream after it; the kernel, launched next on the main
  // stream, writes 1 to start_flag() when it runs; SideWaitsForStart makes the side stream wait
  // for that write (cuStreamWaitValue32, reached through the runtime), so work queued on the side
  // stream afterwards starts only once the kernel holds its SMs. SideWaitsForStart returns false
  // (and the side stream does not wait) where the driver offers no such wait.
  absl::Status ArmStartFlag();
  unsigned* start_flag() const { return static_cast<unsigned*>(start_flag_.get()); }
  bool SideWaitsForStart();

  bool poison() const { return poison_; }
  void set_poison(bool on) { poison_ = on; }

  // "NVIDIA H200 (sm_90, 139 GiB)".
  std::string Description() const;

 private:
  DeviceContext() = default;

  int device_ = 0;
  cudaDeviceProp props_{};
  CudaStream stream_;
  CudaStream side_stream_;
  CudaEvent fork_event_;
  CudaEvent join_event_;
  DeviceBuffer start_flag_;
  PinnedBuffer staging_;
  CudaEvent staged_event_;
  bool on_side_ = false;
  CudaMemPool pool_;
  CublasHandle cublas_;
  DeviceBuffer cublas_workspace_;
  CublasHandle side_cublas_;  // its own workspace: the two streams run at once
  DeviceBuffer side_cublas_workspace_;
  CusolverHandle cusolver_;
  CusolverParams cusolver_params_;
  std::unique_ptr<SdpaEngine> sdpa_;
  bool sdpa_tried_ = false;
  absl::Status sdpa_status_;
  bool poison_ = false;
};

// Enqueues on the side stream while alive (after ctx.ForkSide()); the owner joins explicitly.
class SideStreamScope {
 public:
  explicit SideStreamScope(DeviceContext& ctx) : ctx_(ctx) { ctx_.set_on_side(true); }
  ~SideStreamScope() { ctx_.set_on_side(false); }
  SideStreamScope(const SideStreamScope&) = delete;
  SideStreamScope& operator=(const SideStreamScope&) = delete;

 private:
  DeviceContext& ctx_;
};

}  // namespace atp::kernels::cuda

#endif  // ATP_KERNELS_CUDA_DEVICE_CONTEXT_H_
