// Rank policies, attention configs and layer specs: the pure functions of kernels/src.
#include "atp/kernels/rank_policy.h"

#include <vector>

#include "atp/kernels/layer.h"
#include "gtest/gtest.h"

namespace atp::kernels {
namespace {

TEST(RankPolicyTest, DescribesItself) {
  EXPECT_EQ(RankPolicyString(RankPolicy::Fixed(64)), "fixed 64");
  EXPECT_EQ(RankPolicyString(RankPolicy::Fraction(0.25, 128)), "fraction 0.25 max 128");
  EXPECT_EQ(RankPolicyString(RankPolicy::Energy(0.99)), "energy 0.99");
}

TEST(RankPolicyTest, UpperBoundIsTheSmallestLimit) {
  EXPECT_EQ(RankUpperBound(RankPolicy::Fixed(1), 100, 40, 0), 40);
  EXPECT_EQ(RankUpperBound(RankPolicy::Fixed(1), 30, 40, 0), 30);
  EXPECT_EQ(RankUpperBound(RankPolicy::Fixed(1, 12), 100, 40, 0), 12);
  EXPECT_EQ(RankUpperBound(RankPolicy::Fixed(1, 12), 100, 40, 5), 5);
  EXPECT_EQ(RankUpperBound(RankPolicy::Fixed(1), 1, 1, 0), 1);
}

TEST(RankPolicyTest, ResolvesEachKindAndClips) {
  const std::vector<double> sigma_sq = {50, 30, 10, 6, 4};  // total 100
  EXPECT_EQ(ResolveRank(RankPolicy::Fixed(3), 10, 5, 0, {}, 100), 3);
  EXPECT_EQ(ResolveRank(RankPolicy::Fixed(9), 10, 5, 0, {}, 100), 5);             // min(L, d)
  EXPECT_EQ(ResolveRank(RankPolicy::Fixed(4), 10, 5, 2, {}, 100), 2);             // backend max
  EXPECT_EQ(ResolveRank(RankPolicy::Fraction(0.25), 1024, 2048, 0, {}, 1), 256);  // exact, no +1
  EXPECT_EQ(ResolveRank(RankPolicy::Fraction(0.21), 10, 5, 0, {}, 100), 3);       // ceil(2.1)
  EXPECT_EQ(ResolveRank(RankPolicy::Fraction(0.001), 10, 5, 0, {}, 100), 1);      // at least 1
  EXPECT_EQ(ResolveRank(RankPolicy::Energy(0.5), 10, 5, 0, sigma_sq, 100), 1);    // 50 >= 50
  EXPECT_EQ(ResolveRank(RankPolicy::Energy(0.81), 10, 5, 0, sigma_sq, 100), 3);
  EXPECT_EQ(ResolveRank(RankPolicy::Energy(0.9), 10, 5, 0, sigma_sq, 100), 3);
  EXPECT_EQ(ResolveRank(RankPolicy::Energy(1.0), 10, 5, 0, sigma_sq, 100), 5);
  EXPECT_EQ(ResolveRank(RankPolicy::Energy(0.95, 2), 10, 5, 0, sigma_sq, 100), 2);
  // Fewer values than needed: the bound.
  EXPECT_EQ(ResolveRank(RankPolicy::Energy(0.95), 10, 5, 0, {50, 30}, 100), 5);
}

TEST(AttentionConfigTest, ValidatesEveryField) {
  AttentionConfig c;
  c.d_model = 16;
  c.num_heads = 4;
  c.head_dim = 4;
  EXPECT_TRUE(ValidateAttentionConfig(c).ok());
  EXPECT_EQ(c.kv_heads(), 4);
  EXPECT_FLOAT_EQ(c.resolved_scale(), 0.5f);
  c.num_kv_heads = 3;
  EXPECT_EQ(ValidateAttentionConfig(c).message(),
            "num_kv_heads is 3, want a divisor of num_heads 4");
  c.num_kv_heads = -1;
  EXPECT_EQ(ValidateAttentionConfig(c).message(), "num_kv_heads is -1, want >= 1 (0 = num_heads)");
  c.num_kv_heads = 2;
  c.head_dim = 0;
  EXPECT_EQ(ValidateAttentionConfig(c).message(), "head_dim is 0, want >= 1");
  c.head_dim = 4;
  c.scale = -1;
  EXPECT_EQ(ValidateAttentionConfig(c).code(), absl::StatusCode::kInvalidArgument);
  c.scale = 0.1f;
  c.default_rank = RankPolicy::Fraction(2);
  EXPECT_EQ(ValidateAttentionConfig(c).message(), "rank fraction is 2, want 0 < fraction <= 1");
  EXPECT_EQ(KeyScaleName(KeyScale::kInvSqrtLen), "inv_sqrt_len");
  EXPECT_EQ(KeyScaleName(KeyScale::kNone), "none");
}

TEST(LayerSpecTest, FindsLinearWeightsByPrefix) {
  LayerSpec spec;
  spec.kind = LayerSpec::Kind::kLinear;
  spec.weights.emplace("weight", Tensor(DType::kF32, {3, 2}));
  absl::StatusOr<LinearWeightNames> names = FindLinearWeight(spec, "");
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(names->weight, "weight");
  EXPECT_EQ(names->bias, "bias");
  EXPECT_EQ(FindLinearWeight(spec, "q_proj").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace atp::kernels
