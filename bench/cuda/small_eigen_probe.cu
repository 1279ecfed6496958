// Probe of the GPU-resident small eigensolver (kernels/src/cuda/small_eigen.cu) beside cuSOLVER's
// syevd, in the same run: eigenvalues against syevd's, residual ‖A·z − λz‖ and orthonormality of
// the vectors, on random dense matrices, a Rayleigh–Ritz-like spectrum (a decaying signal over a
// dense bulk), a triple eigenvalue, 40 equal eigenvalues and the zero matrix (both must report
// the fallback), a diagonal matrix; then the time of each of its four stages and of syevd (CUDA
// events, median of 20 after 5 warm-ups; with "OfT beside FormQ" the eigenpairs of T and Q on
// two streams as the basis runs them, and FormQ alone) and the cycles per column of the tridiagonalisation's
// phases (clock64 in the kernel, compiled in here with ATP_SMALL_EIGEN_PROFILE).
//
// Prints a line per case (PASS/FAIL) and per timing, then "ALL PASS" or "FAILURES: N"; exit code
// 0 only when every case passed. Run on the GPU machine from the bundle:
// atp-cuda/small_eigen_probe.
#define ATP_SMALL_EIGEN_PROFILE 1
#include <cusolverDn.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <vector>

#include "cuda/small_eigen.cu"  // the kernels themselves, to time the stages one by one
using namespace atp::kernels::cuda;
#define CK(x)                                                              \
  do {                                                                     \
    cudaError_t e_ = (x);                                                  \
    if (e_ != cudaSuccess) {                                               \
      printf("CUDA %s at %d: %s\n", #x, __LINE__, cudaGetErrorString(e_)); \
      exit(2);                                                             \
    }                                                                      \
  } while (0)
#define CS(x)                                      \
  do {                                             \
    int e_ = (int)(x);                             \
    if (e_) {                                      \
      printf("cusolver %d at %d\n", e_, __LINE__); \
      exit(2);                                     \
    }                                              \
  } while (0)
static int failures = 0;
static cusolverDnHandle_t sol;
static cudaStream_t st;

std::vector<double> Mix(std::vector<double> a, int n, std::mt19937_64& rng, int reflectors) {
  std::normal_distribution<double> g;
  std::vector<double> v(n), w(n);
  for (int r = 0; r < reflectors; ++r) {
    double nn = 0;
    for (auto& x : v) {
      x = g(rng);
      nn += x * x;
    }
    // A <- H A H, H = I - 2 v v^T / (v^T v)
    for (int i = 0; i < n; ++i) {
      double s = 0;
      for (int k = 0; k < n; ++k) s += a[i * n + k] * v[k];
      w[i] = s * 2 / nn;
    }
    double vw = 0;
    for (int i = 0; i < n; ++i) vw += v[i] * w[i];
    for (int i = 0; i < n; ++i)
      for (int k = 0; k < n; ++k)
        a[i * n + k] += -v[i] * w[k] - w[i] * v[k] + 2 * vw / nn * v[i] * v[k];
  }
  for (int i = 0; i < n; ++i)
    for (int k = 0; k < i; ++k) {
      double m = 0.5 * (a[i * n + k] + a[k * n + i]);
      a[i * n + k] = a[k * n + i] = m;
    }
  return a;
}

struct Timing {
  double own = 0, syevd = 0;
};

Timing Case(const char* name, const std::vector<double>& a, int n, int first, bool expect_fallback,
            bool time_it) {
  double *da, *dl, *dv, *ws, *dsy, *dw;
  int* dflag;
  int* dinfo;
  CK(cudaMalloc(&da, 8 * n * n));
  CK(cudaMalloc(&dl, 8 * n));
  CK(cudaMalloc(&dv, 8 * n * n));
  CK(cudaMalloc(&ws, SmallEigenWorkspaceBytes(n)));
  CK(cudaMalloc(&dflag, 4));
  CK(cudaMalloc(&dinfo, 4));
  CK(cudaMalloc(&dsy, 8 * n * n));
  CK(cudaMalloc(&dw, 8 * n));
  CK(cudaMemcpy(da, a.data(), 8 * n * n, cudaMemcpyHostToDevice));
  CK(cudaMemset(dv, 0xff, 8 * n * n));  // NaN poison
  CK(LaunchSmallEigen(da, n, first, dl, dv, dflag, ws, st));
  CK(cudaStreamSynchronize(st));
  int flag = 0;
  CK(cudaMemcpy(&flag, dflag, 4, cudaMemcpyDeviceToHost));
  std::vector<double> lam(n), vec(n * n), lsy(n);
  CK(cudaMemcpy(lam.data(), dl, 8 * n, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(vec.data(), dv, 8 * n * n, cudaMemcpyDeviceToHost));
  // syevd reference
  int lwork = 0;
  CS(cusolverDnDsyevd_bufferSize(sol, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n, dsy, n,
                                 dw, &lwork));
  double* work;
  CK(cudaMalloc(&work, 8 * (size_t)std::max(lwork, 1)));
  auto run_syevd = [&] {
    CK(cudaMemcpyAsync(dsy, da, 8 * n * n, cudaMemcpyDeviceToDevice, st));
    CS(cusolverDnDsyevd(sol, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n, dsy, n, dw, work,
                        lwork, dinfo));
  };
  run_syevd();
  CK(cudaStreamSynchronize(st));
  CK(cudaMemcpy(lsy.data(), dw, 8 * n, cudaMemcpyDeviceToHost));
  double anorm = 0;
  for (double x : a) anorm = std::max(anorm, std::fabs(x));
  anorm = std::max(anorm * n, 1e-300);  // >= ||A||_2
  double lam_err = 0;
  for (int i = 0; i < n; ++i) lam_err = std::max(lam_err, std::fabs(lam[i] - lsy[i]));
  lam_err /= anorm;
  double res = 0, orth = 0;
  for (int i = first; i < n; ++i) {
    const double* z = &vec[(size_t)i * n];
    double r2 = 0;
    for (int r = 0; r < n; ++r) {
      double s = 0;
      for (int k = 0; k < n; ++k) s += a[r * n + k] * z[k];
      s -= lam[i] * z[r];
      r2 += s * s;
    }
    res = std::max(res, std::sqrt(r2) / anorm);
  }
  for (int i = first; i < n; ++i)
    for (int j = i; j < n; ++j) {
      double s = 0;
      for (int k = 0; k < n; ++k) s += vec[(size_t)i * n + k] * vec[(size_t)j * n + k];
      orth = std::max(orth, std::fabs(s - (i == j ? 1.0 : 0.0)));
    }
  // A reported fallback means the caller must not use the result: nothing else to check.
  // Orthogonality: the vectors of ungrouped neighbours (gap > kSmallEigenGroupGap·‖T‖) are
  // orthogonal to ~u/kSmallEigenGroupGap ≈ 2e-7 (small_eigen.h; the basis' Newton–Schulz step on
  // the Ritz vectors removes it); 1e-9 here predates the 1e-9 gap and failed on the Ritz-like
  // spectrum at n = 576 (1.8e-9) with the session-5 solver too.
  const bool ok =
      expect_fallback ? flag == 1 : flag == 0 && lam_err < 1e-12 && res < 1e-12 && orth < 1e-6;
  if (!ok) ++failures;
  printf("%-4s %-28s n=%4d first=%4d fallback=%d lam_err=%.2e resid=%.2e orth=%.2e\n",
         ok ? "PASS" : "FAIL", name, n, first, flag, lam_err, res, orth);
  Timing t;
  if (time_it) {
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    auto med = [&](auto fn) {
      std::vector<float> ts;
      for (int it = 0; it < 25; ++it) {
        CK(cudaEventRecord(e0, st));
        fn();
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        if (it >= 5) ts.push_back(ms);
      }
      std::sort(ts.begin(), ts.end());
      return (double)ts[ts.size() / 2];
    };
    t.own = med([&] { CK(LaunchSmallEigen(da, n, first, dl, dv, dflag, ws, st)); });
    t.syevd = med(run_syevd);
    // per stage
    const int blocks = ClusterBlocks(n);
    const Workspace w = Carve(ws, n);  // the solver's own layout of its workspace
    double* d = w.d;
    double* e = w.e;
    double* tau = w.tau;
    double* scalars = w.scalars;
    double* hh = w.hh;
    double* zt = w.zt;
    static cudaStream_t side = nullptr;
    if (side == nullptr) CK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
    cudaEvent_t fork, join;
    CK(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
    CK(cudaEventCreateWithFlags(&join, cudaEventDisableTiming));
    InverseParams ip{d, e, dl, scalars, n, first, zt, dflag};
    const dim3 eig_grid((n + kBisectWarps - 1) / kBisectWarps), eig_block(kBisectWarps * 32);
    const size_t eig_smem = 2 * n * sizeof(double);
    // Each stage after the ones before it, in the solver's order; the last three are alternatives.
    const std::vector<std::pair<const char*, std::function<void()>>> stages = {
        {"tridiag", [&] { CK(LaunchSmallEigenReduce(da, n, ws, st)); }},
        {"eigenvalues",
         [&] {
           EigenvaluesKernel<kSturmByMinors>
               <<<eig_grid, eig_block, eig_smem, st>>>(d, e, n, dl, scalars);
         }},
        {"inverse",
         [&] {
           InverseIterationKernel<<<(n - first + kInverseThreads - 1) / kInverseThreads,
                                    kInverseThreads, InverseSmemBytes(n), st>>>(ip);
         }},
        {"back",
         [&] {
           BackTransformKernel<kBackWarps>
               <<<(n - first + kBackWarps - 1) / kBackWarps, kBackWarps * 32, 0, st>>>(
                   hh, tau, zt, n, first, dv);
         }},
        // The basis' order: T's eigenpairs on the main stream beside Q on a side stream.
        {"OfT beside FormQ",
         [&] {
           CK(cudaEventRecord(fork, st));
           CK(cudaStreamWaitEvent(side, fork));
           CK(LaunchSmallEigenFormQ(n, ws, side));
           CK(cudaEventRecord(join, side));
           CK(LaunchSmallEigenOfT(n, 0, dl, dflag, ws, st));
           CK(cudaStreamWaitEvent(st, join));
         }},
        {"FormQ alone", [&] { CK(LaunchSmallEigenFormQ(n, ws, st)); }},
        {"FormQ, 8 warps a block",
         [&] {
           BackTransformKernel<8><<<(n + 7) / 8, 8 * 32, 0, st>>>(hh, tau, nullptr, n, 0, w.qt);
         }},
        {"eigenvalues by the ratio count",
         [&] {
           EigenvaluesKernel<!kSturmByMinors>
               <<<eig_grid, eig_block, eig_smem, st>>>(d, e, n, dl, scalars);
         }},
    };
    std::vector<cudaEvent_t> ev(stages.size() + 1);
    for (auto& x : ev) CK(cudaEventCreate(&x));
    std::vector<std::vector<float>> times(stages.size());
    for (int it = 0; it < 25; ++it) {
      CK(cudaEventRecord(ev[0], st));
      for (size_t k = 0; k < stages.size(); ++k) {
        stages[k].second();
        CK(cudaEventRecord(ev[k + 1], st));
      }
      CK(cudaEventSynchronize(ev.back()));
      for (size_t k = 0; k < stages.size(); ++k) {
        float ms;
        CK(cudaEventElapsedTime(&ms, ev[k], ev[k + 1]));
        if (it >= 5) times[k].push_back(ms);
      }
    }
    printf("TIME %s n=%d cluster=%d smem=%zu: own %.3f ms, syevd %.3f ms -> %.1fx;", name, n,
           blocks, TridiagSmemBytes(n, blocks), t.own, t.syevd, t.syevd / t.own);
    for (size_t k = 0; k < stages.size(); ++k) {
      std::sort(times[k].begin(), times[k].end());
      printf(" %s %.3f%s", stages[k].first, times[k][10], k + 1 < stages.size() ? "," : "\n");
    }
    for (auto& x : ev) CK(cudaEventDestroy(x));
    CK(cudaEventDestroy(fork));
    CK(cudaEventDestroy(join));
  }
  cudaFree(da);
  cudaFree(dl);
  cudaFree(dv);
  cudaFree(ws);
  cudaFree(dflag);
  cudaFree(dinfo);
  cudaFree(dsy);
  cudaFree(dw);
  cudaFree(work);
  return t;
}

void Profile(int n) {
  std::mt19937_64 r0(7);
  std::normal_distribution<double> g0;
  std::vector<double> a(n * n);
  for (int i = 0; i < n; ++i)
    for (int k = 0; k <= i; ++k) a[i * n + k] = a[k * n + i] = g0(r0);
  double *da, *dl, *dv, *ws;
  int* fl;
  CK(cudaMalloc(&da, 8 * n * n));
  CK(cudaMalloc(&dl, 8 * n));
  CK(cudaMalloc(&dv, 8 * n * n));
  CK(cudaMalloc(&ws, SmallEigenWorkspaceBytes(n)));
  CK(cudaMalloc(&fl, 4));
  CK(cudaMemcpy(da, a.data(), 8 * n * n, cudaMemcpyHostToDevice));
  for (int it = 0; it < 3; ++it) CK(LaunchSmallEigen(da, n, 0, dl, dv, fl, ws, st));
  CK(cudaStreamSynchronize(st));
  long long zero[16][6] = {};
  CK(cudaMemcpyToSymbol(g_prof, zero, sizeof(zero)));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  CK(cudaEventRecord(e0, st));
  for (int it = 0; it < 10; ++it) CK(LaunchSmallEigen(da, n, 0, dl, dv, fl, ws, st));
  CK(cudaEventRecord(e1, st));
  CK(cudaEventSynchronize(e1));
  float ms;
  CK(cudaEventElapsedTime(&ms, e0, e1));
  long long pr[16][6];
  CK(cudaMemcpyFromSymbol(pr, g_prof, sizeof(pr)));
  int clk = 0;
  CK(cudaDeviceGetAttribute(&clk, cudaDevAttrClockRate, 0));
  for (int r : {0, 5, 15}) {
    double tot = 0;
    for (int q = 0; q < 6; ++q) tot += pr[r][q];
    printf(
        "PROFILE n=%d rank %d cycles/column: barrier %.0f pull %.0f reflect %.0f fused "
        "%.0f partials %.0f rest %.0f total %.0f\n",
        n, r, pr[r][0] / 10.0 / n, pr[r][1] / 10.0 / n, pr[r][2] / 10.0 / n,
        pr[r][3] / 10.0 / n, pr[r][4] / 10.0 / n, pr[r][5] / 10.0 / n, tot / 10.0 / n);
  }
  printf("PROFILE whole solver %.3f ms per call; max clock %d MHz\n", ms / 10, clk / 1000);
  cudaFree(da);
  cudaFree(dl);
  cudaFree(dv);
  cudaFree(ws);
  cudaFree(fl);
}

void AllCases();

int main() {
  CK(cudaStreamCreate(&st));
  CS(cusolverDnCreate(&sol));
  CS(cusolverDnSetStream(sol, st));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf(
      "device %s, cluster blocks for n=576: %d, supported(576)=%d supported(608)=%d "
      "supported(609)=%d\n",
      prop.name, ClusterBlocks(576), SmallEigenSupported(576), SmallEigenSupported(608),
      SmallEigenSupported(609));
  Profile(576);
  Profile(528);
  AllCases();
  printf(failures ? "FAILURES: %d\n" : "ALL PASS\n", failures);
  return failures ? 1 : 0;
}

void AllCases() {
  std::mt19937_64 rng(42);
  std::normal_distribution<double> g;
  for (int n : {1, 2, 3, 5, 17, 18, 20, 33, 64, 100, 320, 528, 576, 608}) {
    std::vector<double> a(n * n);
    for (int i = 0; i < n; ++i)
      for (int k = 0; k <= i; ++k) a[i * n + k] = a[k * n + i] = g(rng);
    Case("random dense", a, n, 0, false, n == 576 || n == 528);
    if (n >= 5) Case("random dense, top half", a, n, n / 2, false, false);
  }
  for (int n : {100, 528, 576}) {
    // Ritz-like spectrum: a decaying signal over a dense bulk (what Rayleigh-Ritz sees).
    std::vector<double> a(n * n, 0.0);
    std::uniform_real_distribution<double> u(0, 1);
    for (int i = 0; i < n; ++i) {
      double lam = i < 128 ? 4.7e6 * std::pow(0.97, 2.0 * i) : 3300.0 - 1.6 * (i - 128) + u(rng);
      a[i * n + i] = lam;
    }
    auto m = Mix(a, n, rng, 12);
    Case("signal + bulk", m, n, 0, false, n >= 528);
    Case("signal + bulk, top 512", m, n, n >= 528 ? n - 512 : 10, false, n >= 528);
    // exact triple eigenvalue
    std::vector<double> b(n * n, 0.0);
    for (int i = 0; i < n; ++i) b[i * n + i] = 1.0 + i;
    b[5 * n + 5] = b[6 * n + 6] = b[7 * n + 7] = 4.5;
    Case("triple eigenvalue", Mix(b, n, rng, 12), n, 0, false, false);
    // 40 equal eigenvalues -> fallback
    std::vector<double> c(n * n, 0.0);
    for (int i = 0; i < n; ++i) c[i * n + i] = i < 40 ? 0.0 : 1.0 + i;
    Case("40 zero eigenvalues", Mix(c, n, rng, 12), n, 0, true, false);
    Case("40 zero eigenvalues, top only", Mix(c, n, rng, 12), n, 40, false, false);
    Case("zero matrix", std::vector<double>(n * n, 0.0), n, 0, true, false);
    // diagonal with distinct entries (off-diagonal of T all zero)
    std::vector<double> dg(n * n, 0.0);
    for (int i = 0; i < n; ++i) dg[i * n + i] = std::cos(i * 1.3) * 10;
    Case("diagonal", dg, n, 0, false, false);
  }
}
