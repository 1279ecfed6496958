// Principal bases of one sequence X [L, d] (DESIGN.md §1): the top-r SVD X ≈ U_r Σ_r V_rᵀ with the
// sign rule applied, r chosen by a rank policy.
#ifndef ATP_KERNELS_PRINCIPAL_BASES_H_
#define ATP_KERNELS_PRINCIPAL_BASES_H_

#include <cstdint>

#include "absl/status/status.h"
#include "atp/kernels/rank_policy.h"
#include "atp/kernels/tensor.h"

namespace atp::kernels {

enum class DecomposeMethod {
  kAuto,        // exact where cheap, randomized otherwise
  kExact,       // full SVD, or an eigensolve of the Gram matrix in double precision
  kRandomized,  // randomized block subspace iteration with Rayleigh–Ritz
};

struct PrincipalBasesArgs {
  // [L, d], any dtype, finite. X = 0 is allowed: σ = 0 and the bases are then any orthonormal set
  // that obeys the sign rule.
  TensorView x;
  RankPolicy rank;
  DecomposeMethod method = DecomposeMethod::kAuto;
  // Largest r the backend allows (0 = none); policies are clipped to it.
  int64_t max_rank = 0;
  // Seed of the random start block of the randomized method; the same seed gives the same result.
  uint64_t seed = 0x9e3779b97f4a7c15ull;
  // dtype of u and vt (s is always f32).
  DType output_dtype = DType::kF32;
};

struct PrincipalBases {
  int64_t rank = 0;
  // Σ_{i<=r} σ_i² / ||X||_F² (1 for X = 0).
  double captured_energy = 0.0;
  // ||X||_F².
  double total_energy = 0.0;
  Tensor u;   // [L, r]
  Tensor s;   // [r] f32, descending
  Tensor vt;  // [r, d]
};

// INVALID_ARGUMENT naming the problem unless x is [L, d] with L, d >= 1, finite, and the policy is
// valid.
absl::Status ValidatePrincipalBases(const PrincipalBasesArgs& args);

}  // namespace atp::kernels

#endif  // ATP_KERNELS_PRINCIPAL_BASES_H_
