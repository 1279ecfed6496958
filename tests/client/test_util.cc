#include "test_util.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"

namespace atp::testing {

std::vector<float> RandomValues(int64_t n, uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<float> LowRankSequence(int64_t length, int64_t width, int components, uint64_t seed) {
  const std::vector<float> a = RandomValues(length * components, seed);
  const std::vector<float> b = RandomValues(components * width, seed + 1);
  std::vector<float> noise = RandomValues(length * width, seed + 2, 0.01f);
  for (int64_t i = 0; i < length; ++i) {
    for (int k = 0; k < components; ++k) {
      const float s = a[i * components + k] / static_cast<float>(k + 1);
      for (int64_t j = 0; j < width; ++j) noise[i * width + j] += s * b[k * width + j];
    }
  }
  return noise;
}

namespace {

void Add(Weights* w, const std::string& name, std::vector<int64_t> shape, uint64_t seed) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  const float scale = 1.0f / std::sqrt(static_cast<float>(shape.back()));
  w->values[name] = RandomValues(n, seed, scale);
  w->shapes[name] = std::move(shape);
}

kernels::WeightMap KernelWeights(const Weights& w) {
  kernels::WeightMap out;
  for (const auto& [name, v] : w.values) {
    out.emplace(name, kernels::Tensor::FromF32(w.shapes.at(name), v));
  }
  return out;
}

std::map<std::string, client::TensorView> ClientWeights(const Weights& w) {
  std::map<std::string, client::TensorView> out;
  for (const auto& [name, v] : w.values) {
    out.emplace(name, client::TensorView::F32(v.data(), w.shapes.at(name)));
  }
  return out;
}

}  // namespace

Weights RandomAttentionWeights(const AttentionShape& s, uint64_t seed) {
  Weights w;
  const int64_t q = s.heads * s.head_dim, kv = s.kv_heads * s.head_dim;
  Add(&w, "q_proj.weight", {q, s.d_model}, seed);
  Add(&w, "k_proj.weight", {kv, s.d_model}, seed + 1);
  Add(&w, "v_proj.weight", {kv, s.d_model}, seed + 2);
  Add(&w, "o_proj.weight", {s.d_model, q}, seed + 3);
  if (s.bias) {
    Add(&w, "q_proj.bias", {q}, seed + 4);
    Add(&w, "k_proj.bias", {kv}, seed + 5);
    Add(&w, "v_proj.bias", {kv}, seed + 6);
    Add(&w, "o_proj.bias", {s.d_model}, seed + 7);
  }
  return w;
}

Weights RandomLinearWeights(int64_t out, int64_t in, bool bias, uint64_t seed) {
  Weights w;
  Add(&w, "weight", {out, in}, seed);
  if (bias) Add(&w, "bias", {out}, seed + 1);
  return w;
}

client::LayerSpec ClientAttention(const std::string& id, const AttentionShape& s,
                                  const Weights& w) {
  client::AttentionConfig c;
  c.d_model = s.d_model;
  c.num_heads = s.heads;
  c.num_kv_heads = s.kv_heads;
  c.head_dim = s.head_dim;
  return *client::LayerSpec::Attention(id, c, ClientWeights(w));
}

kernels::LayerSpec KernelAttention(const AttentionShape& s, const Weights& w) {
  kernels::LayerSpec spec;
  spec.kind = kernels::LayerSpec::Kind::kAttention;
  spec.attention.d_model = s.d_model;
  spec.attention.num_heads = s.heads;
  spec.attention.num_kv_heads = s.kv_heads;
  spec.attention.head_dim = s.head_dim;
  spec.weights = KernelWeights(w);
  return spec;
}

client::LayerSpec ClientLinear(const std::string& id, const Weights& w) {
  const auto weights = ClientWeights(w);
  std::optional<client::TensorView> bias;
  if (weights.contains("bias")) bias = weights.at("bias");
  return *client::LayerSpec::Linear(id, weights.at("weight"), bias);
}

kernels::LayerSpec KernelLinear(const Weights& w) {
  kernels::LayerSpec spec;
  spec.kind = kernels::LayerSpec::Kind::kLinear;
  spec.weights = KernelWeights(w);
  return spec;
}

kernels::Backend& LocalBackend() {
  static kernels::Backend* backend = kernels::CreateCpuBackend({.threads = 1}).release();
  return *backend;
}

kernels::TensorView KernelView(const std::vector<float>& v, std::vector<int64_t> shape) {
  return kernels::TensorView{kernels::DType::kF32, std::move(shape), v.data()};
}

client::TensorView ClientView(const std::vector<float>& v, std::vector<int64_t> shape) {
  return client::TensorView::F32(v.data(), std::move(shape));
}

std::vector<float> Floats(const client::Tensor& t) { return t.ToF32(); }

std::vector<float> Floats(const kernels::Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.num_elements()));
  kernels::ConvertToF32(t.dtype(), t.data(), out.data(), out.size());
  return out;
}

double RelativeMaxError(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size() || a.empty()) return std::numeric_limits<double>::infinity();
  double diff = 0, ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return std::numeric_limits<double>::infinity();
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    ref = std::max(ref, std::abs(static_cast<double>(b[i])));
  }
  return ref == 0 ? diff : diff / ref;
}

}  // namespace atp::testing
