// Argument checks shared by the Validate* functions and the backends (private to kernels/).
#ifndef ATP_KERNELS_SRC_VALIDATE_UTIL_H_
#define ATP_KERNELS_SRC_VALIDATE_UTIL_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "atp/kernels/dtype.h"
#include "atp/kernels/tensor.h"

namespace atp::kernels {

// INVALID_ARGUMENT naming `what` unless dtype is one of the DType enumerators (a value read off the
// wire may be anything).
absl::Status CheckDType(DType dtype, absl::string_view what);

// CheckDType, CheckRank and CheckFinite in that order.
absl::Status CheckInputTensor(const TensorView& view, int want_rank, absl::string_view what);

// INVALID_ARGUMENT unless the backend max rank of a request is >= 0.
absl::Status CheckMaxRank(int64_t max_rank);

}  // namespace atp::kernels

#endif  // ATP_KERNELS_SRC_VALIDATE_UTIL_H_
