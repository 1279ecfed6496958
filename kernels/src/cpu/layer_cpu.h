// A layer resident in the CPU backend: the spec plus f32 views of its weights. Private to
// kernels/src/cpu/. Immutable after construction, so thread-safe.
#ifndef ATP_KERNELS_SRC_CPU_LAYER_CPU_H_
#define ATP_KERNELS_SRC_CPU_LAYER_CPU_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "atp/kernels/backend.h"
#include "atp/kernels/layer.h"

namespace atp::kernels::cpu {

// One nn.Linear map in f32: y = x·wᵀ + b, w is [out, in], b is null when the map has no bias.
struct LinearF32 {
  const float* w = nullptr;
  const float* b = nullptr;
  int64_t out = 0;
  int64_t in = 0;
};

struct AttentionWeightsF32 {
  LinearF32 q, k, v, o;
};

class CpuLayer : public LayerHandle {
 public:
  // `spec` must have passed ValidateLayerSpec.
  explicit CpuLayer(LayerSpec spec);

  const LayerSpec& spec() const override { return spec_; }
  // The spec's own weight bytes plus the f32 copies made of f16/bf16 weights (f32 weights are
  // used in place).
  uint64_t resident_bytes() const override { return resident_bytes_; }

  // The map named by its weight tensor ("q_proj.weight", "weight"); null when absent.
  const LinearF32* linear(const std::string& weight_name) const;
  // For an attention layer.
  AttentionWeightsF32 attention() const;

 private:
  const float* F32Of(const std::string& name);

  LayerSpec spec_;
  std::vector<std::vector<float>> copies_;
  std::map<std::string, LinearF32, std::less<>> maps_;
  uint64_t resident_bytes_ = 0;
};

}  // namespace atp::kernels::cpu

#endif  // ATP_KERNELS_SRC_CPU_LAYER_CPU_H_
