// Layer files: a layer (DESIGN.md §1) stored as .safetensors.
//
// An attention layer holds q_proj.weight, k_proj.weight, v_proj.weight, o_proj.weight and
// optionally the .bias of each; a linear layer holds weight and optionally bias. Tensors may be
// F32, F16 or BF16. `__metadata__` (string values) configures the layer:
//   num_heads     attention: number of query heads (required)
//   num_kv_heads  attention: number of KV heads, a divisor of num_heads (default num_heads)
//   head_dim      attention: per-head width (default q_proj.weight rows / num_heads)
//   key_scale     attention: "none" or "inv_sqrt_len" (default none)
//   scale         attention: softmax scale (default 1/sqrt(head_dim))
//   default_rank  rank policy when a request sets none: "energy 0.99" (the default), "fixed 64",
//                 "fraction 0.25", each optionally followed by " max N"
// d_model is inferred from the weights. Other metadata keys (such as "format") are ignored.
// Thread-safe: pure functions.
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

// Parses a rank policy as written by kernels::RankPolicyString ("energy 0.99", "fixed 64 max 128").
// INVALID_ARGUMENT naming `text` when it is not one, or when its value is out of range.
absl::StatusOr<kernels::RankPolicy> ParseRankPolicy(absl::string_view text);

// The layer held by `file`; errors name `path` and the offending tensor or metadata key, e.g.
// "L.safetensors: k_proj.weight has shape [64,32], want [64,48]". The spec is validated.
absl::StatusOr<kernels::LayerSpec> LayerFromSafetensors(SafetensorsFile file,
                                                        absl::string_view path);

// ReadSafetensors + LayerFromSafetensors.
absl::StatusOr<kernels::LayerSpec> ReadLayerFile(const std::string& path);

// The metadata that describes `spec` (the inverse of LayerFromSafetensors).
Metadata LayerMetadata(const kernels::LayerSpec& spec);

// Validates `spec` and writes its weights and metadata to `path`.
absl::Status WriteLayerFile(const std::string& path, const kernels::LayerSpec& spec);

}  // namespace atp::cli

#endif  // ATP_CLI_LAYER_FILE_H_
