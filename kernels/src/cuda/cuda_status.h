// The one place where CUDA runtime, cuBLAS and cuSOLVER results become absl::Status (cuDNN's are
// translated in sdpa_cudnn.cc, the only file that sees cuDNN), plus the record of sticky device
// errors that turns the backend unhealthy.
//
// A sticky error (illegal address, launch failure, ...) leaves the CUDA context unusable until the
// process exits; it is recorded per device and health() reports FAILED_PRECONDITION from then on.
// Nothing here aborts. Thread-safe.
#ifndef ATP_KERNELS_CUDA_CUDA_STATUS_H_
#define ATP_KERNELS_CUDA_CUDA_STATUS_H_

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace atp::kernels::cuda {

// OK for cudaSuccess. Otherwise RESOURCE_EXHAUSTED for out-of-memory, FAILED_PRECONDITION for a
// missing driver or device (and for any call after a sticky error), INTERNAL for the rest; the
// message names `what` and CUDA's own error name and text. Records sticky errors.
absl::Status CudaStatus(cudaError_t err, absl::string_view what);
absl::Status CublasStatus(cublasStatus_t st, absl::string_view what);
absl::Status CusolverStatus(cusolverStatus_t st, absl::string_view what);

// True for errors after which the CUDA context cannot be used any more.
bool IsStickyCudaError(cudaError_t err);

// Records a sticky error of `device` (the first message is kept).
void RecordStickyError(int device, absl::string_view message);
// OK, or FAILED_PRECONDITION naming the first sticky error seen on `device`.
absl::Status StickyErrorStatus(int device);

}  // namespace atp::kernels::cuda

#define ATP_RETURN_IF_ERROR(expr)            \
  do {                                       \
    ::absl::Status atp_status_ = (expr);     \
    if (!atp_status_.ok()) return atp_status_; \
  } while (false)

#define ATP_STATUS_CONCAT_INNER(a, b) a##b
#define ATP_STATUS_CONCAT(a, b) ATP_STATUS_CONCAT_INNER(a, b)
#define ATP_ASSIGN_OR_RETURN(lhs, expr) \
  ATP_ASSIGN_OR_RETURN_IMPL(ATP_STATUS_CONCAT(atp_statusor_, __LINE__), lhs, expr)
#define ATP_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()

// Checks a CUDA runtime call: ATP_CUDA(cudaMemcpyAsync(...)).
#define ATP_CUDA(expr) ATP_RETURN_IF_ERROR(::atp::kernels::cuda::CudaStatus((expr), #expr))
#define ATP_CUBLAS(expr) ATP_RETURN_IF_ERROR(::atp::kernels::cuda::CublasStatus((expr), #expr))
#define ATP_CUSOLVER(expr) ATP_RETURN_IF_ERROR(::atp::kernels::cuda::CusolverStatus((expr), #expr))

#endif  // ATP_KERNELS_CUDA_CUDA_STATUS_H_
