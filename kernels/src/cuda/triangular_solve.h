// The solve step of a CholeskyQR pass, y ← y·R⁻¹ for a tall row-major y [rows, n] and the upper
// Cholesky factor R [n, n], in one launch.
//
// cuBLAS's trsm walks the n columns in sequence across the whole of y (0.23 ms for 4096 x 576 in
// f64 on the H200, ~1 GFLOP of arithmetic). The rows of y are independent right-hand sides, so
// here each block takes a strip of 32 rows into shared memory and solves it on its own, a lane
// per row, 32 columns at a time (the 32 x 32 diagonal block, then the strip's later columns
// updated with those 32), R streaming through shared memory in chunks. No block waits for
// another.
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
// (n <= 756 with the H200's 227 KiB).
bool SolveUpperRightSupported(DevType t, int64_t n);

// y [rows, n] (row-major, leading dimension n) ← y · R⁻¹, where R(i, j) = r[i + j·n] for i <= j
// (the upper triangle of a column-major n x n matrix, as Potrf leaves it; the strictly lower part
// is not read). A zero or non-finite diagonal gives non-finite rows, as trsm does.
// Returns cudaSuccess without launching for rows <= 0 or n <= 0, cudaErrorNotSupported without
// launching when !SolveUpperRightSupported(t, n), and otherwise the launch error.
cudaError_t LaunchSolveUpperRight(DevType t, const void* r, int64_t n, void* y, int64_t rows,
                                  cudaStream_t stream);

}  // namespace atp::kernels::cuda

#endif  // ATP_KERNELS_CUDA_TRIANGULAR_SOLVE_H_
