// The f64 test oracle of DESIGN.md §1, written independently of the backends: plain row-major
// std::vector<double> matrices, a one-sided Jacobi SVD (no LAPACK), and straightforward loops for
// the principal bases, ATP attention, exact attention and the low-rank linear layer. Slow on
// purpose (clarity over speed): meant for test sizes (L, d up to a few hundred).
//
// Kernel, GPU and service tests compare against it. Thread-safe: pure functions.
#ifndef ATP_TESTS_KERNELS_ORACLE_H_
#define ATP_TESTS_KERNELS_ORACLE_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace atp::oracle {

// A dense row-major rows × cols matrix of doubles.
struct Mat {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<double> v;

  Mat() = default;
  Mat(int64_t r, int64_t c) : rows(r), cols(c), v(static_cast<size_t>(r * c), 0.0) {}
  double& operator()(int64_t i, int64_t j) { return v[static_cast<size_t>(i * cols + j)]; }
  double operator()(int64_t i, int64_t j) const { return v[static_cast<size_t>(i * cols + j)]; }
};

Mat Transpose(const Mat& a);
Mat MatMul(const Mat& a, const Mat& b);   // a·b
Mat MatMulT(const Mat& a, const Mat& b);  // a·bᵀ
double FrobeniusNorm(const Mat& a);
// ‖got − want‖_F / ‖want‖_F (‖got‖_F when want = 0). Infinite when got holds a NaN.
double RelativeError(const Mat& got, const Mat& want);
double RelativeError(const std::vector<double>& got, const std::vector<double>& want);

// Thin SVD x = u·diag(s)·vt with m = min(L, d) triplets, s descending, and the sign rule of
// DESIGN.md §1 applied to every pair (u_i, v_i). Columns of u for σ = 0 complete an orthonormal
// set.
struct Svd {
  Mat u;                  // [L, m]
  std::vector<double> s;  // [m]
  Mat vt;                 // [m, d]
};
Svd ThinSvd(const Mat& x);

// The sign rule on column i of u and row i of vt: t = Σ_j u[j,i]; if |t| < 1e-6·√L, t = the entry
// of largest magnitude (first on ties); negate both when t < 0.
void ApplySignRule(Mat* u, Mat* vt);

// A rank policy (DESIGN.md §1), independent of the kernels' type.
struct Rank {
  enum class Kind { kFixed, kFraction, kEnergy };
  Kind kind = Kind::kFixed;
  double value = 1;
  int64_t max_rank = 0;  // 0 = none
};
// r for an L×d input with singular values s and ‖X‖_F² = total, clipped to
// [1, min(L, d, max_rank, backend_max)].
int64_t ChooseRank(const Rank& rank, int64_t length, int64_t width, int64_t backend_max,
                   const std::vector<double>& s, double total);

struct Bases {
  int64_t rank = 0;
  Mat u;                  // [L, r]
  std::vector<double> s;  // [r]
  Mat vt;                 // [r, d]
  double captured_energy = 0;
  double total_energy = 0;
};
Bases PrincipalBases(const Mat& x, const Rank& rank, int64_t backend_max = 0);

// ‖X − U·Uᵀ·X‖_F for orthonormal columns u.
double ReconstructionError(const Mat& x, const Mat& u);
// The optimum √(Σ_{i>r} σ_i²).
double OptimalReconstructionError(const std::vector<double>& s, int64_t rank);

// y = x·wᵀ + 1·bᵀ (b empty: no bias).
Mat Linear(const Mat& x, const Mat& w, const std::vector<double>& b);

// An attention layer: weights [out, in] as nn.Linear, empty bias = none.
struct Attention {
  int64_t heads = 1;
  int64_t kv_heads = 1;
  int64_t head_dim = 1;
  double scale = 0;  // 0 = 1/√head_dim
  bool inv_sqrt_len = false;
  Mat wq, wk, wv, wo;
  std::vector<double> bq, bk, bv, bo;
};

struct AtpOut {
  Mat y;
  int64_t rank = 0;
  double captured_energy = 0;
};
AtpOut AtpAttention(const Attention& layer, const Mat& x, const Rank& rank,
                    int64_t backend_max = 0);
Mat ExactAttention(const Attention& layer, const Mat& x, bool causal);

// Low-rank linear with X ≈ u·c: y = u·(c·wᵀ) + 1·bᵀ.
Mat LowRankLinear(const Mat& u, const Mat& c, const Mat& w, const std::vector<double>& b);
// The factored output: u' = [u, 1], c' = [c·wᵀ; bᵀ] with a bias, (u, c·wᵀ) without.
struct Factored {
  Mat u, c;
};
Factored LowRankLinearFactored(const Mat& u, const Mat& c, const Mat& w,
                               const std::vector<double>& b);

}  // namespace atp::oracle

#endif  // ATP_TESTS_KERNELS_ORACLE_H_
