#include "cuda/basis.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cuda/cuda_status.h"
#include "cuda/device_kernels.h"

namespace atp::kernels::cuda {
namespace {

// Products with G on the f32 path go through bf16 parts of G: bf16 keeps f32's range, so G of
// an f16 input cannot overflow.
constexpr DevType kSplitType = DevType::kBF16;
constexpr int kMaxInfos = 128;

double UnitRoundoff(DevType t) { return t == DevType::kF64 ? 0x1.0p-53 : 0x1.0p-24; }

absl::Status Launched(cudaError_t err, const char* what) {
  return DeviceContext::Launched(err, what);
}

// An f32/f64 matrix as a sum of up to three half-precision parts.
struct SplitMatrix {
  DevType type = kSplitType;
  int levels = 0;
  DeviceBuffer parts[3];
};

absl::StatusOr<SplitMatrix> SplitOf(DeviceContext& ctx, DevType src_t, const void* src, int64_t n,
                                    DevType half_t, int levels) {
  SplitMatrix s;
  s.type = half_t;
  s.levels = levels;
  for (int l = 0; l < levels; ++l) {
    ATP_ASSIGN_OR_RETURN(s.parts[l], ctx.Alloc(half_t, n));
  }
  ATP_RETURN_IF_ERROR(Launched(
      LaunchSplit(src_t, src, half_t, s.parts[0].get(), levels > 1 ? s.parts[1].get() : nullptr,
                  levels > 2 ? s.parts[2].get() : nullptr, levels, n, ctx.stream()),
      "split"));
  return s;
}

// C (f32) = op(A)·op(B) + beta·C from the split parts, keeping the terms with i + j < levels
// (about 8 more significant bits per level).
absl::Status SplitGemm(DeviceContext& ctx, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                       const SplitMatrix& a, int64_t lda, const SplitMatrix& b, int64_t ldb,
                       int levels, void* c, int64_t ldc, double beta) {
  levels = std::min({levels, a.levels, b.levels});
  bool first = true;
  // Smallest terms first, so that the large ones are added to an accurate remainder.
  for (int sum = levels - 1; sum >= 0; --sum) {
    for (int i = 0; i <= sum; ++i) {
      const int j = sum - i;
      ATP_RETURN_IF_ERROR(Gemm(ctx, ta, tb, m, n, k, 1.0, ConstMat{a.type, a.parts[i].get(), lda},
                               ConstMat{b.type, b.parts[j].get(), ldb}, first ? beta : 1.0,
                               Mat{DevType::kF32, c, ldc}));
      first = false;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<double>> ToHostDoubles(DeviceContext& ctx, DevType t, const void* src,
                                                  int64_t n) {
  std::vector<double> out(static_cast<size_t>(n));
  if (n == 0) return out;
  if (t == DevType::kF64) {
    ATP_RETURN_IF_ERROR(ctx.CopyToHost(out.data(), src, n * sizeof(double)));
  } else if (t == DevType::kF32) {
    std::vector<float> tmp(static_cast<size_t>(n));
    ATP_RETURN_IF_ERROR(ctx.CopyToHost(tmp.data(), src, n * sizeof(float)));
    std::copy(tmp.begin(), tmp.end(), out.begin());
  } else {
    return absl::InternalError("ToHostDoubles: want f32/f64");
  }
  return out;
}

// The rest of a CholeskyQR pass once w holds the Gram matrix of y (GramUpper): shifts it by
// shift·trace, factors it (the factor overwrites w) and solves.
absl::Status CholeskyQrWithGram(DeviceContext& ctx, DevType t, int64_t n, int64_t other,
                                bool columns, void* y, void* w, double shift, int* info, bool own) {
  ATP_RETURN_IF_ERROR(
      Launched(LaunchShiftDiagonalByTrace(t, w, n, n, shift, ctx.stream()), "shift"));
  ATP_RETURN_IF_ERROR(Potrf(ctx, t, n, w, info, own));
  return SolveCholeskyFactor(ctx, t, n, w, columns, other, y, own);
}

// Orthonormalises in place the columns of y [other, n] (columns = true) or the rows of
// y [n, other] (columns = false) by `passes` CholeskyQR passes; the first pass shifts the Gram
// matrix by first_shift·trace so that an ill-conditioned y does not break the Cholesky
// factorisation, later passes by 10u·trace. Writes `passes` info values.
absl::Status CholeskyQr(DeviceContext& ctx, DevType t, int64_t n, int64_t other, bool columns,
                        void* y, int passes, double first_shift, int* infos, bool own) {
  ATP_ASSIGN_OR_RETURN(DeviceBuffer w, ctx.Alloc(t, n * n));
  for (int pass = 0; pass < passes; ++pass) {
    ATP_RETURN_IF_ERROR(GramUpper(ctx, t, n, other, columns, y, w.get()));
    ATP_RETURN_IF_ERROR(CholeskyQrWithGram(ctx, t, n, other, columns, y, w.get(),
                                           pass == 0 ? first_shift : 10.0 * UnitRoundoff(t),
                                           infos + pass, own));
  }
  return absl::OkStatus();
}

// The state of one ComputePrincipalBases call.
class BasisRun {
 public:
  BasisRun(DeviceContext& ctx, ConstMat x, int64_t length, int64_t width,
           const BasisOptions& options)
      : ctx_(ctx),
        x_(x),
        l_(length),
        d_(width),
        m_(std::min(length, width)),
        tall_(length >= width),
        opt_(options) {}

  absl::StatusOr<DeviceBasis> Run();
  // After Run(): the shifted iteration failed its check and the result is empty; whether
  // options.beside was called.
  bool shift_rejected() const { return shift_rejected_; }
  bool beside_started() const { return beside_started_; }

 private:
  void Mark(const char* stage) const {
    if (opt_.mark) opt_.mark(stage);
  }
  // `count` fresh info slots (the last ones are reused if a run ever needs more than exist).
  int* NextInfos(int count) {
    int* p = infos_.as<int>() + std::min(info_count_, kMaxInfos - count);
    info_count_ = std::min(info_count_ + count, kMaxInfos);
    return p;
  }
  absl::Status CheckInfos(const char* stage);
  absl::Status CheckInfoValues(const int* infos, const char* stage) const;
  // Queues Xᵀ1 into column_sums_ (allocated by the caller on the main stream) on the current
  // stream.
  absl::Status ColumnSums();
  absl::Status Gram();
  // Whether options.beside is still to be called.
  bool BesideDue() const {
    return !beside_started_ && opt_.beside && opt_.beside_at != BasisOptions::BesideAt::kNever;
  }
  // Starts options.beside once.
  absl::Status Beside();
  // Options.beside with the side stream already forked (once, as Beside).
  absl::Status BesideForked();
  // The orthonormalisation before Rayleigh–Ritz of y [m, k] (f64) after its first CholeskyQR
  // pass; spare is a buffer of y's size (the two may be swapped).
  absl::Status FinalOrthonormalisation(DeviceBuffer& y, DeviceBuffer& spare);
  absl::Status Exact();
  absl::Status Randomized();
  absl::Status ApplyG(const void* q, int split, bool shifted, void* out);
  // Computes the other side (U when L >= d, else V) from e_, orthonormalised, into z_.
  absl::Status OtherSide();
  // rows_of_e [rows, m] (type ct_) times X from the eigen side's side: [rows, L] = rows_of_e·Xᵀ
  // when L >= d, else [rows, d] = rows_of_e·X; f64 when the products with X are, else f32 from two
  // parts of X's own type. Returns the product and its type.
  absl::StatusOr<std::pair<DevType, DeviceBuffer>> RowsTimesX(const void* rows_of_e, int64_t rows);
  // The sign rule's fallback: the largest entry of u_i for the flagged i (r values, 0 elsewhere),
  // from U's rows when they are at hand, else from X·v_i for those i only.
  absl::StatusOr<std::vector<double>> LargestEntriesOfU(const std::vector<int64_t>& flagged,
                                                        bool have_u);
  // X = 0: σ = 0 and the first r unit vectors on both sides (they obey the sign rule), as the
  // CPU backend does.
  absl::StatusOr<DeviceBasis> ZeroBases(int64_t rank);

  DeviceContext& ctx_;
  ConstMat x_;
  const int64_t l_, d_, m_;
  const bool tall_;
  const BasisOptions& opt_;
  // The small factorisations (CholeskyQR, eigensolves, the Ritz vectors, the other side) are f64
  // on every path: their flops are few and f64 keeps rank-deficient inputs stable. The Gram matrix
  // and the products with it and with X are f64 for f32 inputs and the exact method, f32 (from
  // tensor-core products, with bf16 splits) for f16/bf16 inputs.
  DevType ct_ = DevType::kF64;
  DevType gt_ = DevType::kF32;
  ConstMat xg_;  // X in the precision of the products with X
  DeviceBuffer x64_;
  DeviceBuffer g_;        // Gram [m, m]
  SplitMatrix g_split_;   // f32 path
  DeviceBuffer scalars_;  // f64: [0] trace(G), [1] shift of G, [2..] scratch
  DeviceBuffer infos_;
  int info_count_ = 0;
  bool beside_started_ = false;
  int64_t k_ = 0;         // subspace size (randomized) or m (exact)
  DeviceBuffer eigvecs_;  // rows: eigenvectors, ascending [n_eig, n_eig]
  DeviceBuffer lambda_;   // [n_eig]
  DeviceBuffer q_;        // randomized: orthonormal basis [m, k]
  int64_t rank_ = 0;
  int products_ = 0;
  int cholqr_passes_ = 0;
  int newton_schulz_steps_ = 0;
  double shift_ = 0.0;
  bool shift_rejected_ = false;
  // Xᵀ1 [d] for the sign rule (tall inputs without U), computed on the side stream beside the
  // eigensolve (empty until then; the main stream joins the side stream before reading it).
  DeviceBuffer column_sums_;
  DeviceBuffer e_;  // eigen side rows [rank, m]
  DeviceBuffer z_;  // other side rows [rank, L or d]
  std::vector<double> sigma_;
};

absl::Status BasisRun::CheckInfos(const char* stage) {
  if (info_count_ == 0) return absl::OkStatus();
  std::vector<int> infos(info_count_);
  ATP_RETURN_IF_ERROR(ctx_.CopyToHost(infos.data(), infos_.get(), info_count_ * sizeof(int)));
  return CheckInfoValues(infos.data(), stage);
}

absl::Status BasisRun::ColumnSums() {
  ATP_ASSIGN_OR_RETURN(DeviceBuffer partial, ctx_.Alloc(DevType::kF64, ColumnSumsChunks(l_) * d_));
  return Launched(LaunchColumnSums(x_.type, x_.data, x_.ld, l_, d_, partial.as<double>(),
                                   column_sums_.as<double>(), ctx_.stream()),
                  "column sums");
}

absl::Status BasisRun::CheckInfoValues(const int* infos, const char* stage) const {
  for (int i = 0; i < info_count_; ++i) {
    if (infos[i] != 0) {
      return absl::InternalError(absl::StrCat("principal bases: factorisation ", i, " of the ",
                                              stage, " stage failed with info ", infos[i],
                                              " (L=", l_, ", d=", d_, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status BasisRun::Gram() {
  if (gt_ == DevType::kF64) {
    ATP_ASSIGN_OR_RETURN(x64_, ctx_.Alloc(DevType::kF64, l_ * d_));
    ATP_RETURN_IF_ERROR(Launched(LaunchCopy2D(x_.type, x_.data, x_.ld, DevType::kF64, x64_.get(),
                                              d_, l_, d_, 1.0, ctx_.stream()),
                                 "x to f64"));
    xg_ = ConstMat{DevType::kF64, x64_.get(), d_};
  } else {
    xg_ = x_;
  }
  ATP_ASSIGN_OR_RETURN(g_, ctx_.Alloc(gt_, m_ * m_));
  const Mat g{gt_, g_.get(), m_};
  // G = AᵀA with A = X (tall) or Xᵀ (wide). For an even m >= kBlockedGramMin in c x c blocks
  // G_ab = A_aᵀA_b (c = 4 where m is a multiple of 4, else 2): the diagonal blocks in one batched
  // GEMM, the blocks above it in one batched GEMM per block diagonal, those below by transposes —
  // 10/16 of the full product's flops with 4 x 4 blocks, 3/4 with 2 x 2 (bench/cuda/NOTES.md v11).
  constexpr int64_t kBlockedGramMin = 1024;
  const int64_t blocks = m_ % 4 == 0 ? 4 : 2;
  const int64_t inner = tall_ ? l_ : d_;
  if (m_ % blocks != 0 || m_ < kBlockedGramMin) {
    ATP_RETURN_IF_ERROR(Gemm(ctx_, tall_, !tall_, m_, m_, inner, 1.0, xg_, xg_, 0.0, g));
  } else {
    const int64_t h = m_ / blocks;
    const int64_t step = tall_ ? h : h * d_;  // elements from A's block a to block a + 1
    const size_t esize = DevTypeSize(gt_);
    char* g_bytes = static_cast<char*>(g_.get());
    for (int64_t s = 0; s < blocks; ++s) {  // block diagonal s: blocks (a, a + s)
      const ConstMat b{xg_.type,
                       static_cast<const char*>(xg_.data) + s * step * DevTypeSize(xg_.type),
                       xg_.ld};
      ATP_RETURN_IF_ERROR(Gemm(ctx_, tall_, !tall_, h, h, inner, 1.0, xg_, b, 0.0,
                               Mat{gt_, g_bytes + s * h * esize, m_},
                               /*batch=*/blocks - s, step, step, h * m_ + h));
      for (int64_t a = 0; a + s < blocks && s > 0; ++a) {
        const int64_t row = a * h, col = (a + s) * h;
        ATP_RETURN_IF_ERROR(Launched(
            LaunchTransposeConvert(gt_, g_bytes + (row * m_ + col) * esize, h, h, gt_,
                                   g_bytes + (col * m_ + row) * esize, ctx_.stream(), m_, m_),
            "gram mirror"));
      }
    }
  }
  ATP_RETURN_IF_ERROR(
      Launched(LaunchTrace(gt_, g_.get(), m_, m_, scalars_.as<double>(), ctx_.stream()), "trace"));
  Mark("gram");
  return absl::OkStatus();
}

absl::Status BasisRun::Beside() {
  if (!BesideDue()) return absl::OkStatus();
  ATP_RETURN_IF_ERROR(ctx_.ForkSide());
  return BesideForked();
}

absl::Status BasisRun::BesideForked() {
  if (!BesideDue()) return absl::OkStatus();
  beside_started_ = true;
  return opt_.beside();
}

absl::Status BasisRun::FinalOrthonormalisation(DeviceBuffer& y, DeviceBuffer& spare) {
  const int full = std::clamp(opt_.cholqr_passes_final, 1, 4);
  if (!opt_.final_newton_schulz) {
    if (full > 1) {
      ATP_RETURN_IF_ERROR(CholeskyQr(ctx_, ct_, k_, m_, /*columns=*/true, y.get(), full - 1,
                                     10.0 * UnitRoundoff(ct_), NextInfos(full - 1),
                                     opt_.own_cholesky));
      cholqr_passes_ += full - 1;
    }
    return absl::OkStatus();
  }
  // Target and the largest error a Newton–Schulz step is trusted with. The step is the third-order
  // one, Q ← Q·(I − E/2 + 3E²/8) with E = QᵀQ − I, which maps an error e to about (5/8)·e³ (the
  // second-order Q·(I − E/2) maps it to 0.75·e²: on the benchmark's input the first final pass
  // leaves ~1e-5, which took two second-order steps and takes one third-order step, for one
  // k x k GEMM more), plus rounding: the Gram product alone is accurate to ~u·sqrt(m)·k.
  constexpr double kTarget = 1e-10;
  constexpr double kStepMax = 0.1;
  ATP_ASSIGN_OR_RETURN(DeviceBuffer w, ctx_.Alloc(ct_, k_ * k_));
  ATP_ASSIGN_OR_RETURN(DeviceBuffer half_e, ctx_.Alloc(ct_, k_ * k_));
  ATP_ASSIGN_OR_RETURN(DeviceBuffer factor, ctx_.Alloc(ct_, k_ * k_));
  ATP_ASSIGN_OR_RETURN(DeviceBuffer partial, ctx_.Alloc(DevType::kF64, kDotBlocks));
  for (int step = 1; step <= full; ++step) {
    ATP_RETURN_IF_ERROR(GramUpper(ctx_, ct_, k_, m_, /*columns=*/true, y.get(), w.get()));
    ATP_RETURN_IF_ERROR(Launched(
        LaunchNewtonSchulzFactor(w.as<double>(), k_, factor.as<double>(), partial.as<double>(),
                                 ctx_.stream(), half_e.as<double>()),
        "newton-schulz factor"));
    ATP_RETURN_IF_ERROR(ctx_.StageToHost(0, partial.get(), kDotBlocks * sizeof(double)));
    // factor = I − E/2 + 1.5·(E/2)².
    ATP_RETURN_IF_ERROR(Gemm(ctx_, false, false, k_, k_, k_, 1.5, ConstMat{ct_, half_e.get(), k_},
                             ConstMat{ct_, half_e.get(), k_}, 1.0, Mat{ct_, factor.get(), k_}));
    // The Newton–Schulz step goes ahead into `spare` while the host reads the error, and is kept
    // only if the error allows it.
    ATP_RETURN_IF_ERROR(Gemm(ctx_, false, false, m_, k_, k_, 1.0, ConstMat{ct_, y.get(), k_},
                             ConstMat{ct_, factor.get(), k_}, 0.0, Mat{ct_, spare.get(), k_}));
    ATP_ASSIGN_OR_RETURN(const void* staged, ctx_.WaitStaged());
    const double* host = static_cast<const double*>(staged);
    double sum = 0.0;
    for (int b = 0; b < kDotBlocks; ++b) sum += host[b];
    const double error = std::sqrt(sum);
    if (error <= kStepMax) {
      std::swap(y, spare);
      ++newton_schulz_steps_;
      if (error <= kTarget || 0.625 * error * error * error * (1.0 + error) <= 0.5 * kTarget) {
        break;
      }
      continue;
    }
    // Too far off for a Newton–Schulz step: another CholeskyQR pass.
    ATP_RETURN_IF_ERROR(CholeskyQrWithGram(ctx_, ct_, k_, m_, /*columns=*/true, y.get(), w.get(),
                                           10.0 * UnitRoundoff(ct_), NextInfos(1),
                                           opt_.own_cholesky));
    ++cholqr_passes_;
  }
  return absl::OkStatus();
}

absl::Status BasisRun::Exact() {
  ATP_RETURN_IF_ERROR(Beside());
  k_ = m_;
  ATP_ASSIGN_OR_RETURN(lambda_, ctx_.Alloc(ct_, m_));
  ATP_RETURN_IF_ERROR(
      SymmetricEigen(ctx_, EigSolver::kSyevd, ct_, m_, g_.get(), lambda_.get(), NextInfos(1)));
  eigvecs_ = std::move(g_);
  Mark("eig");
  return absl::OkStatus();
}

absl::Status BasisRun::ApplyG(const void* q, int split, bool shifted, void* out) {
  // q and out: f64 [m, k].
  if (gt_ == DevType::kF64) {
    ATP_RETURN_IF_ERROR(Gemm(ctx_, false, false, m_, k_, m_, 1.0, ConstMat{gt_, g_.get(), m_},
                             ConstMat{ct_, q, k_}, 0.0, Mat{ct_, out, k_}));
  } else {
    ATP_ASSIGN_OR_RETURN(DeviceBuffer product, ctx_.Alloc(DevType::kF32, m_ * k_));
    if (split == 0) {
      ATP_ASSIGN_OR_RETURN(DeviceBuffer q32, ctx_.Alloc(DevType::kF32, m_ * k_));
      ATP_RETURN_IF_ERROR(Launched(
          LaunchConvert(ct_, q, DevType::kF32, q32.get(), m_ * k_, ctx_.stream()), "q to f32"));
      ATP_RETURN_IF_ERROR(
          Gemm(ctx_, false, false, m_, k_, m_, 1.0, ConstMat{DevType::kF32, g_.get(), m_},
               ConstMat{DevType::kF32, q32.get(), k_}, 0.0, Mat{DevType::kF32, product.get(), k_}));
    } else {
      ATP_ASSIGN_OR_RETURN(SplitMatrix qs, SplitOf(ctx_, ct_, q, m_ * k_, kSplitType, split));
      ATP_RETURN_IF_ERROR(SplitGemm(ctx_, false, false, m_, k_, m_, g_split_, m_, qs, k_, split,
                                    product.get(), k_, 0.0));
    }
    if (shifted && ct_ == DevType::kF64) {  // the conversion and the shift in one pass
      return Launched(LaunchShiftedProduct(product.as<float>(), static_cast<const double*>(q),
                                           scalars_.as<double>() + 1, static_cast<double*>(out),
                                           m_ * k_, ctx_.stream()),
                      "shifted product");
    }
    ATP_RETURN_IF_ERROR(
        Launched(LaunchConvert(DevType::kF32, product.get(), ct_, out, m_ * k_, ctx_.stream()),
                 "product to f64"));
  }
  if (shifted) {
    ATP_RETURN_IF_ERROR(Launched(
        LaunchAxpyDeviceScalar(ct_, out, q, m_ * k_, scalars_.as<double>() + 1, 1.0, ctx_.stream()),
        "shift product"));
  }
  return absl::OkStatus();
}

absl::Status BasisRun::Randomized() {
  const bool f64 = gt_ == DevType::kF64;
  // Shift G by delta·||G||_F: (G + cI) has the eigenvectors of G and a condition number of at
  // most about 1/delta, so that CholeskyQR stays stable for rank-deficient inputs (c = 1 for
  // G = 0). delta sits just above the rounding of the products with G, far below the eigenvalues
  // the iteration has to separate.
  {
    ATP_ASSIGN_OR_RETURN(DeviceBuffer row_sq, ctx_.Alloc(DevType::kF64, m_));
    ATP_RETURN_IF_ERROR(
        Launched(LaunchRowReduce(gt_, g_.get(), m_, m_, m_, nullptr, RowReduce::kSumSquares,
                                 row_sq.as<double>(), ctx_.stream()),
                 "gram norm"));
    ATP_RETURN_IF_ERROR(Launched(LaunchScaledRootOfSum(row_sq.as<double>(), m_, f64 ? 1e-7 : 1e-6,
                                                       scalars_.as<double>() + 1, ctx_.stream()),
                                 "gram shift"));
    ATP_CUDA(cudaMemsetAsync(scalars_.as<double>() + 2, 0, sizeof(double), ctx_.stream()));
  }
  if (!f64) {
    const int levels = std::max(opt_.iteration_split, opt_.rayleigh_ritz_split);
    if (levels > 0) {
      ATP_ASSIGN_OR_RETURN(g_split_,
                           SplitOf(ctx_, gt_, g_.get(), m_ * m_, kSplitType, std::min(levels, 3)));
    }
  }
  const int iteration_split = std::clamp(opt_.iteration_split, 0, 3);
  const int rr_split = std::clamp(opt_.rayleigh_ritz_split, 0, 3);
  const int products = std::max(1, opt_.power_iterations);
  const int min_products = std::clamp(opt_.min_power_iterations, 1, products);
  ATP_ASSIGN_OR_RETURN(DeviceBuffer partial, ctx_.Alloc(DevType::kF64, kDotBlocks));
  double previous_residual = -1.0;
  const double first_shift = 1e-13;

  ATP_ASSIGN_OR_RETURN(DeviceBuffer omega, ctx_.Alloc(ct_, m_ * k_));
  ATP_RETURN_IF_ERROR(Launched(
      LaunchFillGaussian(ct_, omega.get(), m_ * k_, opt_.seed, 0, ctx_.stream()), "start block"));
  ATP_ASSIGN_OR_RETURN(DeviceBuffer y, ctx_.Alloc(ct_, m_ * k_));
  ATP_ASSIGN_OR_RETURN(DeviceBuffer y_next, ctx_.Alloc(ct_, m_ * k_));
  for (int it = 0; it < products; ++it) {
    const void* from = it == 0 ? omega.get() : y.get();
    const int split = it < opt_.rough_products ? std::min(iteration_split, 1) : iteration_split;
    ATP_RETURN_IF_ERROR(ApplyG(from, split, /*shifted=*/true, y_next.get()));
    ++products_;
    if (opt_.beside_at == BasisOptions::BesideAt::kFirstProduct) {
      ATP_RETURN_IF_ERROR(Beside());  // after the first product: GEMMs do not share SMs well
    }
    Mark("subspace_products");
    bool last = it + 1 == products;
    const bool check = !last && it > 0 && opt_.adaptive_tolerance > 0;
    // The shift, from the residual of Q after the first product (`from` at the second product).
    const bool estimate = !last && it == 1 && opt_.shift_fraction > 0.0 && m_ > k_;
    if (estimate && !check) {
      ATP_RETURN_IF_ERROR(
          Launched(LaunchDotPartials(static_cast<const double*>(from), y_next.as<double>(), m_ * k_,
                                     partial.as<double>(), ctx_.stream()),
                   "captured energy"));
    }
    if (check) {
      // `from` is orthonormal: trace(fromᵀ G from) = sum(from ∘ (G + cI)from) - c·k is the energy
      // its span captures, and the residual is what is left of ||X||_F^2.
      ATP_RETURN_IF_ERROR(
          Launched(LaunchDotPartials(static_cast<const double*>(from), y_next.as<double>(), m_ * k_,
                                     partial.as<double>(), ctx_.stream()),
                   "captured energy"));
      ATP_RETURN_IF_ERROR(ctx_.StageToHost(0, partial.get(), kDotBlocks * sizeof(double)));
      ATP_RETURN_IF_ERROR(
          ctx_.StageToHost(kDotBlocks * sizeof(double), scalars_.get(), 2 * sizeof(double)));
      Mark("subspace_checks");
    }
    if (estimate) {
      // s[2] = μ and the products' shift s[1] −= μ, after the check above was staged with the
      // shift this product was taken with; this product then loses its μ·Q too.
      ATP_RETURN_IF_ERROR(Launched(LaunchEstimateShift(partial.as<double>(), scalars_.as<double>(),
                                                       k_, m_, opt_.shift_fraction, ctx_.stream()),
                                   "spectral shift"));
      ATP_RETURN_IF_ERROR(Launched(LaunchAxpyDeviceScalar(ct_, y_next.get(), from, m_ * k_,
                                                          scalars_.as<double>() + 2, -1.0,
                                                          ctx_.stream()),
                                   "shift product"));
    }
    std::swap(y, y_next);
    // The first CholeskyQR pass is the same whether this block turns out to be the last one or
    // not: it runs while the host reads the check.
    ATP_RETURN_IF_ERROR(CholeskyQr(ctx_, ct_, k_, m_, /*columns=*/true, y.get(), 1, first_shift,
                                   NextInfos(1), opt_.own_cholesky));
    ++cholqr_passes_;
    if (check) {
      ATP_ASSIGN_OR_RETURN(const void* staged, ctx_.WaitStaged());
      const double* host = static_cast<const double*>(staged);
      double energy = 0.0;
      for (int b = 0; b < kDotBlocks; ++b) energy += host[b];
      energy -= host[kDotBlocks + 1] * static_cast<double>(k_);
      const double residual = std::max(host[kDotBlocks] - energy, 0.0);
      const bool converged = previous_residual >= 0.0 &&
                             previous_residual - residual <= opt_.adaptive_tolerance * residual;
      previous_residual = residual;
      if (converged && it + 1 >= min_products) last = true;
    }
    if (last) {
      ATP_RETURN_IF_ERROR(FinalOrthonormalisation(y, y_next));
    } else {
      const int more = std::clamp(opt_.cholqr_passes_inner, 1, 4) - 1;
      if (more > 0) {
        ATP_RETURN_IF_ERROR(CholeskyQr(ctx_, ct_, k_, m_, /*columns=*/true, y.get(), more,
                                       10.0 * UnitRoundoff(ct_), NextInfos(more),
                                       opt_.own_cholesky));
        cholqr_passes_ += more;
      }
    }
    Mark("subspace_cholqr");
    if (last) break;
  }
  omega.Reset();
  y_next.Reset();
  q_ = std::move(y);
  Mark("subspace");

  // Rayleigh–Ritz: T = Qᵀ G Q (symmetrised), with the accurate product.
  ATP_ASSIGN_OR_RETURN(DeviceBuffer gq, ctx_.Alloc(ct_, m_ * k_));
  ATP_RETURN_IF_ERROR(ApplyG(q_.get(), rr_split, /*shifted=*/false, gq.get()));
  ++products_;
  ATP_ASSIGN_OR_RETURN(DeviceBuffer t, ctx_.Alloc(ct_, k_ * k_));
  ATP_RETURN_IF_ERROR(Gemm(ctx_, true, false, k_, k_, m_, 1.0, ConstMat{ct_, q_.get(), k_},
                           ConstMat{ct_, gq.get(), k_}, 0.0, Mat{ct_, t.get(), k_}));
  ATP_RETURN_IF_ERROR(Launched(LaunchSymmetrize(ct_, t.get(), k_, ctx_.stream()), "symmetrize"));
  gq.Reset();
  g_split_ = SplitMatrix();
  Mark("rayleigh_ritz");
  ATP_ASSIGN_OR_RETURN(lambda_, ctx_.Alloc(ct_, k_));
  // Beside the eigensolve (whose one-cluster tridiagonalisation leaves most SMs idle): the layer's
  // side work, and Xᵀ1 for the sign rule where it will be needed (tall X and no U asked for; the
  // sums are wasted only when a σ at the noise floor makes the sign rule compute U).
  const bool sums_beside = tall_ && !opt_.need_u;
  if (sums_beside) {
    ATP_ASSIGN_OR_RETURN(column_sums_, ctx_.Alloc(DevType::kF64, d_));
  }
  std::function<absl::Status()> beside;
  if (BesideDue() || sums_beside) {
    beside = [this, sums_beside]() -> absl::Status {
      if (sums_beside) {
        SideStreamScope side(ctx_);
        ATP_RETURN_IF_ERROR(ColumnSums());
      }
      return BesideForked();
    };
  }
  ATP_RETURN_IF_ERROR(
      SymmetricEigen(ctx_, opt_.eig, ct_, k_, t.get(), lambda_.get(), NextInfos(1), true, beside));
  eigvecs_ = std::move(t);
  Mark("eig");
  return absl::OkStatus();
}

absl::StatusOr<std::pair<DevType, DeviceBuffer>> BasisRun::RowsTimesX(const void* rows_of_e,
                                                                      int64_t rows) {
  const int64_t n_other = tall_ ? l_ : d_;
  if (gt_ == DevType::kF64) {
    ATP_ASSIGN_OR_RETURN(DeviceBuffer z, ctx_.Alloc(ct_, rows * n_other));
    ATP_RETURN_IF_ERROR(Gemm(ctx_, false, tall_, rows, n_other, tall_ ? d_ : l_, 1.0,
                             ConstMat{ct_, rows_of_e, m_}, xg_, 0.0, Mat{ct_, z.get(), n_other}));
    return std::make_pair(ct_, std::move(z));
  }
  // The rows through two parts of X's own type (|E| <= 1, so f16 parts cannot overflow).
  ATP_ASSIGN_OR_RETURN(SplitMatrix es, SplitOf(ctx_, ct_, rows_of_e, rows * m_, x_.type, 2));
  ATP_ASSIGN_OR_RETURN(DeviceBuffer z32, ctx_.Alloc(DevType::kF32, rows * n_other));
  for (int part = 1; part >= 0; --part) {
    ATP_RETURN_IF_ERROR(Gemm(ctx_, false, tall_, rows, n_other, tall_ ? d_ : l_, 1.0,
                             ConstMat{x_.type, es.parts[part].get(), m_}, x_, part == 1 ? 0.0 : 1.0,
                             Mat{DevType::kF32, z32.get(), n_other}));
  }
  return std::make_pair(DevType::kF32, std::move(z32));
}

absl::StatusOr<std::vector<double>> BasisRun::LargestEntriesOfU(const std::vector<int64_t>& flagged,
                                                                bool have_u) {
  const int64_t r = rank_;
  ATP_ASSIGN_OR_RETURN(DeviceBuffer out, ctx_.Alloc(DevType::kF64, r));
  if (have_u) {  // U's rows: e_ when L < d, else z_
    ATP_RETURN_IF_ERROR(Launched(LaunchRowLargestEntry(ct_, tall_ ? z_.get() : e_.get(), l_, r, l_,
                                                       out.as<double>(), ctx_.stream()),
                                 "sign rule entries"));
    return ToHostDoubles(ctx_, DevType::kF64, out.get(), r);
  }
  // The sign of u_i = X·v_i / σ_i is that of X·v_i: the flagged rows of E times Xᵀ only (all of U
  // with its orthonormalisation took ~17 ms at L = 65536, r = 1024 for one flagged column: NOTES
  // v13), or all rows when most are flagged.
  const int64_t f = static_cast<int64_t>(flagged.size());
  const bool all = 4 * f > r;
  const void* rows = e_.get();
  DeviceBuffer gathered;
  if (!all) {
    const size_t row_bytes = static_cast<size_t>(m_) * DevTypeSize(ct_);
    ATP_ASSIGN_OR_RETURN(gathered, ctx_.Alloc(ct_, f * m_));
    for (int64_t q = 0; q < f; ++q) {
      ATP_CUDA(cudaMemcpyAsync(static_cast<char*>(gathered.get()) + q * row_bytes,
                               static_cast<const char*>(e_.get()) + flagged[q] * row_bytes,
                               row_bytes, cudaMemcpyDeviceToDevice, ctx_.stream()));
    }
    rows = gathered.get();
  }
  const int64_t count = all ? r : f;
  ATP_ASSIGN_OR_RETURN(auto product, RowsTimesX(rows, count));
  ATP_RETURN_IF_ERROR(Launched(LaunchRowLargestEntry(product.first, product.second.get(), l_, count,
                                                     l_, out.as<double>(), ctx_.stream()),
                               "sign rule entries"));
  ATP_ASSIGN_OR_RETURN(std::vector<double> got,
                       ToHostDoubles(ctx_, DevType::kF64, out.get(), count));
  if (all) return got;
  std::vector<double> largest(static_cast<size_t>(r), 0.0);
  for (int64_t q = 0; q < f; ++q) largest[flagged[q]] = got[q];
  return largest;
}

absl::Status BasisRun::OtherSide() {
  const int64_t n_other = tall_ ? l_ : d_;
  const int64_t r = rank_;
  ATP_ASSIGN_OR_RETURN(auto product, RowsTimesX(e_.get(), r));
  if (product.first == ct_) {
    z_ = std::move(product.second);
  } else {
    ATP_ASSIGN_OR_RETURN(z_, ctx_.Alloc(ct_, r * n_other));
    ATP_RETURN_IF_ERROR(Launched(LaunchConvert(product.first, product.second.get(), ct_, z_.get(),
                                               r * n_other, ctx_.stream()),
                                 "other side to f64"));
  }
  ATP_ASSIGN_OR_RETURN(DeviceBuffer norms_dev, ctx_.Alloc(DevType::kF64, r));
  ATP_RETURN_IF_ERROR(
      Launched(LaunchRowReduce(ct_, z_.get(), n_other, r, n_other, nullptr, RowReduce::kSumSquares,
                               norms_dev.as<double>(), ctx_.stream()),
               "other side norms"));
  ATP_ASSIGN_OR_RETURN(std::vector<double> norms_sq,
                       ToHostDoubles(ctx_, DevType::kF64, norms_dev.get(), r));
  double largest = sigma_.empty() ? 0.0 : sigma_[0];
  for (double v : norms_sq) largest = std::max(largest, std::sqrt(std::max(v, 0.0)));
  // A row is degenerate when its σ is at the noise floor of the eigen side (then X·v_i / σ_i
  // is rounding noise inside the span of the other rows) or its norm vanishes.
  const double tau = gt_ == DevType::kF64 ? 1e-12 : 1e-6;
  const double tau_sigma = gt_ == DevType::kF64 ? 1e-7 : 1e-3;
  std::vector<double> scale(static_cast<size_t>(r));
  bool degenerate = false;
  for (int64_t i = 0; i < r; ++i) {
    const double norm = std::sqrt(std::max(norms_sq[i], 0.0));
    const bool sigma_ok =
        i < static_cast<int64_t>(sigma_.size()) && sigma_[i] > tau_sigma * sigma_[0];
    if (sigma_ok && norm > 0.0 && norm > tau * largest) {
      scale[i] = 1.0 / norm;
    } else {
      // σ_i = 0 (to working precision): u_i is any unit vector orthogonal to the others; start
      // from a random one and let CholeskyQR orthogonalise it.
      degenerate = true;
      scale[i] = 1.0 / std::sqrt(static_cast<double>(n_other));
      ATP_RETURN_IF_ERROR(Launched(
          LaunchFillGaussian(ct_, static_cast<char*>(z_.get()) + i * n_other * DevTypeSize(ct_),
                             n_other, opt_.seed ^ 0x5bd1e9955bd1e995ull, i * n_other,
                             ctx_.stream()),
          "completion"));
    }
  }
  ATP_ASSIGN_OR_RETURN(DeviceBuffer scale_dev, ctx_.Alloc(DevType::kF64, r));
  ATP_RETURN_IF_ERROR(ctx_.CopyToDevice(scale_dev.get(), scale.data(), r * sizeof(double)));
  ATP_RETURN_IF_ERROR(Launched(LaunchScaleRows(ct_, z_.get(), n_other, r, n_other,
                                               scale_dev.as<double>(), 1.0, ctx_.stream()),
                               "normalise other side"));
  // The rows are orthonormal up to the error of the eigen side amplified by σ_1/σ_i; CholeskyQR
  // restores orthonormality (and orthogonalises the completion rows).
  const int passes = degenerate ? 3 : 2;
  ATP_RETURN_IF_ERROR(CholeskyQr(ctx_, ct_, r, n_other, /*columns=*/false, z_.get(), passes,
                                 degenerate ? 1e-10 : 10.0 * UnitRoundoff(ct_), NextInfos(passes),
                                 opt_.own_cholesky));
  return CheckInfos("orthonormalisation");
}

absl::StatusOr<DeviceBasis> BasisRun::ZeroBases(int64_t rank) {
  DeviceBasis out;
  out.rank = rank;
  out.length = l_;
  out.width = d_;
  out.exact = true;
  out.type = ct_;
  ATP_ASSIGN_OR_RETURN(out.ut, ctx_.Alloc(ct_, rank * l_));
  ATP_ASSIGN_OR_RETURN(out.vt, ctx_.Alloc(ct_, rank * d_));
  for (auto [buffer, cols] : {std::pair{&out.ut, l_}, std::pair{&out.vt, d_}}) {
    ATP_RETURN_IF_ERROR(
        Launched(LaunchFill2D(ct_, buffer->get(), cols, rank, cols, 0.0, ctx_.stream()), "zero"));
    // The diagonal of a row-major [rank, cols] matrix is a column with leading dimension cols+1.
    ATP_RETURN_IF_ERROR(Launched(
        LaunchFill2D(ct_, buffer->get(), cols + 1, rank, 1, 1.0, ctx_.stream()), "identity"));
  }
  out.sigma.assign(static_cast<size_t>(rank), 0.0);
  out.u_sums.assign(static_cast<size_t>(rank), 1.0);
  ATP_ASSIGN_OR_RETURN(out.sigma_dev, ctx_.Alloc(DevType::kF64, rank));
  ATP_RETURN_IF_ERROR(
      ctx_.CopyToDevice(out.sigma_dev.get(), out.sigma.data(), rank * sizeof(double)));
  ATP_ASSIGN_OR_RETURN(out.u_sums_dev, ctx_.Alloc(DevType::kF64, rank));
  ATP_RETURN_IF_ERROR(
      ctx_.CopyToDevice(out.u_sums_dev.get(), out.u_sums.data(), rank * sizeof(double)));
  out.total_energy = 0.0;
  out.captured_energy = 1.0;
  Mark("bases");
  return out;
}

absl::StatusOr<DeviceBasis> BasisRun::Run() {
  if (l_ < 1 || d_ < 1) return absl::InvalidArgumentError("principal bases of an empty matrix");
  const RankPolicy& policy = opt_.policy;
  const int64_t bound = RankUpperBound(policy, l_, d_, opt_.backend_max_rank);
  const bool energy = policy.kind == RankPolicy::Kind::kEnergy;
  const int64_t wanted =
      energy ? bound : ResolveRank(policy, l_, d_, opt_.backend_max_rank, {}, 0.0);
  k_ = std::min<int64_t>(m_, wanted + std::max(opt_.oversampling, 0));
  bool exact = false;
  switch (opt_.method) {
    case DecomposeMethod::kExact:
      exact = true;
      break;
    case DecomposeMethod::kRandomized:
      exact = false;
      break;
    case DecomposeMethod::kAuto:
      exact = m_ <= opt_.exact_max_dim || 2 * k_ >= m_;
      break;
  }
  gt_ = (exact || x_.type == DevType::kF32) ? DevType::kF64 : DevType::kF32;

  ATP_ASSIGN_OR_RETURN(scalars_, ctx_.Alloc(DevType::kF64, 4));
  ATP_ASSIGN_OR_RETURN(infos_, ctx_.Alloc(kMaxInfos * sizeof(int)));
  ATP_CUDA(cudaMemsetAsync(infos_.get(), 0, kMaxInfos * sizeof(int), ctx_.stream()));

  ATP_RETURN_IF_ERROR(Gram());
  ATP_RETURN_IF_ERROR(exact ? Exact() : Randomized());
  const int64_t n_eig = exact ? m_ : k_;

  // λ, the scalars and the factorisations' info values, in one host round trip where they fit the
  // staging area.
  std::vector<double> lambda(static_cast<size_t>(n_eig));
  double host_scalars[3] = {0.0, 0.0, 0.0};
  const int n_scalars = exact ? 1 : 3;
  const char* stage_name = exact ? "eigensolve" : "subspace iteration";
  const size_t lambda_bytes = n_eig * sizeof(double);
  const size_t scalar_bytes = n_scalars * sizeof(double);
  const size_t info_bytes = info_count_ * sizeof(int);
  absl::Status factorisations;
  if (ct_ == DevType::kF64 &&
      lambda_bytes + scalar_bytes + info_bytes <= DeviceContext::kStagingBytes) {
    ATP_RETURN_IF_ERROR(ctx_.StageToHost(0, lambda_.get(), lambda_bytes));
    ATP_RETURN_IF_ERROR(ctx_.StageToHost(lambda_bytes, scalars_.get(), scalar_bytes));
    if (info_bytes > 0) {
      ATP_RETURN_IF_ERROR(ctx_.StageToHost(lambda_bytes + scalar_bytes, infos_.get(), info_bytes));
    }
    ATP_ASSIGN_OR_RETURN(const void* staged, ctx_.WaitStaged());
    const char* bytes = static_cast<const char*>(staged);
    std::memcpy(lambda.data(), bytes, lambda_bytes);
    std::memcpy(host_scalars, bytes + lambda_bytes, scalar_bytes);
    std::vector<int> infos(static_cast<size_t>(info_count_));
    if (info_bytes > 0) std::memcpy(infos.data(), bytes + lambda_bytes + scalar_bytes, info_bytes);
    factorisations = CheckInfoValues(infos.data(), stage_name);
  } else {
    ATP_ASSIGN_OR_RETURN(lambda, ToHostDoubles(ctx_, ct_, lambda_.get(), n_eig));
    ATP_RETURN_IF_ERROR(ctx_.CopyToHost(host_scalars, scalars_.get(), scalar_bytes));
    factorisations = CheckInfos(stage_name);
  }
  const double total = host_scalars[0];
  shift_ = host_scalars[2];
  // The spectral shift's check (BasisOptions::shift_fraction): μ <= θ_k / 2, θ_k the smallest Ritz
  // value (lambda is ascending), and no failed factorisation. The caller computes the basis again
  // without a shift otherwise.
  if (!exact && shift_ > 0.0 &&
      (!factorisations.ok() || !(shift_ <= 0.5 * std::max(lambda[0], 0.0)))) {
    shift_rejected_ = true;
    return DeviceBasis();
  }
  ATP_RETURN_IF_ERROR(factorisations);
  if (total == 0.0) return ZeroBases(ResolveRank(policy, l_, d_, opt_.backend_max_rank, {}, 0.0));
  std::vector<double> sigma_sq(static_cast<size_t>(n_eig));
  for (int64_t i = 0; i < n_eig; ++i) sigma_sq[i] = std::max(lambda[n_eig - 1 - i], 0.0);
  rank_ =
      std::min<int64_t>(n_eig, ResolveRank(policy, l_, d_, opt_.backend_max_rank, sigma_sq, total));
  sigma_.resize(static_cast<size_t>(rank_));
  for (int64_t i = 0; i < rank_; ++i) sigma_[i] = std::sqrt(sigma_sq[i]);

  // The eigen side E [r, m]: the top r eigenvectors, descending.
  ATP_ASSIGN_OR_RETURN(e_, ctx_.Alloc(ct_, rank_ * m_));
  if (exact) {
    ATP_RETURN_IF_ERROR(Launched(
        LaunchGatherRowsReversed(ct_, eigvecs_.get(), m_, m_, rank_, e_.get(), ctx_.stream()),
        "select eigenvectors"));
  } else {
    ATP_ASSIGN_OR_RETURN(DeviceBuffer w, ctx_.Alloc(ct_, rank_ * k_));
    ATP_RETURN_IF_ERROR(Launched(
        LaunchGatherRowsReversed(ct_, eigvecs_.get(), k_, k_, rank_, w.get(), ctx_.stream()),
        "select eigenvectors"));
    // One Newton–Schulz step on the eigenvector rows, w ← (1.5·I − 0.5·w·wᵀ)·w: inverse
    // iteration leaves vectors of close (but not grouped) eigenvalues orthogonal only to
    // ~u·‖T‖/gap (1e-10 .. 1e-9 measured on a noisy input), which would cap E's orthonormality
    // however well Q is orthonormalised. Measured at r = 512: the Ritz + sign stage 0.25-0.33 ms
    // in two runs, 0.24 without it.
    {
      ATP_ASSIGN_OR_RETURN(DeviceBuffer gram, ctx_.Alloc(ct_, rank_ * rank_));
      ATP_ASSIGN_OR_RETURN(DeviceBuffer factor, ctx_.Alloc(ct_, rank_ * rank_));
      ATP_ASSIGN_OR_RETURN(DeviceBuffer partial, ctx_.Alloc(DevType::kF64, kDotBlocks));
      ATP_ASSIGN_OR_RETURN(DeviceBuffer stepped, ctx_.Alloc(ct_, rank_ * k_));
      ATP_RETURN_IF_ERROR(GramUpper(ctx_, ct_, rank_, k_, /*columns=*/false, w.get(), gram.get()));
      ATP_RETURN_IF_ERROR(
          Launched(LaunchNewtonSchulzFactor(gram.as<double>(), rank_, factor.as<double>(),
                                            partial.as<double>(), ctx_.stream()),
                   "newton-schulz factor"));
      ATP_RETURN_IF_ERROR(Gemm(ctx_, false, false, rank_, k_, rank_, 1.0,
                               ConstMat{ct_, factor.get(), rank_}, ConstMat{ct_, w.get(), k_}, 0.0,
                               Mat{ct_, stepped.get(), k_}));
      w = std::move(stepped);
    }
    ATP_RETURN_IF_ERROR(Gemm(ctx_, false, true, rank_, m_, k_, 1.0, ConstMat{ct_, w.get(), k_},
                             ConstMat{ct_, q_.get(), k_}, 0.0, Mat{ct_, e_.get(), m_}));
  }
  eigvecs_.Reset();
  q_.Reset();
  g_.Reset();
  Mark("ritz_vectors");

  // The other side, when asked for or needed by the sign rule.
  const double tau_sigma = gt_ == DevType::kF64 ? 1e-7 : 1e-3;
  bool small_sigma = false;
  for (double s : sigma_) small_sigma |= !(s > tau_sigma * sigma_[0]);
  bool have_z = false;
  if ((tall_ ? opt_.need_u : opt_.need_v) || (tall_ && small_sigma)) {
    ATP_RETURN_IF_ERROR(OtherSide());
    have_z = true;
  }

  // Sign rule on u_i: U is E when L < d, else Z, else (cheaply) t = vᵀ(Xᵀ1)/σ.
  const int64_t r = rank_;
  ATP_ASSIGN_OR_RETURN(DeviceBuffer t_dev, ctx_.Alloc(DevType::kF64, r));
  auto u_row_sums = [&]() -> absl::Status {
    const void* u = tall_ ? z_.get() : e_.get();
    return Launched(LaunchRowReduce(ct_, u, l_, r, l_, nullptr, RowReduce::kDot, t_dev.as<double>(),
                                    ctx_.stream()),
                    "sign rule sums");
  };
  std::vector<double> t;
  if (!tall_ || have_z) {
    ATP_RETURN_IF_ERROR(u_row_sums());
    ATP_ASSIGN_OR_RETURN(t, ToHostDoubles(ctx_, DevType::kF64, t_dev.get(), r));
  } else {
    if (column_sums_.empty()) {  // not computed beside the eigensolve
      ATP_ASSIGN_OR_RETURN(column_sums_, ctx_.Alloc(DevType::kF64, d_));
      ATP_RETURN_IF_ERROR(ColumnSums());
    } else {
      ATP_RETURN_IF_ERROR(ctx_.JoinSide());
    }
    ATP_RETURN_IF_ERROR(
        Launched(LaunchRowReduce(ct_, e_.get(), m_, r, m_, column_sums_.as<double>(),
                                 RowReduce::kDot, t_dev.as<double>(), ctx_.stream()),
                 "sign rule sums"));
    ATP_ASSIGN_OR_RETURN(t, ToHostDoubles(ctx_, DevType::kF64, t_dev.get(), r));
    for (int64_t i = 0; i < r; ++i) t[i] /= sigma_[i];
  }
  const double threshold = 1e-6 * std::sqrt(static_cast<double>(l_));
  std::vector<int64_t> flagged;
  for (int64_t i = 0; i < r; ++i) {
    if (!(std::abs(t[i]) >= threshold)) flagged.push_back(i);
  }
  std::vector<double> largest;
  if (!flagged.empty()) {
    ATP_ASSIGN_OR_RETURN(largest, LargestEntriesOfU(flagged, !tall_ || have_z));
  }
  std::vector<double> signs(static_cast<size_t>(r), 1.0);
  std::vector<double> u_sums(static_cast<size_t>(r));
  for (int64_t i = 0; i < r; ++i) {
    const double decide = std::abs(t[i]) >= threshold ? t[i] : largest[i];
    signs[i] = decide < 0.0 ? -1.0 : 1.0;
    u_sums[i] = signs[i] * t[i];
  }
  ATP_ASSIGN_OR_RETURN(DeviceBuffer signs_dev, ctx_.Alloc(DevType::kF64, r));
  ATP_RETURN_IF_ERROR(ctx_.CopyToDevice(signs_dev.get(), signs.data(), r * sizeof(double)));
  ATP_RETURN_IF_ERROR(Launched(
      LaunchScaleRows(ct_, e_.get(), m_, r, m_, signs_dev.as<double>(), 1.0, ctx_.stream()),
      "apply signs"));
  if (have_z) {
    const int64_t n_other = tall_ ? l_ : d_;
    ATP_RETURN_IF_ERROR(Launched(LaunchScaleRows(ct_, z_.get(), n_other, r, n_other,
                                                 signs_dev.as<double>(), 1.0, ctx_.stream()),
                                 "apply signs"));
  }

  DeviceBasis out;
  out.rank = r;
  out.length = l_;
  out.width = d_;
  out.exact = exact;
  out.type = ct_;
  if (tall_) {
    out.vt = std::move(e_);
    out.ut = std::move(z_);
  } else {
    out.ut = std::move(e_);
    out.vt = std::move(z_);
  }
  out.sigma = sigma_;
  out.u_sums = u_sums;
  ATP_ASSIGN_OR_RETURN(out.sigma_dev, ctx_.Alloc(DevType::kF64, r));
  ATP_RETURN_IF_ERROR(ctx_.CopyToDevice(out.sigma_dev.get(), out.sigma.data(), r * sizeof(double)));
  ATP_ASSIGN_OR_RETURN(out.u_sums_dev, ctx_.Alloc(DevType::kF64, r));
  ATP_RETURN_IF_ERROR(
      ctx_.CopyToDevice(out.u_sums_dev.get(), out.u_sums.data(), r * sizeof(double)));
  out.total_energy = total;
  out.products = products_;
  out.cholqr_passes = cholqr_passes_;
  out.newton_schulz_steps = newton_schulz_steps_;
  out.shift = shift_;
  double captured = 0.0;
  for (double s : out.sigma) captured += s * s;
  out.captured_energy = total > 0.0 ? std::clamp(captured / total, 0.0, 1.0) : 1.0;
  Mark("bases");
  return out;
}

}  // namespace

absl::StatusOr<DeviceBasis> ComputePrincipalBases(DeviceContext& ctx, ConstMat x, int64_t length,
                                                  int64_t width, const BasisOptions& options) {
  if (x.type == DevType::kF64) return absl::InternalError("ComputePrincipalBases: f64 input");
  // A shifted run that fails its check is computed again unshifted, with two products more: the
  // unshifted iteration converges more slowly, and with the same products it broke the 1% rule
  // where the shifted one met it (3 products at L = 32768..65536, r = 256..1024: 1.010-1.022x the
  // optimum; bench/cuda/NOTES.md v12).
  BasisOptions unshifted = options;
  unshifted.shift_fraction = 0.0;
  unshifted.power_iterations = options.power_iterations + BasisOptions::kUnshiftedExtraProducts;
  {
    BasisRun run(ctx, x, length, width, options);
    absl::StatusOr<DeviceBasis> basis = run.Run();
    if (!basis.ok() || !run.shift_rejected()) return basis;
    if (run.beside_started()) unshifted.beside = nullptr;  // its side work is queued already
  }
  BasisRun run(ctx, x, length, width, unshifted);
  absl::StatusOr<DeviceBasis> basis = run.Run();
  if (basis.ok()) basis->shift_rejected = true;
  return basis;
}

}  // namespace atp::kernels::cuda
