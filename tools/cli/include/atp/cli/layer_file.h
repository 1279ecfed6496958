// Layer files: a layer (DESIGN.md §1) stored as .safetensors, read into and written from a
// kernels::LayerSpec.
//
// The convention — which tensors, which `__metadata__` keys (num_heads, num_kv_heads, head_dim,
// key_scale, scale, default_rank), their defaults and the errors for bad values — is defined once,
// in atp/formats/layer_file.h, which the client SDK's LayerSpec::FromSafetensors uses too; this
// file maps it to kernels types and adds the kernels' validation of the weights. Thread-safe: pure
// functions.
#ifndef ATP_CLI_LAYER_FILE_H_
#define ATP_CLI_LAYER_FILE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "atp/cli/safetensors.h"
#include "atp/kernels/layer.h"
#include "atp/kernels/rank_policy.h"

namespace atp::cli {

// Parses a rank policy as written by kernels::RankPolicyString ("energy 0.99", "fixed 64 max 128")
// with formats::ParseRankPolicy. INVALID_ARGUMENT naming `text` when it is not one, or when its
// value is out of range.
absl::StatusOr<kernels::RankPolicy> ParseRankPolicy(absl::string_view text);

// The layer stored in `path`; errors name `path` and the offending tensor or metadata key, e.g.
// "L.safetensors: k_proj.weight has shape [64,32], want [64,48]". The spec is validated
// (kernels::ValidateLayerSpec). A layer file without default_rank gets kernels' default policy.
absl::StatusOr<kernels::LayerSpec> ReadLayerFile(const std::string& path);

// The metadata that describes `spec` (the inverse of ReadLayerFile).
Metadata LayerMetadata(const kernels::LayerSpec& spec);

// Validates `spec` and writes its weights and metadata to `path`.
absl::Status WriteLayerFile(const std::string& path, const kernels::LayerSpec& spec);

}  // namespace atp::cli

#endif  // ATP_CLI_LAYER_FILE_H_
