// Principal bases on the CPU (DESIGN.md §1): exact SVD in f64 (LAPACK dgesdd) or randomized block
// subspace iteration in f32 with Rayleigh–Ritz, the sign rule, the rank policies. Private to
// kernels/src/cpu/; the ops (Decompose, ATP attention, low-rank linear) call it. Thread-safe.
#ifndef ATP_KERNELS_SRC_CPU_PRINCIPAL_BASES_CPU_H_
#define ATP_KERNELS_SRC_CPU_PRINCIPAL_BASES_CPU_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "atp/kernels/exec_context.h"
#include "atp/kernels/principal_bases.h"
#include "atp/kernels/rank_policy.h"
#include "cpu/cpu_util.h"

namespace atp::kernels::cpu {

struct BasesF32 {
  int64_t rank = 0;
  std::vector<float> u;   // [L, rank], orthonormal columns, sign rule applied
  std::vector<double> s;  // [rank], descending
  std::vector<float> vt;  // [rank, d]
  double captured_energy = 0.0;
  double total_energy = 0.0;
  // The method that produced it (kExact or kRandomized; never kAuto).
  DecomposeMethod method = DecomposeMethod::kExact;
};

struct BasesRequest {
  const float* x = nullptr;  // [length, width] row-major, finite
  int64_t length = 0;
  int64_t width = 0;
  RankPolicy rank;
  DecomposeMethod method = DecomposeMethod::kAuto;
  int64_t max_rank = 0;  // backend limit, 0 = none
  uint64_t seed = 0;
};

// The top-r principal bases of x with r from the policy. Returns the ExecContext's status when it
// stops the work, INTERNAL when LAPACK fails.
absl::StatusOr<BasesF32> ComputePrincipalBases(const BasesRequest& request, const ExecContext& ctx,
                                               const CpuEnv& env);

// Whether kAuto takes the exact method for an L×d input and a subspace of `block` columns.
bool AutoPrefersExact(int64_t length, int64_t width, int64_t block);

// Columns of the randomized method's subspace for a rank r: r plus the oversampling, at most
// min(L, d).
int64_t SubspaceBlock(int64_t rank, int64_t length, int64_t width);

}  // namespace atp::kernels::cpu

#endif  // ATP_KERNELS_SRC_CPU_PRINCIPAL_BASES_CPU_H_
