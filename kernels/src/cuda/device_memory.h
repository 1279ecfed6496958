// RAII owners of CUDA resources: device buffers, pinned host buffers, streams, events, library
// handles, graphs. All move-only; each releases its resource exactly once and never throws or
// aborts (a release failure after a sticky error is ignored: the context is lost anyway).
//
// Thread-compatible: an owner may move between threads but is not shared without a lock.
#ifndef ATP_KERNELS_CUDA_DEVICE_MEMORY_H_
#define ATP_KERNELS_CUDA_DEVICE_MEMORY_H_

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <cstddef>
#include <utility>

#include "absl/status/statusor.h"
#include "cuda/cuda_status.h"

namespace atp::kernels::cuda {

// Owns a handle `H` released by `Release` (a functor type).
template <typename H, typename Release>
class UniqueHandle {
 public:
  UniqueHandle() = default;
  explicit UniqueHandle(H h) : h_(h) {}
  ~UniqueHandle() { Reset(); }
  UniqueHandle(UniqueHandle&& other) noexcept : h_(std::exchange(other.h_, H{})) {}
  UniqueHandle& operator=(UniqueHandle&& other) noexcept {
    if (this != &other) {
      Reset();
      h_ = std::exchange(other.h_, H{});
    }
    return *this;
  }
  UniqueHandle(const UniqueHandle&) = delete;
  UniqueHandle& operator=(const UniqueHandle&) = delete;

  H get() const { return h_; }
  explicit operator bool() const { return h_ != H{}; }
  void Reset() {
    if (h_ != H{}) Release()(h_);
    h_ = H{};
  }

 private:
  H h_{};
};

struct StreamRelease {
  void operator()(cudaStream_t s) const { (void)cudaStreamDestroy(s); }
};
struct EventRelease {
  void operator()(cudaEvent_t e) const { (void)cudaEventDestroy(e); }
};
struct CublasRelease {
  void operator()(cublasHandle_t h) const { (void)cublasDestroy(h); }
};
struct CusolverRelease {
  void operator()(cusolverDnHandle_t h) const { (void)cusolverDnDestroy(h); }
};
struct CusolverParamsRelease {
  void operator()(cusolverDnParams_t p) const { (void)cusolverDnDestroyParams(p); }
};
struct SyevjInfoRelease {
  void operator()(syevjInfo_t p) const { (void)cusolverDnDestroySyevjInfo(p); }
};
struct GraphRelease {
  void operator()(cudaGraph_t g) const { (void)cudaGraphDestroy(g); }
};
struct GraphExecRelease {
  void operator()(cudaGraphExec_t g) const { (void)cudaGraphExecDestroy(g); }
};
struct MemPoolRelease {
  void operator()(cudaMemPool_t p) const { (void)cudaMemPoolDestroy(p); }
};

using CudaStream = UniqueHandle<cudaStream_t, StreamRelease>;
using CudaEvent = UniqueHandle<cudaEvent_t, EventRelease>;
using CublasHandle = UniqueHandle<cublasHandle_t, CublasRelease>;
using CusolverHandle = UniqueHandle<cusolverDnHandle_t, CusolverRelease>;
using CusolverParams = UniqueHandle<cusolverDnParams_t, CusolverParamsRelease>;
using SyevjInfo = UniqueHandle<syevjInfo_t, SyevjInfoRelease>;
using CudaGraph = UniqueHandle<cudaGraph_t, GraphRelease>;
using CudaGraphExec = UniqueHandle<cudaGraphExec_t, GraphExecRelease>;
using CudaMemPool = UniqueHandle<cudaMemPool_t, MemPoolRelease>;

// Device memory. Either stream-ordered from a memory pool (freed with cudaFreeAsync on the
// stream it was allocated on, so it may go out of scope while kernels that use it are queued) or
// plain cudaMalloc (freed with cudaFree, which waits for the device).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { Reset(); }
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : ptr_(std::exchange(other.ptr_, nullptr)),
        bytes_(std::exchange(other.bytes_, 0)),
        stream_(std::exchange(other.stream_, nullptr)),
        async_(std::exchange(other.async_, false)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      Reset();
      ptr_ = std::exchange(other.ptr_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
      stream_ = std::exchange(other.stream_, nullptr);
      async_ = std::exchange(other.async_, false);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // Stream-ordered allocation from `pool` (bytes may be 0: a null buffer).
  static absl::StatusOr<DeviceBuffer> FromPool(size_t bytes, cudaMemPool_t pool,
                                               cudaStream_t stream) {
    DeviceBuffer b;
    if (bytes == 0) return b;
    ATP_CUDA(cudaMallocFromPoolAsync(&b.ptr_, bytes, pool, stream));
    b.bytes_ = bytes;
    b.stream_ = stream;
    b.async_ = true;
    return b;
  }
  // Plain cudaMalloc (for long-lived buffers such as layer weights).
  static absl::StatusOr<DeviceBuffer> Malloc(size_t bytes) {
    DeviceBuffer b;
    if (bytes == 0) return b;
    ATP_CUDA(cudaMalloc(&b.ptr_, bytes));
    b.bytes_ = bytes;
    return b;
  }

  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }
  bool empty() const { return ptr_ == nullptr; }

  void Reset() {
    if (ptr_ != nullptr) {
      if (async_) {
        (void)cudaFreeAsync(ptr_, stream_);
      } else {
        (void)cudaFree(ptr_);
      }
    }
    ptr_ = nullptr;
    bytes_ = 0;
    stream_ = nullptr;
    async_ = false;
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  cudaStream_t stream_ = nullptr;
  bool async_ = false;
};

// Page-locked host memory (for fast, asynchronous copies).
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer() { Reset(); }
  PinnedBuffer(PinnedBuffer&& other) noexcept
      : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept {
    if (this != &other) {
      Reset();
      ptr_ = std::exchange(other.ptr_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  static absl::StatusOr<PinnedBuffer> Allocate(size_t bytes) {
    PinnedBuffer b;
    if (bytes == 0) return b;
    ATP_CUDA(cudaMallocHost(&b.ptr_, bytes));
    b.bytes_ = bytes;
    return b;
  }
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  void Reset() {
    if (ptr_ != nullptr) (void)cudaFreeHost(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace atp::kernels::cuda

#endif  // ATP_KERNELS_CUDA_DEVICE_MEMORY_H_
