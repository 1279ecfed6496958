// Element types of tensors and conversions between them.
//
// atp computes in f32 (f64 in test oracles); tensors on the wire and in memory may be f32, f16 or
// bf16. Conversions round to nearest even and keep NaN and infinities. Thread-safe: pure functions.
#ifndef ATP_KERNELS_DTYPE_H_
#define ATP_KERNELS_DTYPE_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace atp::kernels {

// The numbers match atp.v1.DType on the wire.
enum class DType : uint8_t {
  kF32 = 1,
  kF16 = 2,
  kBF16 = 3,
};

// Bytes per element: 4 or 2.
size_t DTypeSize(DType dtype);

// "f32", "f16" or "bf16".
absl::string_view DTypeName(DType dtype);

// Parses "f32"/"float32", "f16"/"float16", "bf16"/"bfloat16".
absl::StatusOr<DType> ParseDType(absl::string_view name);

// Scalar conversions (round to nearest even; NaN stays NaN).
float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);
float BFloat16ToFloat(uint16_t b);
uint16_t FloatToBFloat16(float f);

// Converts n elements of type `src` at `in` to f32 at `out`.
void ConvertToF32(DType src, const void* in, float* out, size_t n);
// Converts n f32 elements at `in` to type `dst` at `out`.
void ConvertFromF32(const float* in, DType dst, void* out, size_t n);

}  // namespace atp::kernels

#endif  // ATP_KERNELS_DTYPE_H_
