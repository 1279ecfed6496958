#include "cpu/principal_bases_cpu.h"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"

namespace atp::kernels::cpu {
namespace {

// kAuto takes the exact SVD up to this min(L, d): dgesdd is then a few milliseconds at most.
constexpr int64_t kExactWidth = 128;
// Subspace iteration: at least this many power iterations (each X·Z then Xᵀ·Q), at most the
// second; between them it stops once another iteration gains less than kGainTolerance of the
// remaining error ||X||² − Σ_{i<=r} σ̃_i² (or less than the f32 noise floor kGainFloor·||X||²).
// With a per-iteration error ratio ρ the error left is then at most kGainTolerance·ρ/(1−ρ) of the
// optimum, well inside the 1% of DESIGN.md §1 (tests check it on flat and gapped spectra).
constexpr int kMinPowerIterations = 1;
constexpr int kMaxPowerIterations = 12;
constexpr double kGainTolerance = 1e-3;
constexpr double kGainFloor = 1e-6;
// The energy policy on the randomized path starts with this rank and grows the block (at least 2×,
// more when the Ritz values show a slow spectrum) until they reach the wanted energy.
constexpr int64_t kEnergyStartRank = 32;

absl::Status LapackError(absl::string_view routine, lapack_int info) {
  return absl::InternalError(absl::StrCat("LAPACK ", routine, " failed with info ", info,
                                          info > 0 ? " (did not converge)" : " (bad argument)"));
}

// Applies the sign rule of DESIGN.md §1 to column i of u (rows × ld) and row i of vt (ld_vt).
template <typename T>
void ApplySignRule(T* u, int64_t rows, int64_t ld_u, int64_t cols, T* vt, int64_t ld_vt,
                   int64_t width) {
  const double tiny = 1e-6 * std::sqrt(static_cast<double>(rows));
  for (int64_t i = 0; i < cols; ++i) {
    double t = 0.0;
    for (int64_t j = 0; j < rows; ++j) t += u[j * ld_u + i];
    if (std::abs(t) < tiny) {
      int64_t best = 0;
      for (int64_t j = 1; j < rows; ++j) {
        if (std::abs(u[j * ld_u + i]) > std::abs(u[best * ld_u + i])) best = j;
      }
      t = u[best * ld_u + i];
    }
    if (t < 0) {
      for (int64_t j = 0; j < rows; ++j) u[j * ld_u + i] = -u[j * ld_u + i];
      for (int64_t k = 0; k < width; ++k) vt[i * ld_vt + k] = -vt[i * ld_vt + k];
    }
  }
}

double SquaredNorm(const float* x, int64_t n) {
  // Blocked f64 sums: one long running sum would lose digits at L·d ~ 1e8.
  double total = 0.0;
  constexpr int64_t kBlock = 4096;
  for (int64_t b = 0; b < n; b += kBlock) {
    double part = 0.0;
    const int64_t end = std::min(n, b + kBlock);
    for (int64_t i = b; i < end; ++i) part += static_cast<double>(x[i]) * x[i];
    total += part;
  }
  return total;
}

void FillEnergy(BasesF32* out, const double* sigma) {
  double captured = 0.0;
  for (int64_t i = 0; i < out->rank; ++i) captured += sigma[i] * sigma[i];
  out->captured_energy = out->total_energy > 0 ? std::min(1.0, captured / out->total_energy) : 1.0;
}

// Bases of X = 0: σ = 0 and the first r unit vectors, which obey the sign rule.
BasesF32 ZeroBases(int64_t length, int64_t width, int64_t rank) {
  BasesF32 out;
  out.rank = rank;
  out.u.assign(static_cast<size_t>(length * rank), 0.0f);
  out.vt.assign(static_cast<size_t>(rank * width), 0.0f);
  out.s.assign(static_cast<size_t>(rank), 0.0);
  for (int64_t i = 0; i < rank; ++i) {
    out.u[i * rank + i] = 1.0f;
    out.vt[i * width + i] = 1.0f;
  }
  out.captured_energy = 1.0;
  return out;
}

// The rank to keep from descending squared singular values; nullopt when the energy policy wants
// more than the first `known` of them hold (and `known` is below the policy's bound).
std::optional<int64_t> RankFrom(const BasesRequest& req, absl::Span<const double> sigma_sq,
                                int64_t known, double total) {
  const int64_t bound = RankUpperBound(req.rank, req.length, req.width, req.max_rank);
  known = std::min<int64_t>(known, static_cast<int64_t>(sigma_sq.size()));
  if (req.rank.kind == RankPolicy::Kind::kEnergy && known < bound) {
    double acc = 0.0;
    for (int64_t i = 0; i < known; ++i) acc += sigma_sq[i];
    if (acc < req.rank.value * total) return std::nullopt;
  }
  return ResolveRank(req.rank, req.length, req.width, req.max_rank, sigma_sq.subspan(0, known),
                     total);
}

// Exact: dgesdd on an f64 copy. The row-major L×d buffer is the column-major d×L matrix Xᵀ, so
// LAPACK's "u" of Xᵀ is our Vᵀ (row-major r×d) and its "vt" is our U (row-major L×m): no
// transposes.
absl::StatusOr<BasesF32> ExactBases(const BasesRequest& req, double total) {
  const int64_t L = req.length;
  const int64_t d = req.width;
  const int64_t m = std::min(L, d);
  std::vector<double> a(static_cast<size_t>(L * d));
  std::copy(req.x, req.x + L * d, a.begin());
  std::vector<double> sigma(static_cast<size_t>(m));
  std::vector<double> vt_of_xt(static_cast<size_t>(d * m));  // our Vᵀ, [m, d]
  std::vector<double> u_of_xt(static_cast<size_t>(m * L));   // our U, [L, m]
  const lapack_int info =
      LAPACKE_dgesdd(LAPACK_COL_MAJOR, 'S', static_cast<lapack_int>(d), static_cast<lapack_int>(L),
                     a.data(), static_cast<lapack_int>(d), sigma.data(), vt_of_xt.data(),
                     static_cast<lapack_int>(d), u_of_xt.data(), static_cast<lapack_int>(m));
  if (info != 0) return LapackError("dgesdd", info);

  std::vector<double> sigma_sq(sigma.size());
  for (size_t i = 0; i < sigma.size(); ++i) sigma_sq[i] = sigma[i] * sigma[i];
  const int64_t r = *RankFrom(req, sigma_sq, m, total);
  ApplySignRule(u_of_xt.data(), L, m, r, vt_of_xt.data(), d, d);

  BasesF32 out;
  out.method = DecomposeMethod::kExact;
  out.rank = r;
  out.total_energy = total;
  out.u.resize(static_cast<size_t>(L * r));
  for (int64_t j = 0; j < L; ++j) {
    for (int64_t i = 0; i < r; ++i) out.u[j * r + i] = static_cast<float>(u_of_xt[j * m + i]);
  }
  out.vt.assign(vt_of_xt.begin(), vt_of_xt.begin() + r * d);
  out.s.assign(sigma.begin(), sigma.begin() + r);
  FillEnergy(&out, sigma.data());
  return out;
}

// Standard normal numbers from a counter-based generator (splitmix64 + Box–Muller), so a seed
// gives the same start block on every platform and standard library.
void FillGaussian(uint64_t seed, float* out, int64_t n) {
  uint64_t state = seed;
  auto next = [&state] {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  for (int64_t i = 0; i < n; i += 2) {
    // Uniforms in (0, 1]: 53 random bits, never 0, so the logarithm is finite.
    const double u1 = (static_cast<double>(next() >> 11) + 1.0) * 0x1.0p-53;
    const double u2 = static_cast<double>(next() >> 11) * 0x1.0p-53;
    const double radius = std::sqrt(-2.0 * std::log(u1));
    const double angle = 2.0 * std::numbers::pi * u2;
    out[i] = static_cast<float>(radius * std::cos(angle));
    if (i + 1 < n) out[i + 1] = static_cast<float>(radius * std::sin(angle));
  }
}

// Householder QR: robust to any conditioning, including rank deficiency, but its panel
// factorisation is level-2 BLAS.
absl::Status HouseholderQr(float* a, int64_t rows, int64_t cols, std::vector<float>* tau) {
  tau->resize(static_cast<size_t>(cols));
  const auto m = static_cast<lapack_int>(rows);
  const auto n = static_cast<lapack_int>(cols);
  lapack_int info = LAPACKE_sgeqrf(LAPACK_COL_MAJOR, m, n, a, m, tau->data());
  if (info != 0) return LapackError("sgeqrf", info);
  info = LAPACKE_sorgqr(LAPACK_COL_MAJOR, m, n, n, a, m, tau->data());
  if (info != 0) return LapackError("sorgqr", info);
  return absl::OkStatus();
}

// G = AᵀA in f64 (upper triangle, column-major cols×cols) for the column-major rows×cols f32
// matrix a: row blocks are converted on the fly (no f64 copy of a) and their partial Gram matrices
// summed, one per thread. The f64 Gram keeps an ill-conditioned a meaningful.
std::vector<double> Gram(const float* a, int64_t rows, int64_t cols, const CpuEnv& env) {
  constexpr int64_t kRowBlock = 256;
  const int64_t blocks = (rows + kRowBlock - 1) / kRowBlock;
  const int workers = static_cast<int>(
      std::clamp<int64_t>(std::min<int64_t>(env.threads, rows * cols * cols >> 21), 1, blocks));
  std::vector<std::vector<double>> partial(static_cast<size_t>(workers),
                                           std::vector<double>(static_cast<size_t>(cols * cols)));
  ParallelForDynamic(blocks, workers, [&](int worker, int64_t block_index) {
    const int64_t i0 = block_index * kRowBlock;
    const int64_t n = std::min(kRowBlock, rows - i0);
    std::vector<double> block(static_cast<size_t>(n * cols));
    for (int64_t j = 0; j < cols; ++j) {
      for (int64_t i = 0; i < n; ++i) block[j * n + i] = a[j * rows + i0 + i];
    }
    cblas_dsyrk(CblasColMajor, CblasUpper, CblasTrans, static_cast<blasint>(cols),
                static_cast<blasint>(n), 1.0, block.data(), static_cast<blasint>(n), 1.0,
                partial[worker].data(), static_cast<blasint>(cols));
  });
  for (int w = 1; w < workers; ++w) {
    for (size_t i = 0; i < partial[0].size(); ++i) partial[0][i] += partial[w][i];
  }
  return std::move(partial[0]);
}

// One CholeskyQR pass: G = AᵀA = RᵀR, A ← A·R⁻¹ (level-3 BLAS only, rows split over the threads).
// Returns false, leaving a unchanged, when Cholesky breaks down or a pivot sits at the level of
// f32 rounding (a direction that a cannot resolve).
bool CholeskyQrPass(float* a, int64_t rows, int64_t cols, const CpuEnv& env) {
  std::vector<double> gram = Gram(a, rows, cols, env);
  const lapack_int info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'U', static_cast<lapack_int>(cols),
                                         gram.data(), static_cast<lapack_int>(cols));
  if (info != 0) return false;
  double largest = 0.0;
  double smallest = std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < cols; ++i) {
    const double pivot = std::abs(gram[i * cols + i]);
    largest = std::max(largest, pivot);
    smallest = std::min(smallest, pivot);
  }
  constexpr double kMinPivotRatio = 1e-6;  // ≈ 16 f32 ulps
  if (!(smallest > kMinPivotRatio * largest)) return false;
  std::vector<float> r(static_cast<size_t>(cols * cols), 0.0f);
  for (int64_t j = 0; j < cols; ++j) {
    for (int64_t i = 0; i <= j; ++i) r[j * cols + i] = static_cast<float>(gram[j * cols + i]);
  }
  // Rows of A·R⁻¹ are independent: split them (multiples of 16 rows) over the threads.
  constexpr int64_t kAlign = 16;
  const int64_t threads = rows * cols * cols < (int64_t{1} << 21) ? 1 : env.threads;
  const int64_t chunk = ((rows + threads - 1) / threads + kAlign - 1) / kAlign * kAlign;
  ParallelFor((rows + chunk - 1) / chunk, static_cast<int>(threads),
              [&](int64_t begin, int64_t end) {
                for (int64_t part = begin; part < end; ++part) {
                  const int64_t i0 = part * chunk;
                  cblas_strsm(CblasColMajor, CblasRight, CblasUpper, CblasNoTrans, CblasNonUnit,
                              static_cast<blasint>(std::min(chunk, rows - i0)),
                              static_cast<blasint>(cols), 1.0f, r.data(),
                              static_cast<blasint>(cols), a + i0, static_cast<blasint>(rows));
                }
              });
  return true;
}

// Overwrites the column-major rows×cols matrix a (ld = rows) with an orthonormal basis of its
// column space. CholeskyQR2 with f64 Gram matrices: the first pass brings any a that f32 can
// resolve close to orthonormal, the second makes it orthonormal to f32 precision; all level-3
// BLAS. Householder QR (level-2 panels, single-threaded, slower) when Cholesky breaks down.
absl::Status Orthonormalize(float* a, int64_t rows, int64_t cols, const CpuEnv& env,
                            std::vector<float>* scratch) {
  if (CholeskyQrPass(a, rows, cols, env) && CholeskyQrPass(a, rows, cols, env)) {
    return absl::OkStatus();
  }
  return HouseholderQr(a, rows, cols, scratch);
}

// Σ of the `rank` largest eigenvalues of B·Bᵀ (B is k×d row-major), i.e. Σ_{i<=rank} σ̃_i².
absl::StatusOr<double> TopRitzEnergy(const std::vector<float>& b, int64_t k, int64_t d,
                                     int64_t rank, const CpuEnv& env) {
  std::vector<float> gram(static_cast<size_t>(k * k));
  ParallelGemm(env, false, true, k, k, d, 1.0f, b.data(), d, b.data(), d, 0.0f, gram.data(), k);
  std::vector<double> g(gram.begin(), gram.end());
  std::vector<double> w(static_cast<size_t>(k));
  const lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'N', 'U', static_cast<lapack_int>(k),
                                         g.data(), static_cast<lapack_int>(k), w.data());
  if (info != 0) return LapackError("dsyevd", info);
  double top = 0.0;
  for (int64_t i = 0; i < rank; ++i) top += std::max(0.0, w[k - 1 - i]);  // ascending order
  return top;
}

// Block subspace iteration with k columns. On return qt (k×L, row-major) holds orthonormal rows
// spanning the converged left subspace and b = Qᵀ·X (k×d, row-major).
absl::Status SubspaceIteration(const BasesRequest& req, int64_t k, int64_t rank, double total,
                               const ExecContext& ctx, const CpuEnv& env, std::vector<float>* qt,
                               std::vector<float>* b) {
  const int64_t L = req.length;
  const int64_t d = req.width;
  // zt (k×d row-major) is the column-major d×k block Z; qt likewise is Q (L×k column-major), which
  // is what LAPACK's QR wants, and both products below are plain row-major GEMMs with X.
  std::vector<float> zt(static_cast<size_t>(k * d));
  FillGaussian(req.seed, zt.data(), k * d);
  qt->resize(static_cast<size_t>(k * L));
  b->resize(static_cast<size_t>(k * d));
  std::vector<float> tau;
  double previous = -1.0;
  for (int it = 0;; ++it) {
    if (auto s = ctx.Check(); !s.ok()) return s;
    ParallelGemm(env, false, true, k, L, d, 1.0f, zt.data(), d, req.x, d, 0.0f, qt->data(),
                 L);  // Y = X·Z
    if (auto s = Orthonormalize(qt->data(), L, k, env, &tau); !s.ok()) return s;
    ParallelGemm(env, false, false, k, d, L, 1.0f, qt->data(), L, req.x, d, 0.0f, b->data(),
                 d);  // B = QᵀX
    if (it >= kMinPowerIterations) {
      if (it >= kMaxPowerIterations) break;
      absl::StatusOr<double> energy = TopRitzEnergy(*b, k, d, rank, env);
      if (!energy.ok()) return energy.status();
      const double gain = *energy - previous;
      if (previous >= 0 &&
          gain <= kGainTolerance * std::max(0.0, total - *energy) + kGainFloor * total) {
        break;
      }
      previous = *energy;
    } else if (it + 1 == kMinPowerIterations) {
      absl::StatusOr<double> energy = TopRitzEnergy(*b, k, d, rank, env);
      if (!energy.ok()) return energy.status();
      previous = *energy;
    }
    std::copy(b->begin(), b->end(), zt.begin());
    if (auto s = Orthonormalize(zt.data(), d, k, env, &tau); !s.ok()) return s;  // Z = orth(XᵀQ)
  }
  return absl::OkStatus();
}

// Rayleigh–Ritz on the subspace: B = Ũ·Σ̃·Ṽᵀ (dgesdd in f64), U = Q·Ũ. Same transposition trick
// as ExactBases: the row-major k×d B is the column-major d×k Bᵀ.
struct Ritz {
  std::vector<double> sigma;    // [k]
  std::vector<double> vt;       // [k, d] row-major
  std::vector<double> u_small;  // [k, k] row-major
};
absl::StatusOr<Ritz> RayleighRitz(const std::vector<float>& b, int64_t k, int64_t d) {
  Ritz ritz;
  std::vector<double> a(b.begin(), b.end());
  ritz.sigma.resize(static_cast<size_t>(k));
  ritz.vt.resize(static_cast<size_t>(d * k));
  ritz.u_small.resize(static_cast<size_t>(k * k));
  const lapack_int info =
      LAPACKE_dgesdd(LAPACK_COL_MAJOR, 'S', static_cast<lapack_int>(d), static_cast<lapack_int>(k),
                     a.data(), static_cast<lapack_int>(d), ritz.sigma.data(), ritz.vt.data(),
                     static_cast<lapack_int>(d), ritz.u_small.data(), static_cast<lapack_int>(k));
  if (info != 0) return LapackError("dgesdd", info);
  return ritz;
}

// Randomized bases for a known target rank, or for the energy policy a trial rank. When the
// energy policy needs more than `trial` bases, `bases` stays empty and `next_trial` says how many
// to try next.
struct RandomizedOutcome {
  std::optional<BasesF32> bases;
  int64_t next_trial = 0;
};
absl::StatusOr<RandomizedOutcome> RandomizedBases(const BasesRequest& req, int64_t trial,
                                                  double total, const ExecContext& ctx,
                                                  const CpuEnv& env) {
  const int64_t L = req.length;
  const int64_t d = req.width;
  const int64_t k = SubspaceBlock(trial, L, d);
  std::vector<float> qt, b;
  if (auto s = SubspaceIteration(req, k, trial, total, ctx, env, &qt, &b); !s.ok()) return s;
  if (auto s = ctx.Check(); !s.ok()) return s;
  absl::StatusOr<Ritz> ritz = RayleighRitz(b, k, d);
  if (!ritz.ok()) return ritz.status();

  std::vector<double> sigma_sq(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) sigma_sq[i] = ritz->sigma[i] * ritz->sigma[i];
  const std::optional<int64_t> rank = RankFrom(req, sigma_sq, trial, total);
  RandomizedOutcome outcome;
  if (!rank.has_value()) {
    // Every direction beyond the subspace carries at most σ̃_k², so at least deficit/σ̃_k² more
    // are needed: jump there (and at least double) rather than creep up on a slow spectrum.
    double captured = 0.0;
    for (double v : sigma_sq) captured += v;
    const double deficit = req.rank.value * total - captured;
    const double smallest = std::max(sigma_sq.back(), 1e-300);
    const double more = deficit > 0 ? std::ceil(deficit / smallest) : 0.0;
    const int64_t bound = RankUpperBound(req.rank, L, d, req.max_rank);
    outcome.next_trial = static_cast<int64_t>(
        std::min<double>(static_cast<double>(bound), std::max<double>(2.0 * trial, k + more)));
    return outcome;
  }
  const int64_t r = *rank;

  BasesF32 out;
  out.method = DecomposeMethod::kRandomized;
  out.rank = r;
  out.total_energy = total;
  std::vector<float> u_small(static_cast<size_t>(k * r));
  for (int64_t a = 0; a < k; ++a) {
    for (int64_t i = 0; i < r; ++i) {
      u_small[a * r + i] = static_cast<float>(ritz->u_small[a * k + i]);
    }
  }
  out.u.resize(static_cast<size_t>(L * r));
  ParallelGemm(env, true, false, L, r, k, 1.0f, qt.data(), L, u_small.data(), r, 0.0f, out.u.data(),
               r);
  out.vt.assign(ritz->vt.begin(), ritz->vt.begin() + r * d);
  out.s.assign(ritz->sigma.begin(), ritz->sigma.begin() + r);
  ApplySignRule(out.u.data(), L, r, r, out.vt.data(), d, d);
  FillEnergy(&out, ritz->sigma.data());
  outcome.bases = std::move(out);
  return outcome;
}

}  // namespace

int64_t SubspaceBlock(int64_t rank, int64_t length, int64_t width) {
  const int64_t oversampling = std::max<int64_t>(10, rank / 4);
  return std::min(std::min(length, width), rank + oversampling);
}

bool AutoPrefersExact(int64_t length, int64_t width, int64_t block) {
  const int64_t m = std::min(length, width);
  // The exact SVD (f64, one thread) costs O(L·d·m) whatever r is; the subspace iteration O(L·d·k)
  // per iteration, on every thread. Measured at L = 1024, d = 1024 on 2 cores: k = 320 took 141 ms
  // against 467 ms exact, so the subspace must approach the full width before exact wins.
  return m <= kExactWidth || 4 * block >= 3 * m;
}

absl::StatusOr<BasesF32> ComputePrincipalBases(const BasesRequest& req, const ExecContext& ctx,
                                               const CpuEnv& env) {
  if (auto s = ctx.Check(); !s.ok()) return s;
  const int64_t L = req.length;
  const int64_t d = req.width;
  const double total = SquaredNorm(req.x, L * d);
  const int64_t bound = RankUpperBound(req.rank, L, d, req.max_rank);
  if (total == 0.0) {
    return ZeroBases(L, d, ResolveRank(req.rank, L, d, req.max_rank, {}, total));
  }
  const bool energy = req.rank.kind == RankPolicy::Kind::kEnergy;
  // Fixed and fraction policies know r before the decomposition; the energy policy tries a rank.
  int64_t trial = energy ? std::min(bound, kEnergyStartRank)
                         : ResolveRank(req.rank, L, d, req.max_rank, {}, total);

  for (;;) {
    const int64_t block = SubspaceBlock(trial, L, d);
    const bool exact = req.method == DecomposeMethod::kExact ||
                       (req.method == DecomposeMethod::kAuto && AutoPrefersExact(L, d, block));
    if (exact) return ExactBases(req, total);
    absl::StatusOr<RandomizedOutcome> outcome = RandomizedBases(req, trial, total, ctx, env);
    if (!outcome.ok()) return outcome.status();
    if (outcome->bases.has_value()) return *std::move(outcome->bases);
    trial = outcome->next_trial;  // the energy policy wants more bases: grow the block
  }
}

}  // namespace atp::kernels::cpu
