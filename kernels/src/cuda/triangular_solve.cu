// y ← y·R⁻¹ by strips of rows (triangular_solve.h).
//
// First, one warp per full 32 x 32 diagonal block J of R inverts it (InvertDiagonalBlocksKernel,
// into the workspace). Then per block of the main kernel: a strip of kRows = 32 rows of y in
// shared memory, [kRows][ld] with ld = n rounded up to odd, 1 / R(j, j) for every j, and two
// buffers for chunks of R. For each column block [j0, j0 + 32), R's rows j0 .. j0 + 31 stream
// through the buffers in chunks of 128 columns (column c's slice R(j0 .. j0 + 31, c) is contiguous
// in R), the next chunk copied asynchronously while the current one is used; the first chunk
// starts with the diagonal block:
//   (a) X_J = Y_J · R_JJ⁻¹ on the FP64 tensor cores (sixteen 8 x 8 tiles over the 8 warps); the
//       last block, when partial, by substitution in warp 0 (lane v: row v);
//   (b) the warps share out the chunk's later columns in 8-column tiles:
//       Y[:, tile] -= X_J · R(J, tile), mma.m8n8k4 with X_J's fragments kept in registers.
// Measured on the H200 (4096 rows, n = 576; ncu for the why), each step kept: cuBLAS's trsm
// 0.23 ms; R read through L2 by every warp, 0.79 (every load waited on L2); R staged in shared
// memory but (a) solved by substitution in every warp, 0.25 (110M instructions issued, a third of
// them (a)'s predicates and loads); (a) in warp 0 only and (b) by DFMA with each tile's R entries
// loaded in one burst, 0.18; (b) on the tensor cores, 0.16; (a) by the inverted blocks and
// 128-column chunks, 0.158 (n = 320: 0.078 against trsm's 0.12). Tried and dropped: 16-row strips
// with two blocks per SM (128 registers: spills, 0.23); four columns per DFMA item (the compiler
// interleaved loads and uses again, 0.23); R_JJ⁻¹'s fragments loaded before the chunk wait (255
// registers, 0.166). What is left are DFMA/DMMA latencies and the two barriers per chunk with two
// warps per scheduler. Solving a block with its explicit inverse changes the rounding of the
// substitution, not its order of accuracy (κ(R_JJ) <= κ(R): R_JJ⁻¹ is a block of R⁻¹); the f64
// oracle test bounds the residual.
#include <cuda_pipeline.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/cluster_launch.h"
#include "cuda/triangular_solve.h"

namespace atp::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kBlock = 32;   // columns per step, and rows of a chunk of R
constexpr int kRows = 32;    // rows per strip: a lane each
constexpr int kChunk = 128;  // columns of R per buffer
// A chunk's column c at buf + c·kColStride: 34 rather than 32 keeps the MMA's B-fragment loads
// (eight columns at once) at two shared-memory wavefronts instead of eight, and 16-byte alignment.
constexpr int kColStride = 34;
constexpr int kTile = 8;  // (b): columns per MMA tile (mma.m8n8k4, f64)

int LeadingDim(int64_t n) { return static_cast<int>(n | 1); }
__host__ __device__ inline int EvenUp(int n) { return (n + 1) / 2 * 2; }

// Queues the copy of R(j0 .. j0 + width - 1, c) for c in [cs, ce) into buf (column c at
// buf + (c - cs)·kColStride). kPairs: n is even, so the slices are 16-byte aligned.
template <bool kPairs>
__device__ inline void QueueChunk(const double* __restrict__ r, int n, int j0, int width, int cs,
                                  int ce, double* buf) {
  constexpr int kPer = kPairs ? 2 : 1;  // doubles per copy
  const int per_column = kBlock / kPer;
  for (int e = static_cast<int>(threadIdx.x); e < (ce - cs) * per_column; e += kThreads) {
    const int k = e / per_column;
    const int i = (e - k * per_column) * kPer;
    if (i < width) {
      __pipeline_memcpy_async(buf + k * kColStride + i,
                              r + static_cast<int64_t>(cs + k) * n + j0 + i, kPer * sizeof(double));
    }
  }
}

// (a) of a partial block for one lane's row: x [kBlock] in registers; R(j0 + c, j0 + c2) =
// chunk[c2·kColStride + c]; inv_diag[c] = 1 / R(j0 + c, j0 + c).
__device__ inline void SolveDiagonalBlock(double (&x)[kBlock], const double* chunk,
                                          const double* inv_diag, int width) {
#pragma unroll
  for (int c = 0; c < kBlock; ++c) {
    if (c < width) {
      x[c] *= inv_diag[c];
#pragma unroll
      for (int c2 = c + 1; c2 < kBlock; ++c2) {
        if (c2 < width) x[c2] = fma(-x[c], chunk[c2 * kColStride + c], x[c2]);
      }
    }
  }
}

// R_JJ⁻¹ of each full 32 x 32 diagonal block J of R (upper triangular; the lower part of the
// output zero), row-major into inv[J][32][32]: one warp per block, lane c computing column c by
// back substitution, R_JJ staged in shared memory.
__global__ void __launch_bounds__(32)
    InvertDiagonalBlocksKernel(const double* __restrict__ r, int n, double* __restrict__ inv) {
  __shared__ double rb[kBlock][kBlock + 1];  // rb[i][c] = R(j0 + i, j0 + c)
  __shared__ double z[kBlock][kBlock + 1];   // z[i][c] = R_JJ⁻¹(i, c)
  const int j0 = static_cast<int>(blockIdx.x) * kBlock;
  const int c = static_cast<int>(threadIdx.x);
  for (int i = 0; i < kBlock; ++i)
    rb[i][c] = i <= c ? r[static_cast<int64_t>(j0 + c) * n + j0 + i] : 0.0;
  __syncwarp();
  for (int i = kBlock - 1; i >= 0; --i) {
    double v = 0.0;
    if (i <= c) {
      double sum = i == c ? 1.0 : 0.0;
      for (int k = i + 1; k <= c; ++k) sum -= rb[i][k] * z[k][c];
      v = sum / rb[i][i];
    }
    z[i][c] = v;
  }
  __syncwarp();
  double* out = inv + static_cast<int64_t>(blockIdx.x) * kBlock * kBlock;
  for (int i = 0; i < kBlock; ++i) out[i * kBlock + c] = z[i][c];
}

// D = C + A·B on the FP64 tensor cores (one 8 x 8 x 4 product per warp). Fragments (PTX ISA,
// mma.m8n8k4 .f64): lane = 4·g + t holds A[g][t], B[t][g], C[g][2t .. 2t + 1].
__device__ inline void MmaF64(double (&c)[2], double a, double b) {
  asm volatile("mma.sync.aligned.m8n8k4.row.col.f64.f64.f64.f64 {%0, %1}, {%2}, {%3}, {%0, %1};"
               : "+d"(c[0]), "+d"(c[1])
               : "d"(a), "d"(b));
}

template <bool kPairs>
__global__ void __launch_bounds__(kThreads)
    SolveUpperRightKernel(const double* __restrict__ r, const double* __restrict__ block_inv, int n,
                          int ld, double* __restrict__ y, int64_t rows) {
  extern __shared__ double s[];  // [kRows][ld], 1 / R(j, j) [even n], 2 x [kChunk][kColStride]
  double* inv_diag = s + kRows * ld;
  double* panel = inv_diag + EvenUp(n);
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int strip = static_cast<int>(rows - row0 < kRows ? rows - row0 : kRows);
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31;
  const int warp = tid >> 5;

  auto width_of = [n](int j0) { return n - j0 < kBlock ? n - j0 : kBlock; };
  auto end_of = [n](int cs) { return n - cs < kChunk ? n : cs + kChunk; };
  QueueChunk<kPairs>(r, n, 0, width_of(0), 0, end_of(0), panel);
  __pipeline_commit();
  for (int v = warp; v < kRows; v += kWarps) {
    if (v < strip) {
      const double* src = y + (row0 + v) * n;
      for (int j = lane; j < n; j += 32) __pipeline_memcpy_async(s + v * ld + j, src + j, 8);
    } else {
      for (int j = lane; j < n; j += 32) s[v * ld + j] = 0.0;
    }
  }
  __pipeline_commit();
  for (int j = tid; j < n; j += kThreads) inv_diag[j] = 1.0 / r[static_cast<int64_t>(j) * n + j];

  double* row = s + lane * ld;
  const int g = lane >> 2, t = lane & 3;  // MMA fragment coordinates
  // -x of the current block as MMA A fragments: [m-tile of 8 rows][k-step of 4 columns].
  double a_frag[kRows / 8][kBlock / 4];
  int j0 = 0, cs = 0, buf = 0;
  while (j0 < n) {
    // The next chunk: the rest of this block's columns, else the next block's first.
    int next_j0 = j0, next_cs = cs + kChunk;
    if (next_cs >= n) next_j0 = next_cs = j0 + kBlock;
    if (next_j0 < n) {
      QueueChunk<kPairs>(r, n, next_j0, width_of(next_j0), next_cs, end_of(next_cs),
                         panel + (buf ^ 1) * kChunk * kColStride);
    }
    __pipeline_commit();
    __pipeline_wait_prior(1);
    __syncthreads();
    // R(j0 + i, cs + k) = chunk[k·kColStride + i]
    const double* chunk = panel + buf * kChunk * kColStride;
    const int width = width_of(j0);
    int first = cs;
    if (cs == j0) {  // (a) the diagonal block
      if (width == kBlock) {
        // X_J = Y_J · R_JJ⁻¹ as sixteen 8 x 8 tiles: warp w takes m-tile w / 2 and n-tiles
        // 2·(w % 2) and 2·(w % 2) + 1; all of Y_J is read before any of X_J is written.
        const double* inv = block_inv + static_cast<int64_t>(j0 / kBlock) * kBlock * kBlock;
        const int mt = warp / 2;
        double out[2][2] = {{0.0, 0.0}, {0.0, 0.0}};
#pragma unroll
        for (int ks = 0; ks < kBlock / 4; ++ks) {
          const double a = s[(mt * 8 + g) * ld + j0 + ks * 4 + t];
#pragma unroll
          for (int q = 0; q < 2; ++q) {
            const int nt = 2 * (warp % 2) + q;
            MmaF64(out[q], a, __ldg(inv + (ks * 4 + t) * kBlock + nt * 8 + g));
          }
        }
        __syncthreads();
#pragma unroll
        for (int q = 0; q < 2; ++q) {
          const int nt = 2 * (warp % 2) + q;
          s[(mt * 8 + g) * ld + j0 + nt * 8 + 2 * t] = out[q][0];
          s[(mt * 8 + g) * ld + j0 + nt * 8 + 2 * t + 1] = out[q][1];
        }
        __syncthreads();
#pragma unroll
        for (int m = 0; m < kRows / 8; ++m) {
#pragma unroll
          for (int ks = 0; ks < kBlock / 4; ++ks) {
            a_frag[m][ks] = -s[(m * 8 + g) * ld + j0 + ks * 4 + t];
          }
        }
      } else {  // the last, partial block: by substitution (no later columns to update)
        if (warp == 0) {
          double x[kBlock];
#pragma unroll
          for (int c = 0; c < kBlock; ++c) x[c] = c < width ? row[j0 + c] : 0.0;
          SolveDiagonalBlock(x, chunk, inv_diag + j0, width);
#pragma unroll
          for (int c = 0; c < kBlock; ++c) {
            if (c < width) row[j0 + c] = x[c];
          }
        }
      }
      first = j0 + kBlock;
    }
    // (b) columns [first, end) of the chunk (the block is then a full one), eight at a time:
    // Y[:, c0 .. c0 + 7] += (-x)·R(j0 .. j0 + 31, c0 .. c0 + 7) as 4 x 8 tensor-core products.
    // Columns past `end` in the last tile read stale buffer entries; they only reach their own
    // (unstored) columns of the result.
    const int end = end_of(cs);
    const int tiles = end > first ? (end - first + kTile - 1) / kTile : 0;
    for (int tile = warp; tile < tiles; tile += kWarps) {
      const int c0 = first + tile * kTile;
      double acc[kRows / 8][2];
#pragma unroll
      for (int mt = 0; mt < kRows / 8; ++mt) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const int c = c0 + 2 * t + i;
          acc[mt][i] = c < end ? s[(mt * 8 + g) * ld + c] : 0.0;
        }
      }
      const double* b_col = chunk + (c0 - cs + g) * kColStride + t;
#pragma unroll
      for (int ks = 0; ks < kBlock / 4; ++ks) {
        const double b = b_col[ks * 4];
#pragma unroll
        for (int mt = 0; mt < kRows / 8; ++mt) MmaF64(acc[mt], a_frag[mt][ks], b);
      }
#pragma unroll
      for (int mt = 0; mt < kRows / 8; ++mt) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const int c = c0 + 2 * t + i;
          if (c < end) s[(mt * 8 + g) * ld + c] = acc[mt][i];
        }
      }
    }
    __syncthreads();  // the buffer is free for the copy after next
    buf ^= 1;
    j0 = next_j0;
    cs = next_cs;
  }

  for (int v = warp; v < strip; v += kWarps) {
    double* dst = y + (row0 + v) * n;
    for (int j = lane; j < n; j += 32) dst[j] = s[v * ld + j];
  }
}

int QueryMaxSharedMemory(int device) {
  int bytes = 0;
  if (cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) !=
      cudaSuccess) {
    return 0;
  }
  return bytes;
}

size_t SharedBytes(int64_t n) {
  const int64_t doubles =
      kRows * int64_t{LeadingDim(n)} + (n + 1) / 2 * 2 + 2 * kChunk * kColStride;
  return static_cast<size_t>(doubles) * sizeof(double);
}

template <bool kPairs>
cudaError_t Launch(const double* r, int64_t n, double* y, int64_t rows, double* block_inv,
                   cudaStream_t stream) {
  const size_t bytes = SharedBytes(n);
  cudaError_t e =
      cudaFuncSetAttribute(SolveUpperRightKernel<kPairs>,
                           cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  if (e != cudaSuccess) return e;
  if (n >= kBlock) {
    InvertDiagonalBlocksKernel<<<static_cast<unsigned>(n / kBlock), kBlock, 0, stream>>>(
        r, static_cast<int>(n), block_inv);
  }
  const int64_t blocks = (rows + kRows - 1) / kRows;
  SolveUpperRightKernel<kPairs><<<static_cast<unsigned>(blocks), kThreads, bytes, stream>>>(
      r, block_inv, static_cast<int>(n), LeadingDim(n), y, rows);
  return cudaGetLastError();
}

}  // namespace

bool SolveUpperRightSupported(DevType t, int64_t n) {
  if (t != DevType::kF64 || n < 1 || n > (int64_t{1} << 20)) return false;
  return SharedBytes(n) <= static_cast<size_t>(PerDevice<int, QueryMaxSharedMemory>());
}

size_t SolveUpperRightWorkspaceBytes(int64_t n) {
  return static_cast<size_t>(n / kBlock) * kBlock * kBlock * sizeof(double);
}

cudaError_t LaunchSolveUpperRight(DevType t, const void* r, int64_t n, void* y, int64_t rows,
                                  void* workspace, cudaStream_t stream) {
  if (rows <= 0 || n <= 0) return cudaSuccess;
  if (!SolveUpperRightSupported(t, n) || rows > (int64_t{1} << 33)) return cudaErrorNotSupported;
  const auto* rd = static_cast<const double*>(r);
  auto* yd = static_cast<double*>(y);
  auto* inv = static_cast<double*>(workspace);
  return n % 2 == 0 ? Launch<true>(rd, n, yd, rows, inv, stream)
                    : Launch<false>(rd, n, yd, rows, inv, stream);
}

}  // namespace atp::kernels::cuda
