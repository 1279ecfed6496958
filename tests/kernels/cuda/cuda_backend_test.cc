// The CUDA backend through the Backend seam, against the f64 oracle and the CPU backend: every
// op, f32/f16/bf16, awkward shapes, bad inputs. Scratch memory on the device is poisoned (NaN)
// before each use (ATP_CUDA_POISON), so an unwritten element fails the output's finiteness check.
// Every test skips itself when no usable CUDA device exists.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "atp/kernels/backend.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "oracle.h"
#include "test_util.h"

namespace atp::kernels {
namespace {

using oracle::Mat;
using testing::AttentionShape;
using testing::Columns;
using testing::ExpectSignRule;
using testing::FreshSeed;
using testing::OrthonormalityError;
using testing::Rng;
using testing::Rows;
using testing::SeedTrace;
using testing::ToMat;
using testing::ToTensor;
using testing::ToVec;
using ::testing::HasSubstr;

class CudaTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { setenv("ATP_CUDA_POISON", "1", /*overwrite=*/1); }
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Backend>> backend = CreateCudaBackend(0);
    if (!backend.ok()) GTEST_SKIP() << "no usable CUDA device: " << backend.status();
    cuda_ = *std::move(backend);
    CpuBackendOptions options;
    options.poison_outputs = true;
    cpu_ = CreateCpuBackend(options);
  }

  std::unique_ptr<Backend> cuda_;
  std::unique_ptr<Backend> cpu_;
};

// Tolerance of DESIGN.md §1 for a computation whose inputs are `dtype`.
double Tolerance(DType dtype) { return dtype == DType::kF32 ? 1e-4 : 2e-2; }

std::unique_ptr<LayerHandle> Load(Backend& backend, LayerSpec spec) {
  absl::StatusOr<std::unique_ptr<LayerHandle>> handle = backend.LoadLayer(std::move(spec));
  EXPECT_TRUE(handle.ok()) << handle.status();
  return handle.ok() ? *std::move(handle) : nullptr;
}

struct BasesRun {
  PrincipalBases bases;
  Mat u, vt;
  std::vector<double> s;
};

BasesRun Decompose(Backend& backend, const Tensor& x, const RankPolicy& rank,
                   DecomposeMethod method, DType output = DType::kF32, int64_t max_rank = 0) {
  PrincipalBasesArgs args;
  args.x = x.view();
  args.rank = rank;
  args.method = method;
  args.max_rank = max_rank;
  args.output_dtype = output;
  absl::StatusOr<PrincipalBases> bases = backend.Decompose(args, ExecContext{});
  EXPECT_TRUE(bases.ok()) << bases.status();
  BasesRun run;
  if (!bases.ok()) return run;
  run.bases = *std::move(bases);
  EXPECT_EQ(run.bases.u.shape(), (Shape{x.dim(0), run.bases.rank}));
  EXPECT_EQ(run.bases.vt.shape(), (Shape{run.bases.rank, x.dim(1)}));
  EXPECT_EQ(run.bases.u.dtype(), output);
  run.u = ToMat(run.bases.u);
  run.vt = ToMat(run.bases.vt);
  run.s = ToVec(run.bases.s);
  return run;
}

// Singular values spread so that every singular vector is well determined.
std::vector<double> GappedSpectrum(int64_t m, double top = 20.0, double ratio = 0.8) {
  std::vector<double> s(static_cast<size_t>(m));
  for (int64_t i = 0; i < m; ++i) s[i] = top * std::pow(ratio, static_cast<double>(i));
  return s;
}

TEST_F(CudaTest, DescribesItsDeviceAndMemoryAndIsHealthy) {
  EXPECT_EQ(cuda_->name(), "cuda");
  EXPECT_FALSE(cuda_->device_description().empty());
  const MemoryInfo memory = cuda_->memory();
  EXPECT_GT(memory.total_bytes, uint64_t{1} << 30);
  EXPECT_GT(memory.free_bytes, 0u);
  EXPECT_LE(memory.free_bytes, memory.total_bytes);
  EXPECT_TRUE(cuda_->health().ok()) << cuda_->health();
  absl::StatusOr<std::unique_ptr<Backend>> automatic = CreateBackend("auto");
  ASSERT_TRUE(automatic.ok()) << automatic.status();
  EXPECT_EQ((*automatic)->name(), "cuda");
  EXPECT_TRUE(CudaBackendCompiled());
}

TEST_F(CudaTest, NoDeviceOfThatNumberIsFailedPrecondition) {
  absl::StatusOr<std::unique_ptr<Backend>> backend = CreateCudaBackend(4096);
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(backend.status().message(), HasSubstr("4096"));
}

TEST_F(CudaTest, ResidentBytesAreTheWeightsOnTheDevice) {
  Rng rng(FreshSeed());
  AttentionShape s;
  s.d_model = 64;
  s.heads = 4;
  s.kv_heads = 2;
  s.head_dim = 16;
  const uint64_t before = cuda_->memory().free_bytes;
  testing::AttentionLayer layer = testing::RandomAttentionLayer(rng, s, DType::kBF16);
  auto handle = Load(*cuda_, testing::Clone(layer.spec));
  ASSERT_NE(handle, nullptr);
  // bf16 weights plus f32 biases.
  const uint64_t weights = 2 * (64 * 64 + 2 * 32 * 64 + 64 * 64);
  const uint64_t biases = 4 * (64 + 32 + 32 + 64);
  EXPECT_EQ(handle->resident_bytes(), weights + biases);
  EXPECT_LE(cuda_->memory().free_bytes, before);
}

TEST_F(CudaTest, ExactBasesMatchOracleOnAwkwardShapes) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  const std::pair<int64_t, int64_t> shapes[] = {{1, 1}, {1, 7}, {7, 1}, {5, 3},
                                                {3, 5}, {33, 17}, {17, 40}, {64, 64}};
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (auto [L, d] : shapes) {
      const int64_t m = std::min(L, d);
      const Mat x = testing::Rounded(testing::WithSpectrum(rng, L, d, GappedSpectrum(m)), dtype);
      const oracle::Svd want = oracle::ThinSvd(x);
      for (int64_t r : {int64_t{1}, (m + 1) / 2, m}) {
        SCOPED_TRACE(absl::StrCat(DTypeName(dtype), " L=", L, " d=", d, " r=", r));
        const BasesRun got = Decompose(*cuda_, ToTensor(x, dtype), RankPolicy::Fixed(r),
                                       DecomposeMethod::kExact);
        ASSERT_EQ(got.bases.rank, r);
        // The input is exactly representable: the bases are those of x to f32 precision.
        EXPECT_LE(oracle::RelativeError(got.s, std::vector<double>(want.s.begin(),
                                                                   want.s.begin() + r)),
                  1e-5);
        EXPECT_LE(oracle::RelativeError(got.u, Columns(want.u, r)), 1e-4);
        EXPECT_LE(oracle::RelativeError(got.vt, Rows(want.vt, r)), 1e-4);
        ExpectSignRule(got.u);
      }
    }
  }
}

TEST_F(CudaTest, RandomizedBasesMeetTheAccuracyRule) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  // min(L, d) > 128 with a small r: the randomized method (both orientations).
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (auto [L, d] : {std::pair<int64_t, int64_t>{400, 160}, {170, 300}}) {
      const int64_t m = std::min(L, d);
      const int64_t r = 12;
      SCOPED_TRACE(absl::StrCat(DTypeName(dtype), " L=", L, " d=", d));
      // A gap after r: singular values to 1e-3, the bases themselves to the dtype's tolerance.
      std::vector<double> gapped(static_cast<size_t>(m));
      for (int64_t i = 0; i < m; ++i) gapped[i] = i < r ? 30 * std::pow(0.85, i) : 0.3 * std::pow(0.99, i);
      const Mat x = testing::Rounded(testing::WithSpectrum(rng, L, d, gapped), dtype);
      const oracle::Svd want = oracle::ThinSvd(x);
      const BasesRun got = Decompose(*cuda_, ToTensor(x, dtype), RankPolicy::Fixed(r),
                                     DecomposeMethod::kRandomized);
      ASSERT_EQ(got.bases.rank, r);
      for (int64_t i = 0; i < r; ++i) EXPECT_NEAR(got.s[i] / want.s[i], 1.0, 1e-3) << i;
      EXPECT_LE(oracle::RelativeError(got.u, Columns(want.u, r)), Tolerance(dtype));
      EXPECT_LE(oracle::RelativeError(got.vt, Rows(want.vt, r)), Tolerance(dtype));
      EXPECT_LE(OrthonormalityError(got.u), 1e-4);
      EXPECT_LE(OrthonormalityError(oracle::Transpose(got.vt)), 1e-4);
      ExpectSignRule(got.u);
      // A flat spectrum: the reconstruction error within 1% of the optimum.
      const Mat flat = testing::Rounded(testing::RandomMat(rng, L, d), dtype);
      const oracle::Svd flat_svd = oracle::ThinSvd(flat);
      const BasesRun f = Decompose(*cuda_, ToTensor(flat, dtype), RankPolicy::Fixed(r),
                                   DecomposeMethod::kRandomized);
      EXPECT_LE(oracle::ReconstructionError(flat, f.u),
                1.01 * oracle::OptimalReconstructionError(flat_svd.s, r));
      EXPECT_LE(OrthonormalityError(f.u), 1e-4);
    }
  }
}

TEST_F(CudaTest, BasesAgreeWithTheCpuBackend) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  const Mat x = testing::Rounded(testing::WithSpectrum(rng, 90, 50, GappedSpectrum(50, 10, 0.9)),
                                 DType::kF32);
  for (RankPolicy policy : {RankPolicy::Fixed(7), RankPolicy::Fraction(0.1),
                            RankPolicy::Energy(0.95), RankPolicy::Energy(0.999, 9)}) {
    SCOPED_TRACE(RankPolicyString(policy));
    const BasesRun gpu = Decompose(*cuda_, ToTensor(x), policy, DecomposeMethod::kAuto);
    const BasesRun cpu = Decompose(*cpu_, ToTensor(x), policy, DecomposeMethod::kAuto);
    ASSERT_EQ(gpu.bases.rank, cpu.bases.rank);
    EXPECT_NEAR(gpu.bases.captured_energy, cpu.bases.captured_energy, 1e-6);
    EXPECT_NEAR(gpu.bases.total_energy / cpu.bases.total_energy, 1.0, 1e-6);
    EXPECT_LE(oracle::RelativeError(gpu.u, cpu.u), 1e-4);
    EXPECT_LE(oracle::RelativeError(gpu.vt, cpu.vt), 1e-4);
    EXPECT_LE(oracle::RelativeError(gpu.s, cpu.s), 1e-5);
  }
}

TEST_F(CudaTest, ZeroAndRankDeficientInputsGiveOrthonormalBases) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  for (DecomposeMethod method : {DecomposeMethod::kExact, DecomposeMethod::kRandomized}) {
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      SCOPED_TRACE(absl::StrCat(DTypeName(dtype), method == DecomposeMethod::kExact ? " exact"
                                                                                   : " randomized"));
      const Mat zero(150, 140);
      const BasesRun z = Decompose(*cuda_, ToTensor(zero, dtype), RankPolicy::Fixed(5), method);
      ASSERT_EQ(z.bases.rank, 5);
      EXPECT_EQ(z.bases.captured_energy, 1.0);
      for (double s : z.s) EXPECT_EQ(s, 0.0);
      // The CPU backend's choice: the first unit vectors.
      for (int64_t i = 0; i < 5; ++i) {
        EXPECT_EQ(z.u(i, i), 1.0);
        EXPECT_EQ(z.vt(i, i), 1.0);
      }
      // Rank 3 asked for 10 bases: the 7 beyond are an orthonormal completion.
      const Mat low = testing::Rounded(
          testing::WithSpectrum(rng, 150, 140, {9.0, 4.0, 2.0}), dtype);
      const BasesRun l = Decompose(*cuda_, ToTensor(low, dtype), RankPolicy::Fixed(10), method);
      ASSERT_EQ(l.bases.rank, 10);
      EXPECT_LE(OrthonormalityError(l.u), 1e-4);
      EXPECT_LE(OrthonormalityError(oracle::Transpose(l.vt)), 1e-4);
      for (int64_t i = 3; i < 10; ++i) EXPECT_LE(l.s[i], 1e-2 * l.s[0]) << i;
      ExpectSignRule(l.u);
    }
  }
}

TEST_F(CudaTest, SignRuleUsesTheLargestEntryWhenTheColumnSumVanishes) {
  // Columns of U orthogonal to the ones vector: t = 0 for both basis vectors.
  Mat u(6, 2), v(4, 2), sigma(2, 2);
  const double a = 1 / std::sqrt(2.0);
  const double b = 1 / std::sqrt(0.96);
  u(0, 0) = a, u(1, 0) = -a;                            // largest entry first and positive: keep
  u(2, 1) = -0.8 * b, u(3, 1) = 0.4 * b, u(4, 1) = 0.4 * b;  // largest entry negative: negate
  v(0, 0) = 1, v(1, 1) = 1;
  sigma(0, 0) = 3, sigma(1, 1) = 2;
  const Mat x = oracle::MatMulT(oracle::MatMul(u, sigma), v);
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const BasesRun got =
        Decompose(*cuda_, ToTensor(x, dtype), RankPolicy::Fixed(2), DecomposeMethod::kExact);
    ASSERT_EQ(got.bases.rank, 2);
    EXPECT_GT(got.u(0, 0), 0.5);
    EXPECT_GT(got.u(2, 1), 0.5);
    ExpectSignRule(got.u);
  }
}

struct AttentionCase {
  int64_t L;
  AttentionShape shape;
};

std::vector<AttentionCase> AttentionCases() {
  std::vector<AttentionCase> cases;
  auto add = [&](int64_t L, int64_t d, int64_t h, int64_t hkv, int64_t dh, bool biases,
                 KeyScale ks, float scale = 0) {
    cases.push_back({L, AttentionShape{d, h, hkv, dh, biases, ks, scale}});
  };
  add(1, 5, 1, 1, 3, true, KeyScale::kNone);
  add(7, 13, 3, 3, 5, true, KeyScale::kInvSqrtLen);
  add(9, 24, 4, 2, 6, false, KeyScale::kNone);        // L < d
  add(37, 12, 4, 1, 3, true, KeyScale::kNone, 0.3f);  // L > d, one KV head
  add(70, 64, 4, 2, 16, true, KeyScale::kInvSqrtLen);  // cuDNN-sized heads, GQA
  add(45, 96, 2, 1, 64, false, KeyScale::kNone);       // L < d, head_dim 64
  return cases;
}

TEST_F(CudaTest, AtpAttentionMatchesOracle) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (const AttentionCase& c : AttentionCases()) {
      const testing::AttentionLayer layer = testing::RandomAttentionLayer(rng, c.shape, dtype);
      auto handle = Load(*cuda_, testing::Clone(layer.spec));
      ASSERT_NE(handle, nullptr);
      const int64_t m = std::min(c.L, c.shape.d_model);
      const Mat x = testing::Rounded(
          testing::WithSpectrum(rng, c.L, c.shape.d_model, GappedSpectrum(m, 8, 0.85)), dtype);
      for (int64_t r : {int64_t{1}, (m + 1) / 2, m}) {
        SCOPED_TRACE(absl::StrCat(DTypeName(dtype), " L=", c.L, " d=", c.shape.d_model,
                                  " H=", c.shape.heads, "/", c.shape.kv_heads, " dh=",
                                  c.shape.head_dim, " r=", r));
        const oracle::AtpOut want =
            oracle::AtpAttention(layer.oracle, x, {oracle::Rank::Kind::kFixed, double(r)});
        AtpAttentionArgs args;
        const Tensor xt = ToTensor(x, dtype);
        args.x = xt.view();
        args.rank = RankPolicy::Fixed(r);
        absl::StatusOr<AtpAttentionResult> got = cuda_->AtpAttention(*handle, args, ExecContext{});
        ASSERT_TRUE(got.ok()) << got.status();
        EXPECT_EQ(got->rank, r);
        EXPECT_NEAR(got->captured_energy, want.captured_energy, 1e-5);
        EXPECT_LE(oracle::RelativeError(ToMat(got->y), want.y), Tolerance(dtype));
      }
    }
  }
}

TEST_F(CudaTest, AtpAttentionOnTheRandomizedBasisAgreesWithTheCpuBackend) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  AttentionShape s;
  s.d_model = 192;
  s.heads = 6;
  s.kv_heads = 2;
  s.head_dim = 32;
  const int64_t L = 260;
  const int64_t r = 8;
  std::vector<double> sigma(s.d_model);
  for (int64_t i = 0; i < s.d_model; ++i) {
    sigma[i] = i < r ? 40 * std::pow(0.8, double(i)) : 0.5 * std::pow(0.99, double(i));
  }
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(DTypeName(dtype));
    const testing::AttentionLayer layer = testing::RandomAttentionLayer(rng, s, dtype);
    auto gpu_layer = Load(*cuda_, testing::Clone(layer.spec));
    auto cpu_layer = Load(*cpu_, testing::Clone(layer.spec));
    const Mat x = testing::Rounded(testing::WithSpectrum(rng, L, s.d_model, sigma), dtype);
    const Tensor xt = ToTensor(x, dtype);
    AtpAttentionArgs args;
    args.x = xt.view();
    args.rank = RankPolicy::Energy(0.95, 16);
    absl::StatusOr<AtpAttentionResult> gpu = cuda_->AtpAttention(*gpu_layer, args, ExecContext{});
    absl::StatusOr<AtpAttentionResult> cpu = cpu_->AtpAttention(*cpu_layer, args, ExecContext{});
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    EXPECT_EQ(gpu->rank, cpu->rank);
    EXPECT_LE(oracle::RelativeError(ToMat(gpu->y), ToMat(cpu->y)), Tolerance(dtype));
  }
}

TEST_F(CudaTest, ExactAttentionMatchesOracleCausalAndNot) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  std::vector<AttentionCase> cases = AttentionCases();
  AttentionShape big;
  big.d_model = 256;
  big.heads = 4;
  big.kv_heads = 1;
  big.head_dim = 64;
  cases.push_back({700, big});  // several query blocks for cuDNN, GQA 4:1
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (const AttentionCase& c : cases) {
      const testing::AttentionLayer layer = testing::RandomAttentionLayer(rng, c.shape, dtype);
      auto handle = Load(*cuda_, testing::Clone(layer.spec));
      ASSERT_NE(handle, nullptr);
      const Mat x = testing::Rounded(testing::RandomMat(rng, c.L, c.shape.d_model), dtype);
      const Tensor xt = ToTensor(x, dtype);
      for (bool causal : {false, true}) {
        const Mat want = oracle::ExactAttention(layer.oracle, x, causal);
        for (DType out : {DType::kF32, dtype}) {
          SCOPED_TRACE(absl::StrCat(DTypeName(dtype), " L=", c.L, " d=", c.shape.d_model,
                                    " dh=", c.shape.head_dim, causal ? " causal" : "",
                                    " out=", DTypeName(out)));
          ExactAttentionArgs args;
          args.x = xt.view();
          args.causal = causal;
          args.output_dtype = out;
          absl::StatusOr<Tensor> got = cuda_->ExactAttention(*handle, args, ExecContext{});
          ASSERT_TRUE(got.ok()) << got.status();
          EXPECT_EQ(got->dtype(), out);
          EXPECT_LE(oracle::RelativeError(ToMat(*got), want),
                    Tolerance(std::max(dtype, out) == DType::kF32 ? DType::kF32 : DType::kBF16));
        }
      }
    }
  }
}

TEST_F(CudaTest, LowRankLinearMatchesOracleDenseAndFactored) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (bool bias : {false, true}) {
      const int64_t L = 41, d = 23, n = 17, r = 6;
      const testing::LinearLayer layer = testing::RandomLinearLayer(rng, n, d, bias, dtype);
      auto handle = Load(*cuda_, testing::Clone(layer.spec));
      ASSERT_NE(handle, nullptr);
      const Mat w = testing::Rounded(layer.w, dtype);
      const std::vector<double> b = testing::Rounded(layer.b, dtype);
      const Mat x = testing::Rounded(testing::WithSpectrum(rng, L, d, GappedSpectrum(d)), dtype);
      const Tensor xt = ToTensor(x, dtype);
      const oracle::Bases bases = oracle::PrincipalBases(x, {oracle::Rank::Kind::kFixed, double(r)});
      Mat c = bases.vt;
      for (int64_t i = 0; i < r; ++i) {
        for (int64_t j = 0; j < d; ++j) c(i, j) *= bases.s[i];
      }
      for (bool factored_out : {false, true}) {
        SCOPED_TRACE(absl::StrCat(DTypeName(dtype), bias ? " bias" : "",
                                  factored_out ? " factored output" : ""));
        LowRankLinearArgs args;
        args.x = xt.view();
        args.rank = RankPolicy::Fixed(r);
        args.factored_output = factored_out;
        absl::StatusOr<LowRankLinearResult> got = cuda_->LowRankLinear(*handle, args, ExecContext{});
        ASSERT_TRUE(got.ok()) << got.status();
        EXPECT_EQ(got->rank, r);
        const Mat want = oracle::LowRankLinear(bases.u, c, w, b);
        if (factored_out) {
          ASSERT_TRUE(got->factored);
          EXPECT_EQ(got->u.dim(1), bias ? r + 1 : r);
          const Mat y = oracle::MatMul(ToMat(got->u), ToMat(got->c));
          EXPECT_LE(oracle::RelativeError(y, want), Tolerance(dtype));
        } else {
          EXPECT_LE(oracle::RelativeError(ToMat(got->y), want), Tolerance(dtype));
        }
      }
      // Factored input used as given, in mixed dtypes.
      const Mat u = testing::Rounded(testing::RandomMat(rng, L, r), dtype);
      const Mat cf = testing::Rounded(testing::RandomMat(rng, r, d), DType::kF32);
      const Tensor ut = ToTensor(u, dtype), ct = ToTensor(cf, DType::kF32);
      LowRankLinearArgs fargs;
      fargs.factored_input = true;
      fargs.u = ut.view();
      fargs.c = ct.view();
      absl::StatusOr<LowRankLinearResult> got = cuda_->LowRankLinear(*handle, fargs, ExecContext{});
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(got->rank, r);
      EXPECT_LE(oracle::RelativeError(ToMat(got->y), oracle::LowRankLinear(u, cf, w, b)),
                Tolerance(dtype));
    }
  }
}

TEST_F(CudaTest, BadInputsGetPreciseErrorsAndTheDeviceStaysHealthy) {
  Rng rng(FreshSeed());
  AttentionShape s;
  s.d_model = 16;
  s.heads = 2;
  s.kv_heads = 1;
  s.head_dim = 8;
  const testing::AttentionLayer layer = testing::RandomAttentionLayer(rng, s);
  auto handle = Load(*cuda_, testing::Clone(layer.spec));
  ASSERT_NE(handle, nullptr);
  // Wrong width.
  const Tensor wrong = ToTensor(testing::RandomMat(rng, 5, 15));
  AtpAttentionArgs atp;
  atp.x = wrong.view();
  absl::StatusOr<AtpAttentionResult> r1 = cuda_->AtpAttention(*handle, atp, ExecContext{});
  EXPECT_EQ(r1.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r1.status().message(), HasSubstr("[5,15]"));
  // A NaN.
  Mat bad = testing::RandomMat(rng, 5, 16);
  bad(3, 2) = std::numeric_limits<double>::quiet_NaN();
  const Tensor nan = ToTensor(bad);
  ExactAttentionArgs exact;
  exact.x = nan.view();
  absl::StatusOr<Tensor> r2 = cuda_->ExactAttention(*handle, exact, ExecContext{});
  EXPECT_EQ(r2.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r2.status().message(), HasSubstr("non-finite"));
  // A linear op on an attention layer's unknown map, and a handle from another backend.
  LowRankLinearArgs lin;
  lin.weight = "gate_proj";
  const Tensor x = ToTensor(testing::RandomMat(rng, 5, 16));
  lin.x = x.view();
  EXPECT_EQ(cuda_->LowRankLinear(*handle, lin, ExecContext{}).status().code(),
            absl::StatusCode::kNotFound);
  auto cpu_handle = Load(*cpu_, testing::Clone(layer.spec));
  atp.x = x.view();
  absl::StatusOr<AtpAttentionResult> r3 = cuda_->AtpAttention(*cpu_handle, atp, ExecContext{});
  EXPECT_EQ(r3.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r3.status().message(), HasSubstr("cuda backend"));
  // Values that overflow the output dtype.
  const testing::LinearLayer big = testing::RandomLinearLayer(rng, 4, 16, false);
  LayerSpec spec = testing::Clone(big.spec);
  for (int64_t i = 0; i < 4 * 16; ++i) spec.weights.at("weight").data_as<float>()[i] = 3e38f;
  auto big_handle = Load(*cuda_, std::move(spec));
  LowRankLinearArgs over;
  over.x = x.view();
  over.rank = RankPolicy::Fixed(2);
  over.output_dtype = DType::kF16;
  EXPECT_EQ(cuda_->LowRankLinear(*big_handle, over, ExecContext{}).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Cancelled before it starts.
  ExecContext cancelled;
  cancelled.check = [] { return absl::CancelledError("client went away"); };
  exact.x = x.view();
  EXPECT_EQ(cuda_->ExactAttention(*handle, exact, cancelled).status().code(),
            absl::StatusCode::kCancelled);
  // And the next good call works.
  EXPECT_TRUE(cuda_->health().ok());
  EXPECT_TRUE(cuda_->ExactAttention(*handle, exact, ExecContext{}).ok());
}

}  // namespace
}  // namespace atp::kernels
