// Low-rank linear layer Y = X·Wᵀ + b with X ≈ U·C (DESIGN.md §1).
#ifndef ATP_KERNELS_LOWRANK_LINEAR_H_
#define ATP_KERNELS_LOWRANK_LINEAR_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "atp/kernels/layer.h"
#include "atp/kernels/rank_policy.h"
#include "atp/kernels/tensor.h"

namespace atp::kernels {

struct LowRankLinearArgs {
  // Which linear map of the layer (see FindLinearWeight): "" or "q_proj", ...
  std::string weight;
  // Input: dense x [L, d] (decomposed with the rank policy first), or factored u [L, r] and c [r, d]
  // used as given.
  bool factored_input = false;
  TensorView x;
  TensorView u;
  TensorView c;
  // For a dense input; nullopt: the layer's default rank policy.
  std::optional<RankPolicy> rank;
  int64_t max_rank = 0;  // backend limit, 0 = none
  uint64_t seed = 0x9e3779b97f4a7c15ull;
  // Output: dense y [L, n], or factored Y = U'·C' with U' = [U, 1] and C' = [C·Wᵀ; bᵀ] when the
  // map has a bias (U' = U, C' = C·Wᵀ when it has none).
  bool factored_output = false;
  DType output_dtype = DType::kF32;
};

struct LowRankLinearResult {
  bool factored = false;
  Tensor y;  // dense output [L, n]
  Tensor u;  // factored output [L, r'] (r' = r or r + 1)
  Tensor c;  // factored output [r', n]
  int64_t rank = 0;
  // Captured energy of the decomposition of a dense input; 0 for a factored input.
  double captured_energy = 0.0;
};

// INVALID_ARGUMENT unless the input shapes agree with the weight ([L, d] with d = in_features;
// u [L, r], c [r, d]), values are finite and the policy is valid; NOT_FOUND for an unknown weight.
absl::Status ValidateLowRankLinear(const LayerSpec& layer, const LowRankLinearArgs& args);

}  // namespace atp::kernels

#endif  // ATP_KERNELS_LOWRANK_LINEAR_H_
