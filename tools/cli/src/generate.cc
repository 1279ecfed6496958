#include "generate.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"

namespace atp::cli {
namespace {

using kernels::DType;
using kernels::LayerSpec;
using kernels::Tensor;

constexpr double kPi = 3.14159265358979323846;

// SplitMix64 feeding a Box-Muller transform: deterministic everywhere.
class Gaussian {
 public:
  explicit Gaussian(uint64_t seed) : state_(seed) {}

  double Next() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double u1 = (static_cast<double>(Bits() >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
    const double u2 = static_cast<double>(Bits() >> 11) * 0x1.0p-53;          // [0, 1)
    const double radius = std::sqrt(-2.0 * std::log(u1));
    spare_ = radius * std::sin(2.0 * kPi * u2);
    has_spare_ = true;
    return radius * std::cos(2.0 * kPi * u2);
  }

 private:
  uint64_t Bits() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }

  uint64_t state_;
  bool has_spare_ = false;
  double spare_ = 0.0;
};

absl::Status CheckElements(int64_t rows, int64_t cols, absl::string_view what) {
  if (rows < 1 || cols < 1 || rows > kMaxGeneratedElements / cols) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " would be [", rows, ",", cols, "], want 1 to ", kMaxGeneratedElements, " elements"));
  }
  return absl::OkStatus();
}

// A tensor of `shape` with N(0, std²) entries, stored as `dtype`.
Tensor RandomTensor(kernels::Shape shape, double stddev, DType dtype, Gaussian* rng) {
  std::vector<float> values(static_cast<size_t>(kernels::NumElements(shape)));
  for (float& v : values) v = static_cast<float>(stddev * rng->Next());
  Tensor f32 = Tensor::FromF32(std::move(shape), values);
  if (dtype == DType::kF32) return f32;
  return Tensor::CopyOf(f32.view(), dtype);
}

}  // namespace

absl::StatusOr<LayerSpec> GenerateAttentionLayer(const AttentionLayerOptions& o) {
  LayerSpec spec;
  spec.kind = LayerSpec::Kind::kAttention;
  kernels::AttentionConfig& c = spec.attention;
  c.d_model = o.d_model;
  c.num_heads = o.num_heads;
  c.num_kv_heads = o.num_kv_heads > 0 ? o.num_kv_heads : o.num_heads;
  if (o.head_dim > 0) {
    c.head_dim = o.head_dim;
  } else {
    if (o.num_heads < 1 || o.d_model % o.num_heads != 0) {
      return absl::InvalidArgumentError(absl::StrCat("d_model ", o.d_model,
                                                     " is not a multiple of heads ", o.num_heads,
                                                     "; give the head dimension"));
    }
    c.head_dim = o.d_model / o.num_heads;
  }
  c.key_scale = o.key_scale;
  c.default_rank = o.default_rank;
  if (auto s = kernels::ValidateAttentionConfig(c); !s.ok()) return s;
  const int64_t q_rows = c.num_heads * c.head_dim;
  const int64_t kv_rows = c.kv_heads() * c.head_dim;
  if (auto s = CheckElements(q_rows, c.d_model, "q_proj.weight"); !s.ok()) return s;

  Gaussian rng(o.seed);
  const struct {
    const char* name;
    int64_t rows, cols;
  } projs[] = {{"q_proj", q_rows, c.d_model},
               {"k_proj", kv_rows, c.d_model},
               {"v_proj", kv_rows, c.d_model},
               {"o_proj", c.d_model, q_rows}};
  for (const auto& p : projs) {
    spec.weights.emplace(
        absl::StrCat(p.name, ".weight"),
        RandomTensor({p.rows, p.cols}, 1.0 / std::sqrt(double(p.cols)), o.dtype, &rng));
    if (o.bias) {
      spec.weights.emplace(absl::StrCat(p.name, ".bias"),
                           RandomTensor({p.rows}, 0.1, o.dtype, &rng));
    }
  }
  return spec;
}

absl::StatusOr<LayerSpec> GenerateLinearLayer(const LinearLayerOptions& o) {
  if (auto s = CheckElements(o.out_features, o.in_features, "weight"); !s.ok()) return s;
  if (auto s = kernels::ValidateRankPolicy(o.default_rank); !s.ok()) return s;
  LayerSpec spec;
  spec.kind = LayerSpec::Kind::kLinear;
  spec.linear_default_rank = o.default_rank;
  Gaussian rng(o.seed);
  spec.weights.emplace("weight",
                       RandomTensor({o.out_features, o.in_features},
                                    1.0 / std::sqrt(double(o.in_features)), o.dtype, &rng));
  if (o.bias) spec.weights.emplace("bias", RandomTensor({o.out_features}, 0.1, o.dtype, &rng));
  return spec;
}

absl::StatusOr<Tensor> GenerateInput(const InputOptions& o) {
  if (auto s = CheckElements(o.length, o.d_model, "the input"); !s.ok()) return s;
  const int64_t L = o.length;
  const int64_t d = o.d_model;
  const int64_t m = std::min(L, d);
  const int64_t k = o.components > 0 ? o.components : std::min<int64_t>(8, m);
  if (k > m) {
    return absl::InvalidArgumentError(
        absl::StrCat("components is ", k, ", want at most min(length, d_model) = ", m));
  }
  double noise = o.noise;
  if (noise < 0) noise = o.profile == InputOptions::Profile::kLowRank ? 0.01 : 0.0;

  Gaussian rng(o.seed);
  std::vector<double> x(static_cast<size_t>(L * d), 0.0);
  if (o.profile == InputOptions::Profile::kFlat) {
    for (double& v : x) v = rng.Next();
  } else {
    // Sum of rank-one terms strength_j · a_j b_jᵀ: token coefficients a_j and directions b_j.
    std::vector<double> a(static_cast<size_t>(L)), b(static_cast<size_t>(d));
    auto add_term = [&](double strength, bool constant_tokens) {
      for (double& v : a) v = constant_tokens ? 1.0 : rng.Next();
      for (double& v : b) v = rng.Next();
      for (int64_t i = 0; i < L; ++i) {
        const double ai = strength * a[i];
        double* row = &x[static_cast<size_t>(i * d)];
        for (int64_t j = 0; j < d; ++j) row[j] += ai * b[j];
      }
    };
    // Real activations share a large common offset across tokens.
    if (o.profile == InputOptions::Profile::kLowRank) add_term(1.0, /*constant_tokens=*/true);
    double strength = 1.0;
    for (int64_t j = 0; j < k; ++j, strength *= 0.7) add_term(strength, false);
  }
  double sum_sq = 0.0;
  for (double v : x) sum_sq += v * v;
  const double rms = std::sqrt(sum_sq / static_cast<double>(x.size()));
  const double scale = rms > 0 ? 1.0 / rms : 1.0;
  std::vector<float> values(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    values[i] = static_cast<float>(x[i] * scale + (noise > 0 ? noise * rng.Next() : 0.0));
  }
  Tensor t = Tensor::FromF32({L, d}, values);
  if (o.dtype == DType::kF32) return t;
  return Tensor::CopyOf(t.view(), o.dtype);
}

}  // namespace atp::cli
