// GPU probe of LaunchClusterCholesky (kernels/src/cuda/cluster_cholesky.cu): correctness against
// an f64 host oracle and timing beside LaunchCholesky and cusolverDnXpotrf.
//
// Prints one line per case with PASS/FAIL, then "ALL PASS" or "FAILURES: N"; exit code 0 only
// when everything passed. Run on the GPU machine from the bundle: atp-cuda/cholesky_probe.
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <vector>

#include "cuda/cluster_cholesky.h"
#include "cuda/device_kernels.h"

using atp::kernels::cuda::ClusterCholeskySupported;
using atp::kernels::cuda::DevType;
using atp::kernels::cuda::LaunchCholesky;
using atp::kernels::cuda::LaunchClusterCholesky;
using atp::kernels::cuda::LaunchShiftDiagonalByTrace;

namespace {

int g_failures = 0;

void Result(bool ok, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void Result(bool ok, const char* fmt, ...) {
  std::printf("%s ", ok ? "PASS" : "FAIL");
  va_list args;
  va_start(args, fmt);
  std::vprintf(fmt, args);
  va_end(args);
  std::printf("\n");
  std::fflush(stdout);
  if (!ok) ++g_failures;
}

#define CUDA_OK(call)                                                                              \
  do {                                                                                             \
    const cudaError_t e_ = (call);                                                                 \
    if (e_ != cudaSuccess) {                                                                       \
      std::printf("FAIL CUDA error %s at %s:%d: %s\n", cudaGetErrorString(e_), __FILE__, __LINE__, \
                  #call);                                                                          \
      std::printf("FAILURES: %d\n", g_failures + 1);                                               \
      std::exit(1);                                                                                \
    }                                                                                              \
  } while (0)

#define SOLVER_OK(call)                                                                     \
  do {                                                                                      \
    const cusolverStatus_t s_ = (call);                                                     \
    if (s_ != CUSOLVER_STATUS_SUCCESS) {                                                    \
      std::printf("FAIL cuSOLVER status %d at %s:%d: %s\n", static_cast<int>(s_), __FILE__, \
                  __LINE__, #call);                                                         \
      std::printf("FAILURES: %d\n", g_failures + 1);                                        \
      std::exit(1);                                                                         \
    }                                                                                       \
  } while (0)

constexpr double kSentinel = 12345.0;

template <typename T>
DevType TypeOf();
template <>
DevType TypeOf<float>() {
  return DevType::kF32;
}
template <>
DevType TypeOf<double>() {
  return DevType::kF64;
}
template <typename T>
const char* NameOf() {
  return sizeof(T) == 8 ? "f64" : "f32";
}

// A = BᵀB / n + 0.1·I (full, symmetric), B standard normal from a seeded generator; cached.
const std::vector<double>& RandomSpd(int n) {
  static std::map<int, std::vector<double>> cache;
  auto it = cache.find(n);
  if (it != cache.end()) return it->second;
  std::mt19937_64 rng(0x5eed0000u + static_cast<unsigned>(n));
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> b(static_cast<size_t>(n) * n), a(static_cast<size_t>(n) * n);
  for (double& v : b) v = normal(rng);
  // Column-major access of B: a[i][j] = Σ_k b[k][i]·b[k][j]; go through Bᵀ for locality.
  std::vector<double> bt(static_cast<size_t>(n) * n);
  for (int k = 0; k < n; ++k) {
    for (int i = 0; i < n; ++i)
      bt[static_cast<size_t>(i) * n + k] = b[static_cast<size_t>(k) * n + i];
  }
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j <= i; ++j) {
      const double* x = &bt[static_cast<size_t>(i) * n];
      const double* y = &bt[static_cast<size_t>(j) * n];
      double s = 0.0;
      for (int k = 0; k < n; ++k) s += x[k] * y[k];
      s /= n;
      if (i == j) s += 0.1;
      a[static_cast<size_t>(i) * n + j] = a[static_cast<size_t>(j) * n + i] = s;
    }
  }
  return cache.emplace(n, std::move(a)).first->second;
}

enum class Kind { kSpd, kNonPd, kSpdShift, kZeroShift };

const char* KindName(Kind k) {
  switch (k) {
    case Kind::kSpd:
      return "spd";
    case Kind::kNonPd:
      return "non-pd (a[7,7] = -1)";
    case Kind::kSpdShift:
      return "spd + shift 1e-2";
    case Kind::kZeroShift:
      return "zero + shift 1e-2 (trace 0: +1)";
  }
  return "?";
}

// Row-major n x n input in T: lower triangle from `full`, strictly upper part the sentinel.
template <typename T>
std::vector<T> Input(int n, Kind kind) {
  std::vector<T> a(static_cast<size_t>(n) * n);
  const std::vector<double>* full = kind == Kind::kZeroShift ? nullptr : &RandomSpd(n);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      double v = kSentinel;
      if (j <= i) v = full ? (*full)[static_cast<size_t>(i) * n + j] : 0.0;
      if (kind == Kind::kNonPd && i == 7 && j == 7) v = -1.0;
      a[static_cast<size_t>(i) * n + j] = static_cast<T>(v);
    }
  }
  return a;
}

// ||L·Lᵀ − A||_F / ||A||_F over the full symmetric matrices (lower triangles given).
template <typename T>
double Residual(const std::vector<T>& l, const std::vector<double>& a, int n) {
  std::vector<double> ld(l.size());
  for (size_t e = 0; e < l.size(); ++e) ld[e] = static_cast<double>(l[e]);
  double num = 0.0, den = 0.0;
  for (int i = 0; i < n; ++i) {
    const double* li = &ld[static_cast<size_t>(i) * n];
    for (int j = 0; j <= i; ++j) {
      const double* lj = &ld[static_cast<size_t>(j) * n];
      double s = 0.0;
      for (int k = 0; k <= j; ++k) s += li[k] * lj[k];
      const double ref = a[static_cast<size_t>(i) * n + j];
      const double w = i == j ? 1.0 : 2.0;
      num += w * (s - ref) * (s - ref);
      den += w * ref * ref;
    }
  }
  return den > 0.0 ? std::sqrt(num / den) : std::sqrt(num);
}

template <typename T>
struct DeviceMatrix {
  T* a = nullptr;
  int* info = nullptr;
  explicit DeviceMatrix(size_t elems) {
    CUDA_OK(cudaMalloc(&a, elems * sizeof(T)));
    CUDA_OK(cudaMalloc(&info, sizeof(int)));
  }
  ~DeviceMatrix() {
    cudaFree(a);
    cudaFree(info);
  }
};

// One correctness case of LaunchClusterCholesky.
template <typename T>
void CheckCase(int n, Kind kind, cudaStream_t stream) {
  std::vector<T> host = Input<T>(n, kind);
  const double shift_factor = kind == Kind::kSpdShift || kind == Kind::kZeroShift ? 1e-2 : 0.0;
  // The matrix the kernel must factor: the T-rounded input, shifted as LaunchShiftDiagonalByTrace
  // does (trace of the unshifted matrix in f64, the sum rounded back to T).
  std::vector<double> ref(static_cast<size_t>(n) * n, 0.0);
  double trace = 0.0;
  for (int i = 0; i < n; ++i) trace += static_cast<double>(host[static_cast<size_t>(i) * n + i]);
  const double shift = trace != 0.0 ? shift_factor * trace : 1.0;
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j <= i; ++j) {
      T v = host[static_cast<size_t>(i) * n + j];
      if (i == j && shift_factor != 0.0) v = static_cast<T>(static_cast<double>(v) + shift);
      ref[static_cast<size_t>(i) * n + j] = ref[static_cast<size_t>(j) * n + i] = v;
    }
  }
  DeviceMatrix<T> d(host.size());
  CUDA_OK(
      cudaMemcpyAsync(d.a, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice, stream));
  CUDA_OK(cudaMemsetAsync(d.info, 0, sizeof(int), stream));
  const cudaError_t launch =
      LaunchClusterCholesky(TypeOf<T>(), d.a, n, shift_factor, d.info, stream);
  const cudaError_t sync = cudaStreamSynchronize(stream);
  if (launch != cudaSuccess || sync != cudaSuccess) {
    Result(false, "%s n=%d %s: launch %s, sync %s", NameOf<T>(), n, KindName(kind),
           cudaGetErrorString(launch), cudaGetErrorString(sync));
    if (sync != cudaSuccess) {
      std::printf("FAILURES: %d (device error is sticky; stopping)\n", g_failures);
      std::exit(1);
    }
    return;
  }
  std::vector<T> out(host.size());
  int info = -1;
  CUDA_OK(cudaMemcpy(out.data(), d.a, out.size() * sizeof(T), cudaMemcpyDeviceToHost));
  CUDA_OK(cudaMemcpy(&info, d.info, sizeof(int), cudaMemcpyDeviceToHost));
  bool sentinel_ok = true, finite = true;
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      const double v = static_cast<double>(out[static_cast<size_t>(i) * n + j]);
      if (j > i && v != kSentinel) sentinel_ok = false;
      if (j <= i && !std::isfinite(v)) finite = false;
    }
  }
  const double bar = sizeof(T) == 8 ? 1e-13 : 1e-5;
  if (kind == Kind::kNonPd) {
    const int want = n > 7 ? 8 : 0;
    Result(sentinel_ok && finite && info == want,
           "%s n=%d %s: info %d (want %d), finite %s, upper %s", NameOf<T>(), n, KindName(kind),
           info, want, finite ? "yes" : "NO", sentinel_ok ? "untouched" : "MODIFIED");
    return;
  }
  const double resid = Residual(out, ref, n);
  bool exact = true;
  if (kind == Kind::kZeroShift) {  // A = 0 shifted by 1 is I: L = I exactly
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j <= i; ++j) {
        if (out[static_cast<size_t>(i) * n + j] != (i == j ? T(1) : T(0))) exact = false;
      }
    }
  }
  Result(sentinel_ok && finite && info == 0 && resid < bar && exact,
         "%s n=%d %s: residual %.2e (bar %.0e), info %d, upper %s%s", NameOf<T>(), n,
         KindName(kind), resid, bar, info, sentinel_ok ? "untouched" : "MODIFIED",
         kind == Kind::kZeroShift ? (exact ? ", L = I exactly" : ", L != I") : "");
}

// n beyond the supported range: cudaErrorNotSupported and nothing launched.
template <typename T>
void CheckUnsupported(int n, cudaStream_t stream) {
  std::vector<T> host(static_cast<size_t>(n) * n);
  for (size_t e = 0; e < host.size(); ++e) host[e] = static_cast<T>(e % 97);
  DeviceMatrix<T> d(host.size());
  CUDA_OK(cudaMemcpy(d.a, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemset(d.info, 0, sizeof(int)));
  const cudaError_t e = LaunchClusterCholesky(TypeOf<T>(), d.a, n, 0.0, d.info, stream);
  CUDA_OK(cudaStreamSynchronize(stream));
  const cudaError_t last = cudaGetLastError();
  std::vector<T> out(host.size());
  CUDA_OK(cudaMemcpy(out.data(), d.a, out.size() * sizeof(T), cudaMemcpyDeviceToHost));
  const bool untouched = std::memcmp(out.data(), host.data(), host.size() * sizeof(T)) == 0;
  Result(e == cudaErrorNotSupported && last == cudaSuccess && untouched &&
             !ClusterCholeskySupported(TypeOf<T>(), n),
         "%s n=%d (largest + 1): returns %s without launching, matrix %s", NameOf<T>(), n,
         cudaGetErrorName(e), untouched ? "untouched" : "MODIFIED");
}

// Repeated runs give bit-identical output (a shared-memory race would show up as differences).
template <typename T>
void CheckDeterministic(int n, int runs, cudaStream_t stream) {
  std::vector<T> host = Input<T>(n, Kind::kSpdShift);
  DeviceMatrix<T> d(host.size());
  std::vector<T> first, out(host.size());
  int differing = 0;
  for (int r = 0; r < runs; ++r) {
    CUDA_OK(
        cudaMemcpyAsync(d.a, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice, stream));
    CUDA_OK(cudaMemsetAsync(d.info, 0, sizeof(int), stream));
    CUDA_OK(LaunchClusterCholesky(TypeOf<T>(), d.a, n, 1e-2, d.info, stream));
    CUDA_OK(
        cudaMemcpyAsync(out.data(), d.a, out.size() * sizeof(T), cudaMemcpyDeviceToHost, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    if (r == 0) {
      first = out;
    } else if (std::memcmp(first.data(), out.data(), out.size() * sizeof(T)) != 0) {
      ++differing;
    }
  }
  Result(differing == 0, "%s n=%d: %d runs bit-identical (%d differ)", NameOf<T>(), n, runs,
         differing);
}

template <typename F>
double MedianMs(cudaStream_t stream, const F& restore, const F& run) {
  cudaEvent_t start, stop;
  CUDA_OK(cudaEventCreate(&start));
  CUDA_OK(cudaEventCreate(&stop));
  std::vector<float> ms;
  for (int it = 0; it < 55; ++it) {
    restore();
    CUDA_OK(cudaEventRecord(start, stream));
    run();
    CUDA_OK(cudaEventRecord(stop, stream));
    CUDA_OK(cudaEventSynchronize(stop));
    float t = 0.0f;
    CUDA_OK(cudaEventElapsedTime(&t, start, stop));
    if (it >= 5) ms.push_back(t);
  }
  CUDA_OK(cudaEventDestroy(start));
  CUDA_OK(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  return 0.5 * (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]);
}

template <typename T>
void Time(int n, cudaStream_t stream, cusolverDnHandle_t solver, cusolverDnParams_t params) {
  if (!ClusterCholeskySupported(TypeOf<T>(), n)) {
    std::printf("TIME %s n=%d: cluster kernel unsupported, skipped\n", NameOf<T>(), n);
    return;
  }
  std::vector<T> host = Input<T>(n, Kind::kSpd);
  for (int i = 0; i < n; ++i) {  // cuSOLVER wants nothing in particular above; keep it symmetric
    for (int j = i + 1; j < n; ++j)
      host[static_cast<size_t>(i) * n + j] = host[static_cast<size_t>(j) * n + i];
  }
  const size_t bytes = host.size() * sizeof(T);
  DeviceMatrix<T> d(host.size());
  T* pristine = nullptr;
  CUDA_OK(cudaMalloc(&pristine, bytes));
  CUDA_OK(cudaMemcpy(pristine, host.data(), bytes, cudaMemcpyHostToDevice));
  const cudaDataType ct = sizeof(T) == 8 ? CUDA_R_64F : CUDA_R_32F;
  size_t dev_bytes = 0, host_bytes = 0;
  SOLVER_OK(cusolverDnXpotrf_bufferSize(solver, params, CUBLAS_FILL_MODE_UPPER, n, ct, d.a, n, ct,
                                        &dev_bytes, &host_bytes));
  void* work = nullptr;
  CUDA_OK(cudaMalloc(&work, std::max<size_t>(dev_bytes, 1)));
  std::vector<char> host_work(std::max<size_t>(host_bytes, 1));
  auto restore = [&]() {
    CUDA_OK(cudaMemcpyAsync(d.a, pristine, bytes, cudaMemcpyDeviceToDevice, stream));
    CUDA_OK(cudaMemsetAsync(d.info, 0, sizeof(int), stream));
  };
  std::function<void()> runs[4] = {
      [&]() { CUDA_OK(LaunchClusterCholesky(TypeOf<T>(), d.a, n, 0.0, d.info, stream)); },
      [&]() { CUDA_OK(LaunchClusterCholesky(TypeOf<T>(), d.a, n, 1e-2, d.info, stream)); },
      [&]() { CUDA_OK(LaunchCholesky(TypeOf<T>(), d.a, n, d.info, stream)); },
      [&]() {
        SOLVER_OK(cusolverDnXpotrf(solver, params, CUBLAS_FILL_MODE_UPPER, n, ct, d.a, n, ct, work,
                                   dev_bytes, host_bytes ? host_work.data() : nullptr, host_bytes,
                                   d.info));
      }};
  std::function<void()> restore_f = restore;
  const double cluster = MedianMs(stream, restore_f, runs[0]);
  const double cluster_shift = MedianMs(stream, restore_f, runs[1]);
  const double own = MedianMs(stream, restore_f, runs[2]);
  std::function<void()> own_shift_run = [&]() {
    CUDA_OK(LaunchShiftDiagonalByTrace(TypeOf<T>(), d.a, n, n, 1e-2, stream));
    CUDA_OK(LaunchCholesky(TypeOf<T>(), d.a, n, d.info, stream));
  };
  const double own_shift = MedianMs(stream, restore_f, own_shift_run);
  const double cusolver = MedianMs(stream, restore_f, runs[3]);
  std::printf(
      "TIME %s n=%d (median of 50 after 5 warm-ups, ms): cluster %.4f | cluster+fused shift %.4f | "
      "LaunchCholesky %.4f | shift+LaunchCholesky %.4f | cusolverDnXpotrf %.4f | speed-up vs "
      "LaunchCholesky %.2fx\n",
      NameOf<T>(), n, cluster, cluster_shift, own, own_shift, cusolver, own / cluster);
  std::fflush(stdout);
  CUDA_OK(cudaFree(work));
  CUDA_OK(cudaFree(pristine));
}

template <typename T>
int LargestSupported() {
  int largest = 0;
  for (int n = 1; n <= 4096; ++n) {
    if (!ClusterCholeskySupported(TypeOf<T>(), n)) break;
    largest = n;
  }
  return largest;
}

template <typename T>
void CheckType(cudaStream_t stream) {
  const int largest = LargestSupported<T>();
  // 227 KiB per block: f64 fits n <= 580 with 16 blocks per cluster, n <= 477 with 8.
  std::printf("%s: largest supported n = %d%s\n", NameOf<T>(), largest,
              sizeof(T) == 8
                  ? (largest > 477 ? " (clusters of 16 blocks)" : " (clusters of 8 blocks)")
                  : "");
  if (sizeof(T) == 8) {
    Result(largest >= 576, "f64 n=576 supported (largest %d)", largest);
  }
  std::vector<int> sizes = {1, 2, 15, 16, 17, 31, 32, 33, 100, 320, 576, largest};
  for (const int n : sizes) {
    if (n < 1 || n > largest) {
      std::printf("SKIP %s n=%d: beyond the largest supported n %d\n", NameOf<T>(), n, largest);
      continue;
    }
    CheckCase<T>(n, Kind::kSpd, stream);
    if (n > 7) CheckCase<T>(n, Kind::kNonPd, stream);
    CheckCase<T>(n, Kind::kSpdShift, stream);
  }
  CheckCase<T>(33, Kind::kZeroShift, stream);
  CheckUnsupported<T>(largest + 1, stream);
  CheckDeterministic<T>(std::min(576, largest), 20, stream);
  CheckDeterministic<T>(largest, 10, stream);
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("FAIL no CUDA device\nFAILURES: 1\n");
    return 1;
  }
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  int cluster_launch = 0, optin = 0;
  CUDA_OK(cudaDeviceGetAttribute(&cluster_launch, cudaDevAttrClusterLaunch, 0));
  CUDA_OK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
  std::printf("device: %s, sm_%d%d, %d SMs, cluster launch %s, %d bytes shared memory per block\n",
              prop.name, prop.major, prop.minor, prop.multiProcessorCount,
              cluster_launch ? "yes" : "no", optin);
  if (!ClusterCholeskySupported(DevType::kF64, 1) || !ClusterCholeskySupported(DevType::kF32, 1)) {
    std::printf(
        "FAIL cluster launch unsupported on this device: ClusterCholeskySupported is false even "
        "for n = 1 (needs sm_90+, cluster launch, and a cluster of 8 or 16 blocks of 512 threads "
        "with the full shared memory)\nFAILURES: 1\n");
    return 2;
  }
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  CheckType<double>(stream);
  CheckType<float>(stream);
  cusolverDnHandle_t solver;
  cusolverDnParams_t params;
  SOLVER_OK(cusolverDnCreate(&solver));
  SOLVER_OK(cusolverDnSetStream(solver, stream));
  SOLVER_OK(cusolverDnCreateParams(&params));
  for (const int n : {320, 576}) {
    Time<float>(n, stream, solver, params);
    Time<double>(n, stream, solver, params);
  }
  SOLVER_OK(cusolverDnDestroyParams(params));
  SOLVER_OK(cusolverDnDestroy(solver));
  CUDA_OK(cudaStreamDestroy(stream));
  if (g_failures == 0) {
    std::printf("ALL PASS\n");
    return 0;
  }
  std::printf("FAILURES: %d\n", g_failures);
  return 1;
}
