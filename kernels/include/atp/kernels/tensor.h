// Host tensors: `Tensor` owns a row-major buffer, `TensorView` borrows one.
//
// Row-major, little-endian, no padding: exactly NumElements(shape) * DTypeSize(dtype) bytes. Every
// dimension is >= 1 in a valid tensor. Neither type is thread-safe for concurrent mutation; const
// access from several threads is fine.
#ifndef ATP_KERNELS_TENSOR_H_
#define ATP_KERNELS_TENSOR_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "atp/kernels/dtype.h"

namespace atp::kernels {

using Shape = std::vector<int64_t>;

// Product of the dimensions (1 for a scalar).
int64_t NumElements(absl::Span<const int64_t> shape);

// "[64,32]".
std::string ShapeString(absl::Span<const int64_t> shape);

// A read-only view of a host tensor that someone else owns. `data` must stay valid while the view
// is used.
struct TensorView {
  DType dtype = DType::kF32;
  Shape shape;
  const void* data = nullptr;

  int64_t num_elements() const { return NumElements(shape); }
  size_t byte_size() const { return num_elements() * DTypeSize(dtype); }
  int64_t dim(int i) const { return shape[i]; }
  int rank() const { return static_cast<int>(shape.size()); }
};

// An owning host tensor. Move-only; Clone() copies.
class Tensor {
 public:
  Tensor() = default;
  // Allocates an uninitialised tensor (its bytes are not zeroed).
  Tensor(DType dtype, Shape shape);
  Tensor(Tensor&& other) noexcept;
  Tensor& operator=(Tensor&& other) noexcept;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;

  // An f32 tensor holding a copy of `values` (whose size must match the shape).
  static Tensor FromF32(Shape shape, absl::Span<const float> values);
  // A copy of `view`, converted to `dtype`.
  static Tensor CopyOf(const TensorView& view, DType dtype);
  static Tensor CopyOf(const TensorView& view) { return CopyOf(view, view.dtype); }

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[i]; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t num_elements() const { return NumElements(shape_); }
  size_t byte_size() const { return byte_size_; }
  bool empty() const { return byte_size_ == 0; }

  void* data() { return bytes_.get(); }
  const void* data() const { return bytes_.get(); }
  // Typed access; the caller must know the dtype (f32 → float, f16/bf16 → uint16_t).
  template <typename T>
  T* data_as() {
    return reinterpret_cast<T*>(bytes_.get());
  }
  template <typename T>
  const T* data_as() const {
    return reinterpret_cast<const T*>(bytes_.get());
  }

  TensorView view() const { return TensorView{dtype_, shape_, bytes_.get()}; }
  Tensor Clone() const { return CopyOf(view()); }
  // Reinterprets the same bytes with another shape of the same element count.
  absl::Status Reshape(Shape shape);

 private:
  DType dtype_ = DType::kF32;
  Shape shape_;
  // Default-initialised (not zeroed): every producer overwrites the whole tensor, and zeroing a
  // large payload would cost a pass over memory on the service's hot path.
  struct FreeBytes {
    void operator()(std::byte* p) const;
  };
  std::unique_ptr<std::byte, FreeBytes> bytes_;
  size_t byte_size_ = 0;
};

// INVALID_ARGUMENT naming `what` unless `view` has exactly `want_rank` dimensions, each >= 1.
absl::Status CheckRank(const TensorView& view, int want_rank, absl::string_view what);

// INVALID_ARGUMENT naming `what` and the first offending index if any element is NaN or infinite.
absl::Status CheckFinite(const TensorView& view, absl::string_view what);

}  // namespace atp::kernels

#endif  // ATP_KERNELS_TENSOR_H_
