// SdpaEngine: fused scaled-dot-product attention on the device through cuDNN 9's graph API (the
// cuDNN C++ front end, loaded at run time). Built only when the front end's headers were found;
// otherwise Create() returns UNIMPLEMENTED and the backend uses its own attention path.
//
// Handles f16/bf16 Q [Lq, H, d_h], K and V [Lk, H_kv, d_h] (row-major, any row stride), grouped KV
// heads, an optional causal mask, f32 softmax statistics. Execution plans are cached per shape.
// Not thread-safe: used under the backend's lock.
#ifndef ATP_KERNELS_CUDA_SDPA_ENGINE_H_
#define ATP_KERNELS_CUDA_SDPA_ENGINE_H_

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cuda/device_types.h"

namespace atp::kernels::cuda {

class DeviceContext;

struct SdpaArgs {
  DevType type = DevType::kBF16;  // kF16 or kBF16
  const void* q = nullptr;        // [lq, heads * head_dim] with row stride q_ld
  const void* k = nullptr;        // [lk, kv_heads * head_dim] with row stride k_ld
  const void* v = nullptr;        // [lk, kv_heads * head_dim] with row stride v_ld
  void* o = nullptr;              // [lq, heads * head_dim] with row stride o_ld
  int64_t lq = 0, lk = 0, heads = 0, kv_heads = 0, head_dim = 0;
  int64_t q_ld = 0, k_ld = 0, v_ld = 0, o_ld = 0;
  float scale = 1.0f;
  bool causal = false;  // key j <= query i (top-left aligned)
};

class SdpaEngine {
 public:
  // UNIMPLEMENTED when this build has no cuDNN front end; FAILED_PRECONDITION when libcudnn.so.9
  // cannot be loaded or is older than 9.0.
  static absl::StatusOr<std::unique_ptr<SdpaEngine>> Create(int device, cudaStream_t stream);
  virtual ~SdpaEngine() = default;

  // Enqueues O = softmax(scale · Q Kᵀ [+ causal mask]) V on ctx.stream(). UNIMPLEMENTED when cuDNN
  // has no engine for the shape (the caller falls back); other errors as usual.
  virtual absl::Status Run(DeviceContext& ctx, const SdpaArgs& args) = 0;
  // Makes `device` current for the CUDA runtime that the front end loaded.
  virtual absl::Status SetDevice(int device) = 0;
  // "cuDNN 9.19.0 (front end 1.32.0)".
  virtual std::string Version() const = 0;
};

}  // namespace atp::kernels::cuda

#endif  // ATP_KERNELS_CUDA_SDPA_ENGINE_H_
