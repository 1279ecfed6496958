// ATP attention and exact attention of an attention layer on one sequence (DESIGN.md §1).
#ifndef ATP_KERNELS_ATTENTION_H_
#define ATP_KERNELS_ATTENTION_H_

#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "atp/kernels/layer.h"
#include "atp/kernels/rank_policy.h"
#include "atp/kernels/tensor.h"

namespace atp::kernels {

// ATP attention: Q from every token, K̃ and Ṽ from the r principal tokens, grouped KV heads,
// biases, key scale of the layer; softmax accumulated in f32.
struct AtpAttentionArgs {
  TensorView x;  // [L, d_model], finite
  // nullopt: the layer's default_rank.
  std::optional<RankPolicy> rank;
  int64_t max_rank = 0;  // backend limit, 0 = none
  uint64_t seed = 0x9e3779b97f4a7c15ull;  // for a randomized basis
  DType output_dtype = DType::kF32;
};

struct AtpAttentionResult {
  Tensor y;  // [L, d_model]
  int64_t rank = 0;
  double captured_energy = 0.0;
};

// Exact softmax attention over all L keys (the reference and the fallback).
struct ExactAttentionArgs {
  TensorView x;  // [L, d_model], finite
  bool causal = false;
  DType output_dtype = DType::kF32;
};

// INVALID_ARGUMENT unless x is [L, config.d_model] and finite and the rank policy is valid.
absl::Status ValidateAtpAttention(const AttentionConfig& config, const AtpAttentionArgs& args);
absl::Status ValidateExactAttention(const AttentionConfig& config, const ExactAttentionArgs& args);

}  // namespace atp::kernels

#endif  // ATP_KERNELS_ATTENTION_H_
