// Tensors as the client SDK sees them: `TensorView` borrows the caller's memory, `Tensor` owns a
// result.
//
// Both are row-major (C order), little-endian and unpadded: exactly
// product(shape) * DTypeSize(dtype) bytes, the layout of the atp wire protocol, of NumPy's C-order
// arrays and of PyTorch's contiguous tensors. Every dimension of a valid tensor is >= 1.
//
// The send path never copies a TensorView's bytes: the SDK hands slices of the caller's buffer to
// gRPC, so the buffer must stay valid (and unmodified) until the call that uses it has finished,
// i.e. until a synchronous call returns or an asynchronous call's callback has run.
//
// Thread-safety: plain values. Const access from several threads is fine; mutation is not.
#ifndef ATP_CLIENT_TENSOR_H_
#define ATP_CLIENT_TENSOR_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace atp::client {

// Element types. The numbers are the wire's (atp.v1.DType).
enum class DType : uint8_t {
  kF32 = 1,   // IEEE 754 binary32
  kF16 = 2,   // IEEE 754 binary16
  kBF16 = 3,  // bfloat16 (the upper half of a binary32)
};

// Bytes per element: 4 or 2.
size_t DTypeSize(DType dtype);
// "f32", "f16" or "bf16".
absl::string_view DTypeName(DType dtype);

using Shape = std::vector<int64_t>;

// Product of the dimensions (1 for an empty shape).
int64_t NumElements(absl::Span<const int64_t> shape);
// "[64,32]".
std::string ShapeString(absl::Span<const int64_t> shape);

// A read-only view of a tensor the caller owns. Cheap to copy; copies share the caller's buffer.
struct TensorView {
  DType dtype = DType::kF32;
  Shape shape;
  const void* data = nullptr;

  TensorView() = default;
  TensorView(DType dtype, Shape shape, const void* data)
      : dtype(dtype), shape(std::move(shape)), data(data) {}
  // An f32 view of `data` (which must hold at least product(shape) floats).
  static TensorView F32(const float* data, Shape shape) {
    return TensorView(DType::kF32, std::move(shape), data);
  }

  int64_t num_elements() const { return NumElements(shape); }
  size_t byte_size() const { return static_cast<size_t>(num_elements()) * DTypeSize(dtype); }
  int rank() const { return static_cast<int>(shape.size()); }
  int64_t dim(int i) const { return shape[i]; }
  absl::Span<const uint8_t> bytes() const {
    return {static_cast<const uint8_t*>(data), byte_size()};
  }
};

// INVALID_ARGUMENT naming `what` unless `view` has data, `want_rank` dimensions (any rank when
// want_rank < 0) and every dimension >= 1.
absl::Status CheckTensorView(const TensorView& view, int want_rank, absl::string_view what);

// An owning tensor (a result, or weights the SDK keeps). Move-only; Clone() copies.
class Tensor {
 public:
  Tensor() = default;
  // An uninitialised tensor.
  Tensor(DType dtype, Shape shape);
  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;

  // A copy of `view`.
  static Tensor CopyOf(const TensorView& view);
  // An f32 tensor holding `values` (values.size() must equal product(shape)).
  static Tensor FromF32(Shape shape, absl::Span<const float> values);

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[i]; }
  int64_t num_elements() const { return NumElements(shape_); }
  size_t byte_size() const { return byte_size_; }
  bool empty() const { return byte_size_ == 0; }

  void* data() { return bytes_.get(); }
  const void* data() const { return bytes_.get(); }
  // Typed access; the caller knows the dtype (f32 → float, f16/bf16 → uint16_t).
  template <typename T>
  T* data_as() {
    return reinterpret_cast<T*>(bytes_.get());
  }
  template <typename T>
  const T* data_as() const {
    return reinterpret_cast<const T*>(bytes_.get());
  }
  absl::Span<uint8_t> mutable_bytes() { return {bytes_.get(), byte_size_}; }

  TensorView view() const { return TensorView(dtype_, shape_, bytes_.get()); }
  Tensor Clone() const { return CopyOf(view()); }

  // The elements as f32 (converted from f16/bf16).
  std::vector<float> ToF32() const;

 private:
  DType dtype_ = DType::kF32;
  Shape shape_;
  size_t byte_size_ = 0;
  std::unique_ptr<uint8_t[]> bytes_;
};

// A tensor that travels factored, X = U·C with U [L, r] and C [r, n] (DESIGN.md §1): the input and
// output form of low-rank linear layers, so that a chain of them never moves L×n tensors.
struct FactoredTensorView {
  TensorView u;
  TensorView c;
};

struct FactoredTensor {
  Tensor u;
  Tensor c;

  FactoredTensorView view() const { return {u.view(), c.view()}; }
  // U·C as a dense f32 [L, n] tensor (computed on the host, in f32).
  Tensor ToDense() const;
};

}  // namespace atp::client

#endif  // ATP_CLIENT_TENSOR_H_
