// Layer files: a layer (DESIGN.md §1) stored as .safetensors — the convention the atp CLI writes
// and both the CLI and the client SDK (LayerSpec::FromSafetensors) read.
//
// An attention layer holds q_proj.weight, k_proj.weight, v_proj.weight, o_proj.weight and
// optionally the .bias of each; a linear layer holds weight and optionally bias. Tensors may be
// F32, F16 or BF16. `__metadata__` (string values) configures the layer:
//   num_heads     attention: number of query heads (required)
//   num_kv_heads  attention: number of KV heads, a divisor of num_heads (default num_heads)
//   head_dim      attention: per-head width (default q_proj.weight rows / num_heads)
//   key_scale     attention: "none" or "inv_sqrt_len" (default none)
//   scale         attention: softmax scale (default 1/sqrt(head_dim))
//   default_rank  rank policy when a request sets none: "energy 0.99", "fixed 64",
//                 "fraction 0.25", each optionally followed by " max N" (default: the reader's)
// d_model is inferred from the weights. Other metadata keys (such as "format") are ignored.
//
// This module turns the metadata and the tensors' names and shapes into a plain LayerConfig; the
// CLI and the SDK map it to their own layer types, whose validation then checks every weight's
// shape against it. Thread-safe: plain values and pure functions.
#ifndef ATP_FORMATS_LAYER_FILE_H_
#define ATP_FORMATS_LAYER_FILE_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "atp/formats/safetensors.h"

namespace atp::formats {

// A rank policy (DESIGN.md §1) as written in a layer file or on a command line.
struct RankPolicy {
  enum class Kind { kFixed, kFraction, kEnergy };
  Kind kind = Kind::kEnergy;
  double value = 0.99;
  // Upper bound on r; 0 means none.
  int64_t max_rank = 0;
};

// The largest fixed rank (the wire carries it as uint32).
inline constexpr int64_t kMaxFixedRank = 4294967295;

// Parses "energy T", "fixed N" or "fraction F", each optionally followed by "max N" (words
// separated by spaces). INVALID_ARGUMENT naming `text` when it is not one of them, or naming the
// value when it is out of range: fixed an integer in [1, kMaxFixedRank], fraction and energy in
// (0, 1], max >= 0.
absl::StatusOr<RankPolicy> ParseRankPolicy(absl::string_view text);

// "fixed 64", "fraction 0.25", "energy 0.99", with " max 128" when bounded: what ParseRankPolicy
// reads.
std::string RankPolicyString(const RankPolicy& policy);

enum class KeyScale { kNone, kInvSqrtLen };

// "none" or "inv_sqrt_len".
absl::string_view KeyScaleName(KeyScale scale);

// What a layer file says about its layer, defaults resolved.
struct LayerConfig {
  enum class Kind { kAttention, kLinear };
  Kind kind = Kind::kAttention;
  // kAttention only.
  int64_t d_model = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  KeyScale key_scale = KeyScale::kNone;
  // 0 when the file sets none (1/sqrt(head_dim)).
  float scale = 0.0f;
  // Both kinds; nullopt when the file sets none.
  std::optional<RankPolicy> default_rank;
};

// Interprets the layer file `path` from its metadata and tensors: the kind from the tensor names
// (attention and linear names mixed, or neither, is an error), every tensor's dimensions >= 1,
// q_proj.weight (attention) or weight (linear) 2-D, and each metadata key above. INVALID_ARGUMENT
// naming `path` and the offending key or tensor, e.g. `L.safetensors: __metadata__ key_scale is
// "sqrt", want none or inv_sqrt_len`. The shapes of the other weights are the caller's to check.
absl::StatusOr<LayerConfig> InterpretLayerFile(absl::string_view path, const Metadata& metadata,
                                               absl::Span<const TensorEntry> tensors);

// The `__metadata__` that describes `config` (the inverse of InterpretLayerFile): for an
// attention layer num_heads, num_kv_heads, head_dim, key_scale and scale (when set); for both
// kinds default_rank (when set).
Metadata LayerMetadata(const LayerConfig& config);

}  // namespace atp::formats

#endif  // ATP_FORMATS_LAYER_FILE_H_
