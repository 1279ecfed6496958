// The CUDA backend's own kernels: conversions, reductions, the random start block, row softmax.
// These are the plain versions; the heavy arithmetic lives in cuBLAS/cuSOLVER/cuDNN.
#include "cuda/device_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace atp::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ double ToD(float x) { return static_cast<double>(x); }
__device__ __forceinline__ double ToD(double x) { return x; }
__device__ __forceinline__ double ToD(__half x) { return static_cast<double>(__half2float(x)); }
__device__ __forceinline__ double ToD(__nv_bfloat16 x) {
  return static_cast<double>(__bfloat162float(x));
}

template <typename T>
__device__ __forceinline__ T FromD(double x);
template <>
__device__ __forceinline__ float FromD<float>(double x) {
  return static_cast<float>(x);
}
template <>
__device__ __forceinline__ double FromD<double>(double x) {
  return x;
}
template <>
__device__ __forceinline__ __half FromD<__half>(double x) {
  return __double2half(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromD<__nv_bfloat16>(double x) {
  return __double2bfloat16(x);
}

template <typename T>
__device__ __forceinline__ T FromF(float x) {
  return FromD<T>(static_cast<double>(x));
}
template <>
__device__ __forceinline__ float FromF<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromF<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ __half FromF<__half>(float x) {
  return __float2half_rn(x);
}

#define ATP_DISPATCH_TYPE(t, T, ...)     \
  switch (t) {                           \
    case DevType::kF32: {                \
      using T = float;                   \
      __VA_ARGS__;                       \
      break;                             \
    }                                    \
    case DevType::kF64: {                \
      using T = double;                  \
      __VA_ARGS__;                       \
      break;                             \
    }                                    \
    case DevType::kF16: {                \
      using T = __half;                  \
      __VA_ARGS__;                       \
      break;                             \
    }                                    \
    case DevType::kBF16: {               \
      using T = __nv_bfloat16;           \
      __VA_ARGS__;                       \
      break;                             \
    }                                    \
  }

// The same for the types a dense factorisation works in (f32, f64).
#define ATP_DISPATCH_FLOAT(t, T, ...)                    \
  if ((t) == DevType::kF64) {                            \
    using T = double;                                    \
    __VA_ARGS__;                                         \
  } else if ((t) == DevType::kF32) {                     \
    using T = float;                                     \
    __VA_ARGS__;                                         \
  } else {                                               \
    return cudaErrorInvalidValue;                        \
  }

unsigned GridFor(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, int64_t{1} << 20));
}

__device__ __forceinline__ int64_t GlobalIndex() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t GlobalStride() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

// Block-wide reductions with a fixed order (deterministic). blockDim.x must be a multiple of 32
// and at most 1024.
__device__ double BlockSum(double v) {
  __shared__ double warp_sums[32];
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  __syncthreads();  // warp_sums may still be read by a previous call
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  v = threadIdx.x < warps ? warp_sums[threadIdx.x] : 0.0;
  if (warp == 0) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    if (lane == 0) warp_sums[0] = v;
  }
  __syncthreads();
  return warp_sums[0];
}

__device__ float BlockMax(float v) {
  __shared__ float warp_max[32];
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, off));
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) warp_max[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  v = threadIdx.x < warps ? warp_max[threadIdx.x] : -INFINITY;
  if (warp == 0) {
    for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, off));
    if (lane == 0) warp_max[0] = v;
  }
  __syncthreads();
  return warp_max[0];
}

__device__ float BlockSumF(float v) {
  __shared__ float warp_sums[32];
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  v = threadIdx.x < warps ? warp_sums[threadIdx.x] : 0.0f;
  if (warp == 0) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    if (lane == 0) warp_sums[0] = v;
  }
  __syncthreads();
  return warp_sums[0];
}

template <typename S, typename D>
__global__ void ConvertKernel(const S* src, D* dst, int64_t n) {
  for (int64_t i = GlobalIndex(); i < n; i += GlobalStride()) dst[i] = FromD<D>(ToD(src[i]));
}

template <typename S, typename D>
__global__ void Copy2DKernel(const S* src, int64_t ld_src, D* dst, int64_t ld_dst, int64_t rows,
                             int64_t cols, double scale) {
  const int64_t n = rows * cols;
  for (int64_t idx = GlobalIndex(); idx < n; idx += GlobalStride()) {
    const int64_t i = idx / cols;
    const int64_t j = idx - i * cols;
    dst[i * ld_dst + j] = FromD<D>(scale * ToD(src[i * ld_src + j]));
  }
}

template <typename T>
__global__ void Fill2DKernel(T* dst, int64_t ld, int64_t rows, int64_t cols, double value) {
  const int64_t n = rows * cols;
  const T v = FromD<T>(value);
  for (int64_t idx = GlobalIndex(); idx < n; idx += GlobalStride()) {
    const int64_t i = idx / cols;
    dst[i * ld + (idx - i * cols)] = v;
  }
}

template <typename S, typename H>
__global__ void SplitKernel(const S* src, H* p0, H* p1, H* p2, int levels, int64_t n) {
  for (int64_t i = GlobalIndex(); i < n; i += GlobalStride()) {
    double x = ToD(src[i]);
    H* parts[3] = {p0, p1, p2};
#pragma unroll
    for (int l = 0; l < 3; ++l) {
      if (l < levels) {
        const H h = FromD<H>(x);
        parts[l][i] = h;
        x -= ToD(h);
      }
    }
  }
}

__device__ __forceinline__ uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

template <typename T>
__global__ void GaussianKernel(T* dst, int64_t n, uint64_t seed, uint64_t offset) {
  for (int64_t i = GlobalIndex(); i < n; i += GlobalStride()) {
    const uint64_t h1 = SplitMix64(seed ^ SplitMix64(offset + static_cast<uint64_t>(i)));
    const uint64_t h2 = SplitMix64(h1);
    const double u1 = (static_cast<double>(h1 >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
    const double u2 = static_cast<double>(h2 >> 11) * 0x1.0p-53;          // [0, 1)
    dst[i] = FromD<T>(sqrt(-2.0 * log(u1)) * cospi(2.0 * u2));
  }
}

template <typename T>
__global__ void AddRowOuterKernel(T* y, int64_t ld, int64_t rows, int64_t cols,
                                  const float* row_coef, const float* bias) {
  const int64_t n = rows * cols;
  for (int64_t idx = GlobalIndex(); idx < n; idx += GlobalStride()) {
    const int64_t i = idx / cols;
    const int64_t j = idx - i * cols;
    const float c = row_coef ? row_coef[i] : 1.0f;
    T* p = y + i * ld + j;
    *p = FromD<T>(ToD(*p) + static_cast<double>(c) * static_cast<double>(bias[j]));
  }
}

constexpr int64_t kColumnChunkRows = 256;

template <typename T>
__global__ void ColumnPartialKernel(const T* x, int64_t ld, int64_t rows, int64_t cols,
                                    double* partial) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  if (j >= cols) return;
  const int64_t begin = chunk * kColumnChunkRows;
  const int64_t end = min(rows, begin + kColumnChunkRows);
  double acc = 0.0;
  for (int64_t i = begin; i < end; ++i) acc += ToD(x[i * ld + j]);
  partial[chunk * cols + j] = acc;
}

__global__ void ColumnFinishKernel(const double* partial, int64_t chunks, int64_t cols,
                                   double* out) {
  const int64_t j = GlobalIndex();
  if (j >= cols) return;
  double acc = 0.0;
  for (int64_t c = 0; c < chunks; ++c) acc += partial[c * cols + j];
  out[j] = acc;
}

template <typename T>
__global__ void RowReduceKernel(const T* x, int64_t ld, int64_t cols, const double* vec,
                                RowReduce mode, double* out) {
  const int64_t i = blockIdx.x;
  const T* row = x + i * ld;
  double acc = 0.0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const double v = ToD(row[j]);
    acc += mode == RowReduce::kSumSquares ? v * v : (vec ? v * vec[j] : v);
  }
  acc = BlockSum(acc);
  if (threadIdx.x == 0) out[i] = acc;
}

// (|value|, index) of the larger entry, the first one on ties.
__device__ __forceinline__ void KeepLarger(double& a, int64_t& j, double& v, double a2, int64_t j2,
                                           double v2) {
  if (a2 > a || (a2 == a && j2 < j)) {
    a = a2;
    j = j2;
    v = v2;
  }
}

template <typename T>
__global__ void RowLargestEntryKernel(const T* x, int64_t ld, int64_t cols, double* out) {
  __shared__ double sa[32], sv[32];
  __shared__ int64_t sj[32];
  const T* row = x + static_cast<int64_t>(blockIdx.x) * ld;
  double a = -1.0, v = 0.0;
  int64_t j = cols;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const double e = ToD(row[c]);
    KeepLarger(a, j, v, fabs(e), c, e);
  }
  for (int off = 16; off > 0; off >>= 1) {
    const double a2 = __shfl_down_sync(0xffffffffu, a, off);
    const int64_t j2 = __shfl_down_sync(0xffffffffu, j, off);
    const double v2 = __shfl_down_sync(0xffffffffu, v, off);
    KeepLarger(a, j, v, a2, j2, v2);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sa[warp] = a;
    sj[warp] = j;
    sv[warp] = v;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w)
      KeepLarger(a, j, v, sa[w], sj[w], sv[w]);
    out[blockIdx.x] = v;
  }
}

template <typename T>
__global__ void ScaleRowsKernel(T* x, int64_t ld, int64_t rows, int64_t cols,
                                const double* row_scale, double scale) {
  const int64_t n = rows * cols;
  for (int64_t idx = GlobalIndex(); idx < n; idx += GlobalStride()) {
    const int64_t i = idx / cols;
    T* p = x + i * ld + (idx - i * cols);
    const double s = row_scale ? scale * row_scale[i] : scale;
    *p = FromD<T>(ToD(*p) * s);
  }
}

template <typename S, typename D>
__global__ void TransposeKernel(const S* src, int64_t ld_src, int64_t rows, int64_t cols, D* dst,
                                int64_t ld_dst) {
  __shared__ double tile[32][33];
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * 32;
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * 32;
  for (int k = threadIdx.y; k < 32; k += blockDim.y) {
    const int64_t r = row0 + k;
    const int64_t c = col0 + threadIdx.x;
    if (r < rows && c < cols) tile[k][threadIdx.x] = ToD(src[r * ld_src + c]);
  }
  __syncthreads();
  for (int k = threadIdx.y; k < 32; k += blockDim.y) {
    const int64_t c = col0 + k;             // row of dst
    const int64_t r = row0 + threadIdx.x;   // column of dst
    if (r < rows && c < cols) dst[c * ld_dst + r] = FromD<D>(tile[threadIdx.x][k]);
  }
}

template <typename T>
__global__ void GatherReversedKernel(const T* src, int64_t src_rows, int64_t cols, int64_t count,
                                     T* dst) {
  const int64_t n = count * cols;
  for (int64_t idx = GlobalIndex(); idx < n; idx += GlobalStride()) {
    const int64_t i = idx / cols;
    const int64_t j = idx - i * cols;
    dst[idx] = src[(src_rows - 1 - i) * cols + j];
  }
}

template <typename T>
__global__ void ShiftDiagonalKernel(T* a, int64_t n, int64_t lda, double factor) {
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += ToD(a[i * lda + i]);
  const double trace = BlockSum(acc);
  const double shift = trace != 0.0 ? factor * trace : 1.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    a[i * lda + i] = FromD<T>(ToD(a[i * lda + i]) + shift);
  }
}

template <typename T>
__global__ void TraceKernel(const T* a, int64_t n, int64_t lda, double* out) {
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += ToD(a[i * lda + i]);
  acc = BlockSum(acc);
  if (threadIdx.x == 0) out[0] = acc;
}

__global__ void RootOfSumKernel(const double* v, int64_t n, double factor, double* out) {
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += v[i];
  acc = BlockSum(acc);
  if (threadIdx.x == 0) out[0] = acc > 0.0 ? factor * sqrt(acc) : 1.0;
}

template <typename T>
__global__ void AxpyScalarKernel(T* y, const T* x, int64_t n, const double* scalar,
                                 double factor) {
  const double s = factor * scalar[0];
  for (int64_t i = GlobalIndex(); i < n; i += GlobalStride()) {
    y[i] = FromD<T>(ToD(y[i]) + s * ToD(x[i]));
  }
}

__global__ void EstimateShiftKernel(const double* partial, int blocks, double* s, int64_t k,
                                    int64_t m, double fraction) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  double sum = 0.0;
  for (int b = 0; b < blocks; ++b) sum += partial[b];
  const double energy = sum - s[1] * static_cast<double>(k);
  const double residual = fmax(s[0] - energy, 0.0);
  double mu = m > k ? fraction * residual / static_cast<double>(m - k) : 0.0;
  // Not below the products' own shift s[1] (G's rounding level): there the residual is rounding
  // (a matrix of rank < k) and a shift would only cost the final check a recomputation.
  if (!(mu > s[1])) mu = 0.0;
  s[2] = mu;
  s[1] -= mu;
}

__global__ void ShiftedProductKernel(const float* product, const double* q, const double* scalar,
                                     double* out, int64_t n) {
  const double s = scalar[0];
  for (int64_t i = GlobalIndex(); i < n; i += GlobalStride()) {
    out[i] = fma(s, q[i], static_cast<double>(product[i]));
  }
}

template <typename T>
__global__ void SymmetrizeKernel(T* a, int64_t n) {
  const int64_t total = n * n;
  for (int64_t idx = GlobalIndex(); idx < total; idx += GlobalStride()) {
    const int64_t i = idx / n;
    const int64_t j = idx - i * n;
    if (i < j) {
      const double v = 0.5 * (ToD(a[i * n + j]) + ToD(a[j * n + i]));
      a[i * n + j] = FromD<T>(v);
      a[j * n + i] = FromD<T>(v);
    }
  }
}

template <typename O>
__global__ void SoftmaxKernel(const float* s, int64_t cols, int64_t rows_per_head,
                              int64_t query_offset, float scale, bool causal, O* out) {
  const int64_t row = blockIdx.x;
  const float* srow = s + row * cols;
  O* orow = out + row * cols;
  int64_t limit = cols;
  if (causal) limit = min(cols, query_offset + row % rows_per_head + 1);
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < limit; j += blockDim.x) mx = fmaxf(mx, scale * srow[j]);
  mx = BlockMax(mx);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < limit; j += blockDim.x) sum += expf(scale * srow[j] - mx);
  sum = BlockSumF(sum);
  const float inv = 1.0f / sum;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const float p = j < limit ? expf(scale * srow[j] - mx) * inv : 0.0f;
    orow[j] = FromF<O>(p);
  }
}

template <typename T>
__global__ void NonFiniteKernel(const T* x, int64_t n, int* flag) {
  for (int64_t i = GlobalIndex(); i < n; i += GlobalStride()) {
    if (!isfinite(ToD(x[i]))) *flag = 1;
  }
}

// Cholesky: nb x nb blocks. Diagonal block factorisation in one block of nb x nb threads.
constexpr int kCholBlock = 32;

template <typename T>
__device__ void FactorDiagonalBlock(T* a, int64_t n, int64_t s0, int b, int* info) {
  __shared__ T d[kCholBlock][kCholBlock + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;  // column, row
  if (ty < b && tx < b && tx <= ty) d[ty][tx] = a[(s0 + ty) * n + s0 + tx];
  __syncthreads();
  for (int k = 0; k < b; ++k) {
    if (tx == 0 && ty == 0) {
      T p = d[k][k];
      if (!(p > T(0))) {
        atomicCAS(info, 0, static_cast<int>(s0 + k + 1));
        p = T(1);
      }
      d[k][k] = sqrt(p);
    }
    __syncthreads();
    if (tx == 0 && ty > k && ty < b) d[ty][k] /= d[k][k];
    __syncthreads();
    if (ty > k && ty < b && tx > k && tx <= ty) d[ty][tx] -= d[ty][k] * d[tx][k];
    __syncthreads();
  }
  if (ty < b && tx < b && tx <= ty) a[(s0 + ty) * n + s0 + tx] = d[ty][tx];
}

template <typename T>
__global__ void CholeskyFirstKernel(T* a, int64_t n, int* info) {
  FactorDiagonalBlock(a, n, 0, static_cast<int>(n < kCholBlock ? n : kCholBlock), info);
}

// Panel of step s: rows i >= s1 of block column s, L[i, s0:s1] = A[i, s0:s1] · D⁻ᵀ. One warp per
// row; lane j holds column s0 + j.
template <typename T>
__global__ void CholeskyPanelKernel(T* a, int64_t n, int64_t s0, int b) {
  __shared__ T d[kCholBlock][kCholBlock + 1];
  for (int idx = threadIdx.x; idx < kCholBlock * kCholBlock; idx += blockDim.x) {
    const int r = idx / kCholBlock, c = idx % kCholBlock;
    d[r][c] = (r < b && c <= r) ? a[(s0 + r) * n + s0 + c] : T(0);
  }
  __syncthreads();
  const int lane = threadIdx.x & 31;
  const int64_t row = s0 + b + static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) +
                      (threadIdx.x >> 5);
  if (row >= n) return;
  T x = lane < b ? a[row * n + s0 + lane] : T(0);
  for (int k = 0; k < b; ++k) {
    const T xk = __shfl_sync(0xffffffffu, x, k) / d[k][k];
    if (lane == k) x = xk;
    if (lane > k) x -= xk * d[lane][k];
  }
  if (lane < b) a[row * n + s0 + lane] = x;
}

// Trailing update of step s: for block rows I >= J > s, A[I, J] -= L[I, s] · L[J, s]ᵀ (lower
// part). The block that updates the next diagonal block then factors it.
template <typename T>
__global__ void CholeskyUpdateKernel(T* a, int64_t n, int64_t s0, int b, int* info) {
  __shared__ T li[kCholBlock][kCholBlock + 1];
  __shared__ T lj[kCholBlock][kCholBlock + 1];
  // blockIdx.x enumerates the lower-triangular tiles (I, J), J <= I, of the trailing matrix.
  const int64_t t = blockIdx.x;
  int64_t bi = static_cast<int64_t>((sqrt(8.0 * static_cast<double>(t) + 1.0) - 1.0) / 2.0);
  while ((bi + 1) * (bi + 2) / 2 <= t) ++bi;
  while (bi * (bi + 1) / 2 > t) --bi;
  const int64_t bj = t - bi * (bi + 1) / 2;
  const int64_t r0 = s0 + b + bi * kCholBlock;
  const int64_t c0 = s0 + b + bj * kCholBlock;
  const int tx = threadIdx.x, ty = threadIdx.y;
  li[ty][tx] = (r0 + ty < n && tx < b) ? a[(r0 + ty) * n + s0 + tx] : T(0);
  lj[ty][tx] = (c0 + ty < n && tx < b) ? a[(c0 + ty) * n + s0 + tx] : T(0);
  __syncthreads();
  const int64_t row = r0 + ty, col = c0 + tx;
  if (row < n && col < n && col <= row) {
    T acc = T(0);
#pragma unroll 8
    for (int k = 0; k < kCholBlock; ++k) acc += li[ty][k] * lj[tx][k];
    a[row * n + col] -= acc;
  }
  if (bi == 0 && bj == 0) {
    __syncthreads();
    __threadfence_block();
    const int64_t next = s0 + b;
    FactorDiagonalBlock(a, n, next,
                        static_cast<int>(n - next < kCholBlock ? n - next : kCholBlock), info);
  }
}

template <typename T>
cudaError_t CholeskyLaunches(T* a, int64_t n, int* info, cudaStream_t stream) {
  const dim3 tile(kCholBlock, kCholBlock);
  CholeskyFirstKernel<T><<<1, tile, 0, stream>>>(a, n, info);
  for (int64_t s0 = 0; s0 < n; s0 += kCholBlock) {
    const int b = static_cast<int>(std::min<int64_t>(kCholBlock, n - s0));
    const int64_t rest = n - s0 - b;
    if (rest <= 0) break;
    constexpr int kWarps = 8;
    CholeskyPanelKernel<T><<<static_cast<unsigned>((rest + kWarps - 1) / kWarps), 32 * kWarps, 0,
                             stream>>>(a, n, s0, b);
    const int64_t blocks = (rest + kCholBlock - 1) / kCholBlock;
    CholeskyUpdateKernel<T><<<static_cast<unsigned>(blocks * (blocks + 1) / 2), tile, 0, stream>>>(
        a, n, s0, b, info);
  }
  return cudaGetLastError();
}

__global__ void DotPartialKernel(const double* a, const double* b, int64_t n, double* partial) {
  double acc = 0.0;
  for (int64_t i = GlobalIndex(); i < n; i += GlobalStride()) acc += a[i] * b[i];
  acc = BlockSum(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__global__ void NewtonSchulzFactorKernel(const double* w, int64_t n, double* m, double* half_e,
                                         double* partial) {
  double acc = 0.0;
  for (int64_t idx = GlobalIndex(); idx < n * n; idx += GlobalStride()) {
    const int64_t i = idx / n;
    const int64_t j = idx - i * n;
    // Element (min, max) of the upper triangle, column-major.
    const double e = w[min(i, j) + max(i, j) * n] - (i == j ? 1.0 : 0.0);
    acc += e * e;
    m[idx] = (i == j ? 1.0 : 0.0) - 0.5 * e;
    if (half_e != nullptr) half_e[idx] = 0.5 * e;
  }
  acc = BlockSum(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

cudaError_t Launched() { return cudaGetLastError(); }

}  // namespace

cudaError_t LaunchConvert(DevType src_t, const void* src, DevType dst_t, void* dst, int64_t n,
                          cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (src_t == dst_t) {
    return cudaMemcpyAsync(dst, src, n * DevTypeSize(src_t), cudaMemcpyDeviceToDevice, stream);
  }
  ATP_DISPATCH_TYPE(src_t, S, ATP_DISPATCH_TYPE(dst_t, D, ConvertKernel<S, D><<<GridFor(n), kThreads, 0, stream>>>(static_cast<const S*>(src), static_cast<D*>(dst), n)));
  return Launched();
}

cudaError_t LaunchCopy2D(DevType src_t, const void* src, int64_t ld_src, DevType dst_t, void* dst,
                         int64_t ld_dst, int64_t rows, int64_t cols, double scale,
                         cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  if (src_t == dst_t && scale == 1.0) {
    const size_t es = DevTypeSize(src_t);
    return cudaMemcpy2DAsync(dst, ld_dst * es, src, ld_src * es, cols * es, rows,
                             cudaMemcpyDeviceToDevice, stream);
  }
  ATP_DISPATCH_TYPE(src_t, S, ATP_DISPATCH_TYPE(dst_t, D, Copy2DKernel<S, D><<<GridFor(rows * cols), kThreads, 0, stream>>>(static_cast<const S*>(src), ld_src, static_cast<D*>(dst), ld_dst, rows, cols, scale)));
  return Launched();
}

cudaError_t LaunchFill2D(DevType t, void* dst, int64_t ld, int64_t rows, int64_t cols, double value,
                         cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  ATP_DISPATCH_TYPE(t, T, Fill2DKernel<T><<<GridFor(rows * cols), kThreads, 0, stream>>>(static_cast<T*>(dst), ld, rows, cols, value));
  return Launched();
}

cudaError_t LaunchSplit(DevType src_t, const void* src, DevType half_t, void* part0, void* part1,
                        void* part2, int levels, int64_t n, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (!IsHalf(half_t) || levels < 1 || levels > 3) return cudaErrorInvalidValue;
  ATP_DISPATCH_FLOAT(src_t, S, ATP_DISPATCH_TYPE(half_t, H, SplitKernel<S, H><<<GridFor(n), kThreads, 0, stream>>>(static_cast<const S*>(src), static_cast<H*>(part0), static_cast<H*>(part1), static_cast<H*>(part2), levels, n)));
  return Launched();
}

cudaError_t LaunchFillGaussian(DevType t, void* dst, int64_t n, uint64_t seed, uint64_t offset,
                               cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  ATP_DISPATCH_TYPE(t, T, GaussianKernel<T><<<GridFor(n), kThreads, 0, stream>>>(static_cast<T*>(dst), n, seed, offset));
  return Launched();
}

cudaError_t LaunchAddRowOuter(DevType t, void* y, int64_t ld, int64_t rows, int64_t cols,
                              const float* row_coef, const float* bias, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  ATP_DISPATCH_TYPE(t, T, AddRowOuterKernel<T><<<GridFor(rows * cols), kThreads, 0, stream>>>(static_cast<T*>(y), ld, rows, cols, row_coef, bias));
  return Launched();
}

int64_t ColumnSumsChunks(int64_t rows) {
  return std::max<int64_t>(1, (rows + kColumnChunkRows - 1) / kColumnChunkRows);
}

cudaError_t LaunchColumnSums(DevType t, const void* x, int64_t ld, int64_t rows, int64_t cols,
                             double* partial, double* out, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  const int64_t chunks = ColumnSumsChunks(rows);
  if (chunks > 65535) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>((cols + kThreads - 1) / kThreads),
                  static_cast<unsigned>(chunks));
  ATP_DISPATCH_TYPE(t, T, ColumnPartialKernel<T><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(x), ld, rows, cols, partial));
  if (cudaError_t e = Launched(); e != cudaSuccess) return e;
  ColumnFinishKernel<<<GridFor(cols), kThreads, 0, stream>>>(partial, chunks, cols, out);
  return Launched();
}

cudaError_t LaunchRowLargestEntry(DevType t, const void* x, int64_t ld, int64_t rows, int64_t cols,
                                  double* out, cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  if (rows > (int64_t{1} << 31) - 1) return cudaErrorInvalidValue;
  ATP_DISPATCH_TYPE(t, T,
                    RowLargestEntryKernel<T><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
                        static_cast<const T*>(x), ld, cols, out));
  return Launched();
}

cudaError_t LaunchRowReduce(DevType t, const void* x, int64_t ld, int64_t rows, int64_t cols,
                            const double* vec, RowReduce mode, double* out, cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  if (rows > (int64_t{1} << 31) - 1) return cudaErrorInvalidValue;
  ATP_DISPATCH_TYPE(t, T, RowReduceKernel<T><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(static_cast<const T*>(x), ld, cols, vec, mode, out));
  return Launched();
}

cudaError_t LaunchScaleRows(DevType t, void* x, int64_t ld, int64_t rows, int64_t cols,
                            const double* row_scale, double scale, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  ATP_DISPATCH_TYPE(t, T, ScaleRowsKernel<T><<<GridFor(rows * cols), kThreads, 0, stream>>>(static_cast<T*>(x), ld, rows, cols, row_scale, scale));
  return Launched();
}

cudaError_t LaunchTransposeConvert(DevType src_t, const void* src, int64_t rows, int64_t cols,
                                   DevType dst_t, void* dst, cudaStream_t stream, int64_t ld_src,
                                   int64_t ld_dst) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  if (ld_src == 0) ld_src = cols;
  if (ld_dst == 0) ld_dst = rows;
  if (ld_src < cols || ld_dst < rows) return cudaErrorInvalidValue;
  const int64_t gx = (cols + 31) / 32;
  const int64_t gy = (rows + 31) / 32;
  if (gy > 65535) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
  const dim3 block(32, 8);
  ATP_DISPATCH_TYPE(src_t, S, ATP_DISPATCH_TYPE(dst_t, D, TransposeKernel<S, D><<<grid, block, 0, stream>>>(static_cast<const S*>(src), ld_src, rows, cols, static_cast<D*>(dst), ld_dst)));
  return Launched();
}

cudaError_t LaunchGatherRowsReversed(DevType t, const void* src, int64_t src_rows, int64_t cols,
                                     int64_t count, void* dst, cudaStream_t stream) {
  if (count <= 0 || cols <= 0) return cudaSuccess;
  if (count > src_rows) return cudaErrorInvalidValue;
  ATP_DISPATCH_TYPE(t, T, GatherReversedKernel<T><<<GridFor(count * cols), kThreads, 0, stream>>>(static_cast<const T*>(src), src_rows, cols, count, static_cast<T*>(dst)));
  return Launched();
}

cudaError_t LaunchShiftDiagonalByTrace(DevType t, void* a, int64_t n, int64_t lda, double factor,
                                       cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  ATP_DISPATCH_FLOAT(t, T, ShiftDiagonalKernel<T><<<1, 1024, 0, stream>>>(static_cast<T*>(a), n, lda, factor));
  return Launched();
}

cudaError_t LaunchTrace(DevType t, const void* a, int64_t n, int64_t lda, double* out,
                        cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  ATP_DISPATCH_FLOAT(t, T, TraceKernel<T><<<1, 1024, 0, stream>>>(static_cast<const T*>(a), n, lda, out));
  return Launched();
}

cudaError_t LaunchScaledRootOfSum(const double* v, int64_t n, double factor, double* out,
                                  cudaStream_t stream) {
  RootOfSumKernel<<<1, 1024, 0, stream>>>(v, n, factor, out);
  return Launched();
}

cudaError_t LaunchAxpyDeviceScalar(DevType t, void* y, const void* x, int64_t n,
                                   const double* scalar, double factor, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  ATP_DISPATCH_FLOAT(t, T, AxpyScalarKernel<T><<<GridFor(n), kThreads, 0, stream>>>(static_cast<T*>(y), static_cast<const T*>(x), n, scalar, factor));
  return Launched();
}

cudaError_t LaunchEstimateShift(const double* partial, double* scalars, int64_t k, int64_t m,
                                double fraction, cudaStream_t stream) {
  EstimateShiftKernel<<<1, 32, 0, stream>>>(partial, kDotBlocks, scalars, k, m, fraction);
  return Launched();
}

cudaError_t LaunchShiftedProduct(const float* product, const double* q, const double* scalar,
                                 double* out, int64_t n, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  ShiftedProductKernel<<<GridFor(n), kThreads, 0, stream>>>(product, q, scalar, out, n);
  return Launched();
}

cudaError_t LaunchSymmetrize(DevType t, void* a, int64_t n, cudaStream_t stream) {
  if (n <= 1) return cudaSuccess;
  ATP_DISPATCH_FLOAT(t, T, SymmetrizeKernel<T><<<GridFor(n * n), kThreads, 0, stream>>>(static_cast<T*>(a), n));
  return Launched();
}

cudaError_t LaunchSoftmaxRows(const float* s, int64_t rows, int64_t cols, int64_t rows_per_head,
                              int64_t query_offset, float scale, bool causal, DevType out_t,
                              void* out, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  if (rows > (int64_t{1} << 31) - 1 || rows_per_head <= 0) return cudaErrorInvalidValue;
  const unsigned grid = static_cast<unsigned>(rows);
  switch (out_t) {
    case DevType::kF32:
      SoftmaxKernel<float><<<grid, kThreads, 0, stream>>>(s, cols, rows_per_head, query_offset,
                                                          scale, causal, static_cast<float*>(out));
      break;
    case DevType::kF16:
      SoftmaxKernel<__half><<<grid, kThreads, 0, stream>>>(
          s, cols, rows_per_head, query_offset, scale, causal, static_cast<__half*>(out));
      break;
    case DevType::kBF16:
      SoftmaxKernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(
          s, cols, rows_per_head, query_offset, scale, causal, static_cast<__nv_bfloat16*>(out));
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return Launched();
}

cudaError_t LaunchCholesky(DevType t, void* a, int64_t n, int* info, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (t == DevType::kF64) return CholeskyLaunches(static_cast<double*>(a), n, info, stream);
  if (t == DevType::kF32) return CholeskyLaunches(static_cast<float*>(a), n, info, stream);
  return cudaErrorInvalidValue;
}

cudaError_t LaunchDotPartials(const double* a, const double* b, int64_t n, double* partial,
                              cudaStream_t stream) {
  DotPartialKernel<<<kDotBlocks, kThreads, 0, stream>>>(a, b, n, partial);
  return Launched();
}

cudaError_t LaunchNewtonSchulzFactor(const double* w, int64_t n, double* m, double* partial,
                                     cudaStream_t stream, double* half_e) {
  NewtonSchulzFactorKernel<<<kDotBlocks, kThreads, 0, stream>>>(w, n, m, half_e, partial);
  return Launched();
}

cudaError_t LaunchFlagNonFinite(DevType t, const void* x, int64_t n, int* flag,
                                cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  ATP_DISPATCH_TYPE(t, T, NonFiniteKernel<T><<<GridFor(n), kThreads, 0, stream>>>(static_cast<const T*>(x), n, flag));
  return Launched();
}

}  // namespace atp::kernels::cuda
