// The layer-file convention shared by the client SDK and the atp CLI: which metadata keys and
// tensor names make which layer, their defaults, rank policies as text, and one clear line naming
// the file for every bad value.
#include "atp/formats/layer_file.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace atp::formats {
namespace {

using ::testing::HasSubstr;

constexpr char kPath[] = "dir/L.safetensors";

// Entries as a file would list them (F32, packed in name order).
std::vector<TensorEntry> Entries(const std::vector<std::pair<std::string, Shape>>& tensors) {
  std::vector<TensorEntry> out;
  uint64_t offset = 0;
  for (const auto& [name, shape] : tensors) {
    TensorEntry e;
    e.name = name;
    e.shape = shape;
    e.begin = offset;
    uint64_t bytes = 4;
    for (int64_t d : shape) bytes *= static_cast<uint64_t>(d);
    e.end = offset + bytes;
    offset = e.end;
    out.push_back(e);
  }
  return out;
}

// The tensors of an attention layer: d_model d, h heads, g KV heads of width dh.
std::vector<TensorEntry> Attention(int64_t d, int64_t h, int64_t g, int64_t dh, bool bias) {
  std::vector<std::pair<std::string, Shape>> t = {{"q_proj.weight", {h * dh, d}},
                                                  {"k_proj.weight", {g * dh, d}},
                                                  {"v_proj.weight", {g * dh, d}},
                                                  {"o_proj.weight", {d, h * dh}}};
  if (bias) {
    t.push_back({"q_proj.bias", {h * dh}});
    t.push_back({"k_proj.bias", {g * dh}});
    t.push_back({"v_proj.bias", {g * dh}});
    t.push_back({"o_proj.bias", {d}});
  }
  return Entries(t);
}

void ExpectError(const Metadata& metadata, const std::vector<TensorEntry>& tensors,
                 absl::string_view want) {
  absl::StatusOr<LayerConfig> c = InterpretLayerFile(kPath, metadata, tensors);
  ASSERT_FALSE(c.ok()) << "want error: " << want;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
  EXPECT_THAT(c.status().message(), HasSubstr(kPath));
  EXPECT_THAT(c.status().message(), HasSubstr(want));
  EXPECT_FALSE(absl::StrContains(c.status().message(), "\n")) << c.status();
}

Metadata BaseMetadata() { return {{"num_heads", "4"}, {"num_kv_heads", "2"}, {"head_dim", "8"}}; }

TEST(LayerFileConventionTest, InterpretsEveryAttentionKey) {
  const Metadata md = {{"num_heads", "6"}, {"num_kv_heads", "2"},
                       {"head_dim", "5"},  {"key_scale", "inv_sqrt_len"},
                       {"scale", "0.3"},   {"default_rank", "fixed 16 max 32"},
                       {"format", "pt"}};
  absl::StatusOr<LayerConfig> c = InterpretLayerFile(kPath, md, Attention(24, 6, 2, 5, true));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->kind, LayerConfig::Kind::kAttention);
  EXPECT_EQ(c->d_model, 24);
  EXPECT_EQ(c->num_heads, 6);
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_EQ(c->head_dim, 5);
  EXPECT_EQ(c->key_scale, KeyScale::kInvSqrtLen);
  EXPECT_EQ(c->scale, 0.3f);
  ASSERT_TRUE(c->default_rank.has_value());
  EXPECT_EQ(c->default_rank->kind, RankPolicy::Kind::kFixed);
  EXPECT_EQ(c->default_rank->value, 16);
  EXPECT_EQ(c->default_rank->max_rank, 32);
}

TEST(LayerFileConventionTest, FillsDefaultsFromNumHeadsAlone) {
  absl::StatusOr<LayerConfig> c = InterpretLayerFile(kPath, {{"num_heads", "4"}, {"format", "pt"}},
                                                     Attention(16, 4, 4, 4, false));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->d_model, 16);
  EXPECT_EQ(c->num_kv_heads, 4);
  EXPECT_EQ(c->head_dim, 4);
  EXPECT_EQ(c->key_scale, KeyScale::kNone);
  EXPECT_EQ(c->scale, 0.0f);
  EXPECT_FALSE(c->default_rank.has_value());
}

TEST(LayerFileConventionTest, InterpretsLinearLayers) {
  for (bool bias : {false, true}) {
    std::vector<std::pair<std::string, Shape>> t = {{"weight", {3, 7}}};
    if (bias) t.push_back({"bias", {3}});
    // Attention keys are ignored in a linear layer.
    absl::StatusOr<LayerConfig> c = InterpretLayerFile(
        kPath, {{"default_rank", "fraction 0.25"}, {"num_heads", "x"}}, Entries(t));
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->kind, LayerConfig::Kind::kLinear);
    ASSERT_TRUE(c->default_rank.has_value());
    EXPECT_EQ(c->default_rank->kind, RankPolicy::Kind::kFraction);
    EXPECT_EQ(c->default_rank->value, 0.25);
    c = InterpretLayerFile(kPath, {}, Entries(t));
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_FALSE(c->default_rank.has_value());
  }
}

TEST(LayerFileConventionTest, RejectsBadMetadataNamingTheKey) {
  const std::vector<TensorEntry> tensors = Attention(16, 4, 2, 8, true);
  const struct {
    const char* key;
    const char* value;
    const char* want;
  } cases[] = {
      {"num_heads", "four", "__metadata__ num_heads is \"four\", want an integer >= 1"},
      {"num_heads", "0", "want an integer >= 1"},
      {"num_kv_heads", "3", "__metadata__ num_kv_heads is 3, want a divisor of num_heads 4"},
      {"num_kv_heads", "-2", "num_kv_heads is \"-2\", want an integer >= 1"},
      {"head_dim", "-8", "head_dim is \"-8\""},
      {"head_dim", "8.5", "head_dim is \"8.5\", want an integer >= 1"},
      {"key_scale", "sqrt", "__metadata__ key_scale is \"sqrt\", want none or inv_sqrt_len"},
      {"scale", "nan", "scale is \"nan\", want a finite number > 0"},
      {"scale", "0", "scale is \"0\", want a finite number > 0"},
      {"scale", "1e39", "scale is \"1e39\", want a finite number > 0"},
      {"scale", "x", "scale is \"x\""},
      {"default_rank", "energy 2",
       "__metadata__ default_rank: rank energy is 2, want 0 < energy <= 1"},
      {"default_rank", "top 5", "default_rank: rank policy \"top 5\" is not one of"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.want);
    Metadata md = BaseMetadata();
    md[c.key] = c.value;
    ExpectError(md, tensors, c.want);
  }
  Metadata no_heads = BaseMetadata();
  no_heads.erase("num_heads");
  ExpectError(no_heads, tensors, "__metadata__ has no num_heads, want the number of query heads");
  ExpectError({{"num_heads", "3"}}, tensors,
              "q_proj.weight has 32 rows, not a multiple of num_heads 3; set head_dim");
  ExpectError({{"default_rank", "fixed 0"}}, Entries({{"weight", {3, 7}}}),
              "default_rank: fixed rank is 0, want an integer >= 1");
}

TEST(LayerFileConventionTest, RejectsBadTensorSetsNamingThem) {
  std::vector<TensorEntry> mixed = Attention(16, 4, 2, 8, false);
  mixed.push_back(Entries({{"weight", {2, 16}}})[0]);
  ExpectError(BaseMetadata(), mixed, "mixes attention tensors (*_proj.*) with linear tensors");
  ExpectError({}, Entries({{"embed.weight", {2, 2}}, {"lm_head.weight", {2, 2}}}),
              "holds no layer: want q_proj.weight, k_proj.weight, v_proj.weight, o_proj.weight "
              "(attention) or weight (linear), found embed.weight, lm_head.weight");
  std::vector<std::pair<std::string, Shape>> many;
  for (int i = 9; i >= 0; --i) many.push_back({absl::StrCat("t", i), {1}});
  ExpectError({}, Entries(many), "found t0, t1, t2, t3, t4, t5, t6, t7, ...");
  ExpectError({}, {}, "holds no layer: want q_proj.weight");
  ExpectError({}, {}, "found no tensors");

  std::vector<TensorEntry> no_q = Attention(16, 4, 2, 8, true);
  no_q.erase(no_q.begin());  // q_proj.weight
  ExpectError(BaseMetadata(), no_q, "is missing q_proj.weight, want [num_heads*head_dim, d_model]");
  std::vector<TensorEntry> flat_q = Attention(16, 4, 2, 8, false);
  flat_q[0].shape = {32 * 16};
  ExpectError(BaseMetadata(), flat_q,
              "q_proj.weight has shape [512], want 2 dimensions [num_heads*head_dim, d_model]");
  ExpectError({}, Entries({{"bias", {3}}}), "is missing weight, want [out_features, in_features]");
  ExpectError({}, Entries({{"weight", {3, 7, 1}}}),
              "weight has shape [3,7,1], want 2 dimensions [out_features, in_features]");
  ExpectError({}, Entries({{"weight", {0, 7}}}),
              "weight has shape [0,7], want every dimension >= 1");
  std::vector<TensorEntry> empty_bias = Attention(16, 4, 2, 8, false);
  empty_bias.push_back(Entries({{"o_proj.bias", {0}}})[0]);
  ExpectError(BaseMetadata(), empty_bias, "o_proj.bias has shape [0], want every dimension >= 1");
}

TEST(LayerFileConventionTest, WritesMetadataThatReadsBack) {
  LayerConfig attention;
  attention.kind = LayerConfig::Kind::kAttention;
  attention.d_model = 24;
  attention.num_heads = 6;
  attention.num_kv_heads = 2;
  attention.head_dim = 5;
  attention.key_scale = KeyScale::kInvSqrtLen;
  attention.scale = 0.3f;
  attention.default_rank = RankPolicy{RankPolicy::Kind::kEnergy, 0.875, 3};
  const Metadata md = LayerMetadata(attention);
  EXPECT_EQ(md, (Metadata{{"num_heads", "6"},
                          {"num_kv_heads", "2"},
                          {"head_dim", "5"},
                          {"key_scale", "inv_sqrt_len"},
                          {"scale", "0.30000001192092896"},
                          {"default_rank", "energy 0.875 max 3"}}));
  absl::StatusOr<LayerConfig> back = InterpretLayerFile(kPath, md, Attention(24, 6, 2, 5, true));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->num_heads, 6);
  EXPECT_EQ(back->num_kv_heads, 2);
  EXPECT_EQ(back->head_dim, 5);
  EXPECT_EQ(back->key_scale, KeyScale::kInvSqrtLen);
  EXPECT_EQ(back->scale, 0.3f);  // exactly the float written
  ASSERT_TRUE(back->default_rank.has_value());
  EXPECT_EQ(back->default_rank->value, 0.875);
  EXPECT_EQ(back->default_rank->max_rank, 3);

  // Unset values are left out; num_kv_heads 0 means num_heads.
  LayerConfig plain = attention;
  plain.num_kv_heads = 0;
  plain.scale = 0;
  plain.key_scale = KeyScale::kNone;
  plain.default_rank.reset();
  EXPECT_EQ(
      LayerMetadata(plain),
      (Metadata{
          {"num_heads", "6"}, {"num_kv_heads", "6"}, {"head_dim", "5"}, {"key_scale", "none"}}));
  LayerConfig linear;
  linear.kind = LayerConfig::Kind::kLinear;
  EXPECT_TRUE(LayerMetadata(linear).empty());
  linear.default_rank = RankPolicy{RankPolicy::Kind::kFixed, 64, 0};
  EXPECT_EQ(LayerMetadata(linear), (Metadata{{"default_rank", "fixed 64"}}));
}

TEST(RankPolicyTextTest, ParsesEachKindWithAnOptionalMax) {
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
  EXPECT_EQ(p->value, 0.25);
  p = ParseRankPolicy("fixed 4294967295 max 0");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->value, 4294967295.0);
  p = ParseRankPolicy("energy 1");
  ASSERT_TRUE(p.ok()) << p.status();
}

TEST(RankPolicyTextTest, RejectsBadTextAndValuesNamingThem) {
  const struct {
    const char* text;
    const char* want;
  } cases[] = {
      {"", "rank policy \"\" is not one of \"energy T\", \"fixed N\", \"fraction F\""},
      {"energy", "is not one of"},
      {"most", "rank policy \"most\" is not one of"},
      {"top 5", "is not one of"},
      {"energy 0.9 max", "is not one of"},
      {"energy 0.9 min 3", "is not one of"},
      {"energy 0.9 max 3.5", "is not one of"},
      {"energy nan", "is not one of"},
      {"energy inf", "is not one of"},
      {"fixed 4 max 5 6", "is not one of"},
      {"fixed 0", "fixed rank is 0, want an integer >= 1"},
      {"fixed 2.5", "fixed rank is 2.5, want an integer >= 1"},
      {"fixed -3", "fixed rank is -3, want an integer >= 1"},
      {"fixed 1e30", "fixed rank is 1e+30, want at most 4294967295"},
      {"fixed 4294967296", "want at most 4294967295"},
      {"fraction 1.5", "rank fraction is 1.5, want 0 < fraction <= 1"},
      {"fraction 0", "rank fraction is 0, want 0 < fraction <= 1"},
      {"energy 1.5", "rank energy is 1.5, want 0 < energy <= 1"},
      {"energy -0.5", "rank energy is -0.5, want 0 < energy <= 1"},
      {"fixed 4 max -1", "max rank is -1, want >= 0 (0 = no bound)"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    absl::StatusOr<RankPolicy> p = ParseRankPolicy(c.text);
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(p.status().message(), HasSubstr(c.want));
  }
}

TEST(RankPolicyTextTest, PrintsWhatItParses) {
  const RankPolicy policies[] = {{RankPolicy::Kind::kFixed, 7, 9},
                                 {RankPolicy::Kind::kFraction, 0.5, 0},
                                 {RankPolicy::Kind::kEnergy, 0.875, 3},
                                 {RankPolicy::Kind::kEnergy, 0.99, 0}};
  const char* const text[] = {"fixed 7 max 9", "fraction 0.5", "energy 0.875 max 3", "energy 0.99"};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(RankPolicyString(policies[i]), text[i]);
    absl::StatusOr<RankPolicy> p = ParseRankPolicy(RankPolicyString(policies[i]));
    ASSERT_TRUE(p.ok()) << text[i];
    EXPECT_EQ(p->kind, policies[i].kind);
    EXPECT_EQ(p->value, policies[i].value);
    EXPECT_EQ(p->max_rank, policies[i].max_rank);
  }
  EXPECT_EQ(KeyScaleName(KeyScale::kNone), "none");
  EXPECT_EQ(KeyScaleName(KeyScale::kInvSqrtLen), "inv_sqrt_len");
}

}  // namespace
}  // namespace atp::formats
