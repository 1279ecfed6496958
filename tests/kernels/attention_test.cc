// ATP attention and exact attention of the CPU backend against the f64 oracle.
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
using testing::AttentionShape;
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

std::string Describe(int64_t L, const AttentionShape& s) {
  return absl::StrCat("L=", L, " d=", s.d_model, " H=", s.heads, " H_kv=", s.kv_heads,
                      " d_h=", s.head_dim, " biases=", s.biases,
                      " key_scale=", KeyScaleName(s.key_scale), " scale=", s.scale);
}

std::unique_ptr<LayerHandle> Load(Backend& backend, LayerSpec spec) {
  absl::StatusOr<std::unique_ptr<LayerHandle>> handle = backend.LoadLayer(std::move(spec));
  EXPECT_TRUE(handle.ok()) << handle.status();
  return handle.ok() ? *std::move(handle) : nullptr;
}

struct AtpRun {
  AtpAttentionResult result;
  Mat y;
};

AtpRun RunAtp(Backend& backend, const LayerHandle& layer, const Tensor& x,
              std::optional<RankPolicy> rank, int64_t max_rank = 0, DType output = DType::kF32) {
  AtpAttentionArgs args;
  args.x = x.view();
  args.rank = rank;
  args.max_rank = max_rank;
  args.output_dtype = output;
  absl::StatusOr<AtpAttentionResult> result = backend.AtpAttention(layer, args, ExecContext{});
  EXPECT_TRUE(result.ok()) << result.status();
  AtpRun run;
  if (!result.ok()) return run;
  run.result = *std::move(result);
  EXPECT_EQ(run.result.y.dtype(), output);
  EXPECT_EQ(run.result.y.shape(), x.shape());
  run.y = ToMat(run.result.y);
  return run;
}

Mat RunExact(Backend& backend, const LayerHandle& layer, const Tensor& x, bool causal,
             DType output = DType::kF32) {
  ExactAttentionArgs args;
  args.x = x.view();
  args.causal = causal;
  args.output_dtype = output;
  absl::StatusOr<Tensor> y = backend.ExactAttention(layer, args, ExecContext{});
  EXPECT_TRUE(y.ok()) << y.status();
  if (!y.ok()) return Mat();
  EXPECT_EQ(y->dtype(), output);
  EXPECT_EQ(y->shape(), x.shape());
  return ToMat(*y);
}

// Shapes every attention test walks through: L = 1, odd sizes, L < d and L > d, grouped KV
// heads (2 and 4 queries per KV head, and one KV head for all), biases on and off, both key
// scales, an explicit softmax scale.
struct Case {
  int64_t L;
  AttentionShape shape;
};
std::vector<Case> AwkwardCases() {
  std::vector<Case> cases;
  auto add = [&](int64_t L, int64_t d, int64_t h, int64_t hkv, int64_t dh, bool biases, KeyScale ks,
                 float scale = 0) {
    cases.push_back({L, AttentionShape{d, h, hkv, dh, biases, ks, scale}});
  };
  add(1, 5, 1, 1, 3, true, KeyScale::kNone);
  add(1, 8, 2, 1, 4, false, KeyScale::kInvSqrtLen);
  add(7, 13, 3, 3, 5, true, KeyScale::kInvSqrtLen);
  add(9, 24, 4, 2, 6, false, KeyScale::kNone);        // L < d
  add(37, 12, 4, 1, 3, true, KeyScale::kNone, 0.3f);  // L > d, one KV head
  add(50, 16, 8, 2, 2, true, KeyScale::kInvSqrtLen);
  add(23, 23, 2, 2, 11, false, KeyScale::kInvSqrtLen);
  return cases;
}

TEST(AtpAttentionTest, MatchesOracleOnAwkwardShapes) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  auto backend = Cpu();
  for (const Case& c : AwkwardCases()) {
    const testing::AttentionLayer layer = testing::RandomAttentionLayer(rng, c.shape);
    auto handle = Load(*backend, testing::Clone(layer.spec));
    ASSERT_NE(handle, nullptr);
    const Mat x = testing::Rounded(testing::RandomMat(rng, c.L, c.shape.d_model), DType::kF32);
    const int64_t m = std::min(c.L, c.shape.d_model);
    for (int64_t r : {int64_t{1}, (m + 1) / 2, m}) {
      SCOPED_TRACE(Describe(c.L, c.shape) + " r=" + std::to_string(r));
      const oracle::AtpOut want =
          oracle::AtpAttention(layer.oracle, x, {oracle::Rank::Kind::kFixed, double(r)});
      const AtpRun got = RunAtp(*backend, *handle, ToTensor(x), RankPolicy::Fixed(r));
      EXPECT_EQ(got.result.rank, r);
      EXPECT_NEAR(got.result.captured_energy, want.captured_energy, 1e-6);
      EXPECT_LE(oracle::RelativeError(got.y, want.y), 1e-4);
    }
  }
}

TEST(AtpAttentionTest, MatchesOracleOnTheRandomizedBasisPath) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  auto backend = Cpu();
  // min(L, d) > 128 with a small r: the backend takes the randomized basis. The input has a clear
  // gap after r, as real activations do, so the basis is determined to f32 precision.
  for (KeyScale ks : {KeyScale::kNone, KeyScale::kInvSqrtLen}) {
    AttentionShape s;
    s.d_model = 144;
    s.heads = 4;
    s.kv_heads = 2;
    s.head_dim = 12;
    s.key_scale = ks;
    const int64_t L = 200;
    const int64_t r = 6;
    SCOPED_TRACE(Describe(L, s));
    const testing::AttentionLayer layer = testing::RandomAttentionLayer(rng, s);
    auto handle = Load(*backend, testing::Clone(layer.spec));
    std::vector<double> sigma(s.d_model);
    for (int64_t i = 0; i < s.d_model; ++i) {
      sigma[i] = i < r ? 40 * std::pow(0.8, double(i)) : 0.5 * std::pow(0.99, double(i));
    }
    const Mat x = testing::Rounded(testing::WithSpectrum(rng, L, s.d_model, sigma), DType::kF32);
    const oracle::AtpOut want =
        oracle::AtpAttention(layer.oracle, x, {oracle::Rank::Kind::kFixed, double(r)});
    const AtpRun got = RunAtp(*backend, *handle, ToTensor(x), RankPolicy::Fixed(r));
    EXPECT_EQ(got.result.rank, r);
    EXPECT_NEAR(got.result.captured_energy, want.captured_energy, 1e-5);
    EXPECT_LE(oracle::RelativeError(got.y, want.y), 1e-4);
  }
}

TEST(AtpAttentionTest, RankPoliciesAndLimitsMatchTheOracle) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  auto backend = Cpu();
  AttentionShape s;
  s.d_model = 20;
  s.heads = 2;
  s.kv_heads = 1;
  s.head_dim = 6;
  testing::AttentionLayer layer = testing::RandomAttentionLayer(rng, s);
  layer.spec.attention.default_rank = RankPolicy::Fraction(0.2);
  auto handle = Load(*backend, testing::Clone(layer.spec));
  const int64_t L = 30;
  std::vector<double> sigma(s.d_model);
  for (int64_t i = 0; i < s.d_model; ++i) sigma[i] = 10 * std::pow(0.75, double(i));
  const Mat x = testing::Rounded(testing::WithSpectrum(rng, L, s.d_model, sigma), DType::kF32);
  struct Policy {
    std::optional<RankPolicy> policy;
    int64_t backend_max;
    oracle::Rank want;
  };
  const Policy policies[] = {
      {std::nullopt, 0, {oracle::Rank::Kind::kFraction, 0.2}},  // the layer's default
      {RankPolicy::Fraction(0.5), 0, {oracle::Rank::Kind::kFraction, 0.5}},
      {RankPolicy::Energy(0.9), 0, {oracle::Rank::Kind::kEnergy, 0.9}},
      {RankPolicy::Energy(0.9999, 4), 0, {oracle::Rank::Kind::kEnergy, 0.9999, 4}},
      {RankPolicy::Fixed(15), 3, {oracle::Rank::Kind::kFixed, 15}},
  };
  for (const Policy& p : policies) {
    SCOPED_TRACE(p.policy ? RankPolicyString(*p.policy) : "layer default");
    const oracle::AtpOut want = oracle::AtpAttention(layer.oracle, x, p.want, p.backend_max);
    const AtpRun got = RunAtp(*backend, *handle, ToTensor(x), p.policy, p.backend_max);
    EXPECT_EQ(got.result.rank, want.rank);
    EXPECT_NEAR(got.result.captured_energy, want.captured_energy, 1e-6);
    EXPECT_LE(oracle::RelativeError(got.y, want.y), 1e-4);
  }
}

TEST(AtpAttentionTest, IdenticalTokensWithInvSqrtLenEqualExactAttention) {
  // One principal token equal to the repeated token (key scale inv_sqrt_len) and c·Uᵀ1 = 1: the
  // single key and value are exactly those of every token, as in exact attention.
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  auto backend = Cpu();
  AttentionShape s;
  s.d_model = 12;
  s.heads = 3;
  s.kv_heads = 1;
  s.head_dim = 4;
  s.key_scale = KeyScale::kInvSqrtLen;
  const testing::AttentionLayer layer = testing::RandomAttentionLayer(rng, s);
  auto handle = Load(*backend, testing::Clone(layer.spec));
  const std::vector<double> token = testing::RandomVec(rng, s.d_model);
  Mat x(17, s.d_model);
  for (int64_t j = 0; j < x.rows; ++j) {
    for (int64_t k = 0; k < x.cols; ++k) x(j, k) = token[k];
  }
  x = testing::Rounded(x, DType::kF32);
  const AtpRun atp = RunAtp(*backend, *handle, ToTensor(x), RankPolicy::Fixed(1));
  const Mat exact = RunExact(*backend, *handle, ToTensor(x), /*causal=*/false);
  EXPECT_LE(oracle::RelativeError(atp.y, exact), 1e-5);
  EXPECT_LE(oracle::RelativeError(atp.y, oracle::ExactAttention(layer.oracle, x, false)), 1e-5);
}

TEST(AtpAttentionTest, ZeroInputMatchesOracle) {
  // X = 0: σ = 0 and the bases are the first unit vectors (both here and in the oracle), so the
  // keys and values are the biases weighted by c·Uᵀ1.
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  auto backend = Cpu();
  for (KeyScale ks : {KeyScale::kNone, KeyScale::kInvSqrtLen}) {
    AttentionShape s;
    s.key_scale = ks;
    const testing::AttentionLayer layer = testing::RandomAttentionLayer(rng, s);
    auto handle = Load(*backend, testing::Clone(layer.spec));
    const Mat x(11, s.d_model);
    const AtpRun got = RunAtp(*backend, *handle, ToTensor(x), RankPolicy::Fixed(3));
    EXPECT_EQ(got.result.rank, 3);
    EXPECT_EQ(got.result.captured_energy, 1.0);
    EXPECT_LE(oracle::RelativeError(
                  got.y, oracle::AtpAttention(layer.oracle, x, {oracle::Rank::Kind::kFixed, 3}).y),
              1e-5);
  }
}

TEST(AtpAttentionTest, LowPrecisionInputsWeightsAndOutputs) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  auto backend = Cpu();
  AttentionShape s;
  s.d_model = 24;
  s.heads = 4;
  s.kv_heads = 2;
  s.head_dim = 6;
  const int64_t L = 40;
  const int64_t r = 4;
  std::vector<double> sigma(s.d_model);
  for (int64_t i = 0; i < s.d_model; ++i) sigma[i] = 12 * std::pow(0.7, double(i));
  const Mat x = testing::WithSpectrum(rng, L, s.d_model, sigma);
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    SCOPED_TRACE(std::string(DTypeName(dtype)));
    const testing::AttentionLayer layer = testing::RandomAttentionLayer(rng, s, dtype);
    auto handle = Load(*backend, testing::Clone(layer.spec));
    const oracle::Rank rank{oracle::Rank::Kind::kFixed, double(r)};
    // On what the backend sees (rounded input and weights): f32 accuracy.
    const AtpRun got = RunAtp(*backend, *handle, ToTensor(x, dtype), RankPolicy::Fixed(r));
    const Mat seen = testing::Rounded(x, dtype);
    EXPECT_LE(oracle::RelativeError(got.y, oracle::AtpAttention(layer.oracle, seen, rank).y), 1e-4);
    // Against the unrounded layer and input: the low-precision tolerance of DESIGN.md §1.
    const Mat want = oracle::AtpAttention(layer.exact_oracle, x, rank).y;
    EXPECT_LE(oracle::RelativeError(got.y, want), 2e-2);
    const AtpRun low =
        RunAtp(*backend, *handle, ToTensor(x, dtype), RankPolicy::Fixed(r), 0, dtype);
    EXPECT_LE(oracle::RelativeError(low.y, want), 2e-2);
  }
}

TEST(ExactAttentionTest, MatchesOracleOnAwkwardShapes) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  auto backend = Cpu();
  for (const Case& c : AwkwardCases()) {
    const testing::AttentionLayer layer = testing::RandomAttentionLayer(rng, c.shape);
    auto handle = Load(*backend, testing::Clone(layer.spec));
    const Mat x = testing::Rounded(testing::RandomMat(rng, c.L, c.shape.d_model), DType::kF32);
    for (bool causal : {false, true}) {
      SCOPED_TRACE(Describe(c.L, c.shape) + (causal ? " causal" : ""));
      const Mat got = RunExact(*backend, *handle, ToTensor(x), causal);
      EXPECT_LE(oracle::RelativeError(got, oracle::ExactAttention(layer.oracle, x, causal)), 1e-4);
    }
  }
}

TEST(ExactAttentionTest, MatchesOracleAcrossSeveralQueryBlocks) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  auto backend = Cpu();
  // L above the 256-row query block, not a multiple of it: blocks, a ragged last block, and
  // causal prefixes that end inside a block.
  AttentionShape s;
  s.d_model = 8;
  s.heads = 2;
  s.kv_heads = 1;
  s.head_dim = 4;
  const testing::AttentionLayer layer = testing::RandomAttentionLayer(rng, s);
  auto handle = Load(*backend, testing::Clone(layer.spec));
  const Mat x = testing::Rounded(testing::RandomMat(rng, 1100, s.d_model), DType::kF32);
  for (bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "non-causal");
    const Mat got = RunExact(*backend, *handle, ToTensor(x), causal);
    EXPECT_LE(oracle::RelativeError(got, oracle::ExactAttention(layer.oracle, x, causal)), 1e-4);
  }
}

TEST(ExactAttentionTest, LowPrecisionInputsWeightsAndOutputs) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  auto backend = Cpu();
  AttentionShape s;
  s.d_model = 16;
  s.heads = 4;
  s.kv_heads = 2;
  s.head_dim = 4;
  const Mat x = testing::RandomMat(rng, 21, s.d_model);
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    SCOPED_TRACE(std::string(DTypeName(dtype)));
    const testing::AttentionLayer layer = testing::RandomAttentionLayer(rng, s, dtype);
    auto handle = Load(*backend, testing::Clone(layer.spec));
    const Mat seen = testing::Rounded(x, dtype);
    const Mat got = RunExact(*backend, *handle, ToTensor(x, dtype), true);
    EXPECT_LE(oracle::RelativeError(got, oracle::ExactAttention(layer.oracle, seen, true)), 1e-4);
    const Mat want = oracle::ExactAttention(layer.exact_oracle, x, true);
    EXPECT_LE(oracle::RelativeError(got, want), 2e-2);
    const Mat low = RunExact(*backend, *handle, ToTensor(x, dtype), true, dtype);
    EXPECT_LE(oracle::RelativeError(low, want), 2e-2);
  }
}

TEST(ExactAttentionTest, MatchesOracleWhenScoresSpanBeyondTheF32ExpRange) {
  // A softmax scale of 40 spreads the scores of a row over hundreds: most weights underflow, the
  // largest few decide.
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  auto backend = Cpu();
  AttentionShape s;
  s.scale = 40.0f;
  const testing::AttentionLayer layer = testing::RandomAttentionLayer(rng, s);
  auto handle = Load(*backend, testing::Clone(layer.spec));
  const Mat x = testing::Rounded(testing::RandomMat(rng, 40, s.d_model), DType::kF32);
  for (bool causal : {false, true}) {
    const Mat got = RunExact(*backend, *handle, ToTensor(x), causal);
    EXPECT_LE(oracle::RelativeError(got, oracle::ExactAttention(layer.oracle, x, causal)), 1e-4);
  }
  const AtpRun atp = RunAtp(*backend, *handle, ToTensor(x), RankPolicy::Fixed(9));
  EXPECT_LE(oracle::RelativeError(
                atp.y, oracle::AtpAttention(layer.oracle, x, {oracle::Rank::Kind::kFixed, 9}).y),
            1e-4);
}

TEST(ExactAttentionTest, CausalFirstTokenSeesOnlyItself) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  Rng rng(seed);
  auto backend = Cpu();
  AttentionShape s;
  const testing::AttentionLayer layer = testing::RandomAttentionLayer(rng, s);
  auto handle = Load(*backend, testing::Clone(layer.spec));
  const Mat x = testing::Rounded(testing::RandomMat(rng, 9, s.d_model), DType::kF32);
  Mat first(1, s.d_model);
  for (int64_t k = 0; k < s.d_model; ++k) first(0, k) = x(0, k);
  const Mat all = RunExact(*backend, *handle, ToTensor(x), true);
  const Mat alone = RunExact(*backend, *handle, ToTensor(first), false);
  for (int64_t k = 0; k < s.d_model; ++k) EXPECT_NEAR(all(0, k), alone(0, k), 1e-5);
}

}  // namespace
}  // namespace atp::kernels
