// Deterministic generators of layers and inputs for demos and tests (`atp generate ...`).
//
// The same options and seed give the same bytes on every machine: the random numbers come from
// a fixed 64-bit generator and an explicit Box-Muller transform, not from <random>'s distributions.
// Thread-safe: pure functions.
#ifndef ATP_CLI_GENERATE_H_
#define ATP_CLI_GENERATE_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "atp/kernels/layer.h"
#include "atp/kernels/tensor.h"

namespace atp::cli {

// Largest element count of one generated tensor.
inline constexpr int64_t kMaxGeneratedElements = int64_t{1} << 28;

struct AttentionLayerOptions {
  int64_t d_model = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;  // 0 = num_heads
  int64_t head_dim = 0;      // 0 = d_model / num_heads
  bool bias = false;
  kernels::KeyScale key_scale = kernels::KeyScale::kNone;
  kernels::RankPolicy default_rank;
  kernels::DType dtype = kernels::DType::kF32;
  uint64_t seed = 1;
};

// Weights ~ N(0, 1/in_features) (so activations keep their scale), biases ~ N(0, 0.1²).
// INVALID_ARGUMENT for sizes that do not fit together or exceed kMaxGeneratedElements.
absl::StatusOr<kernels::LayerSpec> GenerateAttentionLayer(const AttentionLayerOptions& options);

struct LinearLayerOptions {
  int64_t in_features = 0;
  int64_t out_features = 0;
  bool bias = false;
  kernels::RankPolicy default_rank;
  kernels::DType dtype = kernels::DType::kF32;
  uint64_t seed = 1;
};

absl::StatusOr<kernels::LayerSpec> GenerateLinearLayer(const LinearLayerOptions& options);

struct InputOptions {
  enum class Profile {
    kLowRank,  // a shared offset + `components` directions with strengths 0.7^k + noise
    kExact,    // exactly rank `components` (strengths 0.7^k), plus `noise` if set
    kFlat,     // i.i.d. N(0, 1): no low-rank structure
  };
  int64_t length = 0;
  int64_t d_model = 0;
  Profile profile = Profile::kLowRank;
  int64_t components = 0;  // 0 = min(8, length, d_model)
  double noise = -1;       // < 0 = the profile's default (0.01 for lowrank, 0 for exact)
  kernels::DType dtype = kernels::DType::kF32;
  uint64_t seed = 1;
};

// An input X [length, d_model] scaled to a root-mean-square entry of 1 (before noise).
absl::StatusOr<kernels::Tensor> GenerateInput(const InputOptions& options);

}  // namespace atp::cli

#endif  // ATP_CLI_GENERATE_H_
