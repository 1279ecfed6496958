// A small reader of .safetensors files for LayerSpec::FromSafetensors: an 8-byte little-endian
// header length N, N bytes of JSON ({"name": {"dtype", "shape", "data_offsets"}, "__metadata__":
// {...}}), then the data. F32, F16 and BF16 tensors. The client SDK keeps its own reader (the CLI's
// depends on the kernels library, which the SDK must not). Thread-safe: pure functions.
#ifndef ATP_CLIENT_SRC_SAFETENSORS_READER_H_
#define ATP_CLIENT_SRC_SAFETENSORS_READER_H_

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "atp/client/tensor.h"

namespace atp::client::internal {

struct SafetensorsContents {
  std::map<std::string, std::string> metadata;
  std::map<std::string, Tensor> tensors;
};

// Every tensor and the metadata of `path`. NOT_FOUND when the file does not exist;
// INVALID_ARGUMENT naming the file and the problem when it is malformed (bad JSON, another dtype,
// offsets outside the data or not matching the shape, a truncated file).
absl::StatusOr<SafetensorsContents> ReadSafetensorsFile(const std::string& path);

}  // namespace atp::client::internal

#endif  // ATP_CLIENT_SRC_SAFETENSORS_READER_H_
