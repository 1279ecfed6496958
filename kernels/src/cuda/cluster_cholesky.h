// Cholesky factorisation of a small SPD matrix in one launch of one thread-block cluster.
//
// The matrix stays in the cluster's distributed shared memory for the whole factorisation: row i
// belongs to block i % C (C = 16 where the device can co-schedule 16 blocks, else 8), which keeps
// the lower-triangular part of its rows. Each 16-column panel is broadcast to every block through
// DSMEM and factored redundantly there; each block then updates its own rows. One cluster barrier
// per panel, no host round trip. This replaces LaunchCholesky's two launches per 32-column block
// wherever the rows fit in shared memory (227 KiB per block: with 16 blocks n <= 580 in f64 and
// n <= 946 in f32; with 8 blocks n <= 477 and n <= 748).
//
// No absl here: nvcc compiles the .cu as C++17. Thread-safe: the per-device capability query is
// cached under a mutex; launches are as thread-safe as the CUDA runtime.
#ifndef ATP_KERNELS_CUDA_CLUSTER_CHOLESKY_H_
#define ATP_KERNELS_CUDA_CLUSTER_CHOLESKY_H_

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/device_types.h"

namespace atp::kernels::cuda {

// True when the current device can run LaunchClusterCholesky on an n x n matrix of type t: t is
// f32 or f64, n >= 1, the device launches thread-block clusters of 8 or 16 blocks, and each
// block's share of the matrix fits in its shared memory. The device query is made once per
// device and process.
bool ClusterCholeskySupported(DevType t, int64_t n);

// In-place Cholesky factorisation A = L·Lᵀ of the symmetric positive definite n x n matrix a (f32
// or f64, row-major, leading dimension n), the contract of LaunchCholesky: only the lower
// triangle (j <= i) of the row-major view is read and written, the strictly upper part is left
// untouched; *info (zeroed by the caller) becomes i + 1 for the first pivot i that is not
// positive, and the factorisation then goes on with pivot 1, so finite input gives finite output.
// If shift_factor != 0, a[i, i] += shift_factor · trace(a) (or += 1 when the trace is 0) first,
// the trace taken of the unshifted matrix in f64, as LaunchShiftDiagonalByTrace does; the shifted
// matrix is what is factored. f64 accumulates in f64, f32 in f32.
// Returns cudaSuccess without launching for n <= 0, cudaErrorNotSupported without launching when
// !ClusterCholeskySupported(t, n), and otherwise the launch error.
cudaError_t LaunchClusterCholesky(DevType t, void* a, int64_t n, double shift_factor, int* info,
                                  cudaStream_t stream);

}  // namespace atp::kernels::cuda

#endif  // ATP_KERNELS_CUDA_CLUSTER_CHOLESKY_H_
