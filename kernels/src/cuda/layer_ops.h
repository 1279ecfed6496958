// Layer operations on device data: linear maps with resident weights, the attention core (cuDNN's
// fused SDPA for f16/bf16 when available, else the own path), and whole ATP / exact attention
// layers. The Backend (cuda_backend.cc) moves host tensors in and out around these; benchmarks
// call them directly on device buffers.
//
// The I/O type ("io") of a call is its input's dtype: f32 inputs compute in true FP32 (f64 for
// the basis), f16/bf16 inputs use tensor cores with f32 accumulation. Not thread-safe (runs on a
// DeviceContext).
#ifndef ATP_KERNELS_CUDA_LAYER_OPS_H_
#define ATP_KERNELS_CUDA_LAYER_OPS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "atp/kernels/layer.h"
#include "atp/kernels/tensor.h"
#include "cuda/basis.h"
#include "cuda/blas.h"
#include "cuda/device_context.h"
#include "cuda/sdpa_engine.h"

namespace atp::kernels::cuda {

DevType DevTypeOf(DType dtype);

// One linear map y = x·Wᵀ + b resident on the device: W in its registered dtype, b in f32.
struct DeviceLinear {
  DevType type = DevType::kF32;
  DeviceBuffer weight;  // [rows, cols]
  int64_t rows = 0;     // out_features
  int64_t cols = 0;     // in_features
  DeviceBuffer bias;    // f32 [rows], or empty
};

// All linear maps of a layer by weight prefix ("q_proj", ..., or "" for a linear layer).
struct DeviceLayer {
  LayerSpec::Kind kind = LayerSpec::Kind::kAttention;
  AttentionConfig attention;
  std::map<std::string, DeviceLinear> linears;
  uint64_t bytes = 0;
};

// Copies the spec's weights to the device (plain cudaMalloc; RESOURCE_EXHAUSTED when full).
absl::StatusOr<DeviceLayer> UploadLayer(DeviceContext& ctx, const LayerSpec& spec);
// Device bytes UploadLayer will take for `spec`.
uint64_t LayerDeviceBytes(const LayerSpec& spec);

// y [rows, lin.rows] = x [rows, lin.cols] · Wᵀ + (row_coef ⊗ b) (row_coef null: 1; the bias
// term only when with_bias). x is f32, f16 or bf16; W is converted to x's type when registered
// in another; y is f32 or x's type.
absl::Status ApplyLinear(DeviceContext& ctx, const DeviceLinear& lin, ConstMat x, int64_t rows,
                         const float* row_coef, Mat y, bool with_bias = true);

enum class CoreImpl {
  kAuto,      // cuDNN for f16/bf16 when it takes the shape, else own
  kCudnn,     // cuDNN or an error
  kFallback,  // own: GEMM + row softmax + GEMM, in query chunks
};

// O = softmax(scale · Q Kᵀ [causal]) V (see SdpaArgs for the layout; args.type may be f32 for the
// own path). `used` (optional) reports which implementation ran.
absl::Status AttentionCore(DeviceContext& ctx, const SdpaArgs& args, CoreImpl impl,
                           CoreImpl* used = nullptr);

using StageMark = std::function<void(const char* stage)>;

// Exact attention layer: y [L, d_model] (f32 or x's type) from x [L, d_model].
absl::Status ExactAttentionLayer(DeviceContext& ctx, const DeviceLayer& layer, ConstMat x,
                                 int64_t length, bool causal, Mat y, CoreImpl impl,
                                 const StageMark& mark = nullptr);

struct AtpLayerInfo {
  int64_t rank = 0;
  double captured_energy = 0.0;
  CoreImpl core = CoreImpl::kAuto;
};

// ATP attention layer (DESIGN.md §1); basis options carry the rank policy and the method.
// Stages marked: the basis' own stages, then "principal_tokens", "projections", "core", "output".
absl::StatusOr<AtpLayerInfo> AtpAttentionLayer(DeviceContext& ctx, const DeviceLayer& layer,
                                               ConstMat x, int64_t length,
                                               const BasisOptions& basis, Mat y, CoreImpl impl,
                                               const StageMark& mark = nullptr);

}  // namespace atp::kernels::cuda

#endif  // ATP_KERNELS_CUDA_LAYER_OPS_H_
