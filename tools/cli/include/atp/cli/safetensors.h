// .safetensors files: an 8-byte little-endian header length N, N bytes of JSON header, then the
// tensor data. The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
// (offsets relative to the data section) and may hold "__metadata__", a string-to-string map.
//
// atp reads and writes F32, F16 and BF16 tensors. Reading is strict: a malformed header, another
// dtype, offsets outside the file or overlapping, a byte count that does not match the shape, or a
// truncated file each give INVALID_ARGUMENT with one line that names the file and what was
// expected. Thread-safe: pure functions (distinct files).
#ifndef ATP_CLI_SAFETENSORS_H_
#define ATP_CLI_SAFETENSORS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "atp/kernels/layer.h"
#include "atp/kernels/tensor.h"

namespace atp::cli {

using Metadata = std::map<std::string, std::string, std::less<>>;

struct SafetensorsFile {
  Metadata metadata;
  kernels::WeightMap tensors;
};

// Largest JSON header accepted (the reference implementation's limit).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;

// Reads every tensor and the metadata of `path`. NOT_FOUND when the file does not exist.
absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path);

// Writes `tensors` (sorted by name, each aligned to 8 bytes in the data section) and `metadata`
// (omitted when empty). The file appears atomically. INVALID_ARGUMENT for an empty name or the
// reserved name "__metadata__".
absl::Status WriteSafetensors(const std::string& path, const kernels::WeightMap& tensors,
                              const Metadata& metadata);

}  // namespace atp::cli

#endif  // ATP_CLI_SAFETENSORS_H_
