#include "atp/kernels/tensor.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace atp::kernels {

int64_t NumElements(absl::Span<const int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

Tensor::Tensor(DType dtype, Shape shape)
    : dtype_(dtype),
      shape_(std::move(shape)),
      bytes_(static_cast<size_t>(NumElements(shape_)) * DTypeSize(dtype)) {}

Tensor Tensor::FromF32(Shape shape, absl::Span<const float> values) {
  Tensor t(DType::kF32, std::move(shape));
  std::memcpy(t.data(), values.data(), std::min(t.byte_size(), values.size() * sizeof(float)));
  return t;
}

Tensor Tensor::CopyOf(const TensorView& view, DType dtype) {
  Tensor t(dtype, view.shape);
  const size_t n = static_cast<size_t>(view.num_elements());
  if (dtype == view.dtype) {
    std::memcpy(t.data(), view.data, t.byte_size());
  } else if (dtype == DType::kF32) {
    ConvertToF32(view.dtype, view.data, t.data_as<float>(), n);
  } else if (view.dtype == DType::kF32) {
    ConvertFromF32(static_cast<const float*>(view.data), dtype, t.data(), n);
  } else {
    std::vector<float> tmp(n);
    ConvertToF32(view.dtype, view.data, tmp.data(), n);
    ConvertFromF32(tmp.data(), dtype, t.data(), n);
  }
  return t;
}

absl::Status Tensor::Reshape(Shape shape) {
  if (NumElements(shape) != num_elements()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot reshape ", ShapeString(shape_), " to ",
                                                   ShapeString(shape)));
  }
  shape_ = std::move(shape);
  return absl::OkStatus();
}

absl::Status CheckRank(const TensorView& view, int want_rank, absl::string_view what) {
  if (view.rank() != want_rank) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has shape ", ShapeString(view.shape),
                                                   ", want ", want_rank, " dimensions"));
  }
  for (int64_t d : view.shape) {
    if (d < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " has shape ", ShapeString(view.shape), ", want every dimension >= 1"));
    }
  }
  if (view.data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has no data"));
  }
  return absl::OkStatus();
}

absl::Status CheckFinite(const TensorView& view, absl::string_view what) {
  const int64_t n = view.num_elements();
  auto fail = [&](int64_t i) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " contains a non-finite value (NaN or infinity) at flat index ", i, ", want finite"));
  };
  if (view.dtype == DType::kF32) {
    const auto* p = static_cast<const uint32_t*>(view.data);
    for (int64_t i = 0; i < n; ++i) {
      if ((p[i] & 0x7f800000u) == 0x7f800000u) return fail(i);
    }
  } else {
    const uint16_t exp_mask = view.dtype == DType::kF16 ? 0x7c00u : 0x7f80u;
    const auto* p = static_cast<const uint16_t*>(view.data);
    for (int64_t i = 0; i < n; ++i) {
      if ((p[i] & exp_mask) == exp_mask) return fail(i);
    }
  }
  return absl::OkStatus();
}

}  // namespace atp::kernels
