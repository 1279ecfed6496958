#include "atp/client/tensor.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace atp::client {
namespace {

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3ffu) << 13;
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | mant << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

float BFloat16ToFloat(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

}  // namespace

size_t DTypeSize(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }

absl::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kF16:
      return "f16";
    case DType::kBF16:
      return "bf16";
  }
  return "unknown";
}

int64_t NumElements(absl::Span<const int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

absl::Status CheckTensorView(const TensorView& view, int want_rank, absl::string_view what) {
  if (want_rank >= 0 && view.rank() != want_rank) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has shape ", ShapeString(view.shape),
                                                   ", want ", want_rank, " dimensions"));
  }
  for (int64_t d : view.shape) {
    if (d < 1) {
      return absl::InvalidArgumentError(absl::StrCat(what, " has shape ", ShapeString(view.shape),
                                                     ", want every dimension >= 1"));
    }
  }
  if (view.dtype != DType::kF32 && view.dtype != DType::kF16 && view.dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " has dtype number ", static_cast<int>(view.dtype), ", want f32, f16 or bf16"));
  }
  if (view.data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has no data"));
  }
  return absl::OkStatus();
}

Tensor::Tensor(DType dtype, Shape shape)
    : dtype_(dtype),
      shape_(std::move(shape)),
      byte_size_(static_cast<size_t>(NumElements(shape_)) * DTypeSize(dtype)),
      bytes_(new uint8_t[byte_size_ == 0 ? 1 : byte_size_]) {}

Tensor Tensor::CopyOf(const TensorView& view) {
  Tensor t(view.dtype, view.shape);
  if (t.byte_size_ > 0) std::memcpy(t.bytes_.get(), view.data, t.byte_size_);
  return t;
}

Tensor Tensor::FromF32(Shape shape, absl::Span<const float> values) {
  Tensor t(DType::kF32, std::move(shape));
  std::memcpy(t.bytes_.get(), values.data(), std::min(t.byte_size_, values.size() * 4));
  return t;
}

std::vector<float> Tensor::ToF32() const {
  const int64_t n = num_elements();
  std::vector<float> out(static_cast<size_t>(n));
  if (byte_size_ == 0) return out;
  switch (dtype_) {
    case DType::kF32:
      std::memcpy(out.data(), bytes_.get(), byte_size_);
      break;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) out[i] = HalfToFloat(data_as<uint16_t>()[i]);
      break;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) out[i] = BFloat16ToFloat(data_as<uint16_t>()[i]);
      break;
  }
  return out;
}

Tensor FactoredTensor::ToDense() const {
  const int64_t rows = u.dim(0), r = u.dim(1), cols = c.dim(1);
  const std::vector<float> uf = u.ToF32();
  const std::vector<float> cf = c.ToF32();
  Tensor y(DType::kF32, {rows, cols});
  float* out = y.data_as<float>();
  for (int64_t i = 0; i < rows; ++i) {
    float* row = out + i * cols;
    std::fill(row, row + cols, 0.0f);
    for (int64_t k = 0; k < r; ++k) {
      const float a = uf[i * r + k];
      const float* crow = cf.data() + k * cols;
      for (int64_t j = 0; j < cols; ++j) row[j] += a * crow[j];
    }
  }
  return y;
}

}  // namespace atp::client
