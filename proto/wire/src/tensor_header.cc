#include "atp/wire/tensor_header.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "atp/wire/crc32c.h"

namespace atp::wire {

int DTypeBytes(int dtype) {
  switch (dtype) {
    case atp::v1::DTYPE_F32:
      return 4;
    case atp::v1::DTYPE_F16:
    case atp::v1::DTYPE_BF16:
      return 2;
    default:
      return 0;
  }
}

absl::StatusOr<TensorLayout> CheckTensorHeader(const atp::v1::TensorHeader& header,
                                               uint64_t max_bytes, absl::string_view what) {
  const int elem = DTypeBytes(header.dtype());
  if (elem == 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has dtype ", header.dtype(),
                                                   ", want DTYPE_F32, DTYPE_F16 or DTYPE_BF16"));
  }
  const std::string shape_text = absl::StrCat("[", absl::StrJoin(header.shape(), ","), "]");
  if (header.shape_size() > kMaxTensorDims) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has ", header.shape_size(),
                                                   " dimensions, want at most ", kMaxTensorDims));
  }
  uint64_t bytes = static_cast<uint64_t>(elem);
  for (int64_t dim : header.shape()) {
    if (dim < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " has shape ", shape_text, ", want every dimension >= 1"));
    }
    if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(dim), &bytes)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " has shape ", shape_text, ", whose byte size overflows 64 bits"));
    }
  }
  if (header.byte_size() != bytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has byte_size ", header.byte_size(),
                                                   ", want ", bytes, " for shape ", shape_text,
                                                   " of ", atp::v1::DType_Name(header.dtype())));
  }
  if (max_bytes != 0 && bytes > max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        what, " has ", bytes, " bytes, more than the limit of ", max_bytes, " bytes per tensor"));
  }
  TensorLayout layout;
  layout.name = header.name();
  layout.dtype = header.dtype();
  layout.shape.assign(header.shape().begin(), header.shape().end());
  layout.byte_size = bytes;
  layout.crc32c = header.crc32c();
  return layout;
}

atp::v1::TensorHeader MakeTensorHeader(absl::string_view name, atp::v1::DType dtype,
                                       absl::Span<const int64_t> shape,
                                       absl::Span<const uint8_t> payload) {
  atp::v1::TensorHeader header;
  header.set_name(std::string(name));
  header.set_dtype(dtype);
  for (int64_t d : shape) header.add_shape(d);
  header.set_byte_size(payload.size());
  header.set_crc32c(Crc32c(payload.data(), payload.size()));
  return header;
}

}  // namespace atp::wire
