// Principal bases of the CPU backend against the f64 oracle: exact and randomized methods, the
// sign rule, the rank policies, the accuracy rule of DESIGN.md §1.
#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "atp/kernels/backend.h"
#include "gtest/gtest.h"
#include "oracle.h"
#include "test_util.h"

namespace atp::kernels {
namespace {

using oracle::Mat;
using testing::ExpectSignRule;
using testing::FreshSeed;
using testing::OrthonormalityError;
using testing::Rng;
using testing::SeedTrace;
using testing::ToMat;
using testing::ToTensor;
using testing::ToVec;

std::unique_ptr<Backend> Cpu() {
  CpuBackendOptions options;
  options.poison_outputs = true;
  return CreateCpuBackend(options);
}

struct BasesRun {
  PrincipalBases bases;
  Mat u, vt;
  std::vector<double> s;
};

BasesRun Decompose(Backend& backend, const Tensor& x, const RankPolicy& rank,
                   DecomposeMethod method, int64_t max_rank = 0, uint64_t seed = 7,
                   DType output = DType::kF32) {
  PrincipalBasesArgs args;
  args.x = x.view();
  args.rank = rank;
  args.method = method;
  args.max_rank = max_rank;
  args.seed = seed;
  args.output_dtype = output;
  absl::StatusOr<PrincipalBases> bases = backend.Decompose(args, ExecContext{});
  EXPECT_TRUE(bases.ok()) << bases.status();
  BasesRun run;
  if (!bases.ok()) return run;
  run.bases = *std::move(bases);
  EXPECT_EQ(run.bases.u.dtype(), output);
  EXPECT_EQ(run.bases.vt.dtype(), output);
  EXPECT_EQ(run.bases.s.dtype(), DType::kF32);
  EXPECT_EQ(run.bases.u.shape(), (Shape{x.dim(0), run.bases.rank}));
  EXPECT_EQ(run.bases.vt.shape(), (Shape{run.bases.rank, x.dim(1)}));
  EXPECT_EQ(run.bases.s.shape(), (Shape{run.bases.rank}));
  run.u = ToMat(run.bases.u);
  run.vt = ToMat(run.bases.vt);
  run.s = ToVec(run.bases.s);
  return run;
}

// Geometric singular values σ_i = top·ratio^i for i < head, then a flat tail at `tail` with a
// small random spread (no exact ties).
std::vector<double> GappedSpectrum(Rng& rng, int64_t m, int64_t head, double top, double ratio,
                                   double tail) {
  std::vector<double> s(static_cast<size_t>(m));
  for (int64_t i = 0; i < m; ++i) {
    s[i] = i < head ? top * std::pow(ratio, double(i)) : tail * (1 + 0.05 * rng.Uniform(0, 1));
  }
  std::sort(s.rbegin(), s.rend());
  return s;
}

TEST(PrincipalBasesTest, ExactMatchesOracleOnAwkwardShapes) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  auto backend = Cpu();
  struct Case {
    int64_t L, d;
  };
  for (const Case& c : {Case{1, 1}, Case{1, 7}, Case{7, 1}, Case{5, 9}, Case{9, 5}, Case{33, 17},
                        Case{17, 33}, Case{40, 40}}) {
    const int64_t m = std::min(c.L, c.d);
    for (int64_t r : {int64_t{1}, (m + 1) / 2, m}) {
      SCOPED_TRACE(testing::SeedTrace(seed) + " L=" + std::to_string(c.L) +
                   " d=" + std::to_string(c.d) + " r=" + std::to_string(r));
      const Mat x = testing::Rounded(testing::RandomMat(rng, c.L, c.d), DType::kF32);
      const oracle::Bases want = oracle::PrincipalBases(x, {oracle::Rank::Kind::kFixed, double(r)});
      for (DecomposeMethod method : {DecomposeMethod::kExact, DecomposeMethod::kAuto}) {
        const BasesRun got = Decompose(*backend, ToTensor(x), RankPolicy::Fixed(r), method);
        ASSERT_EQ(got.bases.rank, r);
        EXPECT_LE(oracle::RelativeError(got.s, want.s), 1e-6);
        EXPECT_LE(oracle::RelativeError(got.u, want.u), 1e-4);
        EXPECT_LE(oracle::RelativeError(got.vt, want.vt), 1e-4);
        EXPECT_NEAR(got.bases.captured_energy, want.captured_energy, 1e-6);
        EXPECT_NEAR(got.bases.total_energy, want.total_energy, 1e-9 * want.total_energy);
        ExpectSignRule(got.u);
      }
    }
  }
}

TEST(PrincipalBasesTest, RandomizedMatchesExactSvdOnGappedSpectrum) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  auto backend = Cpu();
  struct Case {
    int64_t L, d, r;
  };
  for (const Case& c : {Case{300, 140, 8}, Case{150, 260, 12}, Case{257, 200, 1}}) {
    SCOPED_TRACE("L=" + std::to_string(c.L) + " d=" + std::to_string(c.d));
    const int64_t m = std::min(c.L, c.d);
    const Mat x = testing::Rounded(
        testing::WithSpectrum(rng, c.L, c.d, GappedSpectrum(rng, m, c.r, 50, 0.85, 1)),
        DType::kF32);
    const oracle::Svd svd = oracle::ThinSvd(x);
    const oracle::Bases want = oracle::PrincipalBases(x, {oracle::Rank::Kind::kFixed, double(c.r)});
    const BasesRun got =
        Decompose(*backend, ToTensor(x), RankPolicy::Fixed(c.r), DecomposeMethod::kRandomized);
    ASSERT_EQ(got.bases.rank, c.r);
    for (int64_t i = 0; i < c.r; ++i) {
      EXPECT_NEAR(got.s[i], want.s[i], 1e-3 * want.s[i]) << "sigma " << i;
    }
    EXPECT_LE(oracle::ReconstructionError(x, got.u),
              1.01 * oracle::OptimalReconstructionError(svd.s, c.r));
    EXPECT_LE(oracle::RelativeError(got.u, want.u), 1e-3);
    EXPECT_LE(oracle::RelativeError(got.vt, want.vt), 1e-3);
    EXPECT_LE(OrthonormalityError(got.u), 1e-5);
    ExpectSignRule(got.u);
  }
}

TEST(PrincipalBasesTest, RandomizedReconstructsWithinOnePercentOnFlatAndSlowSpectra) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  auto backend = Cpu();
  const int64_t L = 320;
  const int64_t d = 180;
  std::vector<Mat> inputs;
  inputs.push_back(testing::RandomMat(rng, L, d));  // Marchenko–Pastur: nearly flat
  std::vector<double> slow(d);
  for (int64_t i = 0; i < d; ++i) slow[i] = 1 / std::sqrt(1.0 + i);  // slow decay, no gap
  inputs.push_back(testing::WithSpectrum(rng, L, d, slow));
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Mat x = testing::Rounded(inputs[k], DType::kF32);
    const oracle::Svd svd = oracle::ThinSvd(x);
    for (int64_t r : {1, 10, 40}) {
      SCOPED_TRACE("input " + std::to_string(k) + " r=" + std::to_string(r));
      const BasesRun got =
          Decompose(*backend, ToTensor(x), RankPolicy::Fixed(r), DecomposeMethod::kRandomized);
      ASSERT_EQ(got.bases.rank, r);
      EXPECT_LE(oracle::ReconstructionError(x, got.u),
                1.01 * oracle::OptimalReconstructionError(svd.s, r));
      EXPECT_LE(OrthonormalityError(got.u), 1e-5);
      for (int64_t i = 0; i < r; ++i) EXPECT_LE(got.s[i], svd.s[i] * (1 + 1e-5));
      ExpectSignRule(got.u);
    }
  }
}

TEST(PrincipalBasesTest, RankPoliciesMatchTheOracle) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  auto backend = Cpu();
  const int64_t L = 24;
  const int64_t d = 20;
  // A spectrum whose cumulative energies are far from the thresholds below.
  std::vector<double> sigma(d);
  for (int64_t i = 0; i < d; ++i) sigma[i] = 10 * std::pow(0.7, double(i));
  const Mat x = testing::Rounded(testing::WithSpectrum(rng, L, d, sigma), DType::kF32);
  const oracle::Svd svd = oracle::ThinSvd(x);
  const double total = std::pow(oracle::FrobeniusNorm(x), 2);
  struct Case {
    RankPolicy policy;
    int64_t backend_max;
  };
  const Case cases[] = {
      {RankPolicy::Fixed(5), 0},         {RankPolicy::Fixed(500), 0},
      {RankPolicy::Fixed(9, 4), 0},      {RankPolicy::Fixed(9), 3},
      {RankPolicy::Fraction(0.25), 0},   {RankPolicy::Fraction(1.0), 0},
      {RankPolicy::Fraction(0.01), 0},   {RankPolicy::Fraction(0.5, 6), 0},
      {RankPolicy::Energy(0.5), 0},      {RankPolicy::Energy(0.9), 0},
      {RankPolicy::Energy(0.999), 0},    {RankPolicy::Energy(1.0), 0},
      {RankPolicy::Energy(0.999, 3), 0}, {RankPolicy::Energy(0.999), 2},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(RankPolicyString(c.policy) + " backend max " + std::to_string(c.backend_max));
    const int64_t want =
        oracle::ChooseRank(testing::ToOracle(c.policy), L, d, c.backend_max, svd.s, total);
    for (DecomposeMethod method : {DecomposeMethod::kExact, DecomposeMethod::kRandomized}) {
      const BasesRun got = Decompose(*backend, ToTensor(x), c.policy, method, c.backend_max);
      EXPECT_EQ(got.bases.rank, want);
      double captured = 0;
      for (int64_t i = 0; i < want; ++i) captured += svd.s[i] * svd.s[i];
      EXPECT_NEAR(got.bases.captured_energy, captured / total, 1e-5);
    }
  }
}

TEST(PrincipalBasesTest, EnergyPolicyGrowsTheRandomizedBlock) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  auto backend = Cpu();
  const int64_t L = 300;
  const int64_t d = 200;
  // 60 strong directions then a weak tail: the wanted rank lies beyond the first trial block.
  std::vector<double> sigma = GappedSpectrum(rng, d, 60, 20, 0.98, 0.05);
  const Mat x = testing::Rounded(testing::WithSpectrum(rng, L, d, sigma), DType::kF32);
  const oracle::Svd svd = oracle::ThinSvd(x);
  const double total = std::pow(oracle::FrobeniusNorm(x), 2);
  // τ halfway between the cumulative energies of r = 44 and r = 45.
  double acc = 0;
  for (int i = 0; i < 44; ++i) acc += svd.s[i] * svd.s[i];
  const double tau = (acc + 0.5 * svd.s[44] * svd.s[44]) / total;
  const BasesRun got =
      Decompose(*backend, ToTensor(x), RankPolicy::Energy(tau), DecomposeMethod::kRandomized);
  EXPECT_EQ(got.bases.rank, 45);
  EXPECT_GE(got.bases.captured_energy, tau);
  const oracle::Bases want = oracle::PrincipalBases(x, {oracle::Rank::Kind::kFixed, 45});
  EXPECT_LE(oracle::RelativeError(got.s, want.s), 1e-3);
  EXPECT_LE(oracle::ReconstructionError(x, got.u),
            1.01 * oracle::OptimalReconstructionError(svd.s, 45));
  const BasesRun automatic =
      Decompose(*backend, ToTensor(x), RankPolicy::Energy(tau), DecomposeMethod::kAuto);
  EXPECT_EQ(automatic.bases.rank, 45);
}

TEST(PrincipalBasesTest, SignRuleUsesLargestEntryWhenColumnSumVanishes) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  auto backend = Cpu();
  // Centred rows: 1ᵀX = 0, so every u_i = X·v_i/σ_i sums to ~0 and the largest entry decides.
  for (auto [L, d] : {std::pair<int64_t, int64_t>{30, 12}, {12, 30}, {260, 200}}) {
    Mat x = testing::RandomMat(rng, L, d);
    for (int64_t k = 0; k < d; ++k) {
      double mean = 0;
      for (int64_t j = 0; j < L; ++j) mean += x(j, k);
      mean /= double(L);
      for (int64_t j = 0; j < L; ++j) x(j, k) -= mean;
    }
    x = testing::Rounded(x, DType::kF32);
    const int64_t r = 3;
    const oracle::Bases want = oracle::PrincipalBases(x, {oracle::Rank::Kind::kFixed, double(r)});
    for (DecomposeMethod method : {DecomposeMethod::kExact, DecomposeMethod::kRandomized}) {
      const BasesRun got = Decompose(*backend, ToTensor(x), RankPolicy::Fixed(r), method);
      for (int64_t i = 0; i < r; ++i) {
        double t = 0;
        int64_t best = 0;
        for (int64_t j = 0; j < L; ++j) {
          t += got.u(j, i);
          if (std::abs(got.u(j, i)) > std::abs(got.u(best, i))) best = j;
        }
        EXPECT_LT(std::abs(t), 1e-6 * std::sqrt(double(L))) << "column " << i;
        EXPECT_GT(got.u(best, i), 0) << "column " << i;
      }
      // A randomized basis of a Gaussian matrix is near-optimal but need not equal the singular
      // vectors; the exact one must.
      if (method == DecomposeMethod::kExact) {
        EXPECT_LE(oracle::RelativeError(got.u, want.u), 1e-4);
      }
    }
  }
}

TEST(PrincipalBasesTest, SignRuleMakesColumnSumsPositive) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  auto backend = Cpu();
  // Rows with a clear common mean: every column sum is far from the threshold.
  Mat x = testing::RandomMat(rng, 50, 20);
  for (int64_t j = 0; j < x.rows; ++j) {
    for (int64_t k = 0; k < x.cols; ++k) x(j, k) += (k % 2 ? -2.0 : 3.0);
  }
  x = testing::Rounded(x, DType::kF32);
  // Flipping the input flips u: the rule must undo it.
  Mat neg = x;
  for (double& v : neg.v) v = -v;
  const BasesRun a =
      Decompose(*backend, ToTensor(x), RankPolicy::Fixed(20), DecomposeMethod::kExact);
  const BasesRun b =
      Decompose(*backend, ToTensor(neg), RankPolicy::Fixed(20), DecomposeMethod::kExact);
  ExpectSignRule(a.u);
  ExpectSignRule(b.u);
  EXPECT_LE(oracle::RelativeError(a.u, b.u), 1e-5);
  Mat neg_vt = b.vt;
  for (double& v : neg_vt.v) v = -v;
  EXPECT_LE(oracle::RelativeError(a.vt, neg_vt), 1e-5);
}

TEST(PrincipalBasesTest, ZeroInputGivesZeroSpectrumAndOrthonormalBases) {
  auto backend = Cpu();
  for (DecomposeMethod method :
       {DecomposeMethod::kExact, DecomposeMethod::kRandomized, DecomposeMethod::kAuto}) {
    const Mat x(9, 6);
    const BasesRun got = Decompose(*backend, ToTensor(x), RankPolicy::Fixed(4), method);
    ASSERT_EQ(got.bases.rank, 4);
    for (double s : got.s) EXPECT_EQ(s, 0);
    EXPECT_EQ(got.bases.captured_energy, 1.0);
    EXPECT_EQ(got.bases.total_energy, 0.0);
    EXPECT_LE(OrthonormalityError(got.u), 1e-6);
    EXPECT_LE(OrthonormalityError(oracle::Transpose(got.vt)), 1e-6);
    ExpectSignRule(got.u);
    const BasesRun energy = Decompose(*backend, ToTensor(x), RankPolicy::Energy(0.9), method);
    EXPECT_EQ(energy.bases.rank, 1);
  }
}

TEST(PrincipalBasesTest, RankDeficientInputGivesOrthonormalBasesAndAllTheEnergy) {
  // Rank 3 and r = 8: five directions carry nothing, so no Cholesky of the subspace succeeds and
  // the randomized method falls back to Householder QR; the basis must stay orthonormal.
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  auto backend = Cpu();
  for (auto [L, d] : {std::pair<int64_t, int64_t>{300, 200}, {160, 400}}) {
    const Mat x = testing::Rounded(
        oracle::MatMul(testing::RandomMat(rng, L, 3), testing::RandomMat(rng, 3, d)), DType::kF32);
    const oracle::Svd svd = oracle::ThinSvd(x);
    for (DecomposeMethod method :
         {DecomposeMethod::kExact, DecomposeMethod::kRandomized, DecomposeMethod::kAuto}) {
      const BasesRun got = Decompose(*backend, ToTensor(x), RankPolicy::Fixed(8), method);
      ASSERT_EQ(got.bases.rank, 8);
      EXPECT_NEAR(got.bases.captured_energy, 1.0, 1e-6);
      EXPECT_LE(OrthonormalityError(got.u), 1e-5);
      EXPECT_LE(OrthonormalityError(oracle::Transpose(got.vt)), 1e-5);
      for (int i = 0; i < 3; ++i) EXPECT_NEAR(got.s[i], svd.s[i], 1e-4 * svd.s[0]);
      for (int i = 3; i < 8; ++i) EXPECT_LE(got.s[i], 1e-5 * svd.s[0]);
      EXPECT_LE(oracle::ReconstructionError(x, got.u), 1e-5 * oracle::FrobeniusNorm(x));
      ExpectSignRule(got.u);
      const BasesRun energy =
          Decompose(*backend, ToTensor(x), RankPolicy::Energy(0.999999), method);
      EXPECT_LE(energy.bases.rank, 3);
    }
  }
}

TEST(PrincipalBasesTest, SameSeedGivesSameBases) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  auto backend = Cpu();
  const Mat x = testing::Rounded(testing::RandomMat(rng, 200, 150), DType::kF32);
  const BasesRun a =
      Decompose(*backend, ToTensor(x), RankPolicy::Fixed(6), DecomposeMethod::kRandomized, 0, 42);
  const BasesRun b =
      Decompose(*backend, ToTensor(x), RankPolicy::Fixed(6), DecomposeMethod::kRandomized, 0, 42);
  EXPECT_EQ(a.u.v, b.u.v);
  EXPECT_EQ(a.vt.v, b.vt.v);
  EXPECT_EQ(a.s, b.s);
}

TEST(PrincipalBasesTest, LowPrecisionInputsAndOutputs) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  auto backend = Cpu();
  const int64_t L = 40;
  const int64_t d = 24;
  std::vector<double> sigma(d);
  for (int64_t i = 0; i < d; ++i) sigma[i] = 8 * std::pow(0.8, double(i));
  const Mat x = testing::WithSpectrum(rng, L, d, sigma);
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    SCOPED_TRACE(std::string(DTypeName(dtype)));
    const Mat seen = testing::Rounded(x, dtype);
    const oracle::Bases want_seen = oracle::PrincipalBases(seen, {oracle::Rank::Kind::kFixed, 5});
    const oracle::Bases want = oracle::PrincipalBases(x, {oracle::Rank::Kind::kFixed, 5});
    // Input in dtype, output f32: exact on what the backend sees.
    const BasesRun in =
        Decompose(*backend, ToTensor(x, dtype), RankPolicy::Fixed(5), DecomposeMethod::kAuto);
    EXPECT_LE(oracle::RelativeError(in.u, want_seen.u), 1e-4);
    EXPECT_LE(oracle::RelativeError(in.s, want_seen.s), 1e-6);
    EXPECT_LE(oracle::RelativeError(in.u, want.u), 2e-2);
    // Output in dtype.
    const BasesRun out =
        Decompose(*backend, ToTensor(x), RankPolicy::Fixed(5), DecomposeMethod::kAuto, 0, 7, dtype);
    const oracle::Bases want_f32 =
        oracle::PrincipalBases(testing::Rounded(x, DType::kF32), {oracle::Rank::Kind::kFixed, 5});
    EXPECT_LE(oracle::RelativeError(out.u, want_f32.u), 2e-2);
    EXPECT_LE(oracle::RelativeError(out.vt, want_f32.vt), 2e-2);
    EXPECT_LE(oracle::RelativeError(out.s, want_f32.s), 1e-6);
  }
}

}  // namespace
}  // namespace atp::kernels
