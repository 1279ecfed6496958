// NumPy .npy files (format versions 1.0, 2.0 and 3.0) holding one float32 or float16 array in C
// order, little-endian: how the atp CLI reads inputs and writes outputs.
//
// Reading is strict: a Fortran-ordered array, another dtype, a big-endian array, a malformed
// header, a truncated file or bytes after the data each give INVALID_ARGUMENT with one line that
// names the file and what was expected. Thread-safe: pure functions (distinct files).
#ifndef ATP_CLI_NPY_H_
#define ATP_CLI_NPY_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "atp/kernels/tensor.h"

namespace atp::cli {

// Reads the array in `path` into an f32 or f16 tensor of the file's shape (a 0-d array gives shape
// []). NOT_FOUND when the file does not exist.
absl::StatusOr<kernels::Tensor> ReadNpy(const std::string& path);

// Writes `tensor` (f32 or f16; INVALID_ARGUMENT for bf16, which .npy cannot hold) as a version 1.0
// .npy file whose header is padded to 64 bytes, as NumPy writes it. The file appears atomically.
absl::Status WriteNpy(const std::string& path, const kernels::TensorView& tensor);

}  // namespace atp::cli

#endif  // ATP_CLI_NPY_H_
