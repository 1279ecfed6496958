// Helpers for tests that compare a backend against the f64 oracle: seeded random data, random
// layers in both vocabularies (kernels::LayerSpec and oracle::Attention), and conversions between
// kernels::Tensor and oracle::Mat. Part of the atp_test_oracle library.
#ifndef ATP_TESTS_KERNELS_TEST_UTIL_H_
#define ATP_TESTS_KERNELS_TEST_UTIL_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "atp/kernels/layer.h"
#include "atp/kernels/rank_policy.h"
#include "atp/kernels/tensor.h"
#include "oracle.h"

namespace atp::testing {

// A fresh seed from std::random_device, or the value of the environment variable ATP_TEST_SEED
// when it is set (to replay a failure). Tests print it with SCOPED_TRACE(SeedTrace(seed)).
uint64_t FreshSeed();
std::string SeedTrace(uint64_t seed);

class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}
  double Normal() { return normal_(engine_); }
  double Uniform(double lo, double hi) { return std::uniform_real_distribution<>(lo, hi)(engine_); }
  // Uniform in [lo, hi].
  int64_t Int(int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(engine_);
  }

 private:
  std::mt19937_64 engine_;
  std::normal_distribution<double> normal_;
};

// Entries N(0, scale²).
oracle::Mat RandomMat(Rng& rng, int64_t rows, int64_t cols, double scale = 1.0);
std::vector<double> RandomVec(Rng& rng, int64_t n, double scale = 1.0);
// Orthonormal columns (Gram–Schmidt of a Gaussian matrix), rows >= cols.
oracle::Mat RandomOrthonormal(Rng& rng, int64_t rows, int64_t cols);
// U·diag(sigma)·Vᵀ with random orthonormal U [rows, k] and V [cols, k], k = sigma.size().
oracle::Mat WithSpectrum(Rng& rng, int64_t rows, int64_t cols, const std::vector<double>& sigma);

// The matrix rounded to `dtype` and back: exactly what a backend sees.
oracle::Mat Rounded(const oracle::Mat& m, kernels::DType dtype);
std::vector<double> Rounded(const std::vector<double>& v, kernels::DType dtype);
kernels::Tensor ToTensor(const oracle::Mat& m, kernels::DType dtype = kernels::DType::kF32);
kernels::Tensor ToTensor(const std::vector<double>& v, kernels::DType dtype = kernels::DType::kF32);
// A 2-D tensor of any dtype as a matrix (NaN stays NaN).
oracle::Mat ToMat(const kernels::Tensor& t);
std::vector<double> ToVec(const kernels::Tensor& t);

oracle::Rank ToOracle(const kernels::RankPolicy& policy);

// A deep copy (LayerSpec is move-only because its tensors are).
kernels::LayerSpec Clone(const kernels::LayerSpec& spec);

// A random attention layer in both vocabularies. Weights N(0, 1/in_features); biases N(0, 0.25)
// when `biases`. The oracle holds the values rounded to `dtype`, i.e. what the backend computes
// with; `exact_oracle` holds the unrounded ones.
struct AttentionLayer {
  kernels::LayerSpec spec;
  oracle::Attention oracle;
  oracle::Attention exact_oracle;
};
struct AttentionShape {
  int64_t d_model = 16;
  int64_t heads = 2;
  int64_t kv_heads = 2;
  int64_t head_dim = 8;
  bool biases = true;
  kernels::KeyScale key_scale = kernels::KeyScale::kNone;
  float scale = 0;
};
AttentionLayer RandomAttentionLayer(Rng& rng, const AttentionShape& shape,
                                    kernels::DType dtype = kernels::DType::kF32);

// A random linear layer ("weight" [n, d], "bias" [n] when `bias`).
struct LinearLayer {
  kernels::LayerSpec spec;
  oracle::Mat w;
  std::vector<double> b;
};
LinearLayer RandomLinearLayer(Rng& rng, int64_t n, int64_t d, bool bias,
                              kernels::DType dtype = kernels::DType::kF32);

// The first `count` columns / rows of a.
oracle::Mat Columns(const oracle::Mat& a, int64_t count);
oracle::Mat Rows(const oracle::Mat& a, int64_t count);

// max |UᵀU − I| of the columns of u.
double OrthonormalityError(const oracle::Mat& u);

// Expects (gtest EXPECT) the sign rule of DESIGN.md §1 to hold for every column of u: the column sum
// t >= 0, or, when |t| < 1e-6·√L, the entry of largest magnitude (first on ties) >= 0.
void ExpectSignRule(const oracle::Mat& u);

}  // namespace atp::testing

#endif  // ATP_TESTS_KERNELS_TEST_UTIL_H_
