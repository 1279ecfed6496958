#include "oracle.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace atp::oracle {
namespace {

double Dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Replaces zero columns of `cols` (each of length n, the others orthonormal) by unit vectors made
// orthogonal to the rest (Gram–Schmidt, twice for accuracy).
void CompleteOrthonormal(std::vector<std::vector<double>>* cols, const std::vector<bool>& zero) {
  const size_t n = cols->empty() ? 0 : (*cols)[0].size();
  size_t next_unit = 0;
  for (size_t j = 0; j < cols->size(); ++j) {
    if (!zero[j]) continue;
    for (; next_unit < n; ++next_unit) {
      std::vector<double> e(n, 0.0);
      e[next_unit] = 1.0;
      for (int pass = 0; pass < 2; ++pass) {
        for (size_t k = 0; k < cols->size(); ++k) {
          if (k == j || (zero[k] && k > j)) continue;
          const double p = Dot(e, (*cols)[k]);
          for (size_t i = 0; i < n; ++i) e[i] -= p * (*cols)[k][i];
        }
      }
      const double norm = std::sqrt(Dot(e, e));
      if (norm > 1e-6) {
        for (double& v : e) v /= norm;
        (*cols)[j] = e;
        ++next_unit;
        break;
      }
    }
  }
}

void SoftmaxRow(std::vector<double>* row, size_t count) {
  double max = -std::numeric_limits<double>::infinity();
  for (size_t j = 0; j < count; ++j) max = std::max(max, (*row)[j]);
  double sum = 0;
  for (size_t j = 0; j < count; ++j) {
    (*row)[j] = std::exp((*row)[j] - max);
    sum += (*row)[j];
  }
  for (size_t j = 0; j < count; ++j) (*row)[j] /= sum;
  for (size_t j = count; j < row->size(); ++j) (*row)[j] = 0;
}

double ResolvedScale(const Attention& layer) {
  return layer.scale > 0 ? layer.scale : 1.0 / std::sqrt(static_cast<double>(layer.head_dim));
}

// concat_h softmax(s·Q_h·K_gᵀ)·V_g with head h reading kv head h / (H / H_kv); `causal` masks keys
// after the query.
Mat MultiHead(const Attention& layer, const Mat& q, const Mat& k, const Mat& v, bool causal) {
  const int64_t L = q.rows;
  const int64_t dh = layer.head_dim;
  const int64_t group = layer.heads / layer.kv_heads;
  const double scale = ResolvedScale(layer);
  Mat out(L, layer.heads * dh);
  std::vector<double> p(static_cast<size_t>(k.rows));
  for (int64_t h = 0; h < layer.heads; ++h) {
    const int64_t g = h / group;
    for (int64_t i = 0; i < L; ++i) {
      const int64_t keys = causal ? std::min<int64_t>(i + 1, k.rows) : k.rows;
      for (int64_t j = 0; j < k.rows; ++j) {
        double s = 0;
        for (int64_t c = 0; c < dh; ++c) s += q(i, h * dh + c) * k(j, g * dh + c);
        p[j] = scale * s;
      }
      SoftmaxRow(&p, static_cast<size_t>(keys));
      for (int64_t c = 0; c < dh; ++c) {
        double o = 0;
        for (int64_t j = 0; j < k.rows; ++j) o += p[j] * v(j, g * dh + c);
        out(i, h * dh + c) = o;
      }
    }
  }
  return out;
}

}  // namespace

Mat Transpose(const Mat& a) {
  Mat t(a.cols, a.rows);
  for (int64_t i = 0; i < a.rows; ++i) {
    for (int64_t j = 0; j < a.cols; ++j) t(j, i) = a(i, j);
  }
  return t;
}

Mat MatMul(const Mat& a, const Mat& b) {
  Mat c(a.rows, b.cols);
  for (int64_t i = 0; i < a.rows; ++i) {
    for (int64_t k = 0; k < a.cols; ++k) {
      const double aik = a(i, k);
      for (int64_t j = 0; j < b.cols; ++j) c(i, j) += aik * b(k, j);
    }
  }
  return c;
}

Mat MatMulT(const Mat& a, const Mat& b) {
  Mat c(a.rows, b.rows);
  for (int64_t i = 0; i < a.rows; ++i) {
    for (int64_t j = 0; j < b.rows; ++j) {
      double s = 0;
      for (int64_t k = 0; k < a.cols; ++k) s += a(i, k) * b(j, k);
      c(i, j) = s;
    }
  }
  return c;
}

double FrobeniusNorm(const Mat& a) { return std::sqrt(Dot(a.v, a.v)); }

double RelativeError(const std::vector<double>& got, const std::vector<double>& want) {
  if (got.size() != want.size()) return std::numeric_limits<double>::infinity();
  double diff = 0;
  double norm = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    diff += (got[i] - want[i]) * (got[i] - want[i]);
    norm += want[i] * want[i];
  }
  if (norm == 0) return std::sqrt(diff);
  return std::sqrt(diff / norm);
}

double RelativeError(const Mat& got, const Mat& want) {
  if (got.rows != want.rows || got.cols != want.cols) {
    return std::numeric_limits<double>::infinity();
  }
  return RelativeError(got.v, want.v);
}

Svd ThinSvd(const Mat& x) {
  // One-sided (Hestenes) Jacobi on the columns of A = X (tall) or Xᵀ (wide): rotate column pairs
  // until all are orthogonal; then A·V = U·Σ.
  const bool tall = x.rows >= x.cols;
  const Mat a = tall ? x : Transpose(x);
  const int64_t n = a.rows;
  const int64_t m = a.cols;
  std::vector<std::vector<double>> col(m, std::vector<double>(n));
  std::vector<std::vector<double>> vcol(m, std::vector<double>(m, 0.0));
  for (int64_t j = 0; j < m; ++j) {
    for (int64_t i = 0; i < n; ++i) col[j][i] = a(i, j);
    vcol[j][j] = 1.0;
  }
  constexpr int kMaxSweeps = 80;
  for (int sweep = 0; sweep < kMaxSweeps; ++sweep) {
    bool rotated = false;
    for (int64_t p = 0; p + 1 < m; ++p) {
      for (int64_t q = p + 1; q < m; ++q) {
        const double alpha = Dot(col[p], col[p]);
        const double beta = Dot(col[q], col[q]);
        const double gamma = Dot(col[p], col[q]);
        if (gamma == 0 || std::abs(gamma) <= 1e-15 * std::sqrt(alpha * beta)) continue;
        rotated = true;
        const double zeta = (beta - alpha) / (2 * gamma);
        const double t = std::copysign(1.0, zeta) / (std::abs(zeta) + std::sqrt(1 + zeta * zeta));
        const double c = 1 / std::sqrt(1 + t * t);
        const double s = c * t;
        for (int64_t i = 0; i < n; ++i) {
          const double ap = col[p][i];
          const double aq = col[q][i];
          col[p][i] = c * ap - s * aq;
          col[q][i] = s * ap + c * aq;
        }
        for (int64_t i = 0; i < m; ++i) {
          const double vp = vcol[p][i];
          const double vq = vcol[q][i];
          vcol[p][i] = c * vp - s * vq;
          vcol[q][i] = s * vp + c * vq;
        }
      }
    }
    if (!rotated) break;
  }

  std::vector<double> sigma(m);
  for (int64_t j = 0; j < m; ++j) sigma[j] = std::sqrt(Dot(col[j], col[j]));
  std::vector<int64_t> order(m);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t i, int64_t j) { return sigma[i] > sigma[j]; });
  const double largest = m > 0 ? sigma[order[0]] : 0;
  std::vector<std::vector<double>> ucol(m);
  std::vector<std::vector<double>> vsorted(m);
  std::vector<bool> zero(m, false);
  std::vector<double> s(m);
  for (int64_t k = 0; k < m; ++k) {
    const int64_t j = order[k];
    s[k] = sigma[j];
    vsorted[k] = vcol[j];
    ucol[k] = col[j];
    if (sigma[j] <= 1e-14 * largest || sigma[j] == 0) {
      zero[k] = true;
      std::fill(ucol[k].begin(), ucol[k].end(), 0.0);
    } else {
      for (double& e : ucol[k]) e /= sigma[j];
    }
  }
  CompleteOrthonormal(&ucol, zero);

  // A = U_A·Σ·V_Aᵀ; tall: X = A; wide: X = Aᵀ = V_A·Σ·U_Aᵀ.
  const std::vector<std::vector<double>>& left = tall ? ucol : vsorted;
  const std::vector<std::vector<double>>& right = tall ? vsorted : ucol;
  Svd out;
  out.s = s;
  out.u = Mat(x.rows, m);
  out.vt = Mat(m, x.cols);
  for (int64_t k = 0; k < m; ++k) {
    for (int64_t i = 0; i < x.rows; ++i) out.u(i, k) = left[k][i];
    for (int64_t i = 0; i < x.cols; ++i) out.vt(k, i) = right[k][i];
  }
  ApplySignRule(&out.u, &out.vt);
  return out;
}

void ApplySignRule(Mat* u, Mat* vt) {
  const int64_t L = u->rows;
  const double tiny = 1e-6 * std::sqrt(static_cast<double>(L));
  for (int64_t i = 0; i < u->cols; ++i) {
    double t = 0;
    for (int64_t j = 0; j < L; ++j) t += (*u)(j, i);
    if (std::abs(t) < tiny) {
      int64_t best = 0;
      for (int64_t j = 1; j < L; ++j) {
        if (std::abs((*u)(j, i)) > std::abs((*u)(best, i))) best = j;
      }
      t = (*u)(best, i);
    }
    if (t < 0) {
      for (int64_t j = 0; j < L; ++j) (*u)(j, i) = -(*u)(j, i);
      for (int64_t k = 0; k < vt->cols; ++k) (*vt)(i, k) = -(*vt)(i, k);
    }
  }
}

int64_t ChooseRank(const Rank& rank, int64_t length, int64_t width, int64_t backend_max,
                   const std::vector<double>& s, double total) {
  int64_t bound = std::min(length, width);
  if (rank.max_rank > 0) bound = std::min(bound, rank.max_rank);
  if (backend_max > 0) bound = std::min(bound, backend_max);
  int64_t r = bound;
  switch (rank.kind) {
    case Rank::Kind::kFixed:
      r = static_cast<int64_t>(rank.value);
      break;
    case Rank::Kind::kFraction:
      r = static_cast<int64_t>(std::ceil(rank.value * static_cast<double>(length) - 1e-9));
      break;
    case Rank::Kind::kEnergy: {
      double acc = 0;
      r = bound;
      for (size_t i = 0; i < s.size(); ++i) {
        acc += s[i] * s[i];
        if (acc >= rank.value * total) {
          r = static_cast<int64_t>(i) + 1;
          break;
        }
      }
      break;
    }
  }
  return std::max<int64_t>(1, std::min(r, bound));
}

Bases PrincipalBases(const Mat& x, const Rank& rank, int64_t backend_max) {
  const Svd svd = ThinSvd(x);
  Bases b;
  b.total_energy = FrobeniusNorm(x) * FrobeniusNorm(x);
  b.rank = ChooseRank(rank, x.rows, x.cols, backend_max, svd.s, b.total_energy);
  b.u = Mat(x.rows, b.rank);
  b.vt = Mat(b.rank, x.cols);
  double captured = 0;
  for (int64_t i = 0; i < b.rank; ++i) {
    b.s.push_back(svd.s[i]);
    captured += svd.s[i] * svd.s[i];
    for (int64_t j = 0; j < x.rows; ++j) b.u(j, i) = svd.u(j, i);
    for (int64_t k = 0; k < x.cols; ++k) b.vt(i, k) = svd.vt(i, k);
  }
  b.captured_energy = b.total_energy > 0 ? captured / b.total_energy : 1.0;
  return b;
}

double ReconstructionError(const Mat& x, const Mat& u) {
  const Mat coeff = MatMul(Transpose(u), x);  // Uᵀ·X
  const Mat approx = MatMul(u, coeff);
  double err = 0;
  for (size_t i = 0; i < x.v.size(); ++i) err += (x.v[i] - approx.v[i]) * (x.v[i] - approx.v[i]);
  return std::sqrt(err);
}

double OptimalReconstructionError(const std::vector<double>& s, int64_t rank) {
  double tail = 0;
  for (size_t i = static_cast<size_t>(rank); i < s.size(); ++i) tail += s[i] * s[i];
  return std::sqrt(tail);
}

Mat Linear(const Mat& x, const Mat& w, const std::vector<double>& b) {
  Mat y = MatMulT(x, w);
  if (!b.empty()) {
    for (int64_t i = 0; i < y.rows; ++i) {
      for (int64_t j = 0; j < y.cols; ++j) y(i, j) += b[j];
    }
  }
  return y;
}

AtpOut AtpAttention(const Attention& layer, const Mat& x, const Rank& rank, int64_t backend_max) {
  const Bases bases = PrincipalBases(x, rank, backend_max);
  const int64_t L = x.rows;
  const int64_t r = bases.rank;
  const double c = layer.inv_sqrt_len ? 1 / std::sqrt(static_cast<double>(L)) : 1.0;
  // Principal tokens X̃ = c·Uᵀ·X and the bias weights c·Uᵀ·1.
  const Mat tokens = MatMul(Transpose(bases.u), x);
  Mat scaled_tokens(r, x.cols);
  std::vector<double> ones(static_cast<size_t>(r), 0.0);
  for (int64_t i = 0; i < r; ++i) {
    for (int64_t k = 0; k < x.cols; ++k) scaled_tokens(i, k) = c * tokens(i, k);
    for (int64_t j = 0; j < L; ++j) ones[i] += c * bases.u(j, i);
  }
  auto project = [&](const Mat& w, const std::vector<double>& b) {
    Mat out = MatMulT(scaled_tokens, w);
    if (!b.empty()) {
      for (int64_t i = 0; i < r; ++i) {
        for (int64_t j = 0; j < out.cols; ++j) out(i, j) += ones[i] * b[j];
      }
    }
    return out;
  };
  const Mat k = project(layer.wk, layer.bk);
  const Mat v = project(layer.wv, layer.bv);
  const Mat q = Linear(x, layer.wq, layer.bq);
  AtpOut out;
  out.y = Linear(MultiHead(layer, q, k, v, /*causal=*/false), layer.wo, layer.bo);
  out.rank = r;
  out.captured_energy = bases.captured_energy;
  return out;
}

Mat ExactAttention(const Attention& layer, const Mat& x, bool causal) {
  const Mat q = Linear(x, layer.wq, layer.bq);
  const Mat k = Linear(x, layer.wk, layer.bk);
  const Mat v = Linear(x, layer.wv, layer.bv);
  return Linear(MultiHead(layer, q, k, v, causal), layer.wo, layer.bo);
}

Mat LowRankLinear(const Mat& u, const Mat& c, const Mat& w, const std::vector<double>& b) {
  Mat y = MatMul(u, MatMulT(c, w));  // U·(C·Wᵀ)
  if (!b.empty()) {
    for (int64_t i = 0; i < y.rows; ++i) {
      for (int64_t j = 0; j < y.cols; ++j) y(i, j) += b[j];
    }
  }
  return y;
}

Factored LowRankLinearFactored(const Mat& u, const Mat& c, const Mat& w,
                               const std::vector<double>& b) {
  const Mat cw = MatMulT(c, w);
  if (b.empty()) return {u, cw};
  Factored f{Mat(u.rows, u.cols + 1), Mat(cw.rows + 1, cw.cols)};
  for (int64_t i = 0; i < u.rows; ++i) {
    for (int64_t j = 0; j < u.cols; ++j) f.u(i, j) = u(i, j);
    f.u(i, u.cols) = 1;
  }
  for (int64_t i = 0; i < cw.rows; ++i) {
    for (int64_t j = 0; j < cw.cols; ++j) f.c(i, j) = cw(i, j);
  }
  for (int64_t j = 0; j < cw.cols; ++j) f.c(cw.rows, j) = b[j];
  return f;
}

}  // namespace atp::oracle
