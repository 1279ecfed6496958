// Checks an atp.v1.TensorHeader before any of its payload is accepted, and builds headers.
// Thread-safe: pure functions.
#ifndef ATP_WIRE_TENSOR_HEADER_H_
#define ATP_WIRE_TENSOR_HEADER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "atp/v1/tensor.pb.h"

namespace atp::wire {

// Most dimensions a tensor header may have.
inline constexpr int kMaxTensorDims = 8;

// A tensor header that passed CheckTensorHeader, in plain terms.
struct TensorLayout {
  std::string name;
  atp::v1::DType dtype = atp::v1::DTYPE_UNSPECIFIED;
  std::vector<int64_t> shape;
  uint64_t byte_size = 0;
  uint32_t crc32c = 0;
};

// Bytes per element of a wire dtype (4 or 2); 0 for DTYPE_UNSPECIFIED or an unknown number.
int DTypeBytes(int dtype);

// Checks that `header` describes a tensor the receiver can take: a known dtype, at most
// kMaxTensorDims dimensions each >= 1, byte_size == product(shape) * DTypeBytes(dtype) without
// overflow (INVALID_ARGUMENT naming `what` otherwise), and byte_size <= max_bytes unless max_bytes
// is 0 (RESOURCE_EXHAUSTED).
absl::StatusOr<TensorLayout> CheckTensorHeader(const atp::v1::TensorHeader& header,
                                               uint64_t max_bytes, absl::string_view what);

// A header for a payload the caller holds; computes the CRC-32C of `payload`.
atp::v1::TensorHeader MakeTensorHeader(absl::string_view name, atp::v1::DType dtype,
                                       absl::Span<const int64_t> shape,
                                       absl::Span<const uint8_t> payload);

}  // namespace atp::wire

#endif  // ATP_WIRE_TENSOR_HEADER_H_
