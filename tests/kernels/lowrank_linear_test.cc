// Low-rank linear of the CPU backend against the f64 oracle: dense and factored inputs and
// outputs, biases, rank policies, attention-layer weights, low precision.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "atp/kernels/backend.h"
#include "gtest/gtest.h"
#include "oracle.h"
#include "test_util.h"

namespace atp::kernels {
namespace {

using oracle::Mat;
using testing::FreshSeed;
using testing::Rng;
using testing::SeedTrace;
using testing::ToMat;
using testing::ToTensor;

std::unique_ptr<Backend> Cpu() {
  CpuBackendOptions options;
  options.poison_outputs = true;
  return CreateCpuBackend(options);
}

std::unique_ptr<LayerHandle> Load(Backend& backend, LayerSpec spec) {
  absl::StatusOr<std::unique_ptr<LayerHandle>> handle = backend.LoadLayer(std::move(spec));
  EXPECT_TRUE(handle.ok()) << handle.status();
  return handle.ok() ? *std::move(handle) : nullptr;
}

LowRankLinearResult RunLinear(Backend& backend, const LayerHandle& layer,
                              const LowRankLinearArgs& args) {
  absl::StatusOr<LowRankLinearResult> result = backend.LowRankLinear(layer, args, ExecContext{});
  EXPECT_TRUE(result.ok()) << result.status();
  return result.ok() ? *std::move(result) : LowRankLinearResult{};
}

// The oracle's factors of a dense input: U_r and Σ_r·V_rᵀ.
struct Factors {
  oracle::Bases bases;
  Mat c;
};
Factors OracleFactors(const Mat& x, const oracle::Rank& rank, int64_t backend_max = 0) {
  Factors f{oracle::PrincipalBases(x, rank, backend_max), Mat()};
  f.c = f.bases.vt;
  for (int64_t i = 0; i < f.c.rows; ++i) {
    for (int64_t k = 0; k < f.c.cols; ++k) f.c(i, k) *= f.bases.s[i];
  }
  return f;
}

// Checks a result (dense or factored) against the oracle's y = u·(c·wᵀ) + 1·bᵀ.
void ExpectMatches(const LowRankLinearResult& got, bool factored, const Mat& u, const Mat& c,
                   const Mat& w, const std::vector<double>& b, double tolerance) {
  EXPECT_EQ(got.factored, factored);
  if (!factored) {
    EXPECT_LE(oracle::RelativeError(ToMat(got.y), oracle::LowRankLinear(u, c, w, b)), tolerance);
    return;
  }
  const oracle::Factored want = oracle::LowRankLinearFactored(u, c, w, b);
  EXPECT_EQ(got.u.shape(), (Shape{want.u.rows, want.u.cols}));
  EXPECT_EQ(got.c.shape(), (Shape{want.c.rows, want.c.cols}));
  EXPECT_LE(oracle::RelativeError(ToMat(got.u), want.u), tolerance);
  EXPECT_LE(oracle::RelativeError(ToMat(got.c), want.c), tolerance);
  // And the product is the dense output.
  EXPECT_LE(oracle::RelativeError(oracle::MatMul(ToMat(got.u), ToMat(got.c)),
                                  oracle::LowRankLinear(u, c, w, b)),
            tolerance);
}

TEST(LowRankLinearTest, DenseInputMatchesOracleOnAwkwardShapes) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  auto backend = Cpu();
  struct Case {
    int64_t L, d, n;
  };
  for (const Case& c : {Case{1, 1, 1}, Case{1, 6, 3}, Case{7, 3, 5}, Case{9, 20, 11},
                        Case{31, 17, 8}, Case{16, 16, 16}}) {
    const int64_t m = std::min(c.L, c.d);
    for (bool bias : {true, false}) {
      const testing::LinearLayer layer = testing::RandomLinearLayer(rng, c.n, c.d, bias);
      auto handle = Load(*backend, testing::Clone(layer.spec));
      const Mat x = testing::Rounded(testing::RandomMat(rng, c.L, c.d), DType::kF32);
      for (int64_t r : {int64_t{1}, (m + 1) / 2, m}) {
        const Factors f = OracleFactors(x, {oracle::Rank::Kind::kFixed, double(r)});
        for (bool factored : {false, true}) {
          SCOPED_TRACE(absl::StrCat("L=", c.L, " d=", c.d, " n=", c.n, " r=", r, " bias=", bias,
                                    " factored output=", factored));
          LowRankLinearArgs args;
          const Tensor x_tensor = ToTensor(x);
          args.x = x_tensor.view();
          args.rank = RankPolicy::Fixed(r);
          args.factored_output = factored;
          const LowRankLinearResult got = RunLinear(*backend, *handle, args);
          EXPECT_EQ(got.rank, r);
          EXPECT_NEAR(got.captured_energy, f.bases.captured_energy, 1e-6);
          ExpectMatches(got, factored, f.bases.u, f.c, layer.w, layer.b, 1e-4);
        }
      }
    }
  }
}

TEST(LowRankLinearTest, FactoredInputMatchesOracle) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  auto backend = Cpu();
  struct Case {
    int64_t L, r, d, n;
  };
  for (const Case& c :
       {Case{1, 1, 1, 1}, Case{5, 1, 9, 4}, Case{12, 7, 3, 10}, Case{40, 9, 33, 21}}) {
    for (bool bias : {true, false}) {
      const testing::LinearLayer layer = testing::RandomLinearLayer(rng, c.n, c.d, bias);
      auto handle = Load(*backend, testing::Clone(layer.spec));
      const Mat u = testing::Rounded(testing::RandomMat(rng, c.L, c.r), DType::kF32);
      const Mat cm = testing::Rounded(testing::RandomMat(rng, c.r, c.d), DType::kF32);
      const Tensor u_tensor = ToTensor(u);
      const Tensor c_tensor = ToTensor(cm);
      for (bool factored : {false, true}) {
        SCOPED_TRACE(absl::StrCat("L=", c.L, " r=", c.r, " d=", c.d, " n=", c.n, " bias=", bias,
                                  " factored output=", factored));
        LowRankLinearArgs args;
        args.factored_input = true;
        args.u = u_tensor.view();
        args.c = c_tensor.view();
        args.factored_output = factored;
        const LowRankLinearResult got = RunLinear(*backend, *handle, args);
        EXPECT_EQ(got.rank, c.r);
        EXPECT_EQ(got.captured_energy, 0.0);
        ExpectMatches(got, factored, u, cm, layer.w, layer.b, 1e-4);
      }
    }
  }
}

TEST(LowRankLinearTest, UsesTheNamedMapOfAnAttentionLayerAndItsDefaultRank) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  auto backend = Cpu();
  testing::AttentionShape s;
  s.d_model = 10;
  s.heads = 4;
  s.kv_heads = 2;
  s.head_dim = 3;
  testing::AttentionLayer layer = testing::RandomAttentionLayer(rng, s);
  layer.spec.attention.default_rank = RankPolicy::Fixed(3);
  auto handle = Load(*backend, testing::Clone(layer.spec));
  const Mat x = testing::Rounded(testing::RandomMat(rng, 14, s.d_model), DType::kF32);
  const Tensor x_tensor = ToTensor(x);
  const Factors f = OracleFactors(x, {oracle::Rank::Kind::kFixed, 3});
  struct Map {
    const char* prefix;
    const Mat& w;
    const std::vector<double>& b;
  };
  for (const Map& map : {Map{"q_proj", layer.oracle.wq, layer.oracle.bq},
                         Map{"k_proj", layer.oracle.wk, layer.oracle.bk},
                         Map{"v_proj", layer.oracle.wv, layer.oracle.bv}}) {
    SCOPED_TRACE(map.prefix);
    LowRankLinearArgs args;
    args.weight = map.prefix;
    args.x = x_tensor.view();
    const LowRankLinearResult got = RunLinear(*backend, *handle, args);
    EXPECT_EQ(got.rank, 3);
    ExpectMatches(got, false, f.bases.u, f.c, map.w, map.b, 1e-4);
  }
}

TEST(LowRankLinearTest, RankPoliciesAndLimits) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  auto backend = Cpu();
  testing::LinearLayer layer = testing::RandomLinearLayer(rng, 7, 18, true);
  layer.spec.linear_default_rank = RankPolicy::Energy(0.95);
  auto handle = Load(*backend, testing::Clone(layer.spec));
  std::vector<double> sigma(18);
  for (int i = 0; i < 18; ++i) sigma[i] = 5 * std::pow(0.7, double(i));
  const Mat x = testing::Rounded(testing::WithSpectrum(rng, 25, 18, sigma), DType::kF32);
  const Tensor x_tensor = ToTensor(x);
  struct Case {
    std::optional<RankPolicy> policy;
    int64_t backend_max;
    oracle::Rank want;
  };
  const Case cases[] = {
      {std::nullopt, 0, {oracle::Rank::Kind::kEnergy, 0.95}},
      {RankPolicy::Fraction(0.3), 0, {oracle::Rank::Kind::kFraction, 0.3}},
      {RankPolicy::Energy(0.99, 2), 0, {oracle::Rank::Kind::kEnergy, 0.99, 2}},
      {RankPolicy::Fixed(12), 5, {oracle::Rank::Kind::kFixed, 12}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.policy ? RankPolicyString(*c.policy) : "layer default");
    const Factors f = OracleFactors(x, c.want, c.backend_max);
    LowRankLinearArgs args;
    args.x = x_tensor.view();
    args.rank = c.policy;
    args.max_rank = c.backend_max;
    const LowRankLinearResult got = RunLinear(*backend, *handle, args);
    EXPECT_EQ(got.rank, f.bases.rank);
    EXPECT_NEAR(got.captured_energy, f.bases.captured_energy, 1e-6);
    ExpectMatches(got, false, f.bases.u, f.c, layer.w, layer.b, 1e-4);
  }
}

TEST(LowRankLinearTest, LowPrecisionFactorsWeightsAndOutputs) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  auto backend = Cpu();
  const Mat u = testing::RandomMat(rng, 20, 4);
  const Mat c = testing::RandomMat(rng, 4, 12);
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    SCOPED_TRACE(std::string(DTypeName(dtype)));
    const testing::LinearLayer layer = testing::RandomLinearLayer(rng, 9, 12, true, dtype);
    auto handle = Load(*backend, testing::Clone(layer.spec));
    const Tensor u_tensor = ToTensor(u, dtype);
    const Tensor c_tensor = ToTensor(c, dtype);
    LowRankLinearArgs args;
    args.factored_input = true;
    args.u = u_tensor.view();
    args.c = c_tensor.view();
    const LowRankLinearResult got = RunLinear(*backend, *handle, args);
    ExpectMatches(got, false, testing::Rounded(u, dtype), testing::Rounded(c, dtype), layer.w,
                  layer.b, 1e-5);
    args.output_dtype = dtype;
    args.factored_output = true;
    const LowRankLinearResult low = RunLinear(*backend, *handle, args);
    EXPECT_EQ(low.u.dtype(), dtype);
    EXPECT_EQ(low.c.dtype(), dtype);
    ExpectMatches(low, true, u, c, layer.w, layer.b, 2e-2);
  }
}

}  // namespace
}  // namespace atp::kernels
