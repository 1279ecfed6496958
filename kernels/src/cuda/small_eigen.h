// A GPU-resident symmetric eigensolver for the small (n <= kSmallEigenMaxN) f64 matrices of the
// principal-basis Rayleigh–Ritz step, in four kernel launches and without a host round trip.
// cuSOLVER's syevd pays ~10 us of launch latency per column of its tridiagonalisation (5.4 ms at
// n = 528 on the H200, against ~0.1 ms of arithmetic); this solver pays a cluster barrier instead
// (2.3 ms at n = 528: bench/cuda/small_eigen_probe.cu, bench/cuda/NOTES.md v12).
//   1. Householder tridiagonalisation A = Q·T·Qᵀ (LAPACK's dsytd2 sign conventions) in ONE
//      thread-block cluster: the rows of A are spread cyclically over the blocks' shared memory,
//      one cluster barrier per column.
//   2. All eigenvalues of T by multisection of Sturm counts taken from the signs of T − xI's
//      leading minors (a warp per eigenvalue, 64 points per round), to 2u·‖T‖.
//   3. The eigenvectors of T for the eigenvalues first..n-1: an isolated eigenvalue's from a
//      twisted factorisation of T − λI; a group of close eigenvalues (gap <= kSmallEigenGroupGap·
//      ‖T‖) by inverse iteration (tridiagonal LU with partial pivoting, two solves),
//      re-orthogonalised by modified Gram–Schmidt within the group, as LAPACK's dstein does.
//   4. Back-transformation of those vectors by the reflectors (a warp per eigenvector), or Q
//      formed by the reflectors beside stages 2 and 3 and one GEMM after them.
// A group of more than kSmallEigenMaxGroup close eigenvalues among first..n-1 (the zero
// eigenvalues of a rank-deficient matrix, say) sets *fallback: the caller then solves the
// untouched input with cuSOLVER. No absl here (nvcc compiles the .cu as C++17).
#ifndef ATP_KERNELS_CUDA_SMALL_EIGEN_H_
#define ATP_KERNELS_CUDA_SMALL_EIGEN_H_

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace atp::kernels::cuda {

constexpr int64_t kSmallEigenMaxN = 608;
constexpr int kSmallEigenMaxGroup = 32;
// 1e-9: the eigenvectors of ungrouped neighbours are then orthogonal to ~u/1e-9 ≈ 2e-7, which
// the basis' Newton–Schulz step on the Ritz vectors removes; 1e-8 made the better converged
// Rayleigh–Ritz matrix of the shifted subspace iteration (clustered noise Ritz values) take
// 2.99 ms instead of 2.64 in larger sequential groups (bench/cuda/NOTES.md v11; 1e-7 -> 1e-8
// was v5's step).
constexpr double kSmallEigenGroupGap = 1e-9;

// Whether the current device can run the solver for this n (thread-block clusters, enough
// shared memory). Thread-safe; the device query is cached per device.
bool SmallEigenSupported(int64_t n);

// Bytes of device workspace LaunchSmallEigen needs for this n.
size_t SmallEigenWorkspaceBytes(int64_t n);

// a: symmetric n x n f64 (row-major = column-major), only read. lambda: n eigenvalues,
// ascending. vectors: n x n row-major; row i (first <= i < n) becomes the unit eigenvector of
// lambda[i] (rows below `first` are left as they are). *fallback: set to 0, then to 1 when the
// result must not be used (see above). workspace: SmallEigenWorkspaceBytes(n) bytes.
// cudaErrorNotSupported (nothing launched) when !SmallEigenSupported(n). All stages on `stream`.
cudaError_t LaunchSmallEigen(const double* a, int64_t n, int64_t first, double* lambda,
                             double* vectors, int* fallback, void* workspace, cudaStream_t stream);

// The same in stages, for a caller that overlaps them: Reduce (1), then OfT (2 and 3: lambda,
// *fallback and T's eigenvectors, SmallEigenVectorsOfT: element k of the vector of lambda[m] at
// k·n + m) and FormQ (Qᵀ row-major, SmallEigenQt) in any order or at once; the eigenvectors of
// a are then rows m of Zᵀ·Qᵀ with Z = SmallEigenVectorsOfT (m >= first).
// started, if not null: the tridiagonalisation writes 1 there when its cluster starts (see
// DeviceContext::SideWaitsForStart).
cudaError_t LaunchSmallEigenReduce(const double* a, int64_t n, void* workspace, cudaStream_t stream,
                                   unsigned* started = nullptr);
cudaError_t LaunchSmallEigenOfT(int64_t n, int64_t first, double* lambda, int* fallback,
                                void* workspace, cudaStream_t stream);
cudaError_t LaunchSmallEigenFormQ(int64_t n, void* workspace, cudaStream_t stream);
const double* SmallEigenVectorsOfT(const void* workspace, int64_t n);
const double* SmallEigenQt(const void* workspace, int64_t n);

}  // namespace atp::kernels::cuda

#endif  // ATP_KERNELS_CUDA_SMALL_EIGEN_H_
