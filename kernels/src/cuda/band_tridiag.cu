#include <cooperative_groups.h>

#include "cuda/band_tridiag.h"
#include "cuda/cluster_launch.h"

namespace atp::kernels::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kBw = 2 * kBand;  // band storage: kBand + 1 diagonals and the bulges below them
constexpr int kBrThreads = 512;
constexpr int kBrWarps = kBrThreads / 32;
constexpr int kMaxPanelRowsPerThread = 2;  // panel rows per thread: n - kBand <= 1024
constexpr int kChaseWarps = 16;            // sweeps in flight (~n / (3·kBand) at once)
constexpr int kQWarps = 4;
constexpr int kQRows = 2;  // rows of Q per warp (the reflectors read once for both)
static_assert(kBand == 16, "the transposed warp reductions below are written for 16 columns");

__host__ __device__ int PanelCount(int n) {
  return n > kBand + 1 ? (n - kBand - 1 + kBand - 1) / kBand : 0;  // panels start at s < n-b-1
}
__host__ __device__ int HopSlots(int n) { return n > 2 ? (n - 2 + kBand - 1) / kBand : 0; }

// Lane l ends with the warp's sum of v[Idx16(l)] (lanes l and l ^ 1 alike): 16 shuffles instead
// of 16 butterflies of 5.
__device__ __forceinline__ int Idx16(int lane) {
  return ((lane >> 4) & 1) * 8 + ((lane >> 3) & 1) * 4 + ((lane >> 2) & 1) * 2 + ((lane >> 1) & 1);
}
__device__ __forceinline__ int LaneOf16(int a) {
  return (((a >> 3) & 1) << 4) | (((a >> 2) & 1) << 3) | (((a >> 1) & 1) << 2) | ((a & 1) << 1);
}
template <int kWidth>
__device__ __forceinline__ void Fold(double (&v)[16], int lane) {
  const bool up = (lane & kWidth) != 0;
  constexpr int half = kWidth / 2;  // values kept after this step
#pragma unroll
  for (int i = 0; i < half; ++i) {
    const double send = up ? v[i] : v[i + half];
    const double keep = up ? v[i + half] : v[i];
    v[i] = keep + __shfl_xor_sync(0xffffffffu, send, kWidth);
  }
}
__device__ __forceinline__ double TransposeReduce16(double (&v)[16]) {
  const int lane = threadIdx.x & 31;
  Fold<16>(v, lane);
  Fold<8>(v, lane);
  Fold<4>(v, lane);
  Fold<2>(v, lane);
  return v[0] + __shfl_xor_sync(0xffffffffu, v[0], 1);
}

// The warp's row vector Σ acc (16 columns, summed over the lanes) times T (kBand x kBand,
// row-major): lane l returns column l & 15 of the product.
__device__ __forceinline__ double RowTimesT(double (&acc)[16], const double* t) {
  const double sum = TransposeReduce16(acc);
  const int col = threadIdx.x & (kBand - 1);
  double x = 0.0;
#pragma unroll
  for (int a = 0; a < kBand; ++a)
    x += __shfl_sync(0xffffffffu, sum, LaneOf16(a)) * t[a * kBand + col];
  return x;
}

// ---- 1. Dense -> band -------------------------------------------------------------------------

size_t BandReduceSmemDoubles(int n, int blocks) {
  const size_t rows = (n + blocks - 1) / blocks;
  return rows * n + static_cast<size_t>(kBand) * n + 4 * kBand * kBand + rows * kBand +
         2 * kBrWarps * kBand + 2 * kBand;
}

#ifdef ATP_SMALL_EIGEN_PROFILE
__device__ long long g_band_prof[16][8];  // cycles per block and phase (the probe prints them)
#define ATP_BAND_PROF(i)      \
  do {                        \
    long long t_ = clock64(); \
    prof[i] += t_ - tp;       \
    tp = t_;                  \
  } while (0)
#else
#define ATP_BAND_PROF(i) \
  do {                   \
  } while (0)
#endif

struct BandReduceParams {
  const double* a;
  int n;
  int panels;
  BandTridiagBuffers b;
  unsigned* started;
};

// After the update that finished the rows and columns >= s below panel s − kBand (or at the start,
// s = 0): the own rows' entries of the next panel's columns (rows >= s + kBand) to pcols, and the
// band entries (i, k), s <= k <= i, i − k <= kBand, of rows s..s+kBand-1 (of every row >= s when
// no panel starts at s: the trailing block is then already inside the band).
__device__ void Publish(const double* a, int rows, int n, int blocks, int rank, int s,
                        bool panel_at_s, const BandTridiagBuffers& b) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int li = warp; li < rows; li += kBrWarps) {
    const int i = li * blocks + rank;
    if (i >= n || i < s) continue;
    const double* row = a + static_cast<size_t>(li) * n;
    if (panel_at_s && i >= s + kBand) {
      if (lane < kBand) b.pcols[static_cast<size_t>(i) * kBand + lane] = row[s + lane];
    } else if (lane <= kBand && i - lane >= s) {
      b.band[static_cast<size_t>(i) * kBw + lane] = row[i - lane];
    }
  }
}

// One cluster; block `rank` holds the rows i = li·blocks + rank of A (full rows, in shared
// memory). Per panel (columns s..s+15, rows r0 = s + 16 .. n-1 below the band):
//   cluster barrier (the panel's columns in pcols) -> every block factors the panel alike
//   (Householder QR in registers, a thread per row, one block barrier per column; T of the
//   compact WY form from the same reductions) -> X = A22·V·T for the own rows, to xg, and the
//   own rows' share of Vᵀ·X -> cluster barrier -> M = Tᵀ·Vᵀ·X, U = X − V·M for the own rows ->
//   A22 −= V·Xᵀ + U·Vᵀ on the own rows -> the next panel's columns and the finished band entries.
// kPanelRowsPerThread: 1 for n <= kBrThreads + kBand (2 rows spill registers).
template <int kPanelRowsPerThread>
__global__ void __launch_bounds__(kBrThreads, 1) BandReduceKernel(BandReduceParams p) {
  cg::cluster_group cluster = cg::this_cluster();
  const int blocks = static_cast<int>(cluster.num_blocks());
  const int rank = static_cast<int>(cluster.block_rank());
  const int n = p.n, rows = (n + blocks - 1) / blocks;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  extern __shared__ double smem[];
  double* const a = smem;                                  // rows x n
  double* const vs = a + static_cast<size_t>(rows) * n;    // V: column c at c·n, row k − r0
  double* const ts = vs + static_cast<size_t>(kBand) * n;  // T
  double* const mpart = ts + kBand * kBand;                // own rows' Vᵀ·X
  double* const sfull = mpart + kBand * kBand;             // Vᵀ·X
  double* const mfull = sfull + kBand * kBand;             // M = Tᵀ·Vᵀ·X
  double* const xown = mfull + kBand * kBand;              // own rows' X, then U
  double* const red = xown + static_cast<size_t>(rows) * kBand;  // 2 x kBrWarps x kBand
  double* const rowc = red + 2 * kBrWarps * kBand;               // 2 x kBand
  if (p.started != nullptr && rank == 0 && tid == 0) atomicExch(p.started, 1u);
  const int own_rows = rank < n ? (n - 1 - rank) / blocks + 1 : 0;
  for (int li = 0; li < own_rows; ++li) {
    const int i = li * blocks + rank;
    for (int k = tid; k < n; k += kBrThreads) {
      a[static_cast<size_t>(li) * n + k] = p.a[static_cast<size_t>(i) * n + k];
    }
  }
  __syncthreads();
  Publish(a, rows, n, blocks, rank, 0, p.panels > 0, p.b);
#ifdef ATP_SMALL_EIGEN_PROFILE
  long long prof[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  long long tp = clock64();
#endif

  for (int pi = 0; pi < p.panels; ++pi) {
    const int r0 = (pi + 1) * kBand, m = n - r0;
    cluster.sync();
    ATP_BAND_PROF(0);
    // -- The panel's QR, alike in every block (the same sums in the same order).
    double pr[kPanelRowsPerThread][kBand];
#pragma unroll
    for (int q = 0; q < kPanelRowsPerThread; ++q) {
      const int row = tid + q * kBrThreads;
#pragma unroll
      for (int c = 0; c < kBand; ++c) {
        pr[q][c] = row < m ? __ldcg(p.b.pcols + static_cast<size_t>(r0 + row) * kBand + c) : 0.0;
      }
    }
    if (tid < kBand * kBand) ts[tid] = 0.0;
#pragma unroll
    for (int c = 0; c < kBand; ++c) {
      // g[c2] = Σ_{rows > c} P[row][c]·P[row][c2]: column c's norm below the diagonal (c2 = c),
      // its dot products with the later columns (c2 > c) and with the reflectors v_{c2} already
      // stored in the earlier columns (c2 < c, for T).
      double g[kBand];
#pragma unroll
      for (int c2 = 0; c2 < kBand; ++c2) g[c2] = 0.0;
#pragma unroll
      for (int q = 0; q < kPanelRowsPerThread; ++q) {
        const int row = tid + q * kBrThreads;
        if (row > c && row < m) {
#pragma unroll
          for (int c2 = 0; c2 < kBand; ++c2) g[c2] += pr[q][c] * pr[q][c2];
        }
      }
      double* const rbuf = red + (c & 1) * kBrWarps * kBand;
      double* const cbuf = rowc + (c & 1) * kBand;
      if (tid == c) {
#pragma unroll
        for (int c2 = 0; c2 < kBand; ++c2) cbuf[c2] = c < m ? pr[0][c2] : 0.0;
      }
      const double part = TransposeReduce16(g);
      if ((lane & 1) == 0) rbuf[warp * kBand + Idx16(lane)] = part;
      __syncthreads();
      double total = 0.0;
      if (lane < kBand) {
        for (int w = 0; w < kBrWarps; ++w) total += rbuf[w * kBand + lane];
      }
      const double alpha = cbuf[c], xnorm2 = __shfl_sync(0xffffffffu, total, c);
      double tau = 0.0, beta = alpha, scale = 0.0;
      if (xnorm2 > 0.0) {  // LAPACK's dlarfg
        beta = -copysign(sqrt(alpha * alpha + xnorm2), alpha);
        tau = (beta - alpha) / beta;
        scale = 1.0 / (alpha - beta);
      }
      // u[c2] = v_cᵀ·P[:, c2] for c2 > c (the update), v_{c2}ᵀ·v_c for c2 < c (T).
      double u[kBand];
#pragma unroll
      for (int c2 = 0; c2 < kBand; ++c2)
        u[c2] = cbuf[c2] + scale * __shfl_sync(0xffffffffu, total, c2);
      // T's column c: T[a][c] = −tau·Σ_{a <= b < c} T[a][b]·(v_bᵀv_c).
      if (warp == 0 && lane <= c) {
        double t = tau;
        if (lane < c) {
          double sum = 0.0;
#pragma unroll
          for (int b2 = 0; b2 < c; ++b2) sum += ts[lane * kBand + b2] * u[b2];
          t = -tau * sum;
        }
        ts[lane * kBand + c] = t;
      }
#pragma unroll
      for (int q = 0; q < kPanelRowsPerThread; ++q) {
        const int row = tid + q * kBrThreads;
        if (row > c && row < m) {
          const double v = pr[q][c] * scale;
          pr[q][c] = v;
#pragma unroll
          for (int c2 = c + 1; c2 < kBand; ++c2) pr[q][c2] -= tau * v * u[c2];
        } else if (row == c && row < m) {
#pragma unroll
          for (int c2 = c + 1; c2 < kBand; ++c2) pr[q][c2] -= tau * u[c2];
          pr[q][c] = beta;
        }
      }
    }
    ATP_BAND_PROF(1);
    // V (unit lower trapezoidal) to shared memory (and, from block 0, to pv for Q); R's rows to
    // the band: entry (r0 + c, s + c2), c2 >= c, at offset kBand + c − c2.
#pragma unroll
    for (int q = 0; q < kPanelRowsPerThread; ++q) {
      const int row = tid + q * kBrThreads;
      if (row < m) {
#pragma unroll
        for (int c = 0; c < kBand; ++c) {
          const double v = row > c ? pr[q][c] : (row == c ? 1.0 : 0.0);
          vs[static_cast<size_t>(c) * n + row] = v;
          if (rank == 0)
            p.b.pv[static_cast<size_t>(pi) * kBand * n + static_cast<size_t>(c) * n + row] = v;
        }
        if (rank == 0 && row < kBand) {
#pragma unroll
          for (int c2 = 0; c2 < kBand; ++c2) {
            if (c2 >= row)
              p.b.band[static_cast<size_t>(r0 + row) * kBw + kBand + row - c2] = pr[q][c2];
          }
        }
      }
    }
    __syncthreads();
    if (rank == 0 && tid < kBand * kBand)
      p.b.pt[static_cast<size_t>(pi) * kBand * kBand + tid] = ts[tid];

    ATP_BAND_PROF(2);
    // -- X = A22·V·T for the own rows i >= r0, two rows a warp.
    const int li0 = r0 <= rank ? 0 : (r0 - rank + blocks - 1) / blocks;
    for (int l0 = li0 + warp; l0 < own_rows; l0 += 2 * kBrWarps) {
      const int l1 = l0 + kBrWarps;
      const bool two = l1 < own_rows;
      const double* row0 = a + static_cast<size_t>(l0) * n;
      const double* row1 = a + static_cast<size_t>(two ? l1 : l0) * n;
      double acc0[kBand], acc1[kBand];
#pragma unroll
      for (int c = 0; c < kBand; ++c) acc0[c] = acc1[c] = 0.0;
      for (int k = r0 + lane; k < n; k += 32) {
        const double a0 = row0[k], a1 = row1[k];
#pragma unroll
        for (int c = 0; c < kBand; ++c) {
          const double v = vs[static_cast<size_t>(c) * n + k - r0];
          acc0[c] += a0 * v;
          acc1[c] += a1 * v;
        }
      }
      const double x0 = RowTimesT(acc0, ts);
      const double x1 = RowTimesT(acc1, ts);
      if (lane < kBand) {
        xown[l0 * kBand + lane] = x0;
        p.b.xg[static_cast<size_t>(lane) * n + l0 * blocks + rank] = x0;
        if (two) {
          xown[l1 * kBand + lane] = x1;
          p.b.xg[static_cast<size_t>(lane) * n + l1 * blocks + rank] = x1;
        }
      }
    }
    __syncthreads();
    ATP_BAND_PROF(3);
    if (tid < kBand * kBand) {
      const int ra = tid / kBand, cb = tid % kBand;
      double sum = 0.0;
      for (int li = li0; li < own_rows; ++li) {
        sum += vs[static_cast<size_t>(ra) * n + li * blocks + rank - r0] * xown[li * kBand + cb];
      }
      mpart[tid] = sum;
    }
    cluster.sync();  // xg and every block's mpart
    ATP_BAND_PROF(4);
    if (tid < kBand * kBand) {
      double sum = 0.0;
      for (int r = 0; r < blocks; ++r) sum += cluster.map_shared_rank(mpart, r)[tid];
      sfull[tid] = sum;
    }
    __syncthreads();
    if (tid < kBand * kBand) {
      const int ra = tid / kBand, cb = tid % kBand;
      double sum = 0.0;
      for (int q = 0; q <= ra; ++q) sum += ts[q * kBand + ra] * sfull[q * kBand + cb];
      mfull[tid] = sum;
    }
    __syncthreads();
    for (int t = tid; t < (own_rows - li0) * kBand; t += kBrThreads) {
      const int li = li0 + t / kBand, cb = t % kBand, i = li * blocks + rank;
      double u = xown[li * kBand + cb];
#pragma unroll
      for (int ra = 0; ra < kBand; ++ra)
        u -= vs[static_cast<size_t>(ra) * n + i - r0] * mfull[ra * kBand + cb];
      xown[li * kBand + cb] = u;
    }
    __syncthreads();
    ATP_BAND_PROF(5);
    // -- A22 −= V·Xᵀ + U·Vᵀ on the own rows (a warp a row, the lanes along k).
    for (int li = li0 + warp; li < own_rows; li += kBrWarps) {
      const int i = li * blocks + rank;
      double vi[kBand], ui[kBand];
#pragma unroll
      for (int c = 0; c < kBand; ++c) {
        vi[c] = vs[static_cast<size_t>(c) * n + i - r0];
        ui[c] = xown[li * kBand + c];
      }
      double* row = a + static_cast<size_t>(li) * n;
      for (int k = r0 + lane; k < n; k += 32) {
        double s0 = 0.0, s1 = 0.0;
#pragma unroll
        for (int c = 0; c < kBand; ++c) {
          s0 += vi[c] * __ldcg(p.b.xg + static_cast<size_t>(c) * n + k);
          s1 += ui[c] * vs[static_cast<size_t>(c) * n + k - r0];
        }
        row[k] -= s0 + s1;
      }
    }
    __syncthreads();
    ATP_BAND_PROF(6);
    Publish(a, rows, n, blocks, rank, r0, pi + 1 < p.panels, p.b);
    ATP_BAND_PROF(7);
  }
  cluster.sync();  // no block leaves while another may still read its mpart
#ifdef ATP_SMALL_EIGEN_PROFILE
  if (tid == 0) {
    for (int q = 0; q < 8; ++q) {
      atomicAdd(reinterpret_cast<unsigned long long*>(&g_band_prof[rank][q]),
                static_cast<unsigned long long>(prof[q]));
    }
  }
#endif
}
#undef ATP_BAND_PROF

// ---- 2. Band -> tridiagonal -------------------------------------------------------------------

struct ChaseParams {
  const double* band;
  int n;
  int hop_slots;
  double* d;
  double* e;
  double* refl;
};

__device__ __forceinline__ double& Bnd(double* bs, int i, int k) {  // i >= k, i − k < kBw
  return bs[i * kBw + (i - k)];
}
__device__ __forceinline__ double BndSym(const double* bs, int i, int k) {
  return i >= k ? bs[i * kBw + (i - k)] : bs[k * kBw + (k - i)];
}

// Hop h of sweep j (a warp): the reflector H = I − tau·v·vᵀ on rows r0..r1-1 that takes column
// `col` (j, or the first column of the bulge the previous hop made) to beta·e_1, applied from the
// left to the bulge's other columns (L), from both sides to the diagonal block D, and from the
// right to the block B below D (which makes the next bulge). Lanes 0-15 take D's rows, 16-31
// B's, 0-14 L's columns. (A version with every 16-term loop unrolled and per-lane addresses took
// 2.6 ms instead of 5.0 at n = 528 but was wrong from n = 20 on; not kept: NOTES v13.)
__device__ void ChaseHop(double* bs, int n, int j, int h, double* refl, double* vsh, double* wsh) {
  const int lane = threadIdx.x & 31, e = lane & (kBand - 1), g = lane - kBand;
  const bool low = lane < kBand;
  const int r0 = j + 1 + h * kBand;
  const int len = min(kBand, n - r0);
  const int col = h == 0 ? j : r0 - kBand;
  const int r1 = r0 + len;
  const int nb = min(kBand, n - r1);
  const double x = e < len ? Bnd(bs, r0 + e, col) : 0.0;
  double s2 = e >= 1 && e < len ? x * x : 0.0;
#pragma unroll
  for (int o = kBand / 2; o > 0; o >>= 1) s2 += __shfl_xor_sync(0xffffffffu, s2, o);
  const double alpha = __shfl_sync(0xffffffffu, x, 0);
  double tau = 0.0, beta = alpha, scale = 0.0;
  if (s2 > 0.0) {
    beta = -copysign(sqrt(alpha * alpha + s2), alpha);
    tau = (beta - alpha) / beta;
    scale = 1.0 / (alpha - beta);
  }
  const double v = e == 0 ? 1.0 : (e < len ? x * scale : 0.0);
  __syncwarp();  // x read by all lanes before the column is overwritten
  if (low) {
    if (e < len) Bnd(bs, r0 + e, col) = e == 0 ? beta : 0.0;
    refl[e] = e == 0 ? tau : v;
    vsh[e] = v;
  }
  __syncwarp();
  if (tau == 0.0) return;
  double dot = 0.0;
  if (low) {
    if (e < len) {
      for (int f = 0; f < len; ++f) dot += BndSym(bs, r0 + e, r0 + f) * vsh[f];
    }
  } else if (g < nb) {
    for (int f = 0; f < len; ++f) dot += Bnd(bs, r1 + g, r0 + f) * vsh[f];
  }
  const double pe = tau * dot;  // D: p_e; B: tau·(B·v)_g
  double kv = low ? pe * v : 0.0;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) kv += __shfl_xor_sync(0xffffffffu, kv, o);
  const double we = pe - 0.5 * tau * kv * v;
  if (low) wsh[e] = we;
  const bool has_l = h > 0 && lane < kBand - 1;
  const int kk = col + 1 + lane;
  double wl = 0.0;
  if (has_l) {
    for (int f = 0; f < len; ++f) wl += vsh[f] * Bnd(bs, r0 + f, kk);
    wl *= tau;
  }
  __syncwarp();  // every read above before any write below
  if (low) {
    if (e < len) {
      for (int f = 0; f <= e; ++f) Bnd(bs, r0 + e, r0 + f) -= v * wsh[f] + we * vsh[f];
    }
  } else if (g < nb) {
    for (int f = 0; f < len; ++f) Bnd(bs, r1 + g, r0 + f) -= pe * vsh[f];
  }
  if (has_l) {
    for (int f = 0; f < len; ++f) Bnd(bs, r0 + f, kk) -= vsh[f] * wl;
  }
}

// One block; the band (with room for the bulges) in shared memory. Warp w chases sweeps w, w+16,
// ...; hop h of sweep j waits until sweep j − 1 has finished hop h + 2 (or all its hops): the
// hops of sweeps that far apart touch disjoint entries, and those in between come in the order
// of the sequential chase (bench/cuda/two_stage_tridiag.py checks the schedule bit for bit).
__global__ void __launch_bounds__(kChaseWarps * 32) ChaseKernel(ChaseParams p) {
  extern __shared__ double smem[];
  const int n = p.n;
  double* const bs = smem;
  double* const scratch = bs + static_cast<size_t>(n) * kBw;  // per warp: v, w
  int* const progress = reinterpret_cast<int*>(scratch + kChaseWarps * 2 * kBand);
  for (int t = threadIdx.x; t < n * kBw; t += blockDim.x) bs[t] = p.band[t];
  for (int t = threadIdx.x; t < n; t += blockDim.x) progress[t] = 0;
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  double* const vsh = scratch + warp * 2 * kBand;
  double* const wsh = vsh + kBand;
  volatile int* const prog = progress;
  for (int j = warp; j < n - 2; j += kChaseWarps) {
    const int hops = (n - 2 - j + kBand - 1) / kBand;
    const int prev_hops = j > 0 ? (n - 1 - j + kBand - 1) / kBand : 0;
    for (int h = 0; h < hops; ++h) {
      if (j > 0) {
        const int need = min(h + 3, prev_hops);
        if (lane == 0) {
          // Bounded: a schedule bug must fail the launch, not hang the stream (~0.1 s of spins).
          for (long long spins = 0; prog[j - 1] < need; ++spins) {
            if (spins > (1ll << 26)) __trap();
          }
        }
        __syncwarp();
        __threadfence_block();
      }
      ChaseHop(bs, n, j, h, p.refl + (static_cast<size_t>(j) * p.hop_slots + h) * kBand, vsh, wsh);
      __syncwarp();
      __threadfence_block();
      if (lane == 0) prog[j] = h + 1;
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    p.d[i] = bs[i * kBw];
    if (i + 1 < n) p.e[i] = bs[(i + 1) * kBw + 1];
  }
}

size_t ChaseSmemBytes(int n) {
  return (static_cast<size_t>(n) * kBw + kChaseWarps * 2 * kBand) * sizeof(double) +
         static_cast<size_t>(n) * sizeof(int);
}

// ---- 3. Qᵀ ------------------------------------------------------------------------------------

struct FormQParams {
  int n;
  int panels;
  int hop_slots;
  const double* pv;
  const double* pt;
  const double* refl;
  double* qt;
};

// Row k of a warp's row of Q at Skew(k) in shared memory: lanes taking reflectors kBand columns
// apart then hit different banks.
__host__ __device__ __forceinline__ int Skew(int k) { return k + (k >> 4); }

// A warp per kQRows rows c of Q = Q1·Q2 (e_cᵀ·H_0·H_1⋯ then the chase's reflectors sweep by
// sweep, a lane per hop), written to column c of qt.
__global__ void __launch_bounds__(kQWarps * 32) FormQtKernel(FormQParams p) {
  extern __shared__ double smem[];
  const int n = p.n, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int ld = Skew(n - 1) + 1;
  double* const xs = smem + static_cast<size_t>(warp) * kQRows * ld;
  const int c0 = (static_cast<int>(blockIdx.x) * kQWarps + warp) * kQRows;
  if (c0 >= n) return;
#pragma unroll
  for (int r = 0; r < kQRows; ++r) {
    for (int k = lane; k < n; k += 32) xs[r * ld + Skew(k)] = c0 + r == k ? 1.0 : 0.0;
  }
  __syncwarp();
  for (int pi = 0; pi < p.panels; ++pi) {  // x ← x·(I − V·T·Vᵀ)
    const int r0 = (pi + 1) * kBand;
    const double* v = p.pv + static_cast<size_t>(pi) * kBand * n;
    const double* t = p.pt + static_cast<size_t>(pi) * kBand * kBand;
    double acc[kQRows][kBand];
#pragma unroll
    for (int r = 0; r < kQRows; ++r) {
#pragma unroll
      for (int c = 0; c < kBand; ++c) acc[r][c] = 0.0;
    }
    for (int k = r0 + lane; k < n; k += 32) {
      double xk[kQRows];
#pragma unroll
      for (int r = 0; r < kQRows; ++r) xk[r] = xs[r * ld + Skew(k)];
#pragma unroll
      for (int c = 0; c < kBand; ++c) {
        const double vk = __ldg(v + static_cast<size_t>(c) * n + k - r0);
#pragma unroll
        for (int r = 0; r < kQRows; ++r) acc[r][c] += xk[r] * vk;
      }
    }
    double z[kQRows][kBand];
#pragma unroll
    for (int r = 0; r < kQRows; ++r) {
      const double zr = RowTimesT(acc[r], t);
#pragma unroll
      for (int c = 0; c < kBand; ++c) z[r][c] = __shfl_sync(0xffffffffu, zr, c);
    }
    for (int k = r0 + lane; k < n; k += 32) {
      double s[kQRows];
#pragma unroll
      for (int r = 0; r < kQRows; ++r) s[r] = 0.0;
#pragma unroll
      for (int c = 0; c < kBand; ++c) {
        const double vk = __ldg(v + static_cast<size_t>(c) * n + k - r0);
#pragma unroll
        for (int r = 0; r < kQRows; ++r) s[r] += vk * z[r][c];
      }
#pragma unroll
      for (int r = 0; r < kQRows; ++r) xs[r * ld + Skew(k)] -= s[r];
    }
  }
  __syncwarp();
  for (int j = 0; j < n - 2; ++j) {  // a sweep's hops act on disjoint columns: a lane each
    const int hops = (n - 2 - j + kBand - 1) / kBand;
    for (int h = lane; h < hops; h += 32) {
      const int r0 = j + 1 + h * kBand, len = min(kBand, n - r0);
      const double* rf = p.refl + (static_cast<size_t>(j) * p.hop_slots + h) * kBand;
      const double tau = rf[0];
      if (tau == 0.0) continue;
      double v[kBand];
      v[0] = 1.0;
#pragma unroll
      for (int f = 1; f < kBand; ++f) v[f] = rf[f];  // 0 beyond len
#pragma unroll
      for (int r = 0; r < kQRows; ++r) {
        double* x = xs + r * ld;
        double dot = 0.0;
#pragma unroll
        for (int f = 0; f < kBand; ++f) {
          if (f < len) dot += v[f] * x[Skew(r0 + f)];
        }
        dot *= tau;
#pragma unroll
        for (int f = 0; f < kBand; ++f) {
          if (f < len) x[Skew(r0 + f)] -= dot * v[f];
        }
      }
    }
    __syncwarp();
  }
#pragma unroll
  for (int r = 0; r < kQRows; ++r) {
    const int c = c0 + r;
    if (c >= n) break;
    for (int k = lane; k < n; k += 32) p.qt[static_cast<size_t>(k) * n + c] = xs[r * ld + Skew(k)];
  }
}

size_t FormQtSmemBytes(int n) {
  return static_cast<size_t>(kQWarps) * kQRows * (Skew(n - 1) + 1) * sizeof(double);
}

}  // namespace

void BandTridiagDoubles(int n, size_t (&doubles)[6]) {
  const size_t nn = static_cast<size_t>(n);
  doubles[0] = nn * kBw;
  doubles[1] = static_cast<size_t>(PanelCount(n)) * kBand * nn;
  doubles[2] = static_cast<size_t>(PanelCount(n)) * kBand * kBand;
  doubles[3] = kBand * nn;
  doubles[4] = kBand * nn;
  doubles[5] = nn * static_cast<size_t>(HopSlots(n)) * kBand;
}

bool BandReduceFits(int n, int blocks, size_t max_smem) {
  return n >= 1 && n - kBand <= kMaxPanelRowsPerThread * kBrThreads && blocks > 0 &&
         BandReduceSmemDoubles(n, blocks) * sizeof(double) <= max_smem &&
         ChaseSmemBytes(n) <= max_smem;
}

cudaError_t BandTridiagConfigure(size_t max_smem) {
  const int smem = static_cast<int>(max_smem);
  cudaError_t err = cudaSuccess;
  for (auto* kernel : {BandReduceKernel<1>, BandReduceKernel<2>}) {
    if (err == cudaSuccess) {
      err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    }
    if (err == cudaSuccess) {
      err = cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
    }
  }
  if (err == cudaSuccess) {
    err = cudaFuncSetAttribute(ChaseKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  }
  return err;
}

cudaError_t LaunchBandTridiag(const double* a, int n, int blocks, double* d, double* e,
                              const BandTridiagBuffers& b, cudaStream_t stream, unsigned* started) {
  cudaError_t err = cudaMemsetAsync(b.band, 0, sizeof(double) * n * kBw, stream);
  if (err != cudaSuccess) return err;
  const BandReduceParams bp{a, n, PanelCount(n), b, started};
  ClusterLaunch launch(blocks, kBrThreads, BandReduceSmemDoubles(n, blocks) * sizeof(double),
                       stream);
  err = n - kBand <= kBrThreads ? launch.Run(BandReduceKernel<1>, bp)
                                : launch.Run(BandReduceKernel<2>, bp);
  if (err != cudaSuccess) return err;
  const ChaseParams cp{b.band, n, HopSlots(n), d, e, b.refl};
  ChaseKernel<<<1, kChaseWarps * 32, ChaseSmemBytes(n), stream>>>(cp);
  return cudaGetLastError();
}

cudaError_t LaunchBandFormQt(int n, const BandTridiagBuffers& b, double* qt, cudaStream_t stream) {
  const FormQParams fp{n, PanelCount(n), HopSlots(n), b.pv, b.pt, b.refl, qt};
  const int rows_per_block = kQWarps * kQRows;
  FormQtKernel<<<(n + rows_per_block - 1) / rows_per_block, kQWarps * 32, FormQtSmemBytes(n),
                 stream>>>(fp);
  return cudaGetLastError();
}

}  // namespace atp::kernels::cuda
