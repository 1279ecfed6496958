// Layer specifications: an attention layer or a single linear layer, with its weights on the host.
//
// Weights follow PyTorch's nn.Linear: a weight is [out_features, in_features] and y = x·Wᵀ + b.
// Names follow Llama/HF: q_proj.weight [H·d_h, d], k_proj.weight [H_kv·d_h, d], v_proj.weight
// [H_kv·d_h, d], o_proj.weight [d, H·d_h], each with an optional .bias [rows]. A linear layer has
// "weight" [n, d] and optionally "bias" [n]. Thread-safe: plain values and pure functions.
#ifndef ATP_KERNELS_LAYER_H_
#define ATP_KERNELS_LAYER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "atp/kernels/rank_policy.h"
#include "atp/kernels/tensor.h"

namespace atp::kernels {

// Scale c of the principal tokens X̃ = c·U_rᵀX.
enum class KeyScale {
  kNone,        // c = 1 (default)
  kInvSqrtLen,  // c = 1/sqrt(L)
};

// "none" or "inv_sqrt_len".
absl::string_view KeyScaleName(KeyScale scale);

struct AttentionConfig {
  int64_t d_model = 0;
  int64_t num_heads = 0;
  // 0 means num_heads. Must divide num_heads.
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  // Softmax scale; 0 means 1/sqrt(head_dim).
  float scale = 0.0f;
  KeyScale key_scale = KeyScale::kNone;
  // Used when a request sets no rank policy.
  RankPolicy default_rank;

  int64_t kv_heads() const { return num_kv_heads > 0 ? num_kv_heads : num_heads; }
  float resolved_scale() const;
};

// INVALID_ARGUMENT naming the offending field unless every size is >= 1, num_kv_heads divides
// num_heads, the scale is finite and >= 0 and the default rank policy is valid.
absl::Status ValidateAttentionConfig(const AttentionConfig& config);

using WeightMap = std::map<std::string, Tensor, std::less<>>;

struct LayerSpec {
  enum class Kind { kAttention, kLinear };
  Kind kind = Kind::kAttention;
  // For kAttention.
  AttentionConfig attention;
  // For kLinear: used when a dense-input request sets no rank policy.
  RankPolicy linear_default_rank;
  WeightMap weights;
};

// Checks that the weights are exactly what the kind needs: every required name present, no
// unknown name, every shape right ("k_proj.weight has shape [64,32], want [64,48]"), every value
// finite. INVALID_ARGUMENT otherwise.
absl::Status ValidateLayerSpec(const LayerSpec& spec);

// The (weight, bias) names of a linear map of a layer: prefix "" → ("weight", "bias"), "q_proj" →
// ("q_proj.weight", "q_proj.bias"). NOT_FOUND naming the prefix when the layer has no such weight.
struct LinearWeightNames {
  std::string weight;
  std::string bias;  // may be absent from the layer
};
absl::StatusOr<LinearWeightNames> FindLinearWeight(const LayerSpec& spec,
                                                   absl::string_view prefix);

}  // namespace atp::kernels

#endif  // ATP_KERNELS_LAYER_H_
