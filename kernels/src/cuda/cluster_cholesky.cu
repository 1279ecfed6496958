// Cholesky factorisation by one thread-block cluster, the matrix held in distributed shared memory.
//
// Algorithm (right-looking, panels of kPanel = 16 columns; C blocks, row i owned by block i % C):
//   Every block keeps columns [kPanel, i] of its own rows i ("own" storage). Panel p covers
//   columns [s0, s1); its rows k >= s0 live in a per-block panel buffer (slot p % 2), written by
//   the owners of the rows through DSMEM. In panel p every block, redundantly:
//     P1  solves L[k, s0:s1] = A[k, s0:s1] · L_DD⁻ᵀ for all rows k >= s1 in its buffer (the
//         diagonal factor L_DD is already there) and writes its own rows of L to global memory;
//     U1  computes the next panel's columns of its own rows, A[i, s1:s2] - L[i]·L[k]ᵀ, and pushes
//         them into every block's buffer (slot (p+1) % 2); pushes the diagonal block after next
//         (rows [s2, s3)) updated through panel p into every block's D slot; and applies panel p
//         to the next diagonal block (D slot (p+1) % 2) locally;
//     P3  warp 0 factors that next diagonal block (look-ahead: it needs no further data) while
//         warps 1..15 apply panel p to the remaining columns [s2, i] of the block's own rows.
//   One cluster barrier per panel. Warp 0 arrives before factoring, so the factorisation of the
//   next diagonal block overlaps the trailing update and the barrier.
//
// Why the buffers do not race (X, Y any two blocks; B_p the barrier that ends panel p):
//   - X writes Y's buffer slot (p+1) % 2 and D slot p % 2 only in U1 of panel p, after B_{p-1}.
//     Y last used them in panel p-1 (P1, U1, U2 read buffer slot (p-1) % 2; U1 updated D slot
//     p % 2 and warp 0 read it into registers), all before Y's arrival at B_{p-1}.
//   - Y reads them again from panel p+1 on, after B_p, which X reaches only after its pushes;
//     barrier.cluster.arrive has release and barrier.cluster.wait acquire semantics.
//   - Warp 0 writes the factor into rows [0, kPanel) of its own buffer slot (p+1) % 2 after
//     arriving at B_p; pushes only ever target rows >= kPanel, and the next reads are after the
//     __syncthreads that follows the wait for B_p.
//   - No block reads another block's shared memory, and no block writes into another after the
//     last barrier, so blocks may exit independently.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/cluster_cholesky.h"
#include "cuda/cluster_launch.h"

namespace atp::kernels::cuda {
namespace {

constexpr int kPanel = 16;     // columns per panel
constexpr int kThreads = 512;  // threads per block
constexpr int kWarps = kThreads / 32;
constexpr int kChunk = 64;    // columns per trailing-update unit (two per lane)
constexpr int kRowGroup = 8;  // own rows per trailing-update unit
constexpr unsigned kFullMask = 0xffffffffu;

// The phases below also compile for the host (the probe's emulator), where #pragma unroll is
// unknown.
#ifdef __CUDA_ARCH__
#define ATP_CC_UNROLL _Pragma("unroll")
#else
#define ATP_CC_UNROLL
#endif

__host__ __device__ inline int Min(int a, int b) { return a < b ? a : b; }
__host__ __device__ inline int Max(int a, int b) { return a > b ? a : b; }

// ---- Geometry shared by the kernel, the host launcher and the probe's emulator. ----

// Rows of block `rank` in a cluster of c blocks: rank, rank + c, ...
__host__ __device__ inline int OwnRows(int n, int c, int rank) {
  return rank < n ? (n - rank + c - 1) / c : 0;
}

// Index of the first own row i >= x.
__host__ __device__ inline int FirstOwnAtLeast(int x, int c, int rank) {
  return x <= rank ? 0 : (x - rank + c - 1) / c;
}

// Offset of own row r in the own storage, which keeps columns [kPanel, i] of row i = rank + r·c
// (nothing for rows i < kPanel: columns [0, kPanel) go straight from global memory to the panel).
// The same with ra = FirstOwnAtLeast(kPanel, c, rank) given: no division on the kernel's hot
// paths (a division by the runtime c costs ~100 cycles of latency per element).
__host__ __device__ inline int OwnOffsetFrom(int r, int c, int rank, int ra) {
  if (r <= ra) return 0;
  return (r - ra) * (rank - kPanel + 1) + c * (r * (r - 1) - ra * (ra - 1)) / 2;
}

__host__ __device__ inline int OwnOffset(int r, int c, int rank) {
  const int ra = FirstOwnAtLeast(kPanel, c, rank);
  if (r <= ra) return 0;
  // Sum over r' in [ra, r) of (rank + r'·c - kPanel + 1); r·(r - 1) - ra·(ra - 1) is even.
  return (r - ra) * (rank - kPanel + 1) + c * (r * (r - 1) - ra * (ra - 1)) / 2;
}

__host__ __device__ inline int OwnElems(int n, int c, int rank) {
  return OwnOffset(OwnRows(n, c, rank), c, rank);
}

// Shared memory of one block, in elements (every region is a multiple of kPanel elements, so
// 16-byte aligned):
//   buf0    n x kPanel             panel buffer of even panels (rows k - s0)
//   buf1    (n - kPanel) x kPanel  panel buffer of odd panels (their s0 >= kPanel)
//   dslot0, dslot1  kPanel x kPanel  diagonal blocks waiting to be factored (row-major, lower part)
//   invd    kPanel                 1 / L[k][k] of the factor in the current panel buffer
//   own     OwnElems               columns [kPanel, i] of the block's own rows
struct SmemLayout {
  int buf0, buf1, dslot0, dslot1, invd, own, total;
};

__host__ __device__ inline SmemLayout MakeLayout(int n, int own_elems) {
  SmemLayout s;
  s.buf0 = 0;
  s.buf1 = n * kPanel;
  s.dslot0 = s.buf1 + Max(0, n - kPanel) * kPanel;
  s.dslot1 = s.dslot0 + kPanel * kPanel;
  s.invd = s.dslot1 + kPanel * kPanel;
  s.own = s.invd + kPanel;
  s.total = s.own + own_elems;
  return s;
}

// Elements of the largest block of a cluster of c blocks.
inline int MaxBlockElems(int n, int c) {
  int own = 0;
  for (int rank = 0; rank < c; ++rank) own = Max(own, OwnElems(n, c, rank));
  return MakeLayout(n, own).total;
}

// A 16-byte vector of T, the unit of the panel rows' swizzle.
template <typename T>
struct VecOf;
template <>
struct VecOf<double> {
  using Type = double2;
};
template <>
struct VecOf<float> {
  using Type = float4;
};

__host__ __device__ inline void Unpack(const double2& v, double* x) {
  x[0] = v.x;
  x[1] = v.y;
}
__host__ __device__ inline void Unpack(const float4& v, float* x) {
  x[0] = v.x;
  x[1] = v.y;
  x[2] = v.z;
  x[3] = v.w;
}
__host__ __device__ inline double2 Pack(const double* x) { return make_double2(x[0], x[1]); }
__host__ __device__ inline float4 Pack(const float* x) {
  return make_float4(x[0], x[1], x[2], x[3]);
}

// A panel row is kPanel elements (128 bytes in f64, 64 in f32). Its 16-byte vectors are permuted
// by an XOR with the row index so that 8 lanes reading 8 consecutive rows (one row each) hit 8
// different bank groups: conflict-free whole-row loads and stores by one thread per row, and
// broadcast loads of one row by a whole warp.
template <typename T>
struct Geo {
  static constexpr int kVec = 16 / static_cast<int>(sizeof(T));  // elements per vector
  static constexpr int kVecsPerRow = kPanel / kVec;              // 8 (f64), 4 (f32)
  static constexpr int kRowsPerLine = 128 / (kPanel * static_cast<int>(sizeof(T)));  // 1, 2
};

template <typename T>
__host__ __device__ inline int SwizzledVec(int row, int q) {
  return q ^ ((row / Geo<T>::kRowsPerLine) % Geo<T>::kVecsPerRow);
}

// Position of column `col` within panel row `row`.
template <typename T>
__host__ __device__ inline int Phys(int row, int col) {
  return SwizzledVec<T>(row, col / Geo<T>::kVec) * Geo<T>::kVec + col % Geo<T>::kVec;
}

// What one block knows and where its shared memory lies.
template <typename T>
struct Ctx {
  T* a;  // the matrix in global memory
  int n, c, rank;
  int own_rows;
  int own_first;  // FirstOwnAtLeast(kPanel, c, rank): the first own row with own storage
  int* info;
  bool shift_on;
  double shift;
  T* buf0;  // the regions of SmemLayout (not arrays of pointers: a runtime index into one would
  T* buf1;  // put the whole context in local memory)
  T* dslot0;
  T* dslot1;
  T* invd;
  T* own;

  __host__ __device__ T* Buf(int slot) const { return slot == 0 ? buf0 : buf1; }
  __host__ __device__ T* Dslot(int slot) const { return slot == 0 ? dslot0 : dslot1; }

  __host__ __device__ T Shifted(T v, bool diagonal) const {
    return diagonal && shift_on ? static_cast<T>(static_cast<double>(v) + shift) : v;
  }
  __host__ __device__ int OwnIndex(int r, int col) const {
    return OwnOffsetFrom(r, c, rank, own_first) + col - kPanel;
  }
  __host__ __device__ bool Owns(int i) const { return i % c == rank; }
};

template <typename T>
__host__ __device__ inline Ctx<T> MakeCtx(T* smem, T* a, int n, int c, int rank, int* info) {
  Ctx<T> ctx;
  ctx.a = a;
  ctx.n = n;
  ctx.c = c;
  ctx.rank = rank;
  ctx.own_rows = OwnRows(n, c, rank);
  ctx.own_first = FirstOwnAtLeast(kPanel, c, rank);
  ctx.info = info;
  ctx.shift_on = false;
  ctx.shift = 0.0;
  const SmemLayout s = MakeLayout(n, OwnElems(n, c, rank));
  ctx.buf0 = smem + s.buf0;
  ctx.buf1 = smem + s.buf1;
  ctx.dslot0 = smem + s.dslot0;
  ctx.dslot1 = smem + s.dslot1;
  ctx.invd = smem + s.invd;
  ctx.own = smem + s.own;
  return ctx;
}

// Panel p: columns [s0, s1); the next panel [s1, s2) (width bn, 0 if none); the one after
// [s2, s3) (width bnn). m = rows of the panel buffer (k - s0 for k in [s0, n)).
struct Panel {
  int p, s0, b, s1, bn, s2, bnn, s3, m, cur, nxt;
};

__host__ __device__ inline Panel MakePanel(int p, int n) {
  Panel P;
  P.p = p;
  P.s0 = p * kPanel;
  P.b = Min(kPanel, n - P.s0);
  P.s1 = P.s0 + P.b;
  P.bn = Min(kPanel, n - P.s1);
  P.s2 = P.s1 + P.bn;
  P.bnn = Min(kPanel, n - P.s2);
  P.s3 = P.s2 + P.bnn;
  P.m = n - P.s0;
  P.cur = p & 1;
  P.nxt = P.cur ^ 1;
  return P;
}

// ---- Per-thread phases. M is the memory policy: DeviceMem in the kernel; the probe's host
// emulator supplies one that records every shared-memory access to find races. ----

template <typename T, typename M>
__host__ __device__ inline void LoadRow(const T* buf, int row, T (&x)[kPanel]) {
  using V = typename VecOf<T>::Type;
  const T* base = buf + row * kPanel;
  ATP_CC_UNROLL
  for (int q = 0; q < Geo<T>::kVecsPerRow; ++q) {
    const V v = M::Load(reinterpret_cast<const V*>(base + SwizzledVec<T>(row, q) * Geo<T>::kVec));
    Unpack(v, x + q * Geo<T>::kVec);
  }
}

template <typename T, typename M>
__host__ __device__ inline void StoreRow(T* buf, int row, const T (&x)[kPanel]) {
  using V = typename VecOf<T>::Type;
  T* base = buf + row * kPanel;
  ATP_CC_UNROLL
  for (int q = 0; q < Geo<T>::kVecsPerRow; ++q) {
    M::Store(reinterpret_cast<V*>(base + SwizzledVec<T>(row, q) * Geo<T>::kVec),
             Pack(x + q * Geo<T>::kVec));
  }
}

// Σ_c x[ra][c]·x[rb][c] over two rows of a panel buffer.
template <typename T, typename M>
__host__ __device__ inline T DotRows(const T* buf, int ra, int rb) {
  T x[kPanel], y[kPanel];
  LoadRow<T, M>(buf, ra, x);
  LoadRow<T, M>(buf, rb, y);
  T even = T(0), odd = T(0);
  ATP_CC_UNROLL
  for (int c = 0; c < kPanel; c += 2) {
    even += x[c] * y[c];
    odd += x[c + 1] * y[c + 1];
  }
  return even + odd;
}

// Prologue, warps 1..15 (warp index w of nw): columns [kPanel, i] of the own rows, shifted.
template <typename T, typename M>
__host__ __device__ void LoadOwnRows(const Ctx<T>& ctx, int w, int nw, int lane) {
  for (int r = w; r < ctx.own_rows; r += nw) {
    const int i = ctx.rank + r * ctx.c;
    if (i < kPanel) continue;
    const T* src = ctx.a + static_cast<int64_t>(i) * ctx.n;
    for (int k = kPanel + lane; k <= i; k += 32) {
      M::Store(ctx.own + ctx.OwnIndex(r, k), ctx.Shifted(src[k], k == i));
    }
  }
}

// Prologue, threads 32..511 (t of nt): the diagonal block of panel 1 into D slot 1, shifted.
template <typename T, typename M>
__host__ __device__ void LoadSecondDiagonal(const Ctx<T>& ctx, int t, int nt) {
  const int bw = Min(kPanel, ctx.n - kPanel);
  for (int e = t; e < kPanel * kPanel; e += nt) {
    const int r = e / kPanel, j = e % kPanel;
    if (r < bw && j <= r) {
      const T v = ctx.a[static_cast<int64_t>(kPanel + r) * ctx.n + kPanel + j];
      M::Store(ctx.Dslot(1) + e, ctx.Shifted(v, j == r));
    }
  }
}

// Prologue, after every block has started (t of nt, nt a multiple of 16): the first panel's
// columns of the own rows i >= kPanel, from global memory into every block's buffer 0.
template <typename T, typename M>
__host__ __device__ void PushFirstPanel(const Ctx<T>& ctx, int t, int nt) {
  const int ra = FirstOwnAtLeast(kPanel, ctx.c, ctx.rank);
  const int total = Max(0, ctx.own_rows - ra) * kPanel;
  for (int e = t; e < total; e += nt) {
    const int r = ra + e / kPanel, col = e % kPanel;
    const int i = ctx.rank + r * ctx.c;
    const T v = ctx.a[static_cast<int64_t>(i) * ctx.n + col];  // col < kPanel <= i: not diagonal
    T* dst = ctx.Buf(0) + i * kPanel + Phys<T>(i, col);
    for (int d = 0; d < ctx.c; ++d) M::Push(d, dst, v);
  }
}

// Warp 0, lane r: row r of a diagonal block of width bw (zeros elsewhere and above the diagonal).
template <typename T>
__host__ __device__ void LoadDiagonalRowGlobal(const Ctx<T>& ctx, int r, int bw, T (&x)[kPanel]) {
  ATP_CC_UNROLL
  for (int j = 0; j < kPanel; ++j) {
    x[j] =
        r < bw && j <= r ? ctx.Shifted(ctx.a[static_cast<int64_t>(r) * ctx.n + j], j == r) : T(0);
  }
}

template <typename T, typename M>
__host__ __device__ void LoadDiagonalRowSlot(const Ctx<T>& ctx, int slot, int r, int bw,
                                             T (&x)[kPanel]) {
  const T* d = ctx.Dslot(slot) + r * kPanel;
  ATP_CC_UNROLL
  for (int j = 0; j < kPanel; ++j) x[j] = r < bw && j <= r ? M::Load(d + j) : T(0);
}

// Warp 0, lane r: stores column r of U = L_DDᵀ (rows c < bw of the panel buffer); x[c] = L[r][c]
// for c <= r; the part above the diagonal is written as 0.
template <typename T, typename M>
__host__ __device__ void StoreFactorColumn(const Ctx<T>& ctx, int slot, int r, int bw,
                                           const T (&x)[kPanel]) {
  if (r >= kPanel) return;
  T* buf = ctx.Buf(slot);
  ATP_CC_UNROLL
  for (int c = 0; c < kPanel; ++c) {
    if (c < bw) M::Store(buf + c * kPanel + Phys<T>(c, r), c <= r ? x[c] : T(0));
  }
}

// P1, all threads: L[k] = A[k] · U⁻¹ for the rows k - s0 in [kPanel, m) of the panel buffer, in
// place (forward substitution, U = L_DDᵀ in rows [0, kPanel)); own rows also to global memory.
// Runs only for full panels (rows below the diagonal block exist only then).
template <typename T, typename M>
__host__ __device__ void SolvePanelRows(const Ctx<T>& ctx, const Panel& P, int tid) {
  using V = typename VecOf<T>::Type;
  T* buf = ctx.Buf(P.cur);
  for (int row = kPanel + tid; row < P.m; row += kThreads) {
    T x[kPanel];
    LoadRow<T, M>(buf, row, x);
    ATP_CC_UNROLL
    for (int c = 0; c < kPanel; ++c) {
      x[c] *= M::Load(ctx.invd + c);
      T u[kPanel] = {};  // row c of U, columns > c (the vectors holding them)
      ATP_CC_UNROLL
      for (int q = 0; q < Geo<T>::kVecsPerRow; ++q) {
        if ((q + 1) * Geo<T>::kVec > c + 1) {
          const V v = M::Load(
              reinterpret_cast<const V*>(buf + c * kPanel + SwizzledVec<T>(c, q) * Geo<T>::kVec));
          Unpack(v, u + q * Geo<T>::kVec);
        }
      }
      ATP_CC_UNROLL
      for (int j = c + 1; j < kPanel; ++j) x[j] -= x[c] * u[j];
    }
    StoreRow<T, M>(buf, row, x);
    const int i = P.s0 + row;
    if (ctx.Owns(i)) {
      T* dst = ctx.a + static_cast<int64_t>(i) * ctx.n + P.s0;
      ATP_CC_UNROLL
      for (int c = 0; c < kPanel; ++c) dst[c] = x[c];
    }
  }
}

// P1, threads < kPanel²: the own rows of the diagonal block's factor to global memory.
template <typename T, typename M>
__host__ __device__ void WriteDiagonalRows(const Ctx<T>& ctx, const Panel& P, int tid) {
  if (tid >= kPanel * kPanel) return;
  const int r = tid / kPanel, c = tid % kPanel;
  if (r >= P.b || c > r || !ctx.Owns(P.s0 + r)) return;
  ctx.a[static_cast<int64_t>(P.s0 + r) * ctx.n + P.s0 + c] =
      M::Load(ctx.Buf(P.cur) + c * kPanel + Phys<T>(c, r));
}

// U1, all threads (only when a next panel exists, so this panel is full):
//  (a) own rows i >= s2, columns [s1, s2): A[i, k] - L[i]·L[k] into every block's buffer
//      slot nxt, row i - s1;
//  (b) own rows i in [s2, s3), columns [s2, i]: A[i, j] - L[i]·L[j] into every block's D slot
//      cur (the diagonal block of panel p + 2);
//  (c) D slot nxt (the diagonal block of panel p + 1, rows [s1, s2)) -= L·Lᵀ, locally.
template <typename T, typename M>
__host__ __device__ void UpdateNextPanel(const Ctx<T>& ctx, const Panel& P, int tid) {
  const T* buf = ctx.Buf(P.cur);
  const int ra = FirstOwnAtLeast(P.s2, ctx.c, ctx.rank);
  const int na = P.s2 < ctx.n ? Max(0, ctx.own_rows - ra) : 0;
  const int nb =
      P.bnn > 0 ? Max(0, Min(ctx.own_rows, FirstOwnAtLeast(P.s3, ctx.c, ctx.rank)) - ra) : 0;
  const int ea = na * kPanel;
  const int eb = ea + nb * kPanel;
  const int ec = eb + kPanel * kPanel;
  for (int e = tid; e < ec; e += kThreads) {
    if (e < ea) {
      const int r = ra + e / kPanel, col = e % kPanel;
      const int i = ctx.rank + r * ctx.c, k = P.s1 + col;
      const T v = M::Load(ctx.own + ctx.OwnIndex(r, k)) - DotRows<T, M>(buf, i - P.s0, k - P.s0);
      T* dst = ctx.Buf(P.nxt) + (i - P.s1) * kPanel + Phys<T>(i - P.s1, col);
      for (int d = 0; d < ctx.c; ++d) M::Push(d, dst, v);
    } else if (e < eb) {
      const int r = ra + (e - ea) / kPanel, col = (e - ea) % kPanel;
      const int i = ctx.rank + r * ctx.c, j = P.s2 + col;
      if (j <= i) {
        const T v = M::Load(ctx.own + ctx.OwnIndex(r, j)) - DotRows<T, M>(buf, i - P.s0, j - P.s0);
        T* dst = ctx.Dslot(P.cur) + (i - P.s2) * kPanel + col;
        for (int d = 0; d < ctx.c; ++d) M::Push(d, dst, v);
      }
    } else {
      const int r = (e - eb) / kPanel, j = (e - eb) % kPanel;
      if (r < P.bn && j <= r) {
        T* d = ctx.Dslot(P.nxt) + r * kPanel + j;
        M::Store(d, M::Load(d) - DotRows<T, M>(buf, kPanel + r, kPanel + j));
      }
    }
  }
}

// P3, warps 1..15 (w of nw): A[i, k] -= L[i]·L[k] for the own rows i >= s2 and k in [s2, i].
// A unit is 64 columns (two per lane, their L rows in registers) by up to kRowGroup own rows
// (their L rows broadcast from shared memory); units go round-robin to the warps.
template <typename T, typename M>
__host__ __device__ void UpdateTrailing(const Ctx<T>& ctx, const Panel& P, int w, int nw,
                                        int lane) {
  using V = typename VecOf<T>::Type;
  if (P.s2 >= ctx.n) return;
  const T* buf = ctx.Buf(P.cur);
  const int r_lo = FirstOwnAtLeast(P.s2, ctx.c, ctx.rank);
  // The first own row at or after each chunk start k0. s2 > rank (s2 >= 2·kPanel), so when c
  // divides kChunk (clusters of 8 or 16) it advances by kChunk / c a chunk: no division per chunk
  // (one by the runtime c per chunk showed in ncu, v10).
  const bool even_steps = kChunk % ctx.c == 0;
  const int step = even_steps ? kChunk / ctx.c : 0;
  int unit = 0, rq = r_lo;
  for (int k0 = P.s2; k0 < ctx.n; k0 += kChunk, rq += step) {
    if (!even_steps) rq = Max(r_lo, FirstOwnAtLeast(k0, ctx.c, ctx.rank));
    if (rq >= ctx.own_rows) break;
    for (int rs = rq; rs < ctx.own_rows; rs += kRowGroup, ++unit) {
      if (unit % nw != w) continue;
      const int ka = k0 + lane, kb = ka + 32;
      T la[kPanel], lb[kPanel];
      if (ka < ctx.n) {
        LoadRow<T, M>(buf, ka - P.s0, la);
      } else {
        ATP_CC_UNROLL
        for (int c = 0; c < kPanel; ++c) la[c] = T(0);
      }
      if (kb < ctx.n) {
        LoadRow<T, M>(buf, kb - P.s0, lb);
      } else {
        ATP_CC_UNROLL
        for (int c = 0; c < kPanel; ++c) lb[c] = T(0);
      }
      const int re = Min(ctx.own_rows, rs + kRowGroup);
      for (int r = rs; r < re; ++r) {
        const int i = ctx.rank + r * ctx.c;
        const int row = i - P.s0;
        const T* li = buf + row * kPanel;
        T sa0 = T(0), sa1 = T(0), sb0 = T(0), sb1 = T(0);
        ATP_CC_UNROLL
        for (int q = 0; q < Geo<T>::kVecsPerRow; ++q) {
          T t[Geo<T>::kVec];
          Unpack(M::Load(reinterpret_cast<const V*>(li + SwizzledVec<T>(row, q) * Geo<T>::kVec)),
                 t);
          ATP_CC_UNROLL
          for (int e = 0; e < Geo<T>::kVec; e += 2) {
            const int c = q * Geo<T>::kVec + e;
            sa0 += t[e] * la[c];
            sa1 += t[e + 1] * la[c + 1];
            sb0 += t[e] * lb[c];
            sb1 += t[e + 1] * lb[c + 1];
          }
        }
        const int ia = ctx.OwnIndex(r, ka);  // kb's element is 32 further
        if (ka <= i) {
          T* o = ctx.own + ia;
          M::Store(o, M::Load(o) - (sa0 + sa1));
        }
        if (kb <= i) {
          T* o = ctx.own + ia + 32;
          M::Store(o, M::Load(o) - (sb0 + sb1));
        }
      }
    }
  }
}

// ---- Device-only parts. ----

struct DeviceMem {
  template <typename V>
  __device__ static V Load(const V* p) {
    return *p;
  }
  template <typename V>
  __device__ static void Store(V* p, V v) {
    *p = v;
  }
  // Stores v at the address of p (this block's shared memory) in block `rank` of the cluster.
  __device__ static void Push(int rank, double* p, double v) {
    const unsigned local = static_cast<unsigned>(__cvta_generic_to_shared(p));
    unsigned remote;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(rank));
    asm volatile("st.shared::cluster.f64 [%0], %1;" ::"r"(remote), "d"(v) : "memory");
  }
  __device__ static void Push(int rank, float* p, float v) {
    const unsigned local = static_cast<unsigned>(__cvta_generic_to_shared(p));
    unsigned remote;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(rank));
    asm volatile("st.shared::cluster.f32 [%0], %1;" ::"r"(remote), "f"(v) : "memory");
  }
};

__device__ inline int ClusterRank() {
  unsigned r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return static_cast<int>(r);
}

__device__ inline int ClusterBlocks() {
  unsigned r;
  asm volatile("mov.u32 %0, %%cluster_nctarank;" : "=r"(r));
  return static_cast<int>(r);
}

// Split cluster barrier. Not .aligned: warp 0 arrives at a different point than warps 1..15.
__device__ inline void ClusterArriveRelaxed() {
  asm volatile("barrier.cluster.arrive.relaxed;" ::: "memory");
}
__device__ inline void ClusterArrive() {
  asm volatile("barrier.cluster.arrive.release;" ::: "memory");
}
__device__ inline void ClusterWait() { asm volatile("barrier.cluster.wait.acquire;" ::: "memory"); }

// rsqrt(double) is documented to 1 ulp, but it lowers to rsqrt.approx.f64; one Newton step (three
// dependent operations per pivot) keeps the f64 factor accurate even were that approximation
// coarser. f32 keeps the hardware approximation (about 2 ulp).
__device__ inline double Rsqrt(double v) {
  const double y = rsqrt(v);
  const double e = fma(-v * y, y, 1.0);  // 1 - v·y², about twice y's relative error
  return fma(0.5 * y, e, y);
}
__device__ inline float Rsqrt(float v) { return rsqrtf(v); }

// Warp-level Cholesky of a diagonal block of width bw <= kPanel. Lane r < kPanel holds row r in
// x (x[j] for j <= r, zeros elsewhere; lanes >= bw hold zeros); on return x[j] = L[r][j] for
// j <= r (the part above the diagonal is garbage). Every lane tracks the whole diagonal, so the
// pivot needs no shuffle: the critical path per column is one rsqrt, one multiply and one FMA.
// Pivots past bw are taken as 1; a pivot that is not positive is recorded (by `record`, lane 0)
// as base + k + 1 and replaced by 1. invd[k] = 1 / L[k][k].
template <typename T>
__device__ void FactorDiagonalBlock(T (&x)[kPanel], int bw, int base, int* info, bool record,
                                    T* invd) {
  const int lane = threadIdx.x & 31;
  T diag[kPanel];
  ATP_CC_UNROLL
  for (int j = 0; j < kPanel; ++j) diag[j] = __shfl_sync(kFullMask, x[j], j);
  ATP_CC_UNROLL
  for (int k = 0; k < kPanel; ++k) {
    T piv = diag[k];
    if (k >= bw) {
      piv = T(1);
    } else if (!(piv > T(0))) {
      if (record && lane == 0) atomicCAS(info, 0, base + k + 1);
      piv = T(1);
    }
    const T inv = Rsqrt(piv);
    if (lane == 0) invd[k] = inv;
    const T xk = x[k];
    x[k] = lane == k ? piv * inv : xk * inv;  // L[lane][k]
    ATP_CC_UNROLL
    for (int j = k + 1; j < kPanel; ++j) {
      const T ljk = __shfl_sync(kFullMask, xk, j) * inv;  // L[j][k]
      x[j] -= x[k] * ljk;
      diag[j] -= ljk * ljk;
    }
  }
}

// trace(a) in f64, the same value in every lane (and every warp: fixed order).
template <typename T>
__device__ double WarpTrace(const T* a, int n) {
  double s = 0.0;
  for (int i = threadIdx.x & 31; i < n; i += 32) {
    s += static_cast<double>(a[static_cast<int64_t>(i) * n + i]);
  }
  ATP_CC_UNROLL
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(kFullMask, s, off);
  return s;
}

#ifdef ATP_CLUSTER_CHOLESKY_PROFILE
__device__ long long g_cc_prof[16][8];
#endif

template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
    ClusterCholeskyKernel(T* a, int n, double shift_factor, int* info) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid >> 5, lane = tid & 31;
  const int rank = ClusterRank();
  // This block has started: the others may write into its shared memory once all have arrived.
  ClusterArriveRelaxed();
  Ctx<T> ctx = MakeCtx(reinterpret_cast<T*>(smem_raw), a, n, ClusterBlocks(), rank, info);
  if (shift_factor != 0.0) {
    const double trace = WarpTrace(a, n);
    ctx.shift_on = true;
    ctx.shift = trace != 0.0 ? shift_factor * trace : 1.0;
  }
  if (warp == 0) {
    const int bw = Min(kPanel, n);
    T x[kPanel];
    LoadDiagonalRowGlobal(ctx, lane, bw, x);
    FactorDiagonalBlock(x, bw, 0, info, rank == 0, ctx.invd);
    StoreFactorColumn<T, DeviceMem>(ctx, 0, lane, bw, x);
  } else {
    LoadOwnRows<T, DeviceMem>(ctx, warp - 1, kWarps - 1, lane);
    LoadSecondDiagonal<T, DeviceMem>(ctx, tid - 32, kThreads - 32);
  }
  ClusterWait();
  if (warp != 0) PushFirstPanel<T, DeviceMem>(ctx, tid - 32, kThreads - 32);
  ClusterArrive();
#ifdef ATP_CLUSTER_CHOLESKY_PROFILE
  // Cycles per phase, summed over the panels (probe only): [0] wait at the barrier, [1] P1,
  // [2] U1, [3] P3 of warp 0 (the next diagonal block: [6] loading it and arriving, [7] factoring
  // it, [3] storing it), seen by thread 0; [4] P3 of warp 1 (its trailing update) and [5] its
  // wait, seen by thread 32.
  long long prof[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  long long tp = clock64();
  auto mark = [&](int q) {
    const long long t = clock64();
    prof[q] += t - tp;
    tp = t;
  };
#else
  auto mark = [](int) {};
#endif
  for (int p = 0;; ++p) {
    const Panel P = MakePanel(p, n);
    ClusterWait();
    __syncthreads();  // warp 0 wrote this panel's factor after arriving
    mark(warp == 0 ? 0 : 5);
    SolvePanelRows<T, DeviceMem>(ctx, P, tid);
    WriteDiagonalRows<T, DeviceMem>(ctx, P, tid);
    if (P.s1 >= n) break;
    __syncthreads();
    mark(1);
    UpdateNextPanel<T, DeviceMem>(ctx, P, tid);
    __syncthreads();
    mark(2);
    if (warp == 0) {
      T x[kPanel];
      LoadDiagonalRowSlot<T, DeviceMem>(ctx, P.nxt, lane, P.bn, x);
      ClusterArrive();
      mark(6);
      FactorDiagonalBlock(x, P.bn, P.s1, info, rank == 0, ctx.invd);
      mark(7);
      StoreFactorColumn<T, DeviceMem>(ctx, P.nxt, lane, P.bn, x);
      mark(3);
    } else {
      UpdateTrailing<T, DeviceMem>(ctx, P, warp - 1, kWarps - 1, lane);
      mark(4);
      ClusterArrive();
    }
  }
#ifdef ATP_CLUSTER_CHOLESKY_PROFILE
  if (tid == 0 || tid == 32) {
    for (int q = 0; q < 8; ++q) {
      if ((tid == 0) == (q < 4 || q >= 6)) {
        atomicAdd(reinterpret_cast<unsigned long long*>(&g_cc_prof[rank][q]),
                  static_cast<unsigned long long>(prof[q]));
      }
    }
  }
#endif
}

// ---- Host side. ----

// What the current device offers, per element type (index 0: f32, 1: f64).
struct DeviceCaps {
  int cluster[2] = {0, 0};  // blocks per cluster (16 or 8), 0 if clusters cannot be launched
  int max_dynamic_smem[2] = {0, 0};
};

template <typename T>
void QueryKernel(int max_optin, int* cluster, int* max_dynamic) {
  *cluster = 0;
  *max_dynamic = 0;
  cudaFuncAttributes attr;
  if (cudaFuncGetAttributes(&attr, ClusterCholeskyKernel<T>) != cudaSuccess) return;
  const int dynamic = max_optin - static_cast<int>(attr.sharedSizeBytes);
  if (dynamic <= 0 ||
      cudaFuncSetAttribute(ClusterCholeskyKernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           dynamic) != cudaSuccess ||
      cudaFuncSetAttribute(ClusterCholeskyKernel<T>, cudaFuncAttributeNonPortableClusterSizeAllowed,
                           1) != cudaSuccess) {
    return;
  }
  *max_dynamic = dynamic;
  // The largest block needs a whole SM: a cluster size that fits then fits for every n.
  *cluster = LargestResidentCluster(ClusterCholeskyKernel<T>, kThreads, dynamic);
}

DeviceCaps QueryDevice(int device) {
  DeviceCaps caps;
  int major = 0, cluster_launch = 0, max_optin = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      major < 9 ||
      cudaDeviceGetAttribute(&cluster_launch, cudaDevAttrClusterLaunch, device) != cudaSuccess ||
      cluster_launch == 0 ||
      cudaDeviceGetAttribute(&max_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) !=
          cudaSuccess) {
    return caps;
  }
  QueryKernel<float>(max_optin, &caps.cluster[0], &caps.max_dynamic_smem[0]);
  QueryKernel<double>(max_optin, &caps.cluster[1], &caps.max_dynamic_smem[1]);
  return caps;
}

// Dynamic shared memory per block for n in a cluster of c blocks, or -1 if n is out of range.
int64_t SmemBytes(DevType t, int64_t n, int c) {
  if (n < 1 || n > 8192 || c < 1) return -1;
  return static_cast<int64_t>(MaxBlockElems(static_cast<int>(n), c)) *
         static_cast<int64_t>(DevTypeSize(t));
}

// Blocks per cluster and shared memory for (t, n), or false when unsupported.
bool Plan(DevType t, int64_t n, int* cluster, int64_t* smem) {
  if (t != DevType::kF32 && t != DevType::kF64) return false;
  const DeviceCaps caps = PerDevice<DeviceCaps, QueryDevice>();
  const int k = t == DevType::kF64 ? 1 : 0;
  if (caps.cluster[k] == 0) return false;
  const int64_t bytes = SmemBytes(t, n, caps.cluster[k]);
  if (bytes < 0 || bytes > caps.max_dynamic_smem[k]) return false;
  *cluster = caps.cluster[k];
  *smem = bytes;
  return true;
}

template <typename T>
cudaError_t Launch(T* a, int n, double shift_factor, int* info, int cluster, int64_t smem,
                   cudaStream_t stream) {
  return ClusterLaunch(cluster, kThreads, static_cast<size_t>(smem), stream)
      .Run(ClusterCholeskyKernel<T>, a, n, shift_factor, info);
}

}  // namespace

bool ClusterCholeskySupported(DevType t, int64_t n) {
  int cluster = 0;
  int64_t smem = 0;
  return Plan(t, n, &cluster, &smem);
}

cudaError_t LaunchClusterCholesky(DevType t, void* a, int64_t n, double shift_factor, int* info,
                                  cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  int cluster = 0;
  int64_t smem = 0;
  if (!Plan(t, n, &cluster, &smem)) return cudaErrorNotSupported;
  const int ni = static_cast<int>(n);
  if (t == DevType::kF64) {
    return Launch(static_cast<double*>(a), ni, shift_factor, info, cluster, smem, stream);
  }
  return Launch(static_cast<float*>(a), ni, shift_factor, info, cluster, smem, stream);
}

}  // namespace atp::kernels::cuda
