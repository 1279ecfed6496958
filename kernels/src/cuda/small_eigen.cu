#include <cooperative_groups.h>

#include <cfloat>

#include "cuda/cluster_launch.h"
#include "cuda/small_eigen.h"

namespace atp::kernels::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kTridThreads = 512;
constexpr int kTridWarps = kTridThreads / 32;
constexpr int kBisectWarps = 4;     // eigenvalues per block, a warp each
// Sturm counts per lane and round: 64 per round, 6 bits. 8 (256 a round, 8 bits) was measured
// slower: eigenvalues 0.41 -> 0.93-1.03 ms at n = 576 (the rounds are issue-bound, not
// latency-bound: one warp per scheduler already keeps the pipes busy; v10).
constexpr int kBisectPoints = 2;
// SturmCountsByMinors; SturmCounts stays as the probe's reference.
constexpr bool kSturmByMinors = true;
constexpr int kInverseThreads = 4;  // eigenvalue groups, a thread each (with its shared memory)
constexpr int kInverseArrays = 6;   // per thread: LU of T − λI (5 arrays) and the iterate
// Solves per eigenvector: λ is within ~2u·‖T‖ and ungrouped neighbours are more than
// kSmallEigenGroupGap·‖T‖ away, so each solve shrinks the other components by ~u/1e-9 ≈ 2e-7
// (three solves took 0.28 ms at n = 528, two 0.23: v12).
constexpr int kInverseSolves = 2;
constexpr int kBackWarps = 4;       // eigenvectors per block, a warp each (8: 0.23 -> 0.19 ms, v12)
constexpr int kBackChunk = 8;       // reflectors staged in shared memory at a time
constexpr int kPerLane = static_cast<int>(kSmallEigenMaxN / 32);
static_assert(kSmallEigenMaxN % 32 == 0, "kSmallEigenMaxN must be a multiple of 32");

__device__ __forceinline__ double WarpSum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The sum over a block of kWarps warps, returned to every thread with the same bits, with one
// barrier: each warp's partial in red[warp] (kWarps doubles), then every warp sums the kWarps
// partials itself by a butterfly. The caller guarantees a barrier between the reads of one call
// and the writes of the next (the tridiagonalisation has several per column); two barriers fewer
// than a reduction through one warp (v12).
template <int kWarps>
__device__ double BlockSumOneBarrier(double v, double* red) {
  static_assert(kWarps <= 32, "a lane per warp");
  v = WarpSum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) red[warp] = v;
  __syncthreads();
  return WarpSum(lane < kWarps ? red[lane] : 0.0);
}

// 1/q to about 1 ulp: the hardware's approximate reciprocal and two Newton steps (the Sturm
// recurrence divides at every step; IEEE division is several times longer). q is normal here.
__device__ __forceinline__ double FastRcp(double q) {
  double r;
  asm("rcp.approx.ftz.f64 %0, %1;" : "=d"(r) : "d"(q));
  double e = fma(-q, r, 1.0);
  r = fma(r, e, r);
  e = fma(-q, r, 1.0);
  return fma(r, e, r);
}

// ---- 1. Tridiagonalisation --------------------------------------------------------------------

#ifdef ATP_SMALL_EIGEN_PROFILE
__device__ long long g_prof[16][6];
#endif

constexpr int kMaxClusterBlocks = 16;
constexpr int kRowsPerWarp = 3;  // rows of a block per warp: ceil(ceil(608 / 16) / 16)
static_assert(kTridWarps >= kMaxClusterBlocks, "warp r gathers block r's values");
static_assert(kRowsPerWarp * kTridWarps <= 64, "a lane gathers at most two values per block");
static_assert(kSmallEigenMaxN <= 2 * kTridThreads, "a thread loads at most two row entries");
static_assert(kRowsPerWarp * kTridWarps * kMaxClusterBlocks >= kSmallEigenMaxN,
              "a warp takes at most kRowsPerWarp rows");

size_t TridiagSmemBytes(int64_t n, int blocks) {
  const int64_t rows = (n + blocks - 1) / blocks;
  return static_cast<size_t>(rows * n + 5 * n + 2 * rows + kMaxClusterBlocks + kTridWarps + 1) *
         sizeof(double);
}

struct TridiagParams {
  const double* a;
  int n;
  double* d;          // [n] diagonal of T
  double* e;          // [n - 1] off-diagonal of T
  double* tau;        // [n - 1] reflector factors
  double* hh;         // [n, n]: row j holds v_j at columns j+1..n-1 (v_j[j+1] = 1)
  double* rows_seen;  // [n, n] scratch: row j holds row j of the trailing matrix after step j-2
  unsigned* started;  // if not null: set to 1 when the kernel starts
};

// The reflector H_j = I − tau·v·vᵀ that maps x[j+1..n-1] onto beta·e_1 (LAPACK's dlarfg), from
// x[j..n-1] and xnorm2 = Σ_{k > j+1} x[k]² (the same bits in every block): v into vn, T's
// entries d_j and e_j (block 0). Returns tau, and in scale_out the factor with v[k] = x[k]·scale
// for k > j+1.
__device__ double Reflect(int j, const double* x, double xnorm2, double* vn, const TridiagParams& p,
                          bool leader, double& scale_out) {
  const int n = p.n;
  const double alpha = x[j + 1];
  double tau = 0.0, beta = alpha, scale = 0.0;
  if (xnorm2 > 0.0) {
    beta = -copysign(sqrt(alpha * alpha + xnorm2), alpha);
    tau = (beta - alpha) * FastRcp(beta);
    scale = FastRcp(alpha - beta);
  }
  for (int k = j + 1 + static_cast<int>(threadIdx.x); k < n; k += kTridThreads) {
    const double v = k == j + 1 ? 1.0 : x[k] * scale;
    vn[k] = v;
    if (leader) p.hh[static_cast<size_t>(j) * n + k] = v;
  }
  if (leader && threadIdx.x == 0) {
    p.d[j] = x[j];
    p.e[j] = beta;
    p.tau[j] = tau;
  }
  scale_out = scale;
  return tau;
}

// The fused pass of one warp over its first `kRows` own rows (rowp, with vi = v_i, wi = w_i):
// kUpdate: row −= v_i·wᵀ + w_i·vᵀ (column j's rank-2 update) for k >= k0, then acc += row·vn
// with vn[k] = x[k]·scale, 1 at k = j+2 (p_{j+1}'s dot products); the row with index `next` (or
// none: -1) is also stored to `seen`. One instantiation per row count and update flag, so that the
// loop has no per-element conditions (with them it ran 4.5 IMAD per DFMA and reconverged at every
// row: ncu, v10).
template <int kRows, bool kUpdate>
__device__ __forceinline__ void UpdateOwnRows(
    double* const (&rowp)[kRowsPerWarp], const double (&vi)[kRowsPerWarp],
    const double (&wi)[kRowsPerWarp], double (&acc)[kRowsPerWarp], const double* __restrict__ w,
    const double* __restrict__ v, const double* __restrict__ x, double scale, int k0, int n,
    int next, double* seen) {
  const int k_first = k0 - static_cast<int>(threadIdx.x & 31);
#pragma unroll 2
  for (int k = k0; k < n; k += 32) {
    // vn[k] as Reflect forms it (the same bits); vn[j+2] = 1, the first k of lane 0.
    const double vnk = k == k_first ? 1.0 : x[k] * scale;
    double wk = 0.0, vk = 0.0;
    if (kUpdate) {
      wk = w[k];
      vk = v[k];
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      double val = rowp[r][k];
      if (kUpdate) {
        val -= vi[r] * wk + wi[r] * vk;
        rowp[r][k] = val;
      }
      acc[r] += val * vnk;
      if (r == next) __stcg(seen + k, val);
    }
  }
}

// UpdateOwnRows for the run-time row count (1..kRows; 0: nothing to do).
template <int kRows, bool kUpdate>
__device__ __forceinline__ void UpdateOwnRowsUpTo(
    int count, double* const (&rowp)[kRowsPerWarp], const double (&vi)[kRowsPerWarp],
    const double (&wi)[kRowsPerWarp], double (&acc)[kRowsPerWarp], const double* __restrict__ w,
    const double* __restrict__ v, const double* __restrict__ x, double scale, int k0, int n,
    int next, double* seen) {
  if (count == kRows) {
    UpdateOwnRows<kRows, kUpdate>(rowp, vi, wi, acc, w, v, x, scale, k0, n, next, seen);
  } else if constexpr (kRows > 1) {
    UpdateOwnRowsUpTo<kRows - 1, kUpdate>(count, rowp, vi, wi, acc, w, v, x, scale, k0, n, next,
                                          seen);
  }
}

// One cluster. Block `rank` holds the rows i = li·blocks + rank of A in shared memory (full rows,
// updated in place: the trailing matrix stays symmetric). One cluster barrier per column j.
// Before it, every block has p_j = tau_j·A22·v_j for its own rows, and the owner of row j+1 has
// written that row to global memory (rows_seen: sixteen blocks reading one block's shared memory
// would queue on that block; the L2 cache serves them side by side). After it, every block
// gathers p_j (warp r reads block r's values: one block per remote load) and row j+1, forms
// w_j = p_j − (tau_j/2)(p_jᵀv_j)v_j and row j+1 after the update (the row as written minus
// v_j[j+1]·w_j − w_j[j+1]·v_j), hence the next reflector (every block the same bits); then one
// pass over its rows applies A22 −= v_j·w_jᵀ + w_j·v_jᵀ and computes p_{j+1} (a warp takes up to
// kRowsPerWarp rows at once). v and the own p values alternate between two buffers, so that a
// block that runs ahead never overwrites what a slower one still reads.
__global__ void __launch_bounds__(kTridThreads) TridiagonalizeKernel(TridiagParams p) {
  cg::cluster_group cluster = cg::this_cluster();
  const int blocks = static_cast<int>(cluster.num_blocks());
  const int rank = static_cast<int>(cluster.block_rank());
  const bool leader = rank == 0;
  const int n = p.n;
  if (p.started != nullptr && leader && threadIdx.x == 0) atomicExch(p.started, 1u);
  const int rows = (n + blocks - 1) / blocks;
  extern __shared__ double smem[];
  double* const a = smem;
  double* const vbase = a + static_cast<size_t>(rows) * n;  // 2 x n
  double* const pfull = vbase + 2 * n;
  double* const w = pfull + n;
  double* const x = w + n;
  double* const pown = x + n;                     // 2 x rows
  double* const gpart = pown + 2 * rows;          // kMaxClusterBlocks partial sums of pᵀv
  double* const red = gpart + kMaxClusterBlocks;  // kTridWarps + 1
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  // The first local row whose global index is at least t = j + 2, kept as t advances by one a
  // column (a division by the cluster size each column cost ~1.4% of the kernel: ncu, v10):
  // first_own = the number of own rows below t, next_own = the global index of the next one.
  int first_own = 0, next_own = rank;  // t = 0

  for (int li = 0; li < rows; ++li) {
    const int i = li * blocks + rank;
    if (i >= n) break;
    for (int k = tid; k < n; k += kTridThreads) {
      a[static_cast<size_t>(li) * n + k] = p.a[static_cast<size_t>(i) * n + k];
    }
  }
#ifdef ATP_SMALL_EIGEN_PROFILE
  long long prof[6] = {0, 0, 0, 0, 0, 0};
  long long tp = clock64();
#define ATP_PROF(i)           \
  do {                        \
    long long t_ = clock64(); \
    prof[i] += t_ - tp;       \
    tp = t_;                  \
  } while (0)
#else
#define ATP_PROF(i) \
  do {              \
  } while (0)
#endif
  double tau = 0.0;  // tau_j (j = -1: no update yet)
  for (int j = -1; j + 1 < n; ++j) {
    if (next_own == j + 1) {  // t - 1 = j + 1 was an own row
      ++first_own;
      next_own += blocks;
    }
    const double* const v = vbase + (j & 1) * n;
    double* const vn = vbase + ((j + 1) & 1) * n;
    double part = 0.0;
    if (j < 0) {
      for (int k = tid; k < n; k += kTridThreads) {
        const double xk = p.a[k];  // row 0 as it is
        x[k] = xk;
        if (k >= 2) part += xk * xk;
      }
    } else {
      ATP_PROF(5);
      cluster.sync();
      ATP_PROF(0);
      // Row j+1 from L2 and p_j from the other blocks: every load issued before any is used, so
      // that their latencies overlap (n <= 2·kTridThreads, rows <= 64).
      const double* seen = p.rows_seen + static_cast<size_t>(j + 1) * n;
      const int k0 = j + 1 + tid, k1 = k0 + kTridThreads;
      const double x0 = k0 < n ? __ldcg(seen + k0) : 0.0;
      const double x1 = k1 < n ? __ldcg(seen + k1) : 0.0;
      if (tau != 0.0 && warp < blocks) {
        const double* src = cluster.map_shared_rank(pown + (j & 1) * rows, warp);
        const int i0 = lane * blocks + warp, i1 = (lane + 32) * blocks + warp;
        const bool ok0 = lane < rows && i0 > j && i0 < n;
        const bool ok1 = lane + 32 < rows && i1 > j && i1 < n;
        const double p0 = ok0 ? src[lane] : 0.0;
        const double p1 = ok1 ? src[lane + 32] : 0.0;
        double dot = 0.0;
        if (ok0) {
          pfull[i0] = p0;
          dot += p0 * v[i0];
        }
        if (ok1) {
          pfull[i1] = p1;
          dot += p1 * v[i1];
        }
        dot = WarpSum(dot);
        if (lane == 0) gpart[warp] = dot;
      }
      if (k0 < n) x[k0] = x0;
      if (k1 < n) x[k1] = x1;
      __syncthreads();  // pfull, gpart
      double half = 0.0, w1 = 0.0;
      if (tau != 0.0) {
        // Every lane of every warp (and block) gets the same bits: the butterfly adds the same
        // two values on both sides of each exchange.
        const double dot = WarpSum(lane < blocks ? gpart[lane] : 0.0);
        half = 0.5 * tau * dot;
        w1 = pfull[j + 1] - half;  // v[j+1] = 1
      }
      // The same k for the same thread as in the pull above: x[k] is this thread's own.
      for (int k = j + 1 + tid; k < n; k += kTridThreads) {
        double xk = x[k];
        if (tau != 0.0) {
          const double vk = v[k];
          const double wk = pfull[k] - half * vk;
          w[k] = wk;
          xk -= wk + w1 * vk;
          x[k] = xk;
        }
        if (k >= j + 3) part += xk * xk;
      }
    }
    ATP_PROF(1);
    if (j + 2 == n) {  // x[n-1] is T's last diagonal entry
      __syncthreads();
      if (leader && tid == 0) p.d[n - 1] = x[n - 1];
      break;
    }
    // Also publishes x and w. The previous call's partials were read before this column's cluster
    // barrier.
    const double xnorm2 = BlockSumOneBarrier<kTridWarps>(part, red);
    // No barrier after Reflect: the fused pass below forms vn's entries from x (complete since
    // the barrier above) itself, and vn is next read after the cluster barrier (one barrier
    // fewer per column: v12).
    double scale = 0.0;
    const double tau_next = Reflect(j + 1, x, xnorm2, vn, p, leader, scale);
    ATP_PROF(2);
    // Rows i >= j+2: the update of column j, p_{j+1}, and row j+2 for the next column.
    const int base = first_own + warp;
    double* const seen_next = p.rows_seen + static_cast<size_t>(j + 2) * n;
    double* rowp[kRowsPerWarp];
    double vi[kRowsPerWarp], wi[kRowsPerWarp], acc[kRowsPerWarp];
    bool has[kRowsPerWarp];
    int count = 0, next = -1;
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int li = base + r * kTridWarps;
      const int i = li * blocks + rank;
      has[r] = li < rows && i < n;  // true for the first `count` rows only
      count += has[r];
      rowp[r] = a + static_cast<size_t>(has[r] ? li : 0) * n;
      vi[r] = has[r] && tau != 0.0 ? v[i] : 0.0;
      wi[r] = has[r] && tau != 0.0 ? w[i] : 0.0;
      if (has[r] && i == j + 2) next = r;
      acc[r] = 0.0;
    }
    if (tau != 0.0) {
      UpdateOwnRowsUpTo<kRowsPerWarp, true>(count, rowp, vi, wi, acc, w, v, x, scale, j + 2 + lane,
                                            n, next, seen_next);
    } else {
      UpdateOwnRowsUpTo<kRowsPerWarp, false>(count, rowp, vi, wi, acc, w, v, x, scale, j + 2 + lane,
                                             n, next, seen_next);
    }
    if (tau_next != 0.0) {
      double* dst = pown + ((j + 1) & 1) * rows;
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        const double sum = WarpSum(acc[r]) * tau_next;
        if (has[r] && lane == 0) dst[base + r * kTridWarps] = sum;
      }
    }
    ATP_PROF(3);
    tau = tau_next;
  }
  cluster.sync();  // no block leaves while another may still read its shared memory
#ifdef ATP_SMALL_EIGEN_PROFILE
  if (tid == 0) {
    for (int q = 0; q < 6; ++q)
      atomicAdd(reinterpret_cast<unsigned long long*>(&g_prof[rank][q]),
                static_cast<unsigned long long>(prof[q]));
  }
#endif
#undef ATP_PROF
}

// ---- 2. Eigenvalues ---------------------------------------------------------------------------

// Number of eigenvalues of T (d, squared off-diagonal e2) that are <= x, for kBisectPoints
// points at once (independent chains, so that their latencies overlap). LAPACK's dstebz count.
__device__ void SturmCounts(const double* d, const double* e2, int n, double pivmin,
                            const double (&x)[kBisectPoints], int (&count)[kBisectPoints]) {
  double q[kBisectPoints];
#pragma unroll
  for (int t = 0; t < kBisectPoints; ++t) {
    q[t] = d[0] - x[t];
    if (fabs(q[t]) < pivmin) q[t] = -pivmin;
    count[t] = q[t] <= 0.0;
  }
  for (int k = 1; k < n; ++k) {
    const double dk = d[k], ek = e2[k - 1];
#pragma unroll
    for (int t = 0; t < kBisectPoints; ++t) {
      q[t] = dk - ek * FastRcp(q[t]) - x[t];
      if (fabs(q[t]) < pivmin) q[t] = -pivmin;
      count[t] += q[t] <= 0.0;
    }
  }
}

// The same count from the signs of the leading principal minors p_k of T − xI (p_k = (d_k − x)·
// p_{k−1} − e²_{k−1}·p_{k−2}; q_k above is p_k / p_{k−1}): the chain from one step to the next is
// one FMA instead of a division, and e²·p_{k−2} is formed a step ahead. d and e2 are scaled so
// that |T| <= 1, so |p| grows by at most ~2.5x a step; both p's are brought back near 1 by an
// exact power of 2 every 8 steps. An exact zero p_k counts as a sign change (q_k = −pivmin
// above). The eigenvalues took 0.31 ms at n = 528 with SturmCounts, 0.15 with this (v12).
__device__ __forceinline__ int Exponent(double v) {
  return static_cast<int>((__double_as_longlong(v) >> 52) & 0x7ff);
}
__device__ void SturmCountsByMinors(const double* d, const double* e2, int n,
                                    const double (&x)[kBisectPoints], int (&count)[kBisectPoints]) {
  double prev[kBisectPoints], cur[kBisectPoints];
#pragma unroll
  for (int t = 0; t < kBisectPoints; ++t) {
    prev[t] = 1.0;
    cur[t] = d[0] - x[t];
    if (cur[t] == 0.0) cur[t] = -DBL_MIN;
    count[t] = cur[t] < 0.0;
  }
  auto step = [&](double dk, double ek) {
#pragma unroll
    for (int t = 0; t < kBisectPoints; ++t) {
      double next = fma(dk - x[t], cur[t], -ek * prev[t]);
      if (next == 0.0) next = -copysign(DBL_MIN, cur[t]);
      count[t] += (next < 0.0) != (cur[t] < 0.0);
      prev[t] = cur[t];
      cur[t] = next;
    }
  };
  // Eight steps at a time, their shared-memory loads issued first; then both p's rescaled by
  // 2^(1023 − E), E the larger biased exponent of the two (clamped to a normal factor).
  constexpr int kSteps = 8;
  int k = 1;
  for (; k + kSteps <= n; k += kSteps) {
    double dk[kSteps], ek[kSteps];
#pragma unroll
    for (int u = 0; u < kSteps; ++u) {
      dk[u] = d[k + u];
      ek[u] = e2[k + u - 1];
    }
#pragma unroll
    for (int u = 0; u < kSteps; ++u) step(dk[u], ek[u]);
#pragma unroll
    for (int t = 0; t < kBisectPoints; ++t) {
      int e = max(Exponent(cur[t]), Exponent(prev[t]));
      e = min(max(e, 1), 2045);
      const double f = __longlong_as_double(static_cast<long long>(2046 - e) << 52);
      cur[t] *= f;
      prev[t] *= f;
    }
  }
  for (; k < n; ++k) step(d[k], e2[k - 1]);
}

// A warp per eigenvalue: lambda[i] (ascending) by multisection of the Gershgorin interval, 64
// points per round, to an absolute width of 2u·‖T‖ (LAPACK's default absolute tolerance; ~9
// rounds for every eigenvalue — a width relative to |λ| took up to two more rounds for the small
// ones: 0.37 -> 0.31 ms at n = 528, v12). Block 0 also writes scalars[0] = max(|lower|, |upper|)
// Gershgorin bound (the ‖T‖ of the group and pivot thresholds).
template <bool kMinors>
__global__ void __launch_bounds__(kBisectWarps * 32)
    EigenvaluesKernel(const double* d_in, const double* e_in, int n, double* lambda,
                      double* scalars) {
  extern __shared__ double sm[];
  double* d = sm;
  double* e2 = sm + n;
  __shared__ double bounds[5];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (warp == 0) {
    double lo = DBL_MAX, hi = -DBL_MAX, emax2 = 0.0;
    for (int k = lane; k < n; k += 32) {
      const double left = k > 0 ? fabs(e_in[k - 1]) : 0.0;
      const double right = k + 1 < n ? fabs(e_in[k]) : 0.0;
      lo = fmin(lo, d_in[k] - left - right);
      hi = fmax(hi, d_in[k] + left + right);
      emax2 = fmax(emax2, right * right);
    }
    for (int o = 16; o > 0; o >>= 1) {
      lo = fmin(lo, __shfl_xor_sync(0xffffffffu, lo, o));
      hi = fmax(hi, __shfl_xor_sync(0xffffffffu, hi, o));
      emax2 = fmax(emax2, __shfl_xor_sync(0xffffffffu, emax2, o));
    }
    if (lane == 0) {
      const double tnorm = fmax(fabs(lo), fabs(hi));
      const double pivmin = DBL_MIN * fmax(1.0, emax2);
      const double pad = 2.0 * DBL_EPSILON * tnorm * n + 4.0 * pivmin;
      bounds[0] = lo - pad;
      bounds[1] = hi + pad;
      bounds[2] = pivmin;
      bounds[3] = tnorm;
      // kMinors: T scaled by 2^-e, tnorm = m·2^e with m in [0.5, 1): |T| < 1.
      int e = 0;
      if (tnorm > 0.0 && tnorm <= DBL_MAX) frexp(tnorm, &e);
      bounds[4] = kMinors ? ldexp(1.0, -e) : 1.0;
      if (blockIdx.x == 0) scalars[0] = tnorm;
    }
  }
  __syncthreads();
  {
    const double scale = bounds[4];
    for (int k = threadIdx.x; k < n; k += blockDim.x) {
      d[k] = d_in[k] * scale;
      const double ek = k + 1 < n ? e_in[k] * scale : 0.0;
      e2[k] = ek * ek;
    }
  }
  __syncthreads();
  const int i = blockIdx.x * kBisectWarps + warp;
  if (i >= n) return;
  const double pivmin = bounds[2];
  double lo = bounds[0], hi = bounds[1];
  constexpr int kPoints = 32 * kBisectPoints;
  for (int round = 0; round < 24; ++round) {  // 6 bits a round; ends on width well before
    const double width = hi - lo;
    if (!(width > 2.0 * DBL_EPSILON * bounds[3] + pivmin)) break;
    double x[kBisectPoints];
    int count[kBisectPoints];
#pragma unroll
    for (int t = 0; t < kBisectPoints; ++t) {
      x[t] = lo + width * (static_cast<double>(t * 32 + lane + 1) / (kPoints + 1));
    }
    if (kMinors) {
      double xs[kBisectPoints];
#pragma unroll
      for (int t = 0; t < kBisectPoints; ++t) xs[t] = x[t] * bounds[4];
      SturmCountsByMinors(d, e2, n, xs, count);
    } else {
      SturmCounts(d, e2, n, pivmin, x, count);
    }
    // The first point with more than i eigenvalues at or below it brackets lambda[i] with its
    // predecessor.
    int first = kPoints;
#pragma unroll
    for (int t = kBisectPoints - 1; t >= 0; --t) {
      const unsigned mask = __ballot_sync(0xffffffffu, count[t] > i);
      if (mask) first = t * 32 + __ffs(mask) - 1;
    }
    double above = hi, below = lo;
#pragma unroll
    for (int t = 0; t < kBisectPoints; ++t) {
      const double xa = __shfl_sync(0xffffffffu, x[t], first & 31);
      const double xb = __shfl_sync(0xffffffffu, x[t], (first + 31) & 31);
      if (first < kPoints && first / 32 == t) above = xa;
      if (first > 0 && (first - 1) / 32 == t) below = xb;
    }
    if (above == hi && below == lo) break;
    lo = below;
    hi = above;
  }
  if (lane == 0) lambda[i] = 0.5 * (lo + hi);
}

// ---- 3. Eigenvectors of T ---------------------------------------------------------------------

__device__ __forceinline__ double StartEntry(int m, int k) {
  uint64_t h = (static_cast<uint64_t>(m) << 32) ^ static_cast<uint64_t>(k) ^ 0x9e3779b97f4a7c15ull;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return static_cast<double>(h >> 11) * (2.0 / 9007199254740992.0) - 1.0;  // [-1, 1)
}

struct InverseParams {
  const double* d;
  const double* e;
  const double* lambda;
  const double* scalars;
  int n;
  int first;
  double* zt;  // [n, n]: component k of eigenvector m at k·n + m
  int* fallback;
};

size_t InverseSmemBytes(int64_t n) {
  return static_cast<size_t>(kInverseThreads * (kInverseArrays * n + 1)) * sizeof(double);
}

// The unit eigenvector of an isolated eigenvalue lam (none other within kSmallEigenGroupGap·‖T‖)
// into zt's column m, from a twisted factorisation of T − λI (Parlett and Dhillon): the top-down
// LDLᵀ pivots D+ (fp, reciprocals rp), the bottom-up UDUᵀ pivots D− (reciprocals rm), the twist
// index r where γ_r = D+_r + D−_r − (d_r − λ) is smallest, then z_r = 1 and z outwards from r by
// the two factors' multipliers: three sequential passes where inverse iteration took an LU and
// two solves of five passes each (0.23 -> 0.07 ms at n = 528: v12). Its vector is as accurate as
// inverse iteration's: both are the exact eigenvector of T plus an O(u·‖T‖) perturbation, an
// angle of ~u·‖T‖/gap. Pivots below pert are raised to ±pert, as in the LU. False (zt untouched)
// when z is not finite.
__device__ bool TwistedVector(const InverseParams& p, int m, double lam, double pert, double* fp,
                              double* rp, double* rm, double* z) {
  const int n = p.n;
  auto raise = [pert](double u) { return fabs(u) < pert ? (u < 0.0 ? -pert : pert) : u; };
  double dp = raise(p.d[0] - lam);
  double r = FastRcp(dp);
  fp[0] = dp;
  rp[0] = r;
#pragma unroll 4
  for (int k = 1; k < n; ++k) {
    const double ek = p.e[k - 1];
    dp = raise((p.d[k] - lam) - ek * ek * r);
    r = FastRcp(dp);
    fp[k] = dp;
    rp[k] = r;
  }
  double dm = raise(p.d[n - 1] - lam);
  double q = FastRcp(dm);
  rm[n - 1] = q;
  int twist = n - 1;
  double best = fabs(fp[n - 1] + dm - (p.d[n - 1] - lam));
#pragma unroll 4
  for (int k = n - 2; k >= 0; --k) {
    const double ek = p.e[k];
    const double shifted = p.d[k] - lam;
    dm = raise(shifted - ek * ek * q);
    q = FastRcp(dm);
    rm[k] = q;
    const double g = fabs(fp[k] + dm - shifted);
    if (g < best) {
      best = g;
      twist = k;
    }
  }
  z[twist] = 1.0;
  double ss = 1.0, zk = 1.0;
  for (int k = twist - 1; k >= 0; --k) {
    zk = -p.e[k] * zk * rp[k];
    z[k] = zk;
    ss += zk * zk;
  }
  zk = 1.0;
  for (int k = twist + 1; k < n; ++k) {
    zk = -p.e[k - 1] * zk * rm[k];
    z[k] = zk;
    ss += zk * zk;
  }
  if (!isfinite(ss)) return false;
  const double inv = 1.0 / sqrt(ss);
  for (int k = 0; k < n; ++k) p.zt[static_cast<size_t>(k) * n + m] = z[k] * inv;
  return true;
}

// A thread per group of close eigenvalues (gap <= kSmallEigenGroupGap·‖T‖) among first..n-1,
// started by the thread of the group's first eigenvalue, with its arrays in shared memory (the
// recurrences are sequential: latency is what counts). Per member: LU with partial pivoting of
// T − λI (LAPACK's dgttrf; tiny pivots raised to eps·‖T‖), kInverseSolves solves from a
// pseudo-random start, each followed by modified Gram–Schmidt against the group's earlier members
// and normalisation; a group of one by TwistedVector.
__global__ void __launch_bounds__(kInverseThreads) InverseIterationKernel(InverseParams p) {
  const int n = p.n;
  const int i = p.first + static_cast<int>(blockIdx.x) * kInverseThreads + threadIdx.x;
  if (i >= n) return;
  const double tnorm = p.scalars[0];
  const double gap = kSmallEigenGroupGap * tnorm;
  if (i > p.first && !(p.lambda[i] - p.lambda[i - 1] > gap)) return;  // not a group's first
  int last = i;
  while (last + 1 < n && !(p.lambda[last + 1] - p.lambda[last] > gap)) ++last;
  if (last - i + 1 > kSmallEigenMaxGroup || !(tnorm > 0.0)) {
    atomicExch(p.fallback, 1);
    return;
  }
  const double pert = fmax(tnorm * DBL_EPSILON, 1e4 * DBL_MIN);
  extern __shared__ double ism[];
  double* dl = ism + static_cast<size_t>(threadIdx.x) * (kInverseArrays * n + 1);  // odd stride
  double* rd = dl + n;  // reciprocals of U's diagonal
  double* du = rd + n;
  double* du2 = du + n;
  double* piv = du2 + n;
  double* z = piv + n;
  auto raise = [pert](double u) { return fabs(u) < pert ? (u < 0.0 ? -pert : pert) : u; };
  auto zt = [&](int k, int m) -> double& { return p.zt[static_cast<size_t>(k) * n + m]; };
  if (last == i && TwistedVector(p, i, p.lambda[i], pert, dl, rd, du, piv)) return;
  for (int m = i; m <= last; ++m) {
    const double lam = p.lambda[m];
    double dk = p.d[0] - lam;
    double duk = n > 1 ? p.e[0] : 0.0;
#pragma unroll 4
    for (int k = 0; k + 1 < n; ++k) {
      const double lk = p.e[k];
      const double dnext = p.d[k + 1] - lam;
      const double dunext = k + 2 < n ? p.e[k + 1] : 0.0;
      if (fabs(dk) >= fabs(lk)) {
        const double mult = dk != 0.0 ? lk / dk : 0.0;
        dl[k] = mult;
        rd[k] = FastRcp(raise(dk));
        du[k] = duk;
        du2[k] = 0.0;
        piv[k] = 0.0;
        dk = dnext - mult * duk;
        duk = dunext;
      } else {
        const double mult = dk / lk;
        dl[k] = mult;
        rd[k] = FastRcp(raise(lk));
        du[k] = dnext;
        du2[k] = dunext;
        piv[k] = 1.0;
        dk = duk - mult * dnext;
        duk = -mult * dunext;
      }
    }
    rd[n - 1] = FastRcp(raise(dk));

    for (int k = 0; k < n; ++k) z[k] = StartEntry(m, k);
    for (int solve = 0; solve < kInverseSolves; ++solve) {
      // L: row interchanges and multipliers.
      double bk = z[0];
#pragma unroll 4
      for (int k = 0; k + 1 < n; ++k) {
        const double bnext = z[k + 1];
        if (piv[k] == 0.0) {
          z[k] = bk;
          bk = bnext - dl[k] * bk;
        } else {
          z[k] = bnext;
          bk = bk - dl[k] * bnext;
        }
      }
      // U: back substitution with up to two superdiagonals.
      double x1 = bk * rd[n - 1];  // x[k+1]
      double x2 = 0.0;             // x[k+2]
      z[n - 1] = x1;
#pragma unroll 4
      for (int k = n - 2; k >= 0; --k) {
        const double xk = (z[k] - du[k] * x1 - du2[k] * x2) * rd[k];
        z[k] = xk;
        x2 = x1;
        x1 = xk;
      }
      // Against the group's earlier members, then to unit length.
      for (int o = i; o < m; ++o) {
        double s = 0.0;
        for (int k = 0; k < n; ++k) s += zt(k, o) * z[k];
        for (int k = 0; k < n; ++k) z[k] -= s * zt(k, o);
      }
      double big = 0.0;
      for (int k = 0; k < n; ++k) big = fmax(big, fabs(z[k]));
      if (!(big > 0.0) || !isfinite(big)) {
        atomicExch(p.fallback, 1);
        return;
      }
      const double inv_big = 1.0 / big;
      double ss = 0.0;
      for (int k = 0; k < n; ++k) {
        const double v = z[k] * inv_big;
        ss += v * v;
      }
      const double inv = inv_big / sqrt(ss);
      for (int k = 0; k < n; ++k) z[k] *= inv;
    }
    for (int k = 0; k < n; ++k) zt(k, m) = z[k];
  }
}

// ---- 4. Back-transformation -------------------------------------------------------------------

// Reflectors lo..hi (at most kBackChunk) of hh and their tau, loaded into one thread's registers
// (entry k = tid + c·kThreads of row r), all loads issued before any is used.
template <int kThreads>
struct BackChunk {
  static constexpr int kPerThread = static_cast<int>((kSmallEigenMaxN + kThreads - 1) / kThreads);
  double v[kBackChunk][kPerThread];
  double tau;
  __device__ void Load(const double* hh, const double* taus, int n, int lo, int hi) {
    const int tid = static_cast<int>(threadIdx.x);
#pragma unroll
    for (int r = 0; r < kBackChunk; ++r) {
      const int j = lo + r;
#pragma unroll
      for (int c = 0; c < kPerThread; ++c) {
        const int k = tid + c * kThreads;
        v[r][c] = j <= hi && k > j && k < n ? hh[static_cast<size_t>(j) * n + k] : 0.0;
      }
    }
    tau = tid <= hi - lo ? taus[lo + tid] : 0.0;
  }
  __device__ void Store(double (&hs)[kBackChunk][kSmallEigenMaxN], double* ts, int n) const {
    const int tid = static_cast<int>(threadIdx.x);
#pragma unroll
    for (int r = 0; r < kBackChunk; ++r) {
#pragma unroll
      for (int c = 0; c < kPerThread; ++c) {
        const int k = tid + c * kThreads;
        if (k < n) hs[r][k] = v[r][c];
      }
    }
    if (tid < kBackChunk) ts[tid] = tau;
  }
};

// A warp per eigenvector m >= first: z ← H_0 H_1 ⋯ H_{n-3} z (the reflectors from the last to the
// first; z = e_m when zt is null, which makes row m of Qᵀ), z held in registers (element lane + 32c
// in z[c]); the block stages kBackChunk reflectors at a time in shared memory (every warp applies
// the same ones), the next chunk's loads in flight while the warps apply the current one (staged
// one load at a time, with a division per element, the kernel took 0.59 ms at n = 528; v12), and
// each warp reads a reflector from shared memory once (into registers) for both of its uses.
template <int kWarps>
__global__ void __launch_bounds__(kWarps * 32)
    BackTransformKernel(const double* hh, const double* tau, const double* zt, int n, int first,
                        double* vectors) {
  __shared__ double hs[kBackChunk][kSmallEigenMaxN];
  __shared__ double ts[kBackChunk];
  const int lane = threadIdx.x & 31;
  const int m = first + static_cast<int>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const bool active = m < n;  // inactive warps still help to stage the reflectors
  double z[kPerLane];
#pragma unroll
  for (int c = 0; c < kPerLane; ++c) {
    const int k = lane + 32 * c;
    if (zt == nullptr) {
      z[c] = active && k == m ? 1.0 : 0.0;  // Q·e_m: row m of Qᵀ
    } else {
      z[c] = active && k < n ? zt[static_cast<size_t>(k) * n + m] : 0.0;
    }
  }
  int hi = n - 3;
  int lo = hi - kBackChunk + 1 < 0 ? 0 : hi - kBackChunk + 1;
  BackChunk<kWarps * 32> next;
  if (hi >= 0) next.Load(hh, tau, n, lo, hi);
  while (hi >= 0) {
    __syncthreads();  // the previous chunk is no longer read
    next.Store(hs, ts, n);
    __syncthreads();
    const int cur_hi = hi, cur_lo = lo;
    hi = lo - 1;
    lo = hi - kBackChunk + 1 < 0 ? 0 : hi - kBackChunk + 1;
    if (hi >= 0) next.Load(hh, tau, n, lo, hi);
    if (!active) continue;
    for (int j = cur_hi; j >= cur_lo; --j) {
      const double t = ts[j - cur_lo];
      if (t == 0.0) continue;
      double v[kPerLane];
      double s0 = 0.0, s1 = 0.0;  // two chains
#pragma unroll
      for (int c = 0; c < kPerLane; ++c) {
        const int k = lane + 32 * c;
        v[c] = k < n ? hs[j - cur_lo][k] : 0.0;
        (c & 1 ? s1 : s0) += v[c] * z[c];
      }
      const double s = WarpSum(s0 + s1) * t;
#pragma unroll
      for (int c = 0; c < kPerLane; ++c) z[c] -= s * v[c];
    }
  }
  if (!active) return;
#pragma unroll
  for (int c = 0; c < kPerLane; ++c) {
    const int k = lane + 32 * c;
    if (k < n) vectors[static_cast<size_t>(m) * n + k] = z[c];
  }
}

// ---- Host side --------------------------------------------------------------------------------

struct DeviceSupport {
  int max_cluster = 0;  // 16, 8 or 0 (no cluster launch of the tridiagonalisation)
  size_t max_smem = 0;
};

DeviceSupport QuerySupport(int dev) {
  DeviceSupport s;
  int major = 0, optin = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) == cudaSuccess &&
      major >= 9 &&
      cudaFuncSetAttribute(TridiagonalizeKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           optin) == cudaSuccess &&
      cudaFuncSetAttribute(TridiagonalizeKernel, cudaFuncAttributeNonPortableClusterSizeAllowed,
                           1) == cudaSuccess &&
      cudaFuncSetAttribute(InverseIterationKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           optin) == cudaSuccess) {
    s.max_smem = static_cast<size_t>(optin);
    s.max_cluster = LargestResidentCluster(TridiagonalizeKernel, kTridThreads, s.max_smem);
  }
  return s;
}

// The cluster size for n (0: not supported).
int ClusterBlocks(int64_t n) {
  if (n < 1 || n > kSmallEigenMaxN) return 0;
  const DeviceSupport s = PerDevice<DeviceSupport, QuerySupport>();
  if (InverseSmemBytes(n) > s.max_smem) return 0;
  for (int c = s.max_cluster; c >= 8; c /= 2) {
    const bool rows_fit = (n + c - 1) / c <= kRowsPerWarp * kTridWarps;
    if (rows_fit && TridiagSmemBytes(n, c) <= s.max_smem) return c;
  }
  return 0;
}

}  // namespace

bool SmallEigenSupported(int64_t n) { return ClusterBlocks(n) > 0; }

size_t SmallEigenWorkspaceBytes(int64_t n) {
  return static_cast<size_t>(3 * n + 4 + 3 * n * n) * sizeof(double);
}

namespace {

// The workspace: T (d, e), the reflectors (tau, hh), ‖T‖ (scalars), T's eigenvectors (zt, also
// the rows seen by the tridiagonalisation before) and Qᵀ (qt).
struct Workspace {
  double* d;
  double* e;
  double* tau;
  double* scalars;
  double* hh;
  double* zt;
  double* qt;
};

Workspace Carve(void* workspace, int n) {
  Workspace w;
  w.d = static_cast<double*>(workspace);
  w.e = w.d + n;
  w.tau = w.e + n;
  w.scalars = w.tau + n;
  w.hh = w.scalars + 4;
  w.zt = w.hh + static_cast<size_t>(n) * n;
  w.qt = w.zt + static_cast<size_t>(n) * n;
  return w;
}

int ClampFirst(int64_t first, int64_t n) {
  return static_cast<int>(first < 0 ? 0 : (first > n ? n : first));
}

}  // namespace

cudaError_t LaunchSmallEigenReduce(const double* a, int64_t n64, void* workspace,
                                   cudaStream_t stream, unsigned* started) {
  const int blocks = ClusterBlocks(n64);
  if (blocks == 0) return cudaErrorNotSupported;
  const int n = static_cast<int>(n64);
  const Workspace ws = Carve(workspace, n);
  cudaError_t err = cudaMemsetAsync(ws.tau, 0, sizeof(double) * n, stream);  // tau[n-2..] = 0
  if (err != cudaSuccess) return err;
  TridiagParams tp{a, n, ws.d, ws.e, ws.tau, ws.hh, ws.zt, started};  // zt: free until stage 3
  return ClusterLaunch(blocks, kTridThreads, TridiagSmemBytes(n, blocks), stream)
      .Run(TridiagonalizeKernel, tp);
}

cudaError_t LaunchSmallEigenOfT(int64_t n64, int64_t first64, double* lambda, int* fallback,
                                void* workspace, cudaStream_t stream) {
  if (ClusterBlocks(n64) == 0) return cudaErrorNotSupported;
  const int n = static_cast<int>(n64);
  const int first = ClampFirst(first64, n64);
  const Workspace ws = Carve(workspace, n);
  cudaError_t err = cudaMemsetAsync(fallback, 0, sizeof(int), stream);
  if (err != cudaSuccess) return err;
  EigenvaluesKernel<kSturmByMinors>
      <<<(n + kBisectWarps - 1) / kBisectWarps, kBisectWarps * 32, 2 * n * sizeof(double),
         stream>>>(ws.d, ws.e, n, lambda, ws.scalars);
  const int count = n - first;
  if (count > 0) {
    InverseParams ip{ws.d, ws.e, lambda, ws.scalars, n, first, ws.zt, fallback};
    InverseIterationKernel<<<(count + kInverseThreads - 1) / kInverseThreads, kInverseThreads,
                             InverseSmemBytes(n), stream>>>(ip);
  }
  return cudaGetLastError();
}

cudaError_t LaunchSmallEigenFormQ(int64_t n64, void* workspace, cudaStream_t stream) {
  if (ClusterBlocks(n64) == 0) return cudaErrorNotSupported;
  const int n = static_cast<int>(n64);
  const Workspace ws = Carve(workspace, n);
  BackTransformKernel<kBackWarps>
      <<<(n + kBackWarps - 1) / kBackWarps, kBackWarps * 32, 0, stream>>>(ws.hh, ws.tau, nullptr, n,
                                                                          0, ws.qt);
  return cudaGetLastError();
}

const double* SmallEigenVectorsOfT(const void* workspace, int64_t n) {
  return Carve(const_cast<void*>(workspace), static_cast<int>(n)).zt;
}

const double* SmallEigenQt(const void* workspace, int64_t n) {
  return Carve(const_cast<void*>(workspace), static_cast<int>(n)).qt;
}

cudaError_t LaunchSmallEigen(const double* a, int64_t n64, int64_t first64, double* lambda,
                             double* vectors, int* fallback, void* workspace, cudaStream_t stream) {
  cudaError_t err = LaunchSmallEigenReduce(a, n64, workspace, stream);
  if (err != cudaSuccess) return err;
  err = LaunchSmallEigenOfT(n64, first64, lambda, fallback, workspace, stream);
  if (err != cudaSuccess) return err;
  const int n = static_cast<int>(n64);
  const int first = ClampFirst(first64, n64);
  const Workspace ws = Carve(workspace, n);
  const int count = n - first;
  if (count > 0) {
    BackTransformKernel<kBackWarps>
        <<<(count + kBackWarps - 1) / kBackWarps, kBackWarps * 32, 0, stream>>>(
            ws.hh, ws.tau, ws.zt, n, first, vectors);
  }
  return cudaGetLastError();
}

}  // namespace atp::kernels::cuda
