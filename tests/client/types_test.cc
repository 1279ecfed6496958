// The client's plain types: tensors, rank policies, layer specs (validation, digest, .safetensors).
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "atp/client/layer.h"
#include "atp/client/tensor.h"
#include "atp/wire/layer_digest.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_util.h"
#include "worker_process.h"

namespace atp::testing {
namespace {

using ::testing::HasSubstr;
using namespace atp::client;  // NOLINT: test of this namespace

TEST(TensorTest, ViewAndCopyKeepShapeAndBytes) {
  const std::vector<float> v = {1, 2, 3, 4, 5, 6};
  const TensorView view = TensorView::F32(v.data(), {2, 3});
  EXPECT_EQ(view.byte_size(), 24u);
  EXPECT_EQ(view.num_elements(), 6);
  Tensor copy = Tensor::CopyOf(view);
  EXPECT_EQ(copy.shape(), (Shape{2, 3}));
  EXPECT_EQ(copy.ToF32(), v);
  EXPECT_NE(copy.data(), view.data);
  EXPECT_EQ(ShapeString(copy.shape()), "[2,3]");
}

TEST(TensorTest, HalfAndBfloat16ConvertToF32) {
  Tensor h(DType::kF16, {3});
  const uint16_t half[] = {0x3c00, 0xc000, 0x0001};  // 1, -2, smallest subnormal
  std::memcpy(h.data(), half, sizeof half);
  const std::vector<float> hf = h.ToF32();
  EXPECT_EQ(hf[0], 1.0f);
  EXPECT_EQ(hf[1], -2.0f);
  EXPECT_FLOAT_EQ(hf[2], 5.9604645e-8f);
  Tensor b(DType::kBF16, {2});
  const uint16_t bf[] = {0x3f80, 0x4049};  // 1, 3.140625
  std::memcpy(b.data(), bf, sizeof bf);
  EXPECT_EQ(b.ToF32(), (std::vector<float>{1.0f, 3.140625f}));
}

TEST(TensorTest, FactoredToDenseMultipliesTheFactors) {
  FactoredTensor f{Tensor::FromF32({2, 2}, {1, 2, 3, 4}),
                   Tensor::FromF32({2, 3}, {1, 0, 1, 0, 1, 1})};
  EXPECT_EQ(f.ToDense().ToF32(), (std::vector<float>{1, 2, 3, 3, 4, 7}));
}

TEST(TensorTest, CheckTensorViewNamesTheProblem) {
  const float x[4] = {};
  EXPECT_TRUE(CheckTensorView(TensorView::F32(x, {2, 2}), 2, "x").ok());
  EXPECT_THAT(CheckTensorView(TensorView::F32(x, {4}), 2, "x").message(), HasSubstr("[4]"));
  EXPECT_THAT(CheckTensorView(TensorView::F32(x, {0, 2}), 2, "x").message(), HasSubstr(">= 1"));
  EXPECT_THAT(CheckTensorView(TensorView::F32(nullptr, {2, 2}), 2, "x").message(),
              HasSubstr("no data"));
}

TEST(RankPolicyTest, ParsesWhatItPrintsAndRejectsBadValues) {
  for (const RankPolicy& p :
       {RankPolicy::Fixed(64, 128), RankPolicy::Fraction(0.25), RankPolicy::Energy(0.99)}) {
    auto back = ParseRankPolicy(RankPolicyString(p));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->kind, p.kind);
    EXPECT_EQ(back->value, p.value);
    EXPECT_EQ(back->max_rank, p.max_rank);
  }
  EXPECT_FALSE(ParseRankPolicy("energy 1.5").ok());
  EXPECT_FALSE(ParseRankPolicy("fixed 0").ok());
  EXPECT_FALSE(ParseRankPolicy("fixed 2.5").ok());
  EXPECT_FALSE(ParseRankPolicy("most").ok());
  EXPECT_THAT(ValidateRankPolicy(RankPolicy::Fraction(0)).message(), HasSubstr("(0, 1]"));
}

TEST(LayerSpecTest, AttentionShapesAreCheckedAndNamed) {
  const AttentionShape shape{.d_model = 16, .heads = 4, .kv_heads = 2, .head_dim = 4};
  Weights w = RandomAttentionWeights(shape, 1);
  AttentionConfig c{.d_model = 16, .num_heads = 4, .num_kv_heads = 2, .head_dim = 4};
  std::map<std::string, TensorView> views;
  for (const auto& [name, v] : w.values) views[name] = TensorView::F32(v.data(), w.shapes[name]);
  auto ok = LayerSpec::Attention("a", c, views);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->attention().scale, 0.5f);  // resolved 1/sqrt(4)
  EXPECT_EQ(ok->weight_bytes(), (16 * 16 + 8 * 16 * 2 + 16 * 16 + 16 + 8 + 8 + 16) * 4u);

  auto bad_shape = views;
  bad_shape["k_proj.weight"] = TensorView::F32(w.values["k_proj.weight"].data(), {16, 8});
  auto s = LayerSpec::Attention("a", c, bad_shape);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("k_proj.weight has shape [16,8], want [8,16]"));

  auto missing = views;
  missing.erase("o_proj.weight");
  EXPECT_THAT(LayerSpec::Attention("a", c, missing).status().message(),
              HasSubstr("lacks o_proj.weight"));
  auto unknown = views;
  unknown["gate_proj.weight"] = views["q_proj.weight"];
  EXPECT_THAT(LayerSpec::Attention("a", c, unknown).status().message(),
              HasSubstr("gate_proj.weight"));
  AttentionConfig bad_kv = c;
  bad_kv.num_kv_heads = 3;
  EXPECT_THAT(LayerSpec::Attention("a", bad_kv, views).status().message(),
              HasSubstr("num_kv_heads is 3"));
  EXPECT_THAT(LayerSpec::Attention("bad id!", c, views).status().message(), HasSubstr("'"));
}

TEST(LayerSpecTest, DigestFollowsTheWireDefinition) {
  Weights w = RandomLinearWeights(3, 2, true, 5);
  auto spec = LayerSpec::Linear("lin", TensorView::F32(w.values["weight"].data(), {3, 2}),
                                TensorView::F32(w.values["bias"].data(), {3}));
  ASSERT_TRUE(spec.ok());
  // The definition of atp.v1.LayerHeader, spelled out independently of the SDK.
  wire::Sha256 sha;
  for (const char* name : {"bias", "weight"}) {
    const auto& v = w.values[name];
    const auto& shape = w.shapes[name];
    sha.Update(name, std::strlen(name));
    const uint8_t meta[3] = {0, 1, static_cast<uint8_t>(shape.size())};
    sha.Update(meta, 3);
    for (int64_t d : shape) {
      uint8_t le[8];
      for (int i = 0; i < 8; ++i) le[i] = static_cast<uint8_t>(static_cast<uint64_t>(d) >> (8 * i));
      sha.Update(le, 8);
    }
    sha.Update(v.data(), v.size() * 4);
  }
  sha.Update("linear", 6);
  const auto digest = sha.Finish();
  EXPECT_EQ(spec->digest(), wire::HexString(digest));
  // Same content, same digest; other content, other digest.
  auto same = LayerSpec::Linear("other-id", TensorView::F32(w.values["weight"].data(), {3, 2}),
                                TensorView::F32(w.values["bias"].data(), {3}));
  EXPECT_EQ(same->digest(), spec->digest());
  auto no_bias = LayerSpec::Linear("lin", TensorView::F32(w.values["weight"].data(), {3, 2}));
  EXPECT_NE(no_bias->digest(), spec->digest());
}

// Writes a .safetensors file (the format's definition, independently of the SDK's reader).
void WriteSafetensors(const std::string& path, const Weights& w,
                      const std::map<std::string, std::string>& metadata) {
  std::string header = "{";
  uint64_t offset = 0;
  std::string data;
  bool first = true;
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool f = true;
    for (const auto& [k, v] : metadata) {
      header += absl::StrCat(f ? "" : ",", "\"", k, "\":\"", v, "\"");
      f = false;
    }
    header += "}";
    first = false;
  }
  for (const auto& [name, v] : w.values) {
    const uint64_t n = v.size() * 4;
    std::string shape;
    for (int64_t d : w.shapes.at(name)) shape += absl::StrCat(shape.empty() ? "" : ",", d);
    header += absl::StrCat(first ? "" : ",", "\"", name, "\":{\"dtype\":\"F32\",\"shape\":[", shape,
                           "],\"data_offsets\":[", offset, ",", offset + n, "]}");
    first = false;
    data.append(reinterpret_cast<const char*>(v.data()), n);
    offset += n;
  }
  header += "}";
  std::ofstream out(path, std::ios::binary);
  uint64_t len = header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>(len >> (8 * i)));
  out << header << data;
}

TEST(LayerSpecTest, ReadsSafetensorsLayerFiles) {
  const AttentionShape shape{.d_model = 16, .heads = 4, .kv_heads = 2, .head_dim = 4};
  const Weights w = RandomAttentionWeights(shape, 7);
  const std::string path = absl::StrCat(ScratchDir(), "/attn.safetensors");
  WriteSafetensors(path, w,
                   {{"num_heads", "4"},
                    {"num_kv_heads", "2"},
                    {"key_scale", "inv_sqrt_len"},
                    {"default_rank", "fixed 3 max 8"},
                    {"format", "pt"}});
  auto spec = LayerSpec::FromSafetensors("file", path);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->kind(), LayerSpec::Kind::kAttention);
  EXPECT_EQ(spec->attention().d_model, 16);
  EXPECT_EQ(spec->attention().head_dim, 4);
  EXPECT_EQ(spec->attention().key_scale, KeyScale::kInvSqrtLen);
  ASSERT_TRUE(spec->attention().default_rank.has_value());
  EXPECT_EQ(spec->attention().default_rank->max_rank, 8);
  EXPECT_EQ(spec->weights().at("q_proj.weight").ToF32(), w.values.at("q_proj.weight"));
  // The in-memory spec of the same weights has the same digest (key scale aside).
  AttentionShape s2 = shape;
  auto mem = ClientAttention("mem", s2, w);
  EXPECT_NE(mem.digest(), spec->digest());  // key_scale differs

  const Weights lin = RandomLinearWeights(5, 3, false, 8);
  const std::string lin_path = absl::StrCat(ScratchDir(), "/lin.safetensors");
  WriteSafetensors(lin_path, lin, {});
  auto l = LayerSpec::FromSafetensors("lin", lin_path);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->kind(), LayerSpec::Kind::kLinear);
  EXPECT_EQ(l->digest(), ClientLinear("x", lin).digest());

  EXPECT_EQ(LayerSpec::FromSafetensors("x", "/no/such/file").status().code(),
            absl::StatusCode::kNotFound);
  const std::string junk = absl::StrCat(ScratchDir(), "/junk.safetensors");
  std::ofstream(junk, std::ios::binary) << std::string("\x05\0\0\0\0\0\0\0{\"a\":", 13);
  auto bad = LayerSpec::FromSafetensors("x", junk);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr(junk));
}

// The convention itself (every key, default and bad value) is tested once in
// tests/client/formats/layer_file_test.cc; here, that FromSafetensors maps it into the SDK's types
// and that its errors name the file.
TEST(LayerSpecTest, FromSafetensorsResolvesDefaultsAndNamesTheFileInErrors) {
  const AttentionShape shape{.d_model = 16, .heads = 4, .kv_heads = 4, .head_dim = 4};
  const Weights w = RandomAttentionWeights(shape, 9);
  const std::string path = absl::StrCat(ScratchDir(), "/defaults.safetensors");
  WriteSafetensors(path, w, {{"num_heads", "4"}});
  auto spec = LayerSpec::FromSafetensors("defaults", path);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->attention().num_kv_heads, 4);
  EXPECT_EQ(spec->attention().head_dim, 4);
  EXPECT_EQ(spec->attention().scale, 0.5f);  // 1/sqrt(head_dim)
  EXPECT_EQ(spec->attention().key_scale, KeyScale::kNone);
  EXPECT_FALSE(spec->attention().default_rank.has_value());
  EXPECT_EQ(spec->digest(), ClientAttention("mem", shape, w).digest());

  auto expect_error = [](const std::string& file, absl::string_view want) {
    auto bad = LayerSpec::FromSafetensors("x", file);
    ASSERT_FALSE(bad.ok()) << "want error: " << want;
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(bad.status().message(), HasSubstr(file));
    EXPECT_THAT(bad.status().message(), HasSubstr(want));
  };
  const std::string no_heads = absl::StrCat(ScratchDir(), "/no_heads.safetensors");
  WriteSafetensors(no_heads, w, {{"head_dim", "4"}});
  expect_error(no_heads, "__metadata__ has no num_heads");
  Weights bad_k = w;
  bad_k.shapes["k_proj.weight"] = {8, 32};
  const std::string bad_k_path = absl::StrCat(ScratchDir(), "/bad_k.safetensors");
  WriteSafetensors(bad_k_path, bad_k, {{"num_heads", "4"}});
  expect_error(bad_k_path, "k_proj.weight has shape [8,32], want [16,16]");
  Weights empty;
  empty.values["weight"] = {};
  empty.shapes["weight"] = {0, 5};
  const std::string empty_path = absl::StrCat(ScratchDir(), "/empty.safetensors");
  WriteSafetensors(empty_path, empty, {});
  expect_error(empty_path, "weight has shape [0,5], want every dimension >= 1");
}

TEST(LayerSpecTest, FromSafetensorsKeepsHalfPrecisionWeights) {
  // weight [2,3] and bias [2] as bf16, written byte by byte.
  const uint16_t weight[6] = {0x3f80, 0x4000, 0x4040, 0xbf80, 0x0000, 0x3f00};
  const uint16_t bias[2] = {0x3e80, 0xc080};
  const std::string header =
      "{\"__metadata__\":{\"default_rank\":\"fixed 2\"},"
      "\"bias\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]},"
      "\"weight\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[4,16]}}";
  const std::string path = absl::StrCat(ScratchDir(), "/bf16.safetensors");
  {
    std::ofstream out(path, std::ios::binary);
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>(header.size() >> (8 * i)));
    out << header;
    out.write(reinterpret_cast<const char*>(bias), sizeof bias);
    out.write(reinterpret_cast<const char*>(weight), sizeof weight);
  }
  auto spec = LayerSpec::FromSafetensors("bf16", path);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->kind(), LayerSpec::Kind::kLinear);
  ASSERT_TRUE(spec->linear_default_rank().has_value());
  EXPECT_EQ(spec->linear_default_rank()->kind, RankPolicy::Kind::kFixed);
  EXPECT_EQ(spec->linear_default_rank()->value, 2);
  const Tensor& got = spec->weights().at("weight");
  EXPECT_EQ(got.dtype(), DType::kBF16);
  EXPECT_EQ(got.shape(), (Shape{2, 3}));
  EXPECT_EQ(got.ToF32(), (std::vector<float>{1, 2, 3, -1, 0, 0.5f}));
  EXPECT_EQ(spec->weights().at("bias").ToF32(), (std::vector<float>{0.25f, -4}));
}

}  // namespace
}  // namespace atp::testing
