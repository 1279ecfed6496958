#include "cuda/blas.h"

#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cuda/cluster_cholesky.h"
#include "cuda/cuda_status.h"
#include "cuda/device_kernels.h"
#include "cuda/small_eigen.h"
#include "cuda/triangular_solve.h"

namespace atp::kernels::cuda {
namespace {

cudaDataType_t CudaType(DevType t) {
  switch (t) {
    case DevType::kF32:
      return CUDA_R_32F;
    case DevType::kF64:
      return CUDA_R_64F;
    case DevType::kF16:
      return CUDA_R_16F;
    case DevType::kBF16:
      return CUDA_R_16BF;
  }
  return CUDA_R_32F;
}

bool FitsInt(int64_t v) { return v >= 0 && v <= std::numeric_limits<int>::max(); }

}  // namespace

absl::Status Gemm(DeviceContext& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                  double alpha, ConstMat a, ConstMat b, double beta, Mat c, int64_t batch,
                  int64_t stride_a, int64_t stride_b, int64_t stride_c) {
  if (m == 0 || n == 0 || batch == 0) return absl::OkStatus();
  if (a.type != b.type) {
    return absl::InternalError(absl::StrCat("Gemm: operand types differ (", DevTypeName(a.type),
                                            " and ", DevTypeName(b.type), ")"));
  }
  if (!FitsInt(m) || !FitsInt(n) || !FitsInt(k) || !FitsInt(a.ld) || !FitsInt(b.ld) ||
      !FitsInt(c.ld) || !FitsInt(batch)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Gemm: size out of range (m=", m, " n=", n, " k=", k, ")"));
  }
  cublasComputeType_t compute;
  bool double_scalars = false;
  switch (a.type) {
    case DevType::kF64:
      compute = CUBLAS_COMPUTE_64F;
      double_scalars = true;
      if (c.type != DevType::kF64) return absl::InternalError("Gemm: f64 operands want f64 C");
      break;
    case DevType::kF32:
      compute = CUBLAS_COMPUTE_32F_PEDANTIC;
      if (c.type != DevType::kF32) return absl::InternalError("Gemm: f32 operands want f32 C");
      break;
    default:
      compute = CUBLAS_COMPUTE_32F;
      if (c.type != DevType::kF32 && c.type != a.type) {
        return absl::InternalError(absl::StrCat("Gemm: ", DevTypeName(a.type),
                                                " operands want f32 or ", DevTypeName(a.type),
                                                " C, not ", DevTypeName(c.type)));
      }
      break;
  }
  const float alpha_f = static_cast<float>(alpha), beta_f = static_cast<float>(beta);
  const void* alpha_p = double_scalars ? static_cast<const void*>(&alpha) : &alpha_f;
  const void* beta_p = double_scalars ? static_cast<const void*>(&beta) : &beta_f;
  // Row-major C = op(A) op(B) is column-major Cᵀ = op(B)ᵀ op(A)ᵀ, and the column-major view of a
  // row-major buffer is its transpose: so swap the operands and keep their flags.
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  if (batch == 1) {
    ATP_CUBLAS(cublasGemmEx(ctx.cublas(), op_b, op_a, static_cast<int>(n), static_cast<int>(m),
                            static_cast<int>(k), alpha_p, b.data, CudaType(b.type),
                            static_cast<int>(b.ld), a.data, CudaType(a.type),
                            static_cast<int>(a.ld), beta_p, c.data, CudaType(c.type),
                            static_cast<int>(c.ld), compute, CUBLAS_GEMM_DEFAULT));
  } else {
    ATP_CUBLAS(cublasGemmStridedBatchedEx(
        ctx.cublas(), op_b, op_a, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k),
        alpha_p, b.data, CudaType(b.type), static_cast<int>(b.ld), stride_b, a.data,
        CudaType(a.type), static_cast<int>(a.ld), stride_a, beta_p, c.data, CudaType(c.type),
        static_cast<int>(c.ld), stride_c, static_cast<int>(batch), compute, CUBLAS_GEMM_DEFAULT));
  }
  return absl::OkStatus();
}

absl::Status GramUpper(DeviceContext& ctx, DevType t, int64_t n, int64_t other, bool columns,
                       const void* y, void* w) {
  if (!FitsInt(n) || !FitsInt(other)) return absl::InvalidArgumentError("syrk size out of range");
  const int ni = static_cast<int>(n), oi = static_cast<int>(other);
  const cublasOperation_t op = columns ? CUBLAS_OP_N : CUBLAS_OP_T;
  const int lda = columns ? ni : oi;
  if (t == DevType::kF64) {
    const double one = 1.0, zero = 0.0;
    ATP_CUBLAS(cublasDsyrk(ctx.cublas(), CUBLAS_FILL_MODE_UPPER, op, ni, oi, &one,
                           static_cast<const double*>(y), lda, &zero, static_cast<double*>(w), ni));
  } else if (t == DevType::kF32) {
    const float one = 1.0f, zero = 0.0f;
    ATP_CUBLAS(cublasSsyrk(ctx.cublas(), CUBLAS_FILL_MODE_UPPER, op, ni, oi, &one,
                           static_cast<const float*>(y), lda, &zero, static_cast<float*>(w), ni));
  } else {
    return absl::InternalError("GramUpper: want f32/f64");
  }
  return absl::OkStatus();
}

absl::Status Potrf(DeviceContext& ctx, DevType t, int64_t n, void* a, int* info_dev, bool own) {
  if (t != DevType::kF32 && t != DevType::kF64) return absl::InternalError("Potrf: want f32/f64");
  if (own) {
    if (ClusterCholeskySupported(t, n)) {  // one launch where the matrix fits in a cluster
      return DeviceContext::Launched(
          LaunchClusterCholesky(t, a, n, /*shift_factor=*/0.0, info_dev, ctx.stream()),
          "cluster cholesky");
    }
    return DeviceContext::Launched(LaunchCholesky(t, a, n, info_dev, ctx.stream()), "cholesky");
  }
  const cudaDataType_t ct = CudaType(t);
  size_t device_bytes = 0, host_bytes = 0;
  ATP_CUSOLVER(cusolverDnXpotrf_bufferSize(ctx.cusolver(), ctx.cusolver_params(),
                                           CUBLAS_FILL_MODE_UPPER, n, ct, a, n, ct, &device_bytes,
                                           &host_bytes));
  ATP_ASSIGN_OR_RETURN(DeviceBuffer work, ctx.Alloc(device_bytes));
  std::vector<char> host_work(host_bytes);
  ATP_CUSOLVER(cusolverDnXpotrf(ctx.cusolver(), ctx.cusolver_params(), CUBLAS_FILL_MODE_UPPER, n,
                                ct, a, n, ct, work.get(), device_bytes,
                                host_bytes ? host_work.data() : nullptr, host_bytes, info_dev));
  return absl::OkStatus();
}

absl::Status SolveCholeskyFactor(DeviceContext& ctx, DevType t, int64_t n, const void* r,
                                 bool columns, int64_t other, void* y, bool own) {
  if (own && columns && SolveUpperRightSupported(t, n)) {
    ATP_ASSIGN_OR_RETURN(DeviceBuffer workspace, ctx.Alloc(SolveUpperRightWorkspaceBytes(n)));
    return DeviceContext::Launched(
        LaunchSolveUpperRight(t, r, n, y, other, workspace.get(), ctx.stream()),
        "triangular solve");
  }
  if (!FitsInt(n) || !FitsInt(other)) return absl::InvalidArgumentError("trsm size out of range");
  const int ni = static_cast<int>(n), oi = static_cast<int>(other);
  // columns: the row-major y [rows, n] is the column-major yᵀ [n, rows]; y R⁻¹ = (R⁻ᵀ yᵀ)ᵀ, so
  // solve Rᵀ X = yᵀ from the left. rows: the row-major y [n, cols] is column-major yᵀ
  // [cols, n]; R⁻ᵀ y = (yᵀ R⁻¹)ᵀ, so solve X R = yᵀ from the right.
  const cublasSideMode_t side = columns ? CUBLAS_SIDE_LEFT : CUBLAS_SIDE_RIGHT;
  const cublasOperation_t op = columns ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int m = columns ? ni : oi;
  const int nn = columns ? oi : ni;
  if (t == DevType::kF64) {
    const double one = 1.0;
    ATP_CUBLAS(cublasDtrsm(ctx.cublas(), side, CUBLAS_FILL_MODE_UPPER, op, CUBLAS_DIAG_NON_UNIT, m,
                           nn, &one, static_cast<const double*>(r), ni, static_cast<double*>(y),
                           m));
  } else if (t == DevType::kF32) {
    const float one = 1.0f;
    ATP_CUBLAS(cublasStrsm(ctx.cublas(), side, CUBLAS_FILL_MODE_UPPER, op, CUBLAS_DIAG_NON_UNIT, m,
                           nn, &one, static_cast<const float*>(r), ni, static_cast<float*>(y), m));
  } else {
    return absl::InternalError("SolveCholeskyFactor: want f32/f64");
  }
  return absl::OkStatus();
}

const char* EigSolverName(EigSolver solver) {
  switch (solver) {
    case EigSolver::kSyevd:
      return "syevd";
    case EigSolver::kSyevj:
      return "syevj";
    case EigSolver::kSyevBatched:
      return "syevBatched";
    case EigSolver::kGesvdp:
      return "gesvdp";
    case EigSolver::kResident:
      return "resident";
  }
  return "?";
}

absl::Status SymmetricEigen(DeviceContext& ctx, EigSolver solver, DevType t, int64_t n, void* a,
                            void* w, int* info_dev, bool vectors,
                            const std::function<absl::Status()>& beside) {
  bool beside_called = false;
  auto call_beside = [&]() -> absl::Status {
    if (!beside || beside_called) return absl::OkStatus();
    beside_called = true;
    return beside();
  };
  if (t != DevType::kF32 && t != DevType::kF64) return absl::InternalError("Eigen: want f32/f64");
  if (!FitsInt(n)) return absl::InvalidArgumentError("eigensolver size out of range");
  if (solver == EigSolver::kResident) {
    if (t == DevType::kF64 && vectors && SmallEigenSupported(n)) {
      // Tridiagonalise; then T's eigenpairs on the main stream beside Q on the side stream (both
      // latency-bound), and the eigenvectors of a as Zᵀ·Qᵀ in one GEMM.
      ATP_ASSIGN_OR_RETURN(DeviceBuffer work, ctx.Alloc(SmallEigenWorkspaceBytes(n)));
      ATP_ASSIGN_OR_RETURN(DeviceBuffer vecs, ctx.Alloc(DevType::kF64, n * n));
      ATP_ASSIGN_OR_RETURN(DeviceBuffer fallback, ctx.Alloc(sizeof(int)));
      const double* a64 = static_cast<const double*>(a);
      // Side work starts once the tridiagonalisation's cluster runs (placed first, it is not
      // kept waiting for SMs that a side GEMM holds).
      if (beside) ATP_RETURN_IF_ERROR(ctx.ArmStartFlag());
      ATP_RETURN_IF_ERROR(
          DeviceContext::Launched(LaunchSmallEigenReduce(a64, n, work.get(), ctx.stream(),
                                                         beside ? ctx.start_flag() : nullptr),
                                  "tridiagonalisation"));
      if (beside) {
        (void)ctx.SideWaitsForStart();
        ATP_RETURN_IF_ERROR(call_beside());
      }
      ATP_RETURN_IF_ERROR(ctx.ForkSide());
      absl::Status side_status;
      {
        SideStreamScope side(ctx);
        side_status = DeviceContext::Launched(LaunchSmallEigenFormQ(n, work.get(), ctx.stream()),
                                              "reflectors to Q");
      }
      const absl::Status main_status =
          DeviceContext::Launched(LaunchSmallEigenOfT(n, 0, static_cast<double*>(w),
                                                      fallback.as<int>(), work.get(), ctx.stream()),
                                  "tridiagonal eigenpairs");
      // Joined before any return: the workspace is freed in the main stream's order.
      ATP_RETURN_IF_ERROR(ctx.JoinSide());
      ATP_RETURN_IF_ERROR(side_status);
      ATP_RETURN_IF_ERROR(main_status);
      ATP_RETURN_IF_ERROR(Gemm(ctx, true, false, n, n, n, 1.0,
                               ConstMat{DevType::kF64, SmallEigenVectorsOfT(work.get(), n), n},
                               ConstMat{DevType::kF64, SmallEigenQt(work.get(), n), n}, 0.0,
                               Mat{DevType::kF64, vecs.get(), n}));
      int fell_back = 1;
      ATP_RETURN_IF_ERROR(ctx.CopyToHost(&fell_back, fallback.get(), sizeof(int)));
      if (fell_back == 0) {
        ATP_CUDA(cudaMemcpyAsync(a, vecs.get(), n * n * sizeof(double), cudaMemcpyDeviceToDevice,
                                 ctx.stream()));
        ATP_CUDA(cudaMemsetAsync(info_dev, 0, sizeof(int), ctx.stream()));
        return absl::OkStatus();
      }
      // A group of (nearly) equal eigenvalues: a is untouched, cuSOLVER takes over.
    }
    solver = EigSolver::kSyevd;
  }
  if (beside && !beside_called) {
    ATP_RETURN_IF_ERROR(ctx.ForkSide());
    ATP_RETURN_IF_ERROR(call_beside());
  }
  const cudaDataType_t ct = CudaType(t);
  const cusolverEigMode_t mode = vectors ? CUSOLVER_EIG_MODE_VECTOR : CUSOLVER_EIG_MODE_NOVECTOR;
  if (solver == EigSolver::kSyevd) {
    size_t device_bytes = 0, host_bytes = 0;
    ATP_CUSOLVER(cusolverDnXsyevd_bufferSize(ctx.cusolver(), ctx.cusolver_params(), mode,
                                             CUBLAS_FILL_MODE_LOWER, n, ct, a, n, ct, w, ct,
                                             &device_bytes, &host_bytes));
    ATP_ASSIGN_OR_RETURN(DeviceBuffer work, ctx.Alloc(device_bytes));
    std::vector<char> host_work(host_bytes);
    ATP_CUSOLVER(cusolverDnXsyevd(
        ctx.cusolver(), ctx.cusolver_params(), mode, CUBLAS_FILL_MODE_LOWER, n, ct, a, n, ct, w, ct,
        work.get(), device_bytes, host_bytes ? host_work.data() : nullptr, host_bytes, info_dev));
    return absl::OkStatus();
  }
  if (solver == EigSolver::kSyevBatched) {
    size_t device_bytes = 0, host_bytes = 0;
    ATP_CUSOLVER(cusolverDnXsyevBatched_bufferSize(ctx.cusolver(), ctx.cusolver_params(), mode,
                                                   CUBLAS_FILL_MODE_LOWER, n, ct, a, n, ct, w, ct,
                                                   &device_bytes, &host_bytes, 1));
    ATP_ASSIGN_OR_RETURN(DeviceBuffer work, ctx.Alloc(device_bytes));
    std::vector<char> host_work(host_bytes);
    ATP_CUSOLVER(cusolverDnXsyevBatched(ctx.cusolver(), ctx.cusolver_params(), mode,
                                        CUBLAS_FILL_MODE_LOWER, n, ct, a, n, ct, w, ct, work.get(),
                                        device_bytes, host_bytes ? host_work.data() : nullptr,
                                        host_bytes, info_dev, 1));
    if (host_bytes > 0) ATP_RETURN_IF_ERROR(ctx.Synchronize());
    return absl::OkStatus();
  }
  if (solver == EigSolver::kGesvdp) {
    // For a positive semidefinite a the SVD is the eigen-decomposition (descending): reverse it.
    ATP_ASSIGN_OR_RETURN(DeviceBuffer u, ctx.Alloc(t, n * n));
    ATP_ASSIGN_OR_RETURN(DeviceBuffer v, ctx.Alloc(t, n * n));
    ATP_ASSIGN_OR_RETURN(DeviceBuffer s, ctx.Alloc(t, n));
    size_t device_bytes = 0, host_bytes = 0;
    ATP_CUSOLVER(cusolverDnXgesvdp_bufferSize(ctx.cusolver(), ctx.cusolver_params(), mode, 0, n, n,
                                              ct, a, n, ct, s.get(), ct, u.get(), n, ct, v.get(), n,
                                              ct, &device_bytes, &host_bytes));
    ATP_ASSIGN_OR_RETURN(DeviceBuffer work, ctx.Alloc(device_bytes));
    std::vector<char> host_work(host_bytes);
    double err_sigma = 0;
    ATP_CUSOLVER(cusolverDnXgesvdp(ctx.cusolver(), ctx.cusolver_params(), mode, 0, n, n, ct, a, n,
                                   ct, s.get(), ct, u.get(), n, ct, v.get(), n, ct, work.get(),
                                   device_bytes, host_bytes ? host_work.data() : nullptr,
                                   host_bytes, info_dev, &err_sigma));
    ATP_RETURN_IF_ERROR(DeviceContext::Launched(
        LaunchGatherRowsReversed(t, s.get(), n, 1, n, w, ctx.stream()), "reverse values"));
    if (vectors) {
      ATP_RETURN_IF_ERROR(DeviceContext::Launched(
          LaunchGatherRowsReversed(t, u.get(), n, n, n, a, ctx.stream()), "reverse vectors"));
    }
    return ctx.Synchronize();
  }
  syevjInfo_t raw = nullptr;
  ATP_CUSOLVER(cusolverDnCreateSyevjInfo(&raw));
  SyevjInfo params(raw);
  ATP_CUSOLVER(cusolverDnXsyevjSetTolerance(raw, t == DevType::kF64 ? 1e-14 : 1e-7));
  ATP_CUSOLVER(cusolverDnXsyevjSetMaxSweeps(raw, 100));
  const int ni = static_cast<int>(n);
  int lwork = 0;
  if (t == DevType::kF64) {
    ATP_CUSOLVER(cusolverDnDsyevj_bufferSize(ctx.cusolver(), CUSOLVER_EIG_MODE_VECTOR,
                                             CUBLAS_FILL_MODE_LOWER, ni, static_cast<double*>(a),
                                             ni, static_cast<double*>(w), &lwork, raw));
    ATP_ASSIGN_OR_RETURN(DeviceBuffer work, ctx.Alloc(DevType::kF64, lwork));
    ATP_CUSOLVER(cusolverDnDsyevj(ctx.cusolver(), CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER,
                                  ni, static_cast<double*>(a), ni, static_cast<double*>(w),
                                  work.as<double>(), lwork, info_dev, raw));
  } else {
    ATP_CUSOLVER(cusolverDnSsyevj_bufferSize(ctx.cusolver(), CUSOLVER_EIG_MODE_VECTOR,
                                             CUBLAS_FILL_MODE_LOWER, ni, static_cast<float*>(a), ni,
                                             static_cast<float*>(w), &lwork, raw));
    ATP_ASSIGN_OR_RETURN(DeviceBuffer work, ctx.Alloc(DevType::kF32, lwork));
    ATP_CUSOLVER(cusolverDnSsyevj(ctx.cusolver(), CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER,
                                  ni, static_cast<float*>(a), ni, static_cast<float*>(w),
                                  work.as<float>(), lwork, info_dev, raw));
  }
  // The Jacobi parameters must outlive the queued solve.
  ATP_RETURN_IF_ERROR(ctx.Synchronize());
  return absl::OkStatus();
}

}  // namespace atp::kernels::cuda
