#include "atp/cli/layer_file.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "absl/strings/match.h"
#include "generate.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_files.h"

namespace atp::cli {
namespace {

using ::atp::formats::testing::TempDir;
using kernels::DType;
using kernels::KeyScale;
using kernels::LayerSpec;
using kernels::RankPolicy;
using kernels::Tensor;
using ::testing::HasSubstr;

LayerSpec MakeAttention(int64_t d, int64_t h, int64_t g, int64_t dh, bool bias, DType dtype) {
  AttentionLayerOptions o;
  o.d_model = d;
  o.num_heads = h;
  o.num_kv_heads = g;
  o.head_dim = dh;
  o.bias = bias;
  o.dtype = dtype;
  o.seed = static_cast<uint64_t>(d * 131 + h);
  absl::StatusOr<LayerSpec> spec = GenerateAttentionLayer(o);
  EXPECT_TRUE(spec.ok()) << spec.status();
  return *std::move(spec);
}

void ExpectSameWeights(const kernels::WeightMap& a, const kernels::WeightMap& b) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) {
    SCOPED_TRACE(name);
    auto it = b.find(name);
    ASSERT_NE(it, b.end());
    EXPECT_EQ(it->second.dtype(), t.dtype());
    EXPECT_EQ(it->second.shape(), t.shape());
    ASSERT_EQ(it->second.byte_size(), t.byte_size());
    EXPECT_EQ(std::memcmp(it->second.data(), t.data(), t.byte_size()), 0);
  }
}

// Writes `tensors` of `spec` with `metadata` and expects ReadLayerFile to fail with `want`.
void ExpectLayerError(const TempDir& dir, const kernels::WeightMap& tensors,
                      const Metadata& metadata, absl::string_view want) {
  const std::string path = dir.File("bad.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors, metadata).ok());
  absl::StatusOr<LayerSpec> layer = ReadLayerFile(path);
  ASSERT_FALSE(layer.ok()) << "want error: " << want;
  EXPECT_EQ(layer.status().code(), absl::StatusCode::kInvalidArgument) << layer.status();
  EXPECT_THAT(layer.status().message(), HasSubstr(path));
  EXPECT_THAT(layer.status().message(), HasSubstr(want));
}

Metadata BaseMetadata() { return {{"num_heads", "4"}, {"num_kv_heads", "2"}, {"head_dim", "8"}}; }

kernels::WeightMap CopyWeights(const kernels::WeightMap& w) {
  kernels::WeightMap out;
  for (const auto& [name, t] : w) out.emplace(name, t.Clone());
  return out;
}

TEST(LayerFileTest, RoundTripsAttentionLayers) {
  TempDir dir;
  struct Case {
    int64_t d, h, g, dh;
    bool bias;
    DType dtype;
    KeyScale key_scale;
  } cases[] = {{32, 4, 4, 8, false, DType::kF32, KeyScale::kNone},
               {24, 6, 2, 5, true, DType::kF16, KeyScale::kInvSqrtLen},
               {8, 2, 1, 3, true, DType::kBF16, KeyScale::kNone}};
  for (const Case& c : cases) {
    LayerSpec spec = MakeAttention(c.d, c.h, c.g, c.dh, c.bias, c.dtype);
    spec.attention.key_scale = c.key_scale;
    spec.attention.scale = 0.3f;
    spec.attention.default_rank = RankPolicy::Fixed(16, 32);
    const std::string path = dir.File("a.safetensors");
    ASSERT_TRUE(WriteLayerFile(path, spec).ok());
    absl::StatusOr<LayerSpec> got = ReadLayerFile(path);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->kind, LayerSpec::Kind::kAttention);
    EXPECT_EQ(got->attention.d_model, c.d);
    EXPECT_EQ(got->attention.num_heads, c.h);
    EXPECT_EQ(got->attention.kv_heads(), c.g);
    EXPECT_EQ(got->attention.head_dim, c.dh);
    EXPECT_EQ(got->attention.key_scale, c.key_scale);
    EXPECT_EQ(got->attention.scale, 0.3f);
    EXPECT_EQ(got->attention.default_rank.kind, RankPolicy::Kind::kFixed);
    EXPECT_EQ(got->attention.default_rank.value, 16);
    EXPECT_EQ(got->attention.default_rank.max_rank, 32);
    ExpectSameWeights(spec.weights, got->weights);
  }
}

TEST(LayerFileTest, RoundTripsLinearLayers) {
  TempDir dir;
  for (bool bias : {false, true}) {
    LinearLayerOptions o;
    o.in_features = 7;
    o.out_features = 3;
    o.bias = bias;
    o.default_rank = RankPolicy::Fraction(0.25);
    absl::StatusOr<LayerSpec> spec = GenerateLinearLayer(o);
    ASSERT_TRUE(spec.ok());
    ASSERT_TRUE(WriteLayerFile(dir.File("l.safetensors"), *spec).ok());
    absl::StatusOr<LayerSpec> got = ReadLayerFile(dir.File("l.safetensors"));
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->kind, LayerSpec::Kind::kLinear);
    EXPECT_EQ(got->linear_default_rank.kind, RankPolicy::Kind::kFraction);
    EXPECT_EQ(got->linear_default_rank.value, 0.25);
    ExpectSameWeights(spec->weights, got->weights);
  }
}

TEST(LayerFileTest, FillsDefaultsFromNumHeadsAlone) {
  TempDir dir;
  const LayerSpec spec = MakeAttention(16, 4, 4, 4, false, DType::kF32);
  ASSERT_TRUE(WriteSafetensors(dir.File("m.safetensors"), spec.weights,
                               {{"num_heads", "4"}, {"format", "pt"}})
                  .ok());
  absl::StatusOr<LayerSpec> got = ReadLayerFile(dir.File("m.safetensors"));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->attention.d_model, 16);
  EXPECT_EQ(got->attention.kv_heads(), 4);
  EXPECT_EQ(got->attention.head_dim, 4);
  EXPECT_EQ(got->attention.key_scale, KeyScale::kNone);
  EXPECT_EQ(got->attention.scale, 0.0f);
  EXPECT_EQ(got->attention.default_rank.kind, RankPolicy::Kind::kEnergy);
  EXPECT_EQ(got->attention.default_rank.value, 0.99);
}

TEST(LayerFileTest, RejectsBadMetadata) {
  TempDir dir;
  const LayerSpec spec = MakeAttention(16, 4, 2, 8, true, DType::kF32);
  const struct {
    const char* key;
    const char* value;
    const char* want;
  } cases[] = {
      {"num_heads", "four", "__metadata__ num_heads is \"four\", want an integer >= 1"},
      {"num_heads", "0", "want an integer >= 1"},
      {"num_kv_heads", "3", "num_kv_heads is 3, want a divisor of num_heads 4"},
      {"head_dim", "-8", "head_dim is \"-8\""},
      {"head_dim", "4", "q_proj.weight has shape [32,16], want [16,16]"},
      {"key_scale", "sqrt", "key_scale is \"sqrt\", want none or inv_sqrt_len"},
      {"scale", "nan", "scale is \"nan\", want a finite number > 0"},
      {"default_rank", "energy 2", "rank energy is 2, want 0 < energy <= 1"},
      {"default_rank", "top 5", "is not one of"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.want);
    Metadata md = BaseMetadata();
    md[c.key] = c.value;
    ExpectLayerError(dir, spec.weights, md, c.want);
  }
  Metadata no_heads = BaseMetadata();
  no_heads.erase("num_heads");
  ExpectLayerError(dir, spec.weights, no_heads, "__metadata__ has no num_heads");
  Metadata no_head_dim = {{"num_heads", "3"}};
  ExpectLayerError(dir, spec.weights, no_head_dim,
                   "q_proj.weight has 32 rows, not a multiple of num_heads 3");
}

TEST(LayerFileTest, RejectsBadTensorsNamingThem) {
  TempDir dir;
  const LayerSpec spec = MakeAttention(16, 4, 2, 8, true, DType::kF32);
  {
    kernels::WeightMap w = CopyWeights(spec.weights);
    w.erase("k_proj.weight");
    w.emplace("k_proj.weight", Tensor(DType::kF32, {16, 12}));
    ExpectLayerError(dir, w, BaseMetadata(), "k_proj.weight has shape [16,12], want [16,16]");
  }
  {
    kernels::WeightMap w = CopyWeights(spec.weights);
    w.erase("v_proj.weight");
    ExpectLayerError(dir, w, BaseMetadata(), "missing v_proj.weight");
  }
  {
    kernels::WeightMap w = CopyWeights(spec.weights);
    w.erase("o_proj.bias");
    w.emplace("o_proj.bias", Tensor(DType::kF32, {15}));
    ExpectLayerError(dir, w, BaseMetadata(), "o_proj.bias has shape [15], want [16]");
  }
  {
    kernels::WeightMap w = CopyWeights(spec.weights);
    w.emplace("lm_head.weight", Tensor(DType::kF32, {2, 2}));
    ExpectLayerError(dir, w, BaseMetadata(), "unknown tensor \"lm_head.weight\"");
  }
  {
    kernels::WeightMap w = CopyWeights(spec.weights);
    w.emplace("weight", Tensor(DType::kF32, {2, 16}));
    ExpectLayerError(dir, w, BaseMetadata(), "mixes attention tensors");
  }
  {
    kernels::WeightMap w;
    w.emplace("embed.weight", Tensor(DType::kF32, {2, 2}));
    ExpectLayerError(dir, w, {}, "holds no layer");
  }
  {
    kernels::WeightMap w = CopyWeights(spec.weights);
    w.find("q_proj.weight")->second.data_as<float>()[5] = std::numeric_limits<float>::quiet_NaN();
    ExpectLayerError(dir, w, BaseMetadata(), "q_proj.weight contains a non-finite value");
  }
  {
    kernels::WeightMap w = CopyWeights(spec.weights);
    w.erase("q_proj.weight");
    w.emplace("q_proj.weight", Tensor(DType::kF32, {32}));
    ExpectLayerError(dir, w, BaseMetadata(), "q_proj.weight has shape [32], want 2 dimensions");
  }
}

TEST(LayerFileTest, ParsesRankPolicies) {
  absl::StatusOr<RankPolicy> p = ParseRankPolicy("energy 0.95");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->kind, RankPolicy::Kind::kEnergy);
  EXPECT_EQ(p->value, 0.95);
  EXPECT_EQ(p->max_rank, 0);
  p = ParseRankPolicy("  fixed   64 max 128 ");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->kind, RankPolicy::Kind::kFixed);
  EXPECT_EQ(p->value, 64);
  EXPECT_EQ(p->max_rank, 128);
  p = ParseRankPolicy("fraction 0.25");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->kind, RankPolicy::Kind::kFraction);
  for (const char* bad : {"", "energy", "fixed 0", "fixed 2.5", "fixed 1e30", "fraction 1.5",
                          "energy 0.9 max", "energy 0.9 min 3", "energy nan", "fixed 4 max -1"}) {
    EXPECT_FALSE(ParseRankPolicy(bad).ok()) << bad;
  }
  // RankPolicyString writes what ParseRankPolicy reads.
  for (const RankPolicy& policy :
       {RankPolicy::Fixed(7, 9), RankPolicy::Fraction(0.5), RankPolicy::Energy(0.875, 3)}) {
    p = ParseRankPolicy(kernels::RankPolicyString(policy));
    ASSERT_TRUE(p.ok()) << kernels::RankPolicyString(policy);
    EXPECT_EQ(p->kind, policy.kind);
    EXPECT_EQ(p->value, policy.value);
    EXPECT_EQ(p->max_rank, policy.max_rank);
  }
}

}  // namespace
}  // namespace atp::cli
