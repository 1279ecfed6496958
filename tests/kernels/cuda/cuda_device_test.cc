// The CUDA backend's device layer: cuDNN's fused attention against the own attention path, the
// randomized basis at a larger size against the exact one, the eigensolvers against each other
// and the GPU-resident one against the oracle. Skips itself without a usable CUDA device.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "atp/kernels/dtype.h"
#include "cuda/basis.h"
#include "cuda/blas.h"
#include "cuda/device_context.h"
#include "cuda/device_kernels.h"
#include "cuda/layer_ops.h"
#include "cuda/small_eigen.h"
#include "cuda/triangular_solve.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace atp::kernels::cuda {
namespace {

using atp::testing::FreshSeed;
using atp::testing::SeedTrace;

class CudaDeviceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { setenv("ATP_CUDA_POISON", "1", /*overwrite=*/1); }
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<DeviceContext>> ctx = DeviceContext::Create(0);
    if (!ctx.ok()) GTEST_SKIP() << "no usable CUDA device: " << ctx.status();
    ctx_ = *std::move(ctx);
  }

  DeviceBuffer Gaussian(DevType t, int64_t n, uint64_t seed, double scale = 1.0) {
    absl::StatusOr<DeviceBuffer> b = ctx_->Alloc(t, n);
    EXPECT_TRUE(b.ok()) << b.status();
    EXPECT_EQ(LaunchFillGaussian(t, b->get(), n, seed, 0, ctx_->stream()), cudaSuccess);
    if (scale != 1.0) {
      EXPECT_EQ(LaunchScaleRows(t, b->get(), n, 1, n, nullptr, scale, ctx_->stream()), cudaSuccess);
    }
    return *std::move(b);
  }

  std::vector<double> ToHost(DevType t, const void* p, int64_t n) {
    std::vector<double> out(static_cast<size_t>(n));
    absl::StatusOr<DeviceBuffer> tmp = ctx_->Alloc(DevType::kF64, n);
    EXPECT_TRUE(tmp.ok());
    EXPECT_EQ(LaunchConvert(t, p, DevType::kF64, tmp->get(), n, ctx_->stream()), cudaSuccess);
    EXPECT_TRUE(ctx_->CopyToHost(out.data(), tmp->get(), n * sizeof(double)).ok());
    return out;
  }

  std::unique_ptr<DeviceContext> ctx_;
};

double RelativeError(const std::vector<double>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

TEST_F(CudaDeviceTest, CudnnAttentionMatchesTheOwnPath) {
  if (ctx_->sdpa() == nullptr) {
    if (std::getenv("ATP_EXPECT_CUDNN") != nullptr) FAIL() << ctx_->sdpa_status();
    GTEST_SKIP() << ctx_->sdpa_status();
  }
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  struct Shape {
    int64_t lq, lk, h, hkv, dh;
    bool causal;
  };
  const Shape shapes[] = {{1000, 1000, 8, 2, 128, false},
                          {1000, 1000, 8, 2, 128, true},
                          {777, 300, 4, 4, 64, false},
                          {333, 65, 8, 1, 128, false},
                          {129, 129, 2, 2, 64, true}};
  for (DevType t : {DevType::kBF16, DevType::kF16}) {
    for (const Shape& s : shapes) {
      SCOPED_TRACE(absl::StrCat(DevTypeName(t), " Lq=", s.lq, " Lk=", s.lk, " H=", s.h, "/", s.hkv,
                                " dh=", s.dh, s.causal ? " causal" : ""));
      DeviceBuffer q = Gaussian(t, s.lq * s.h * s.dh, seed + 1);
      DeviceBuffer k = Gaussian(t, s.lk * s.hkv * s.dh, seed + 2);
      DeviceBuffer v = Gaussian(t, s.lk * s.hkv * s.dh, seed + 3);
      absl::StatusOr<DeviceBuffer> o1 = ctx_->Alloc(t, s.lq * s.h * s.dh);
      absl::StatusOr<DeviceBuffer> o2 = ctx_->Alloc(t, s.lq * s.h * s.dh);
      ASSERT_TRUE(o1.ok() && o2.ok());
      SdpaArgs a;
      a.type = t;
      a.q = q.get();
      a.k = k.get();
      a.v = v.get();
      a.lq = s.lq;
      a.lk = s.lk;
      a.heads = s.h;
      a.kv_heads = s.hkv;
      a.head_dim = s.dh;
      a.q_ld = a.o_ld = s.h * s.dh;
      a.k_ld = a.v_ld = s.hkv * s.dh;
      a.scale = 1.0f / std::sqrt(static_cast<float>(s.dh));
      a.causal = s.causal;
      a.o = o1->get();
      CoreImpl used;
      ASSERT_TRUE(AttentionCore(*ctx_, a, CoreImpl::kCudnn, &used).ok());
      EXPECT_EQ(used, CoreImpl::kCudnn);
      a.o = o2->get();
      ASSERT_TRUE(AttentionCore(*ctx_, a, CoreImpl::kFallback, &used).ok());
      EXPECT_EQ(used, CoreImpl::kFallback);
      const std::vector<double> cudnn = ToHost(t, o1->get(), s.lq * s.h * s.dh);
      const std::vector<double> own = ToHost(t, o2->get(), s.lq * s.h * s.dh);
      EXPECT_LE(RelativeError(cudnn, own), 1e-2);
    }
  }
}

TEST_F(CudaDeviceTest, OwnCholeskyMatchesCusolver) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  for (DevType t : {DevType::kF64, DevType::kF32}) {
    for (int64_t n : {1, 5, 31, 32, 33, 64, 100, 577, 700}) {  // 700: the blocked kernel
      SCOPED_TRACE(absl::StrCat(DevTypeName(t), " n=", n));
      // A = BᵀB / n + I, with the lower half of the column-major view poisoned: neither solver
      // may read it.
      DeviceBuffer b = Gaussian(t, 2 * n * n, seed + n);
      absl::StatusOr<DeviceBuffer> a0 = ctx_->Alloc(t, n * n);
      ASSERT_TRUE(a0.ok());
      ASSERT_TRUE(Gemm(*ctx_, true, false, n, n, 2 * n, 1.0 / n, ConstMat{t, b.get(), n},
                       ConstMat{t, b.get(), n}, 0.0, Mat{t, a0->get(), n})
                      .ok());
      std::vector<double> a = ToHost(t, a0->get(), n * n);
      for (int64_t i = 0; i < n; ++i) a[i * n + i] += 1.0;
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < i; ++j) a[j * n + i] = NAN;  // column-major lower
      }
      std::vector<std::vector<double>> results;
      for (bool own : {false, true}) {
        absl::StatusOr<DeviceBuffer> a64 = ctx_->Alloc(DevType::kF64, n * n);
        absl::StatusOr<DeviceBuffer> dev = ctx_->Alloc(t, n * n);
        absl::StatusOr<DeviceBuffer> info = ctx_->Alloc(sizeof(int));
        ASSERT_TRUE(a64.ok() && dev.ok() && info.ok());
        ASSERT_TRUE(ctx_->CopyToDevice(a64->get(), a.data(), n * n * sizeof(double)).ok());
        ASSERT_EQ(LaunchConvert(DevType::kF64, a64->get(), t, dev->get(), n * n, ctx_->stream()),
                  cudaSuccess);
        ASSERT_EQ(cudaMemsetAsync(info->get(), 0, sizeof(int), ctx_->stream()), cudaSuccess);
        ASSERT_TRUE(Potrf(*ctx_, t, n, dev->get(), info->as<int>(), own).ok());
        int host_info = -1;
        ASSERT_TRUE(ctx_->CopyToHost(&host_info, info->get(), sizeof(int)).ok());
        EXPECT_EQ(host_info, 0) << (own ? "own" : "cusolver");
        std::vector<double> r = ToHost(t, dev->get(), n * n);
        for (int64_t i = 0; i < n; ++i) {
          for (int64_t j = 0; j < i; ++j) r[j * n + i] = 0;  // keep the upper factor only
        }
        results.push_back(r);
      }
      EXPECT_LE(RelativeError(results[1], results[0]), t == DevType::kF64 ? 1e-12 : 1e-5);
    }
  }
}

// The own solve y ← y·R⁻¹ (triangular_solve.h) with R the Cholesky factor of a random SPD
// matrix whose strictly lower column-major part is poisoned (it may not be read): x·R must give
// back y, and x must match cuBLAS's trsm. Shapes cover one column, partial 32-column blocks, odd
// and even n (two load paths), one strip, many, and a last strip that is not full.
TEST_F(CudaDeviceTest, OwnTriangularSolveMatchesTheOracle) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  const DevType t = DevType::kF64;
  EXPECT_FALSE(SolveUpperRightSupported(DevType::kF32, 64));
  EXPECT_FALSE(SolveUpperRightSupported(t, 0));
  struct Case {
    int64_t n, rows;
  };
  for (const Case c : {Case{1, 1}, Case{5, 7}, Case{31, 33}, Case{32, 64}, Case{33, 100},
                       Case{100, 37}, Case{528, 4099}, Case{577, 200}, Case{611, 70}}) {
    const int64_t n = c.n, rows = c.rows;
    SCOPED_TRACE(absl::StrCat("n=", n, " rows=", rows));
    ASSERT_TRUE(SolveUpperRightSupported(t, n));
    DeviceBuffer b = Gaussian(t, 2 * n * n, seed + n);
    absl::StatusOr<DeviceBuffer> r = ctx_->Alloc(t, n * n);
    absl::StatusOr<DeviceBuffer> info = ctx_->Alloc(sizeof(int));
    ASSERT_TRUE(r.ok() && info.ok());
    ASSERT_TRUE(Gemm(*ctx_, true, false, n, n, 2 * n, 1.0 / n, ConstMat{t, b.get(), n},
                     ConstMat{t, b.get(), n}, 0.0, Mat{t, r->get(), n})
                    .ok());
    ASSERT_EQ(LaunchShiftDiagonalByTrace(t, r->get(), n, n, 1.0 / n, ctx_->stream()), cudaSuccess);
    ASSERT_TRUE(Potrf(*ctx_, t, n, r->get(), info->as<int>()).ok());
    std::vector<double> rh = ToHost(t, r->get(), n * n);
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t i = j + 1; i < n; ++i) rh[i + j * n] = NAN;  // column-major lower
    }
    ASSERT_TRUE(ctx_->CopyToDevice(r->get(), rh.data(), n * n * sizeof(double)).ok());
    DeviceBuffer y0 = Gaussian(t, rows * n, seed + 7 * n + rows);
    const std::vector<double> y = ToHost(t, y0.get(), rows * n);
    std::vector<std::vector<double>> results;
    for (bool own : {false, true}) {
      absl::StatusOr<DeviceBuffer> x = ctx_->Alloc(t, rows * n);
      ASSERT_TRUE(x.ok());
      ASSERT_TRUE(ctx_->CopyToDevice(x->get(), y.data(), rows * n * sizeof(double)).ok());
      ASSERT_TRUE(
          SolveCholeskyFactor(*ctx_, t, n, r->get(), /*columns=*/true, rows, x->get(), own).ok());
      results.push_back(ToHost(t, x->get(), rows * n));
    }
    const std::vector<double>& x = results[1];
    std::vector<double> back(static_cast<size_t>(rows * n), 0.0);
    for (int64_t v = 0; v < rows; ++v) {
      for (int64_t j = 0; j < n; ++j) {
        double sum = 0.0;
        for (int64_t i = 0; i <= j; ++i) sum += x[v * n + i] * rh[i + j * n];
        back[v * n + j] = sum;
      }
    }
    EXPECT_LE(RelativeError(back, y), 1e-13);
    EXPECT_LE(RelativeError(x, results[0]), 1e-12);
  }
}

// The GPU-resident eigensolver (small_eigen.h) on positive semidefinite A = BᵀB / rows: its
// eigenvalues against the squared singular values of B from the oracle's Jacobi SVD, its vectors
// by their residual and orthonormality. Spectra with a group of equal eigenvalues (handled by the
// solver) and with many equal ones (it must report them so that syevd takes over) included.
TEST_F(CudaDeviceTest, ResidentEigensolverMatchesTheOracle) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  if (!SmallEigenSupported(kSmallEigenMaxN)) GTEST_SKIP() << "no thread-block clusters here";
  EXPECT_FALSE(SmallEigenSupported(kSmallEigenMaxN + 1));
  EXPECT_FALSE(SmallEigenSupported(0));
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  struct Case {
    int64_t n;
    int zero_columns;   // B's first columns zeroed: that many zero eigenvalues
    int equal_columns;  // B's first columns scaled unit vectors: that many equal eigenvalues
    bool expect_fallback;
  };
  const Case cases[] = {{1, 0, 0, false},
                        {2, 0, 0, false},
                        {3, 0, 0, false},
                        {18, 0, 0, false},
                        {33, 0, 0, false},
                        {100, 0, 3, false},
                        {257, 0, 0, false},
                        {528, 0, 0, false},  // the benchmark's Rayleigh–Ritz size
                        {kSmallEigenMaxN, 0, 0, false},
                        {120, 40, 0, true}};
  for (const Case& c : cases) {
    const int64_t n = c.n, rows = n + 7;
    SCOPED_TRACE(absl::StrCat("n=", n, " zero=", c.zero_columns, " equal=", c.equal_columns));
    oracle::Mat b(rows, n);
    for (double& v : b.v) v = normal(rng);
    for (int64_t i = 0; i < rows; ++i) {
      for (int z = 0; z < c.zero_columns; ++z) b(i, z) = 0.0;
    }
    if (c.equal_columns > 0) {
      // Columns 0..q-1 become 3·√rows·e_0..e_{q-1} and rows 0..q-1 are zero elsewhere: BᵀB / rows
      // then holds a q-fold eigenvalue 9 on a diagonal block of its own.
      for (int64_t i = 0; i < rows; ++i) {
        for (int q = 0; q < c.equal_columns; ++q) b(i, q) = i == q ? 3.0 * std::sqrt(rows) : 0.0;
        if (i < c.equal_columns) {
          for (int64_t k = c.equal_columns; k < n; ++k) b(i, k) = 0.0;
        }
      }
    }
    oracle::Mat a = oracle::MatMul(oracle::Transpose(b), b);
    for (double& v : a.v) v /= static_cast<double>(rows);
    const oracle::Svd svd = oracle::ThinSvd(b);
    std::vector<double> want(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) want[n - 1 - i] = svd.s[i] * svd.s[i] / rows;
    const double norm = want[n - 1];

    absl::StatusOr<DeviceBuffer> dev_a = ctx_->Alloc(DevType::kF64, n * n);
    absl::StatusOr<DeviceBuffer> lambda = ctx_->Alloc(DevType::kF64, n);
    absl::StatusOr<DeviceBuffer> vecs = ctx_->Alloc(DevType::kF64, n * n);
    absl::StatusOr<DeviceBuffer> work = ctx_->Alloc(SmallEigenWorkspaceBytes(n));
    absl::StatusOr<DeviceBuffer> flag = ctx_->Alloc(sizeof(int));
    ASSERT_TRUE(dev_a.ok() && lambda.ok() && vecs.ok() && work.ok() && flag.ok());
    ASSERT_TRUE(ctx_->CopyToDevice(dev_a->get(), a.v.data(), n * n * sizeof(double)).ok());
    ASSERT_EQ(cudaMemsetAsync(vecs->get(), 0xff, n * n * sizeof(double), ctx_->stream()),
              cudaSuccess);  // NaN
    ASSERT_EQ(LaunchSmallEigen(dev_a->as<double>(), n, 0, lambda->as<double>(), vecs->as<double>(),
                               flag->as<int>(), work->get(), ctx_->stream()),
              cudaSuccess);
    int fell_back = -1;
    ASSERT_TRUE(ctx_->CopyToHost(&fell_back, flag->get(), sizeof(int)).ok());
    EXPECT_EQ(fell_back, c.expect_fallback ? 1 : 0);
    // The solver never writes its input; through SymmetricEigen the result is the same either way.
    EXPECT_EQ(ToHost(DevType::kF64, dev_a->get(), n * n), a.v);
    absl::StatusOr<DeviceBuffer> info = ctx_->Alloc(sizeof(int));
    ASSERT_TRUE(info.ok());
    ASSERT_TRUE(SymmetricEigen(*ctx_, EigSolver::kResident, DevType::kF64, n, dev_a->get(),
                               lambda->get(), info->as<int>())
                    .ok());
    const std::vector<double> got = ToHost(DevType::kF64, lambda->get(), n);
    const std::vector<double> z = ToHost(DevType::kF64, dev_a->get(), n * n);
    double value_err = 0, residual = 0, orth = 0;
    for (int64_t i = 0; i < n; ++i) {
      value_err = std::max(value_err, std::abs(got[i] - want[i]) / norm);
      for (int64_t r = 0; r < n; ++r) {
        double s = -got[i] * z[i * n + r];
        for (int64_t k = 0; k < n; ++k) s += a(r, k) * z[i * n + k];
        residual = std::max(residual, std::abs(s) / norm);
      }
      for (int64_t j = i; j < n; ++j) {
        double s = 0;
        for (int64_t k = 0; k < n; ++k) s += z[i * n + k] * z[j * n + k];
        orth = std::max(orth, std::abs(s - (i == j ? 1.0 : 0.0)));
      }
    }
    EXPECT_LE(value_err, 1e-12);
    EXPECT_LE(residual, 1e-11);
    EXPECT_LE(orth, 1e-9);
  }
}

// X = Σ_i s_i g_i h_iᵀ + noise on the device: a clear gap after `rank` components.
DeviceBuffer LowRankPlusNoise(DeviceContext& ctx, DevType t, int64_t L, int64_t d, int64_t rank,
                              uint64_t seed, double noise = 0.01) {
  absl::StatusOr<DeviceBuffer> g = ctx.Alloc(DevType::kF32, L * rank);
  absl::StatusOr<DeviceBuffer> h = ctx.Alloc(DevType::kF32, rank * d);
  absl::StatusOr<DeviceBuffer> x = ctx.Alloc(DevType::kF32, L * d);
  absl::StatusOr<DeviceBuffer> out = ctx.Alloc(t, L * d);
  EXPECT_TRUE(g.ok() && h.ok() && x.ok() && out.ok());
  EXPECT_EQ(LaunchFillGaussian(DevType::kF32, g->get(), L * rank, seed, 0, ctx.stream()),
            cudaSuccess);
  EXPECT_EQ(LaunchFillGaussian(DevType::kF32, h->get(), rank * d, seed + 1, 0, ctx.stream()),
            cudaSuccess);
  std::vector<double> scale(static_cast<size_t>(rank));
  for (int64_t i = 0; i < rank; ++i) scale[i] = std::pow(0.8, static_cast<double>(i));
  absl::StatusOr<DeviceBuffer> scale_dev = ctx.Alloc(DevType::kF64, rank);
  EXPECT_TRUE(ctx.CopyToDevice(scale_dev->get(), scale.data(), rank * sizeof(double)).ok());
  EXPECT_EQ(LaunchScaleRows(DevType::kF32, h->get(), d, rank, d, scale_dev->as<double>(), 1.0,
                            ctx.stream()),
            cudaSuccess);
  EXPECT_EQ(LaunchFillGaussian(DevType::kF32, x->get(), L * d, seed + 2, 0, ctx.stream()),
            cudaSuccess);
  EXPECT_TRUE(Gemm(ctx, false, false, L, d, rank, 1.0, ConstMat{DevType::kF32, g->get(), rank},
                   ConstMat{DevType::kF32, h->get(), d}, noise, Mat{DevType::kF32, x->get(), d})
                  .ok());
  EXPECT_EQ(LaunchConvert(DevType::kF32, x->get(), t, out->get(), L * d, ctx.stream()),
            cudaSuccess);
  EXPECT_TRUE(ctx.Synchronize().ok());
  return *std::move(out);
}

// The four inputs of the randomized-basis tests below: "gapped" (rank 24 plus noise 0.01),
// "rank-deficient" (rank 24), "flat" (Gaussian) and "moderate" (rank 24 plus noise 1).
DeviceBuffer BasisTestInput(DeviceContext& ctx, const std::string& kind, DevType t, int64_t L,
                            int64_t d, uint64_t seed) {
  if (kind != "flat") {
    const double noise = kind == "gapped" ? 0.01 : kind == "moderate" ? 1.0 : 0.0;
    return LowRankPlusNoise(ctx, t, L, d, 24, seed, noise);
  }
  absl::StatusOr<DeviceBuffer> b = ctx.Alloc(t, L * d);
  EXPECT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(LaunchFillGaussian(t, b->get(), L * d, seed, 0, ctx.stream()), cudaSuccess);
  return *std::move(b);
}

// Runs body(kind, type, x) on the four BasisTestInput inputs, each in f32 and in bf16.
void ForEachBasisInput(DeviceContext& ctx, uint64_t seed, int64_t L, int64_t d,
                       const std::function<void(const std::string&, DevType, ConstMat)>& body) {
  for (const char* input : {"gapped", "rank-deficient", "flat", "moderate"}) {
    for (DevType t : {DevType::kF32, DevType::kBF16}) {
      SCOPED_TRACE(absl::StrCat(DevTypeName(t), " ", input));
      const DeviceBuffer x = BasisTestInput(ctx, input, t, L, d, seed);
      body(input, t, ConstMat{t, x.get(), d});
    }
  }
}

TEST_F(CudaDeviceTest, RandomizedBasisAtScaleMatchesTheExactOne) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  const int64_t L = 3000, d = 1024, r = 24;
  for (DevType t : {DevType::kBF16, DevType::kF32}) {
    SCOPED_TRACE(DevTypeName(t));
    DeviceBuffer x = LowRankPlusNoise(*ctx_, t, L, d, r, seed);
    BasisOptions options;
    options.policy = RankPolicy::Fixed(r);
    options.method = DecomposeMethod::kExact;
    const ConstMat xm{t, x.get(), d};
    absl::StatusOr<DeviceBasis> exact = ComputePrincipalBases(*ctx_, xm, L, d, options);
    ASSERT_TRUE(exact.ok()) << exact.status();
    for (EigSolver eig :
         {EigSolver::kResident, EigSolver::kSyevd, EigSolver::kSyevBatched, EigSolver::kGesvdp}) {
      SCOPED_TRACE(EigSolverName(eig));
      options.method = DecomposeMethod::kRandomized;
      options.eig = eig;
      absl::StatusOr<DeviceBasis> rand = ComputePrincipalBases(*ctx_, xm, L, d, options);
      ASSERT_TRUE(rand.ok()) << rand.status();
      ASSERT_EQ(rand->rank, r);
      for (int64_t i = 0; i < r; ++i) {
        EXPECT_NEAR(rand->sigma[i] / exact->sigma[i], 1.0, 1e-3) << i;
        EXPECT_NEAR(rand->u_sums[i], exact->u_sums[i], 1e-2 * std::sqrt(double(L))) << i;
      }
      const std::vector<double> ve = ToHost(exact->type, exact->vt.get(), r * d);
      const std::vector<double> vr = ToHost(rand->type, rand->vt.get(), r * d);
      EXPECT_LE(RelativeError(vr, ve), 1e-2);
    }
  }
}

// The Gram matrix in blocks (4 x 4 where min(L, d) is a multiple of 4, 2 x 2 where it is only
// even, whole below 1024), tall and wide: the exact basis of an f32 input (G and its eigensolve
// in f64) must satisfy ‖A·v_i‖ = σ_i for A = X (tall) or Xᵀ (wide), checked by an f64 product of
// the input itself, independent of how G was formed, and σ must match the CPU-side values to the
// rounding of the f32 input.
TEST_F(CudaDeviceTest, BlockedGramGivesTheExactBasisOfTheInput) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  struct Shape {
    int64_t L, d;
  };
  for (const Shape sh : {Shape{1500, 1024}, Shape{1500, 1026}, Shape{1100, 1600}, Shape{1030, 1500},
                         Shape{900, 700}}) {
    const int64_t L = sh.L, d = sh.d, r = 12;
    SCOPED_TRACE(absl::StrCat("L=", L, " d=", d));
    DeviceBuffer x = LowRankPlusNoise(*ctx_, DevType::kF32, L, d, r, seed + L + d, 0.1);
    BasisOptions options;
    options.policy = RankPolicy::Fixed(r);
    options.method = DecomposeMethod::kExact;
    absl::StatusOr<DeviceBasis> b =
        ComputePrincipalBases(*ctx_, ConstMat{DevType::kF32, x.get(), d}, L, d, options);
    ASSERT_TRUE(b.ok()) << b.status();
    // Z = X·Vᵀ [L, r] (row i of V is v_i) in f64: column i has norm σ_i.
    absl::StatusOr<DeviceBuffer> x64 = ctx_->Alloc(DevType::kF64, L * d);
    absl::StatusOr<DeviceBuffer> z = ctx_->Alloc(DevType::kF64, L * r);
    ASSERT_TRUE(x64.ok() && z.ok());
    ASSERT_EQ(LaunchConvert(DevType::kF32, x.get(), DevType::kF64, x64->get(), L * d,
                            ctx_->stream()),
              cudaSuccess);
    ASSERT_TRUE(Gemm(*ctx_, false, true, L, r, d, 1.0, ConstMat{DevType::kF64, x64->get(), d},
                     ConstMat{DevType::kF64, b->vt.get(), d}, 0.0,
                     Mat{DevType::kF64, z->get(), r})
                    .ok());
    const std::vector<double> zh = ToHost(DevType::kF64, z->get(), L * r);
    for (int64_t i = 0; i < r; ++i) {
      double norm2 = 0;
      for (int64_t t = 0; t < L; ++t) norm2 += zh[t * r + i] * zh[t * r + i];
      EXPECT_NEAR(std::sqrt(norm2), b->sigma[i], 1e-9 * b->sigma[0]) << i;
    }
  }
}

// The sign rule's fallback (DESIGN.md §1: a column of U that sums to zero takes the sign of its
// largest entry) with U at hand (need_u) and without it (L >= d: the flagged u_i from X·v_i
// alone; with two columns flagged out of 12 only those rows are multiplied, out of 6 all are):
// the signs of V agree with the oracle's in every case. Column 0 keeps its sign (largest entry
// positive), column 1 is negated (largest entry negative).
TEST_F(CudaDeviceTest, SignRuleFallbackWithAndWithoutU) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  const int64_t L = 700, d = 96;
  // Orthonormalises columns from..end of a (modified Gram–Schmidt, twice).
  auto orthonormalise = [](oracle::Mat& a, int64_t from) {
    for (int pass = 0; pass < 2; ++pass) {
      for (int64_t j = from; j < a.cols; ++j) {
        for (int64_t k = 0; k < j; ++k) {
          double dot = 0;
          for (int64_t i = 0; i < a.rows; ++i) dot += a(i, k) * a(i, j);
          for (int64_t i = 0; i < a.rows; ++i) a(i, j) -= dot * a(i, k);
        }
        double norm = 0;
        for (int64_t i = 0; i < a.rows; ++i) norm += a(i, j) * a(i, j);
        for (int64_t i = 0; i < a.rows; ++i) a(i, j) /= std::sqrt(norm);
      }
    }
  };
  for (const int64_t r : {12, 6}) {
    oracle::Mat u(L, r), v(d, r), sigma(r, r);
    const double a = 1 / std::sqrt(2.0), b = 1 / std::sqrt(0.96);
    u(0, 0) = a, u(1, 0) = -a;
    u(2, 1) = -0.8 * b, u(3, 1) = 0.4 * b, u(4, 1) = 0.4 * b;
    for (int64_t j = 2; j < r; ++j) {
      for (int64_t i = 5; i < L; ++i) u(i, j) = normal(rng);
    }
    for (double& e : v.v) e = normal(rng);
    orthonormalise(u, 2);
    orthonormalise(v, 0);
    for (int64_t i = 0; i < r; ++i) sigma(i, i) = 2.0 * static_cast<double>(r - i);
    const oracle::Mat x = oracle::MatMulT(oracle::MatMul(u, sigma), v);
    const oracle::Svd want = oracle::ThinSvd(x);
    const std::vector<float> xf(x.v.begin(), x.v.end());
    absl::StatusOr<DeviceBuffer> xd = ctx_->Alloc(DevType::kF32, L * d);
    ASSERT_TRUE(xd.ok());
    ASSERT_TRUE(ctx_->CopyToDevice(xd->get(), xf.data(), L * d * sizeof(float)).ok());
    for (const bool need_u : {false, true}) {
      for (const DecomposeMethod method : {DecomposeMethod::kExact, DecomposeMethod::kRandomized}) {
        SCOPED_TRACE(absl::StrCat("r=", r, need_u ? " with U" : " without U",
                                  method == DecomposeMethod::kExact ? " exact" : " randomized"));
        BasisOptions options;
        options.policy = RankPolicy::Fixed(r);
        options.method = method;
        options.need_u = need_u;
        absl::StatusOr<DeviceBasis> got =
            ComputePrincipalBases(*ctx_, ConstMat{DevType::kF32, xd->get(), d}, L, d, options);
        ASSERT_TRUE(got.ok()) << got.status();
        ASSERT_EQ(got->rank, r);
        const std::vector<double> vt = ToHost(got->type, got->vt.get(), r * d);
        for (int64_t i = 0; i < r; ++i) {
          double dot = 0;
          for (int64_t c = 0; c < d; ++c) dot += vt[i * d + c] * want.vt(i, c);
          EXPECT_GT(dot, 0.99) << "row " << i;
        }
      }
    }
  }
}

// ‖V Vᵀ − I‖_max for the rows of a basis side (f64 on the host).
double RowOrthonormalityError(const std::vector<double>& rows, int64_t r, int64_t n) {
  double worst = 0;
  for (int64_t i = 0; i < r; ++i) {
    for (int64_t j = 0; j <= i; ++j) {
      double dot = 0;
      for (int64_t c = 0; c < n; ++c) dot += rows[i * n + c] * rows[j * n + c];
      worst = std::max(worst, std::abs(dot - (i == j ? 1.0 : 0.0)));
    }
  }
  return worst;
}

// The two final orthonormalisations of the randomized basis (Newton–Schulz steps after one
// CholeskyQR pass, or two full passes) give bases orthonormal to 1e-10 and the same singular
// values (the same span, orthonormalised two ways) on: a steep spectrum with a gap (the first
// pass leaves a large error: a second full pass), an exactly rank-deficient input (the shifted
// products keep the block well defined), a flat one (the first pass is already exact), and a
// moderate one (condition number ~300 within the block: the first pass leaves ~1e-7, which the
// Newton–Schulz steps must remove — that path is asserted to be taken there).
TEST_F(CudaDeviceTest, RandomizedBasisOrthonormalisationPathsAgree) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  const int64_t L = 2500, d = 700, r = 40;
  ForEachBasisInput(*ctx_, seed, L, d, [&](const std::string& kind, DevType, ConstMat xm) {
    std::vector<std::vector<double>> sigmas;
    for (bool newton_schulz : {true, false}) {
      SCOPED_TRACE(newton_schulz ? "newton-schulz" : "two passes");
      BasisOptions options;
      options.policy = RankPolicy::Fixed(r);
      options.method = DecomposeMethod::kRandomized;
      options.final_newton_schulz = newton_schulz;
      absl::StatusOr<DeviceBasis> b = ComputePrincipalBases(*ctx_, xm, L, d, options);
      ASSERT_TRUE(b.ok()) << b.status();
      ASSERT_EQ(b->rank, r);
      EXPECT_LE(RowOrthonormalityError(ToHost(b->type, b->vt.get(), r * d), r, d), 1e-10);
      EXPECT_LE(RowOrthonormalityError(ToHost(b->type, b->ut.get(), r * L), r, L), 1e-10);
      if (!newton_schulz) EXPECT_EQ(b->newton_schulz_steps, 0);
      if (newton_schulz && kind == "moderate") EXPECT_GE(b->newton_schulz_steps, 1);
      sigmas.push_back(b->sigma);
    }
    for (int64_t i = 0; i < r; ++i) {
      EXPECT_NEAR(sigmas[1][i], sigmas[0][i], 1e-6 * sigmas[0][0]) << i;
    }
  });
}

// The spectral shift (BasisOptions::shift_fraction): on inputs with a spectral gap the shifted
// iteration finds the same singular values as the unshifted one; an absurd shift fraction makes μ
// exceed half the smallest Ritz value, so the check rejects it and the basis is computed again
// without a shift and with kUnshiftedExtraProducts more — the same result as asking for that; a
// matrix of rank < k takes no shift.
TEST_F(CudaDeviceTest, SpectralShiftIsCheckedAndFallsBack) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  const int64_t L = 2500, d = 700, r = 40;
  ForEachBasisInput(*ctx_, seed, L, d, [&](const std::string& kind, DevType, ConstMat xm) {
    std::vector<DeviceBasis> bases;
    for (double fraction : {0.0, BasisOptions().shift_fraction, 1e6}) {  // none, default, absurd
      SCOPED_TRACE(absl::StrCat("shift fraction ", fraction));
      BasisOptions options;
      options.policy = RankPolicy::Fixed(r);
      options.method = DecomposeMethod::kRandomized;
      options.shift_fraction = fraction;
      // A rejected shifted run is computed again unshifted with more products: the unshifted
      // reference takes as many.
      if (fraction == 0.0) options.power_iterations += BasisOptions::kUnshiftedExtraProducts;
      absl::StatusOr<DeviceBasis> b = ComputePrincipalBases(*ctx_, xm, L, d, options);
      ASSERT_TRUE(b.ok()) << b.status();
      ASSERT_EQ(b->rank, r);
      EXPECT_GE(b->shift, 0.0);
      EXPECT_LE(RowOrthonormalityError(ToHost(b->type, b->vt.get(), r * d), r, d), 1e-10);
      bases.push_back(*std::move(b));
    }
    EXPECT_EQ(bases[0].shift, 0.0);
    EXPECT_FALSE(bases[0].shift_rejected);
    if (kind == "rank-deficient") {
      // Rank 24 < k: the residual after the first product is rounding, below the products' own
      // shift, so no spectral shift is taken (and nothing has to be recomputed).
      EXPECT_EQ(bases[1].shift, 0.0);
      EXPECT_FALSE(bases[1].shift_rejected);
    } else {
      // Noise at 1 (flat, moderate) is well above the products' rounding: a shift is taken.
      if (kind != "gapped") EXPECT_GT(bases[1].shift, 0.0);
      EXPECT_TRUE(bases[2].shift_rejected);
      EXPECT_EQ(bases[2].shift, 0.0);
      for (int64_t i = 0; i < r; ++i) {
        EXPECT_NEAR(bases[2].sigma[i], bases[0].sigma[i], 1e-12 * bases[0].sigma[0]) << i;
      }
    }
    if (kind == "gapped" || kind == "rank-deficient") {  // a gap after the 24th
      // The reference takes kUnshiftedExtraProducts more products: the shifted run's values
      // just above the gap differ by its own convergence error (up to 2.7e-6 measured, bf16).
      for (int64_t i = 0; i < 24; ++i) {
        EXPECT_NEAR(bases[1].sigma[i], bases[0].sigma[i], 1e-5 * bases[0].sigma[i]) << i;
      }
    }
  });
}

TEST_F(CudaDeviceTest, AtpLayerRunsWithCudnnAndOwnCoreAlike) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  // A layer shaped like the benchmark's, scaled down: d = 512 = 4 heads x 128, GQA 2:1.
  const int64_t L = 1500, d = 512, r = 32;
  atp::testing::Rng rng(seed);
  atp::testing::AttentionShape s;
  s.d_model = d;
  s.heads = 4;
  s.kv_heads = 2;
  s.head_dim = 128;
  const atp::testing::AttentionLayer layer =
      atp::testing::RandomAttentionLayer(rng, s, DType::kBF16);
  absl::StatusOr<DeviceLayer> dl = UploadLayer(*ctx_, layer.spec);
  ASSERT_TRUE(dl.ok()) << dl.status();
  DeviceBuffer x = LowRankPlusNoise(*ctx_, DevType::kBF16, L, d, r, seed);
  BasisOptions options;
  options.policy = RankPolicy::Fixed(r);
  std::vector<std::vector<double>> outs;
  for (CoreImpl impl : {CoreImpl::kAuto, CoreImpl::kFallback}) {
    absl::StatusOr<DeviceBuffer> y = ctx_->Alloc(DevType::kF32, L * d);
    ASSERT_TRUE(y.ok());
    std::vector<std::string> stages;
    absl::StatusOr<AtpLayerInfo> info = AtpAttentionLayer(
        *ctx_, *dl, ConstMat{DevType::kBF16, x.get(), d}, L, options,
        Mat{DevType::kF32, y->get(), d}, impl, [&](const char* st) { stages.push_back(st); });
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->rank, r);
    EXPECT_NE(std::find(stages.begin(), stages.end(), "core"), stages.end());
    outs.push_back(ToHost(DevType::kF32, y->get(), L * d));
  }
  EXPECT_LE(RelativeError(outs[0], outs[1]), 1e-2);
}

}  // namespace
}  // namespace atp::kernels::cuda
