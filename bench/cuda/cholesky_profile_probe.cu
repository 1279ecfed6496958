// Where the cluster Cholesky's time goes: kernels/src/cuda/cluster_cholesky.cu compiled in here
// with ATP_CLUSTER_CHOLESKY_PROFILE (clock64 around each phase of each panel), on random SPD
// matrices. Prints, per cluster rank, the cycles per panel of: the barrier wait, P1 (panel
// solve), U1 (next panel and its pushes), P3 of warp 0 (next diagonal block) and of warp 1 (its
// share of the trailing update), and the time per call. Run on the GPU machine from the bundle:
// atp-cuda/cholesky_profile_probe.
#define ATP_CLUSTER_CHOLESKY_PROFILE 1

#include <cuda_runtime.h>

#include <cstdio>
#include <random>
#include <vector>

#include "cuda/cluster_cholesky.cu"  // the kernel itself, with the profile compiled in

#define CK(x)                                                                              \
  do {                                                                                     \
    cudaError_t e_ = (x);                                                                  \
    if (e_ != cudaSuccess) {                                                               \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      return 1;                                                                            \
    }                                                                                      \
  } while (0)

int main() {
  using atp::kernels::cuda::DevType;
  using atp::kernels::cuda::g_cc_prof;
  using atp::kernels::cuda::LaunchClusterCholesky;
  int clock_khz = 0;
  CK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0));
  for (int n : {320, 528, 576}) {
    std::mt19937_64 rng(n);
    std::normal_distribution<double> g;
    std::vector<double> b(static_cast<size_t>(2) * n * n), a(static_cast<size_t>(n) * n, 0.0);
    for (double& v : b) v = g(rng);
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j <= i; ++j) {
        double s = 0;
        for (int k = 0; k < 2 * n; ++k)
          s += b[static_cast<size_t>(k) * n + i] * b[static_cast<size_t>(k) * n + j];
        a[static_cast<size_t>(i) * n + j] = a[static_cast<size_t>(j) * n + i] = s / n + (i == j);
      }
    }
    double *a0 = nullptr, *da = nullptr;
    int* info = nullptr;
    CK(cudaMalloc(&a0, a.size() * sizeof(double)));
    CK(cudaMalloc(&da, a.size() * sizeof(double)));
    CK(cudaMalloc(&info, sizeof(int)));
    CK(cudaMemcpy(a0, a.data(), a.size() * sizeof(double), cudaMemcpyHostToDevice));
    long long zero[16][8] = {};
    cudaEvent_t t0, t1;
    CK(cudaEventCreate(&t0));
    CK(cudaEventCreate(&t1));
    const int iters = 20;
    float total_ms = 0;
    for (int it = 0; it < iters + 1; ++it) {
      if (it == 1) CK(cudaMemcpyToSymbol(g_cc_prof, zero, sizeof(zero)));
      CK(cudaMemcpy(da, a0, a.size() * sizeof(double), cudaMemcpyDeviceToDevice));
      CK(cudaMemset(info, 0, sizeof(int)));
      CK(cudaEventRecord(t0));
      CK(LaunchClusterCholesky(DevType::kF64, da, n, 0.0, info, nullptr));
      CK(cudaEventRecord(t1));
      CK(cudaEventSynchronize(t1));
      float ms = 0;
      CK(cudaEventElapsedTime(&ms, t0, t1));
      if (it > 0) total_ms += ms;
    }
    int host_info = -1;
    CK(cudaMemcpy(&host_info, info, sizeof(int), cudaMemcpyDeviceToHost));
    long long prof[16][8];
    CK(cudaMemcpyFromSymbol(prof, g_cc_prof, sizeof(prof)));
    const double panels = static_cast<double>((n + 15) / 16) * iters;
    std::printf("n=%d: %.3f ms per call (info %d, clock %d MHz, %d panels)\n", n, total_ms / iters,
                host_info, clock_khz / 1000, (n + 15) / 16);
    for (int r = 0; r < 16; ++r) {
      if (prof[r][0] == 0 && prof[r][4] == 0) continue;
      std::printf(
          "  rank %2d cycles/panel: wait %6.0f  P1 %6.0f  U1 %6.0f  P3 warp0 (diag: load+arrive "
          "%6.0f factor %6.0f store %6.0f)  |  warp1: P3 (trailing) %6.0f  wait %6.0f\n",
          r, prof[r][0] / panels, prof[r][1] / panels, prof[r][2] / panels, prof[r][6] / panels,
          prof[r][7] / panels, prof[r][3] / panels, prof[r][4] / panels, prof[r][5] / panels);
    }
    CK(cudaFree(a0));
    CK(cudaFree(da));
    CK(cudaFree(info));
  }
  return 0;
}
