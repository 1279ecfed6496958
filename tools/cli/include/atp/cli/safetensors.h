// .safetensors files as the atp CLI holds them: every tensor as a kernels::Tensor.
//
// Reading goes through the shared strict reader of atp/formats/safetensors.h (the client SDK uses
// the same one): F32, F16 and BF16 tensors, and a malformed header, another dtype, offsets outside
// the file or overlapping, a byte count that does not match the shape, or a truncated file each
// give INVALID_ARGUMENT with one line that names the file and what was expected. Writing is the
// CLI's own. Thread-safe: pure functions (distinct files).
#ifndef ATP_CLI_SAFETENSORS_H_
#define ATP_CLI_SAFETENSORS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "atp/formats/safetensors.h"
#include "atp/kernels/layer.h"
#include "atp/kernels/tensor.h"

namespace atp::cli {

using Metadata = formats::Metadata;

struct SafetensorsFile {
  Metadata metadata;
  kernels::WeightMap tensors;
};

// Reads every tensor and the metadata of `path`. NOT_FOUND when the file does not exist.
absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path);

// Reads every tensor of an open `file` into kernels tensors (no copy beyond the file read).
absl::StatusOr<kernels::WeightMap> ReadTensors(formats::SafetensorsReader& file);

// Writes `tensors` (sorted by name, each aligned to 8 bytes in the data section) and `metadata`
// (omitted when empty). The file appears atomically. INVALID_ARGUMENT for an empty name or the
// reserved name "__metadata__".
absl::Status WriteSafetensors(const std::string& path, const kernels::WeightMap& tensors,
                              const Metadata& metadata);

}  // namespace atp::cli

#endif  // ATP_CLI_SAFETENSORS_H_
