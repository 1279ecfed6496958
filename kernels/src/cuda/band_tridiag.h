// The two-stage tridiagonalisation of the resident eigensolver (small_eigen.cu), for the f64
// Rayleigh–Ritz matrices of the principal basis (n up to ~540 with 16-block clusters):
//   1. dense -> band of half-width kBand: per panel of kBand columns a Householder QR of the
//      panel below the band (compact WY: I − V·T·Vᵀ), computed alike in every block of ONE
//      thread-block cluster, and the two-sided update of the trailing matrix, A22 −=
//      V·Xᵀ + U·Vᵀ (X = A22·V·T, U = X − V·Tᵀ·Vᵀ·X), two cluster barriers a panel instead of
//      one a column;
//   2. band -> tridiagonal by chasing bulges with Householder reflectors of length <= kBand, in
//      one block: a warp per sweep, sweep j starting a hop once sweep j − 1 has done three more
//      (the reflectors then touch disjoint entries: bench/cuda/two_stage_tridiag.py);
//   3. Qᵀ = (Q1·Q2)ᵀ formed from the panels' WY factors and the chase's reflectors, a warp per two
//      rows of Q (a sweep's reflectors touch disjoint columns of Q, so a lane takes each).
// No absl here (nvcc compiles the .cu as C++17).
#ifndef ATP_KERNELS_CUDA_BAND_TRIDIAG_H_
#define ATP_KERNELS_CUDA_BAND_TRIDIAG_H_

#include <cuda_runtime.h>

#include <cstddef>

namespace atp::kernels::cuda {

constexpr int kBand = 16;

// Device buffers of the two-stage path (f64), carved by the caller from its workspace; sizes
// from BandTridiagDoubles.
struct BandTridiagBuffers {
  double* band;   // [n][2·kBand]: entry (i, i − d) at i·2·kBand + d (d < 2·kBand, bulges)
  double* pv;     // panel p's V: column c at p·kBand·n + c·n, row k − r0 (r0 = (p + 1)·kBand)
  double* pt;     // panel p's T (kBand x kBand, row-major, upper) at p·kBand²
  double* xg;     // [kBand][n] scratch: X of every row, column-major
  double* pcols;  // [n][kBand] scratch: the next panel's columns
  double* refl;   // the chase's reflectors: sweep j, hop h at (j·hops + h)·kBand: tau, v[1..]
};

// Doubles of each buffer above, in the order of the struct.
void BandTridiagDoubles(int n, size_t (&doubles)[6]);

// Whether a cluster of `blocks` blocks with max_smem bytes each can run stage 1 for n.
bool BandReduceFits(int n, int blocks, size_t max_smem);

// Stages 1 and 2 on `stream`: d[0..n-1] and e[0..n-2] of T = Q2ᵀ·Q1ᵀ·A·Q1·Q2. started (if not
// null): set to 1 when the band reduction's cluster starts. The caller has raised the kernels'
// shared-memory limits (BandTridiagConfigure).
cudaError_t LaunchBandTridiag(const double* a, int n, int blocks, double* d, double* e,
                              const BandTridiagBuffers& b, cudaStream_t stream, unsigned* started);

// Stage 3: qt = (Q1·Q2)ᵀ row-major.
cudaError_t LaunchBandFormQt(int n, const BandTridiagBuffers& b, double* qt, cudaStream_t stream);

// Raises the kernels' dynamic shared-memory limits to max_smem and allows 16-block clusters.
cudaError_t BandTridiagConfigure(size_t max_smem);

}  // namespace atp::kernels::cuda

#endif  // ATP_KERNELS_CUDA_BAND_TRIDIAG_H_
