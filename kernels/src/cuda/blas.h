// Dense linear algebra on the device for row-major matrices: GEMM through cuBLAS and the small
// factorisations (Cholesky, triangular solve, symmetric eigensolvers) through cuSOLVER.
//
// Precision rules (DESIGN.md §1): f32 operands use CUBLAS_COMPUTE_32F_PEDANTIC (true FP32, never
// TF32); f64 operands FP64; f16/bf16 operands tensor cores with f32 accumulation and an f32 or
// same-type result. Everything runs on the context's stream; nothing synchronises the host unless
// it says so. Not thread-safe (see DeviceContext).
#ifndef ATP_KERNELS_CUDA_BLAS_H_
#define ATP_KERNELS_CUDA_BLAS_H_

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "cuda/device_context.h"
#include "cuda/device_types.h"

namespace atp::kernels::cuda {

// A row-major device matrix: element (i, j) at data[i * ld + j].
struct ConstMat {
  DevType type = DevType::kF32;
  const void* data = nullptr;
  int64_t ld = 0;
};
struct Mat {
  DevType type = DevType::kF32;
  void* data = nullptr;
  int64_t ld = 0;
  operator ConstMat() const { return ConstMat{type, data, ld}; }  // NOLINT: a view
};

// C [m, n] = alpha · op(A) · op(B) + beta · C, op(A) [m, k], op(B) [k, n]; A and B of one type.
// With batch > 1, matrix b of each operand starts `stride_*` elements after matrix b - 1.
absl::Status Gemm(DeviceContext& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                  double alpha, ConstMat a, ConstMat b, double beta, Mat c, int64_t batch = 1,
                  int64_t stride_a = 0, int64_t stride_b = 0, int64_t stride_c = 0);

// Gram matrix into the upper triangle (column-major view) of w [n, n], true FP32/FP64 (syrk):
//   columns = true:  w = Yᵀ·Y for a row-major y [other, n]
//   columns = false: w = Y·Yᵀ for a row-major y [n, other]
absl::Status GramUpper(DeviceContext& ctx, DevType t, int64_t n, int64_t other, bool columns,
                       const void* y, void* w);

// Cholesky factor of the symmetric positive definite n x n matrix a (f32 or f64, contiguous):
// afterwards its upper triangle, read column-major, holds R with A = RᵀR. The factorisation's
// info (0, or the failing minor) is written to *info_dev without a host round trip.
// own = true: the own kernels without a host round trip — one thread-block cluster
// (cluster_cholesky.h) where the matrix fits in its shared memory, else the blocked kernel
// (device_kernels.h, two launches per 32-column block); false: cusolverDnXpotrf. *info_dev must
// be 0 before an own factorisation.
absl::Status Potrf(DeviceContext& ctx, DevType t, int64_t n, void* a, int* info_dev,
                   bool own = false);

// With R from Potrf (n x n) and a row-major matrix y:
//   columns = true:  y [rows, n] ← y · R⁻¹      (orthonormalises the columns of y)
//   columns = false: y [n, cols] ← R⁻ᵀ · y      (orthonormalises the rows of y)
// own = true: the columns = true solve by the own strip kernel (triangular_solve.h) where it
// applies (f64); everything else by cuBLAS's trsm.
absl::Status SolveCholeskyFactor(DeviceContext& ctx, DevType t, int64_t n, const void* r,
                                 bool columns, int64_t other, void* y, bool own = false);

enum class EigSolver {
  kSyevd,        // cuSOLVER divide and conquer (cusolverDnXsyevd)
  kSyevj,        // cuSOLVER Jacobi (cusolverDn{S,D}syevj)
  kSyevBatched,  // cuSOLVER's GPU-only batched solver with a batch of one (cusolverDnXsyevBatched)
  kGesvdp,       // SVD by polar decomposition (cusolverDnXgesvdp); for positive semidefinite a
  kResident,     // own GPU-resident solver (small_eigen.h) for f64 and n <= kSmallEigenMaxN,
                 // syevd where it does not apply or reports a group of close eigenvalues
};
const char* EigSolverName(EigSolver solver);

// Eigen-decomposition of the symmetric n x n matrix a (f32 or f64, contiguous): eigenvalues
// ascending into w (n values of type t), eigenvectors overwrite a as rows (row j of the row-major
// view is the eigenvector of w[j]); with vectors = false only w (syevd only). info to *info_dev.
// syevd, syevj, gesvdp and resident synchronise the host internally.
// beside, when set, is called once with the side stream forked from the main stream at the start
// of the solve, to queue independent work there (in a SideStreamScope of its own): the resident
// solver calls it just after its one-cluster tridiagonalisation is queued (the side work then fills
// the SMs the cluster leaves).
absl::Status SymmetricEigen(DeviceContext& ctx, EigSolver solver, DevType t, int64_t n, void* a,
                            void* w, int* info_dev, bool vectors = true,
                            const std::function<absl::Status()>& beside = {});

}  // namespace atp::kernels::cuda

#endif  // ATP_KERNELS_CUDA_BLAS_H_
