// Principal bases on the device (DESIGN.md §1 and §4): the top-r SVD of X [L, d] with the sign
// rule, r chosen by a rank policy.
//
// Both methods work on the Gram matrix of the short side, G = AᵀA (m x m, m = min(L, d), A = X
// when L >= d, else Xᵀ), whose eigenvectors are the "eigen side" of the SVD (V when L >= d, U
// otherwise); the other side is X·v / σ, re-orthonormalised.
//   exact:      G in f64, a full cuSOLVER eigensolve (syevd) of G.
//   randomized: block subspace iteration on G (shifted up so that rank-deficient inputs stay
//               well-conditioned, and from the second product down by a spectral shift μ that
//               speeds convergence up where the unwanted spectrum reaches towards 0, verified at
//               the end) with one CholeskyQR pass after each product (the last one finished by a
//               Newton–Schulz step, or more passes where the block is far from orthonormal), then
//               Rayleigh–Ritz with a k x k eigensolve, k = r + oversampling.
//               G for an even m >= 1024 in 4 x 4 or 2 x 2 blocks (10/16 or 3/4 of the flops).
//               f16/bf16 inputs: G in f32 from a tensor-core Gram product, products with G
//               through bf16 splits of G (2 or 3 parts).
//               f32 inputs: G and its products in f64. The small factorisations (CholeskyQR,
//               eigensolve, Ritz vectors, the other side) are f64 on every path; the k x k
//               eigensolve is the GPU-resident one of small_eigen.h where it applies.
// Sign rule (identical to the CPU backend's): t = 1ᵀu_i; if |t| < 1e-6·√L, t = the entry of u_i
// of largest magnitude (first on ties); if t < 0 both u_i and v_i are negated.
//
// Not thread-safe (runs on a DeviceContext).
#ifndef ATP_KERNELS_CUDA_BASIS_H_
#define ATP_KERNELS_CUDA_BASIS_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "atp/kernels/principal_bases.h"
#include "atp/kernels/rank_policy.h"
#include "cuda/blas.h"
#include "cuda/device_context.h"

namespace atp::kernels::cuda {

struct BasisOptions {
  RankPolicy policy;
  int64_t backend_max_rank = 0;
  DecomposeMethod method = DecomposeMethod::kAuto;
  uint64_t seed = 0x9e3779b97f4a7c15ull;

  // Randomized method: products with G before the Rayleigh–Ritz product, extra columns (16: at
  // L = 16384, d = 4096, r = 512 the reconstruction is 1.0064x the optimum, 1.0053x with 64, for
  // a 13% shorter basis — bench/cuda/NOTES.md, v8), CholeskyQR
  // passes between products and before Rayleigh–Ritz, bf16 split depth of the products with G (0:
  // true FP32 GEMM) in the iterations and in the Rayleigh–Ritz product, and the k x k eigensolver.
  // Products with G: at most power_iterations, at least min_power_iterations; in between the
  // iteration stops once the residual ||X||_F^2 - trace(QᵀGQ) falls by less than
  // adaptive_tolerance of itself (0: always power_iterations).
  // Spectral shift: from the second product on, the products are with G − μI, μ = shift_fraction ·
  // (the residual after the first product) / (m − k), on the device (0: no shift). Shifting by
  // any μ <= λ_{k+1}/2 never slows the convergence of the wanted directions and speeds it up where
  // the unwanted spectrum reaches down towards 0 (the benchmark's noise: 4 shifted products give
  // 1.0059x the optimal reconstruction at L = 16384, r = 512, 5 unshifted 1.0064x, 4 unshifted
  // 1.0087x — NOTES v11). The residual's mean over the other m − k directions is only an estimate
  // of λ_{k+1}, so the result is verified: μ must be at most half the smallest Ritz value
  // θ_k <= λ_k of the final block (then the iteration was never slower than an unshifted one with
  // k − 1 columns); otherwise the basis is computed again without a shift and with
  // kUnshiftedExtraProducts products more (DeviceBasis::shift_rejected). Not fewer products (NOTES
  // v12): 3 shifted products meet the 1% rule at r = 512 (1.0068-1.0090x for L = 16384..65536) but
  // not at r = 1024 (1.013-1.014x), and a fraction of 0.65 (1.0078x with 3 products at L = 16384)
  // fails the check on the flatter noise of L >= 32768.
  double shift_fraction = 0.5;
  // The rejected run's extra products: the unshifted iteration converges more slowly. With one
  // more, the numpy model of the benchmark's input gives 1.0105x the optimum at L/d = 16, r/d =
  // 1/4 (the shifted default 1.0075x); with two, measured on the H200 (a fraction of 1e6, always
  // rejected): 1.0081x at L = 32768, 1.0088x at L = 65536 for r = 1024, 1.0048x at L = 16384,
  // r = 512 (NOTES v13).
  static constexpr int kUnshiftedExtraProducts = 2;
  int power_iterations = 4;
  int min_power_iterations = 2;
  double adaptive_tolerance = 2e-3;
  int oversampling = 16;
  int cholqr_passes_inner = 1;
  int cholqr_passes_final = 2;
  // The final orthonormalisation: after its first CholeskyQR pass, ‖QᵀQ − I‖_F is measured and
  // brought below 1e-10 by third-order Newton–Schulz steps Q ← Q·(I − E/2 + 3E²/8), E = QᵀQ − I
  // (a tall GEMM and a k x k one each, the error e → ~(5/8)·e³) while it is small, by further
  // CholeskyQR passes while it is not, at most cholqr_passes_final + 1 steps in all. false:
  // exactly cholqr_passes_final passes.
  bool final_newton_schulz = true;
  int iteration_split = 2;
  // The first rough_products products with G take one bf16 level (one GEMM instead of three)
  // when iteration_split > 1: the later, accurate products damp what its rounding adds. H200
  // (NOTES v13), reconstruction / optimum at L = 16384, r = 512: 1.00587 with 0, 1.00591 with 1
  // (products 0.61 -> 0.55 ms), 1.00621 with 2, 1.00690 with 3; at r = 1024 (L = 16384..65536)
  // 1 costs at most +0.00005, 2 reaches 1.0096 and 3 1.0123 (past the 1% rule).
  int rough_products = 1;
  int rayleigh_ritz_split = 3;
  EigSolver eig = EigSolver::kResident;
  // The own kernels in CholeskyQR: the Cholesky factorisation (cluster or blocked, see Potrf)
  // and the solve with its factor (SolveCholeskyFactor); false: cuSOLVER's potrf and cuBLAS's
  // trsm.
  bool own_cholesky = true;
  // kAuto uses the exact method when min(L, d) <= this or when k >= min(L, d) / 2 (the CPU
  // backend's rule, so that small inputs take the exact path on both).
  int64_t exact_max_dim = 128;

  // Which sides the caller needs as explicit matrices (the sign rule may compute U anyway).
  bool need_u = true;
  bool need_v = true;

  // Benchmarks: called with a stage name at each stage boundary (records an event).
  std::function<void(const char* stage)> mark;
  // Called once with the side stream forked from the main stream (work it queues there must
  // not depend on the basis): at the start of the k x k eigensolve (kEigensolve; with the
  // resident solver just after its one-cluster tridiagonalisation is queued, so that the cluster
  // is placed before the side work fills the other SMs), or after the first product with G
  // (kFirstProduct; then it shares the GPU with the CholeskyQR passes). The exact method calls it
  // after the Gram product.
  std::function<absl::Status()> beside;
  // kNever: not called (benchmarks: the caller then does that work after the basis).
  enum class BesideAt { kEigensolve, kFirstProduct, kNever };
  BesideAt beside_at = BesideAt::kEigensolve;
};

struct DeviceBasis {
  int64_t rank = 0;
  int64_t length = 0;  // L
  int64_t width = 0;   // d
  bool exact = false;
  DevType type = DevType::kF64;  // of ut and vt
  DeviceBuffer ut;               // [rank, L], rows u_iᵀ; empty unless computed
  DeviceBuffer vt;               // [rank, d], rows v_iᵀ; empty unless computed
  std::vector<double> sigma;     // rank values, descending
  DeviceBuffer sigma_dev;        // f64 [rank]
  std::vector<double> u_sums;    // 1ᵀu_i after the sign rule
  DeviceBuffer u_sums_dev;       // f64 [rank]
  double total_energy = 0.0;     // ||X||_F^2
  double captured_energy = 1.0;  // sum sigma^2 / total (1 for X = 0)
  // Randomized method, for benchmarks and tests: products with G (Rayleigh–Ritz's included),
  // CholeskyQR passes and Newton–Schulz steps of the eigen side.
  int products = 0;
  int cholqr_passes = 0;
  int newton_schulz_steps = 0;
  // The spectral shift μ the products used (0: none), and whether a shifted run failed its check
  // and the basis was computed again without a shift.
  double shift = 0.0;
  bool shift_rejected = false;
};

// x: [length, width] row-major on the device, any DevType but kF64, finite (validated by the
// caller). INTERNAL when a factorisation fails (it names the stage and the info value).
absl::StatusOr<DeviceBasis> ComputePrincipalBases(DeviceContext& ctx, ConstMat x, int64_t length,
                                                  int64_t width, const BasisOptions& options);

}  // namespace atp::kernels::cuda

#endif  // ATP_KERNELS_CUDA_BASIS_H_
