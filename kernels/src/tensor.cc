#include "atp/kernels/tensor.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sys/mman.h>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace atp::kernels {
namespace {

// Large tensors (activations of long sequences, payloads the worker relays) are mapped on
// transparent huge pages where the kernel allows it: a fresh 256 MiB buffer otherwise takes 65536
// page faults on first touch, which measured as most of the worker's time for a copy-bound op.
constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kHugeThreshold = size_t{8} << 20;

std::byte* AllocateBytes(size_t n) {
  if (n < kHugeThreshold) return static_cast<std::byte*>(std::malloc(n == 0 ? 1 : n));
  const size_t rounded = (n + kHugePage - 1) / kHugePage * kHugePage;
  void* p = std::aligned_alloc(kHugePage, rounded);
  if (p != nullptr) madvise(p, rounded, MADV_HUGEPAGE);  // advisory: failure is harmless
  return static_cast<std::byte*>(p);
}

}  // namespace

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
      byte_size_(static_cast<size_t>(NumElements(shape_)) * DTypeSize(dtype)) {
  bytes_.reset(AllocateBytes(byte_size_));
}

void Tensor::FreeBytes::operator()(std::byte* p) const { std::free(p); }

Tensor::Tensor(Tensor&& other) noexcept
    : dtype_(other.dtype_),
      shape_(std::move(other.shape_)),
      bytes_(std::move(other.bytes_)),
      byte_size_(std::exchange(other.byte_size_, 0)) {
  other.shape_.clear();
}

Tensor& Tensor::operator=(Tensor&& other) noexcept {
  dtype_ = other.dtype_;
  shape_ = std::move(other.shape_);
  other.shape_.clear();
  bytes_ = std::move(other.bytes_);
  byte_size_ = std::exchange(other.byte_size_, 0);
  return *this;
}

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
