// Launchers of the CUDA backend's own kernels (device_kernels.cu).
//
// Each launcher enqueues its kernel on `stream` and returns the launch error (cudaSuccess or what
// cudaGetLastError reports); the host code translates it into an absl::Status. Matrices are
// row-major with a leading dimension `ld` in elements. No absl here: nvcc compiles the .cu as
// C++17. Thread-safe as far as the CUDA runtime is (no state of their own).
#ifndef ATP_KERNELS_CUDA_DEVICE_KERNELS_H_
#define ATP_KERNELS_CUDA_DEVICE_KERNELS_H_

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/device_types.h"

namespace atp::kernels::cuda {

// dst[i] = src[i] converted (round to nearest even; NaN stays NaN).
cudaError_t LaunchConvert(DevType src_t, const void* src, DevType dst_t, void* dst, int64_t n,
                          cudaStream_t stream);

// dst[i, j] = scale * src[i, j] for a rows x cols block, converted.
cudaError_t LaunchCopy2D(DevType src_t, const void* src, int64_t ld_src, DevType dst_t, void* dst,
                         int64_t ld_dst, int64_t rows, int64_t cols, double scale,
                         cudaStream_t stream);

// dst[i, j] = value for a rows x cols block.
cudaError_t LaunchFill2D(DevType t, void* dst, int64_t ld, int64_t rows, int64_t cols, double value,
                         cudaStream_t stream);

// Splits src (f32 or f64) into `levels` (1..3) half-precision parts: part 0 = round(src), part
// l = round(src - parts 0..l-1), so that their sum carries about 8 (bf16) or 11 (f16) more
// significant bits per part. half_t is kF16 or kBF16; unused part pointers may be null.
cudaError_t LaunchSplit(DevType src_t, const void* src, DevType half_t, void* part0, void* part1,
                        void* part2, int levels, int64_t n, cudaStream_t stream);

// dst[i] = a standard normal sample that depends only on (seed, offset + i).
cudaError_t LaunchFillGaussian(DevType t, void* dst, int64_t n, uint64_t seed, uint64_t offset,
                               cudaStream_t stream);

// y[i, j] += (row_coef ? row_coef[i] : 1) * bias[j]; bias and row_coef are f32.
cudaError_t LaunchAddRowOuter(DevType t, void* y, int64_t ld, int64_t rows, int64_t cols,
                              const float* row_coef, const float* bias, cudaStream_t stream);

// out[j] = sum_i x[i, j] in f64, deterministic. `partial` must hold
// ColumnSumsChunks(rows) * cols doubles.
int64_t ColumnSumsChunks(int64_t rows);
cudaError_t LaunchColumnSums(DevType t, const void* x, int64_t ld, int64_t rows, int64_t cols,
                             double* partial, double* out, cudaStream_t stream);

// Per-row reductions in f64, deterministic: kDot: out[i] = sum_j x[i, j] * vec[j] (vec null: 1);
// kSumSquares: out[i] = sum_j x[i, j]^2.
enum class RowReduce { kDot, kSumSquares };
cudaError_t LaunchRowReduce(DevType t, const void* x, int64_t ld, int64_t rows, int64_t cols,
                            const double* vec, RowReduce mode, double* out, cudaStream_t stream);

// out[i] = the entry of row i with the largest magnitude (the first one on ties), in f64: the
// sign rule's choice for a column of U whose sum vanishes (DESIGN.md §1).
cudaError_t LaunchRowLargestEntry(DevType t, const void* x, int64_t ld, int64_t rows, int64_t cols,
                                  double* out, cudaStream_t stream);

// x[i, j] *= scale * (row_scale ? row_scale[i] : 1).
cudaError_t LaunchScaleRows(DevType t, void* x, int64_t ld, int64_t rows, int64_t cols,
                            const double* row_scale, double scale, cudaStream_t stream);

// dst [cols, rows] = transpose of src [rows, cols], converted; leading dimensions ld_src >= cols
// and ld_dst >= rows (0: contiguous).
cudaError_t LaunchTransposeConvert(DevType src_t, const void* src, int64_t rows, int64_t cols,
                                   DevType dst_t, void* dst, cudaStream_t stream,
                                   int64_t ld_src = 0, int64_t ld_dst = 0);

// dst[i, :] = src[src_rows - 1 - i, :] for i < count (both contiguous with `cols` columns).
cudaError_t LaunchGatherRowsReversed(DevType t, const void* src, int64_t src_rows, int64_t cols,
                                     int64_t count, void* dst, cudaStream_t stream);

// a (f32 or f64, n x n): a[i, i] += factor * trace(a), or += 1 when the trace is 0 (so that a
// Cholesky of a zero Gram matrix does not break down). One block; no host round trip.
cudaError_t LaunchShiftDiagonalByTrace(DevType t, void* a, int64_t n, int64_t lda, double factor,
                                       cudaStream_t stream);

// out[0] = trace(a) in f64 (a is f32 or f64). One block.
cudaError_t LaunchTrace(DevType t, const void* a, int64_t n, int64_t lda, double* out,
                        cudaStream_t stream);

// out[0] = factor * sqrt(sum_i v[i]), or 1 when the sum is 0 (one block; f64).
cudaError_t LaunchScaledRootOfSum(const double* v, int64_t n, double factor, double* out,
                                  cudaStream_t stream);

// y[i] += factor * scalar[0] * x[i] (f32 or f64; scalar on the device).
cudaError_t LaunchAxpyDeviceScalar(DevType t, void* y, const void* x, int64_t n,
                                   const double* scalar, double factor, cudaStream_t stream);

// The subspace iteration's spectral shift (basis.cc), on the device: from the block sums `partial`
// of LaunchDotPartials of an orthonormal block Q [m, k] and its product (G + s[1]·I)·Q, the energy
// Q captures is Σ partial − s[1]·k and the residual s[0] − energy (s[0] = trace(G)); sets
// s[2] = fraction · max(residual, 0) / (m − k) (0 when m <= k or when that is not above s[1]) and
// s[1] −= s[2].
cudaError_t LaunchEstimateShift(const double* partial, double* scalars, int64_t k, int64_t m,
                                double fraction, cudaStream_t stream);

// out[i] = product[i] + scalar[0] * q[i] (product f32, the rest f64; scalar on the device): an
// f32 product with G turned into the f64 product with G + cI in one pass.
cudaError_t LaunchShiftedProduct(const float* product, const double* q, const double* scalar,
                                 double* out, int64_t n, cudaStream_t stream);

// a = (a + a^T) / 2 for an n x n contiguous f32 or f64 matrix.
cudaError_t LaunchSymmetrize(DevType t, void* a, int64_t n, cudaStream_t stream);

// Row softmax of s [rows, cols] (f32): out[i, j] = softmax_j(scale * s[i, j]) with max
// subtraction, accumulated in f32. Row i is query (query_offset + i % rows_per_head); with
// `causal`, key j > query is masked out. out (f32, f16 or bf16) may alias s when it is f32.
cudaError_t LaunchSoftmaxRows(const float* s, int64_t rows, int64_t cols, int64_t rows_per_head,
                              int64_t query_offset, float scale, bool causal, DevType out_t,
                              void* out, cudaStream_t stream);

// In-place Cholesky factorisation A = L·Lᵀ of the symmetric positive definite n x n matrix a (f32
// or f64), reading and writing only the lower triangle of the row-major view (that is the upper
// triangle of the column-major view: the result is cuSOLVER's upper R = Lᵀ). Blocked, right-
// looking, two launches per 32-column block and no host round trip. *info (zeroed by the caller)
// becomes i + 1 for the first pivot i that is not positive (the factorisation then goes on with
// pivot 1).
cudaError_t LaunchCholesky(DevType t, void* a, int64_t n, int* info, cudaStream_t stream);

// partial[b] for b < kDotBlocks: block sums of a[i]·b[i] (f64); the caller adds them up.
constexpr int kDotBlocks = 256;
cudaError_t LaunchDotPartials(const double* a, const double* b, int64_t n, double* partial,
                              cudaStream_t stream);

// One Newton–Schulz step towards orthonormality for a nearly orthonormal Q (f64): from its Gram
// matrix W = QᵀQ (n x n, the upper triangle of the column-major view, as GramUpper writes it),
// m = 1.5·I − 0.5·W as a full n x n matrix (Q·m is orthonormal up to O(‖W − I‖²)), and
// partial[b], b < kDotBlocks, block sums of the squared entries of W − I (‖W − I‖_F² in total),
// and, if half_e is not null, half_e = (W − I)/2 as a full n x n matrix (for the third-order step
// m + 1.5·half_e², orthonormal up to O(‖W − I‖³)).
cudaError_t LaunchNewtonSchulzFactor(const double* w, int64_t n, double* m, double* partial,
                                     cudaStream_t stream, double* half_e = nullptr);

// *flag is set to 1 if any of the n elements is NaN or infinite (it is never cleared).
cudaError_t LaunchFlagNonFinite(DevType t, const void* x, int64_t n, int* flag,
                                cudaStream_t stream);

}  // namespace atp::kernels::cuda

#endif  // ATP_KERNELS_CUDA_DEVICE_KERNELS_H_
