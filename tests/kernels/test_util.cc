#include "test_util.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace atp::testing {

using kernels::DType;
using kernels::Tensor;
using oracle::Mat;

uint64_t FreshSeed() {
  if (const char* env = std::getenv("ATP_TEST_SEED"); env != nullptr && *env != '\0') {
    return std::strtoull(env, nullptr, 0);
  }
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}

std::string SeedTrace(uint64_t seed) {
  return absl::StrCat("random seed ", seed, " (replay with ATP_TEST_SEED=", seed, ")");
}

Mat RandomMat(Rng& rng, int64_t rows, int64_t cols, double scale) {
  Mat m(rows, cols);
  for (double& v : m.v) v = scale * rng.Normal();
  return m;
}

std::vector<double> RandomVec(Rng& rng, int64_t n, double scale) {
  std::vector<double> v(static_cast<size_t>(n));
  for (double& e : v) e = scale * rng.Normal();
  return v;
}

Mat RandomOrthonormal(Rng& rng, int64_t rows, int64_t cols) {
  Mat q = RandomMat(rng, rows, cols);
  for (int64_t j = 0; j < cols; ++j) {
    for (int pass = 0; pass < 2; ++pass) {  // twice: Gram–Schmidt loses orthogonality once
      for (int64_t k = 0; k < j; ++k) {
        double p = 0;
        for (int64_t i = 0; i < rows; ++i) p += q(i, j) * q(i, k);
        for (int64_t i = 0; i < rows; ++i) q(i, j) -= p * q(i, k);
      }
    }
    double norm = 0;
    for (int64_t i = 0; i < rows; ++i) norm += q(i, j) * q(i, j);
    norm = std::sqrt(norm);
    for (int64_t i = 0; i < rows; ++i) q(i, j) /= norm;
  }
  return q;
}

Mat WithSpectrum(Rng& rng, int64_t rows, int64_t cols, const std::vector<double>& sigma) {
  const auto k = static_cast<int64_t>(sigma.size());
  const Mat u = RandomOrthonormal(rng, rows, k);
  const Mat v = RandomOrthonormal(rng, cols, k);
  Mat us = u;
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < k; ++j) us(i, j) *= sigma[j];
  }
  return oracle::MatMulT(us, v);
}

namespace {

double RoundTo(double v, DType dtype) {
  const float f = static_cast<float>(v);
  switch (dtype) {
    case DType::kF32:
      return f;
    case DType::kF16:
      return kernels::HalfToFloat(kernels::FloatToHalf(f));
    case DType::kBF16:
      return kernels::BFloat16ToFloat(kernels::FloatToBFloat16(f));
  }
  return f;
}

std::vector<float> ToFloats(const Tensor& t) {
  std::vector<float> f(static_cast<size_t>(t.num_elements()));
  kernels::ConvertToF32(t.dtype(), t.data(), f.data(), f.size());
  return f;
}

}  // namespace

Mat Rounded(const Mat& m, DType dtype) {
  Mat r = m;
  for (double& v : r.v) v = RoundTo(v, dtype);
  return r;
}

std::vector<double> Rounded(const std::vector<double>& v, DType dtype) {
  std::vector<double> r = v;
  for (double& e : r) e = RoundTo(e, dtype);
  return r;
}

Tensor ToTensor(const Mat& m, DType dtype) {
  std::vector<float> f(m.v.begin(), m.v.end());
  return Tensor::CopyOf(kernels::TensorView{DType::kF32, {m.rows, m.cols}, f.data()}, dtype);
}

Tensor ToTensor(const std::vector<double>& v, DType dtype) {
  std::vector<float> f(v.begin(), v.end());
  return Tensor::CopyOf(
      kernels::TensorView{DType::kF32, {static_cast<int64_t>(v.size())}, f.data()}, dtype);
}

Mat ToMat(const Tensor& t) {
  Mat m(t.dim(0), t.rank() > 1 ? t.dim(1) : 1);
  const std::vector<float> f = ToFloats(t);
  m.v.assign(f.begin(), f.end());
  return m;
}

std::vector<double> ToVec(const Tensor& t) {
  const std::vector<float> f = ToFloats(t);
  return std::vector<double>(f.begin(), f.end());
}

oracle::Rank ToOracle(const kernels::RankPolicy& policy) {
  oracle::Rank r;
  switch (policy.kind) {
    case kernels::RankPolicy::Kind::kFixed:
      r.kind = oracle::Rank::Kind::kFixed;
      break;
    case kernels::RankPolicy::Kind::kFraction:
      r.kind = oracle::Rank::Kind::kFraction;
      break;
    case kernels::RankPolicy::Kind::kEnergy:
      r.kind = oracle::Rank::Kind::kEnergy;
      break;
  }
  r.value = policy.value;
  r.max_rank = policy.max_rank;
  return r;
}

kernels::LayerSpec Clone(const kernels::LayerSpec& spec) {
  kernels::LayerSpec copy;
  copy.kind = spec.kind;
  copy.attention = spec.attention;
  copy.linear_default_rank = spec.linear_default_rank;
  for (const auto& [name, tensor] : spec.weights) copy.weights.emplace(name, tensor.Clone());
  return copy;
}

AttentionLayer RandomAttentionLayer(Rng& rng, const AttentionShape& shape, DType dtype) {
  AttentionLayer layer;
  kernels::AttentionConfig& c = layer.spec.attention;
  layer.spec.kind = kernels::LayerSpec::Kind::kAttention;
  c.d_model = shape.d_model;
  c.num_heads = shape.heads;
  c.num_kv_heads = shape.kv_heads;
  c.head_dim = shape.head_dim;
  c.key_scale = shape.key_scale;
  c.scale = shape.scale;

  oracle::Attention& o = layer.exact_oracle;
  o.heads = shape.heads;
  o.kv_heads = shape.kv_heads;
  o.head_dim = shape.head_dim;
  o.scale = shape.scale;
  o.inv_sqrt_len = shape.key_scale == kernels::KeyScale::kInvSqrtLen;
  const int64_t q_rows = shape.heads * shape.head_dim;
  const int64_t kv_rows = shape.kv_heads * shape.head_dim;
  o.wq = RandomMat(rng, q_rows, shape.d_model, 1 / std::sqrt(double(shape.d_model)));
  o.wk = RandomMat(rng, kv_rows, shape.d_model, 1 / std::sqrt(double(shape.d_model)));
  o.wv = RandomMat(rng, kv_rows, shape.d_model, 1 / std::sqrt(double(shape.d_model)));
  o.wo = RandomMat(rng, shape.d_model, q_rows, 1 / std::sqrt(double(q_rows)));
  if (shape.biases) {
    o.bq = RandomVec(rng, q_rows, 0.5);
    o.bk = RandomVec(rng, kv_rows, 0.5);
    o.bv = RandomVec(rng, kv_rows, 0.5);
    o.bo = RandomVec(rng, shape.d_model, 0.5);
  }
  layer.oracle = o;
  auto put = [&](const std::string& name, Mat* w, std::vector<double>* b) {
    *w = Rounded(*w, dtype);
    layer.spec.weights.emplace(name + ".weight", ToTensor(*w, dtype));
    if (!b->empty()) {
      *b = Rounded(*b, dtype);
      layer.spec.weights.emplace(name + ".bias", ToTensor(*b, dtype));
    }
  };
  put("q_proj", &layer.oracle.wq, &layer.oracle.bq);
  put("k_proj", &layer.oracle.wk, &layer.oracle.bk);
  put("v_proj", &layer.oracle.wv, &layer.oracle.bv);
  put("o_proj", &layer.oracle.wo, &layer.oracle.bo);
  return layer;
}

LinearLayer RandomLinearLayer(Rng& rng, int64_t n, int64_t d, bool bias, DType dtype) {
  LinearLayer layer;
  layer.spec.kind = kernels::LayerSpec::Kind::kLinear;
  layer.w = Rounded(RandomMat(rng, n, d, 1 / std::sqrt(double(d))), dtype);
  layer.spec.weights.emplace("weight", ToTensor(layer.w, dtype));
  if (bias) {
    layer.b = Rounded(RandomVec(rng, n, 0.5), dtype);
    layer.spec.weights.emplace("bias", ToTensor(layer.b, dtype));
  }
  return layer;
}

oracle::Mat Columns(const oracle::Mat& a, int64_t count) {
  oracle::Mat out(a.rows, count);
  for (int64_t i = 0; i < a.rows; ++i) {
    for (int64_t j = 0; j < count; ++j) out(i, j) = a(i, j);
  }
  return out;
}

oracle::Mat Rows(const oracle::Mat& a, int64_t count) {
  oracle::Mat out(count, a.cols);
  for (int64_t i = 0; i < count; ++i) {
    for (int64_t j = 0; j < a.cols; ++j) out(i, j) = a(i, j);
  }
  return out;
}

double OrthonormalityError(const oracle::Mat& u) {
  const oracle::Mat g = oracle::MatMul(oracle::Transpose(u), u);
  double worst = 0;
  for (int64_t i = 0; i < g.rows; ++i) {
    for (int64_t j = 0; j < g.cols; ++j) worst = std::max(worst, std::abs(g(i, j) - (i == j)));
  }
  return worst;
}

void ExpectSignRule(const oracle::Mat& u) {
  const double tiny = 1e-6 * std::sqrt(static_cast<double>(u.rows));
  for (int64_t i = 0; i < u.cols; ++i) {
    double t = 0;
    int64_t best = 0;
    for (int64_t j = 0; j < u.rows; ++j) {
      t += u(j, i);
      if (std::abs(u(j, i)) > std::abs(u(best, i))) best = j;
    }
    if (std::abs(t) < tiny) t = u(best, i);
    EXPECT_GE(t, 0) << "column " << i << " breaks the sign rule";
  }
}

}  // namespace atp::testing
