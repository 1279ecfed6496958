// Element types of device buffers, shared by the kernels (.cu) and the host code (.cc).
//
// No absl and no C++20 here: nvcc compiles this as C++17. Thread-safe: plain values.
#ifndef ATP_KERNELS_CUDA_DEVICE_TYPES_H_
#define ATP_KERNELS_CUDA_DEVICE_TYPES_H_

#include <cstddef>
#include <cstdint>

namespace atp::kernels::cuda {

// kF64 exists only on the device, for the accurate basis paths.
enum class DevType : uint8_t { kF32, kF16, kBF16, kF64 };

inline size_t DevTypeSize(DevType t) {
  switch (t) {
    case DevType::kF32:
      return 4;
    case DevType::kF64:
      return 8;
    default:
      return 2;
  }
}

inline const char* DevTypeName(DevType t) {
  switch (t) {
    case DevType::kF32:
      return "f32";
    case DevType::kF16:
      return "f16";
    case DevType::kBF16:
      return "bf16";
    case DevType::kF64:
      return "f64";
  }
  return "?";
}

inline bool IsHalf(DevType t) { return t == DevType::kF16 || t == DevType::kBF16; }

}  // namespace atp::kernels::cuda

#endif  // ATP_KERNELS_CUDA_DEVICE_TYPES_H_
