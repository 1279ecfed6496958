// The solve step of a CholeskyQR pass, y ← y·R⁻¹ for a tall row-major y [rows, n] and the upper
// Cholesky factor R [n, n], in one launch.
//
// cuBLAS's trsm walks the n columns in sequence across the whole of y (0.23 ms for 4096 x 576 in
// f64 on the H200, ~1 GFLOP of arithmetic). The rows of y are independent right-hand sides, so
// here each block takes a strip of 32 rows into shared memory and solves it on its own, 32
// columns at a time (the diagonal block through its precomputed inverse, then the strip's later
// columns updated, both on the FP64 tensor cores), R streaming through shared memory in chunks.
// No block waits for another: 0.16 ms for 4096 x 576.
//
// No absl here: nvcc compiles the .cu as C++17. Thread-safe: the per-device shared-memory limit is
// cached under a mutex; launches are as thread-safe as the CUDA runtime.
#ifndef ATP_KERNELS_CUDA_TRIANGULAR_SOLVE_H_
#define ATP_KERNELS_CUDA_TRIANGULAR_SOLVE_H_

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/device_types.h"

namespace atp::kernels::cuda {

// True when the current device can run LaunchSolveUpperRight on an n-column y of type t: t is
// f64, n >= 1, and a strip of 32 rows of y and two chunks of R fit in one block's shared memory
// (n <= 615 with the H200's 227 KiB: r <= 600 at the default oversampling).
bool SolveUpperRightSupported(DevType t, int64_t n);

// y [rows, n] (row-major, leading dimension n) ← y · R⁻¹, where R(i, j) = r[i + j·n] for i <= j
// (the upper triangle of a column-major n x n matrix, as Potrf leaves it; the strictly lower part
// is not read). A zero or non-finite diagonal gives non-finite rows, as trsm does.
// Returns cudaSuccess without launching for rows <= 0 or n <= 0, cudaErrorNotSupported without
// launching when !SolveUpperRightSupported(t, n), and otherwise the launch error.
// workspace: SolveUpperRightWorkspaceBytes(n) bytes of device memory (the inverses of R's full
// 32 x 32 diagonal blocks), not read before it is written.
cudaError_t LaunchSolveUpperRight(DevType t, const void* r, int64_t n, void* y, int64_t rows,
                                  void* workspace, cudaStream_t stream);
size_t SolveUpperRightWorkspaceBytes(int64_t n);

}  // namespace atp::kernels::cuda

#endif  // ATP_KERNELS_CUDA_TRIANGULAR_SOLVE_H_
