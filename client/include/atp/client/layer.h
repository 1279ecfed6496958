// Layers as the client SDK registers them on workers: an attention layer or a single linear layer,
// with its weights and configuration (DESIGN.md §1), and the rank policies that choose r.
//
// Weights follow PyTorch's nn.Linear: a weight is [out_features, in_features] and y = x·Wᵀ + b.
// Names follow Llama/HF: an attention layer holds q_proj.weight [H·d_h, d], k_proj.weight
// [H_kv·d_h, d], v_proj.weight [H_kv·d_h, d], o_proj.weight [d, H·d_h] and optionally the .bias of
// each ([rows]); a linear layer holds weight [n, d] and optionally bias [n].
//
// A LayerSpec owns its weights (they are copied once when it is built, or moved in), because a pool
// re-registers the layer by itself on a worker that restarted. Copies of a LayerSpec share the
// weights. Thread-safe: immutable after construction.
#ifndef ATP_CLIENT_LAYER_H_
#define ATP_CLIENT_LAYER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "atp/client/tensor.h"

namespace atp::client {

// How many principal bases r a decomposition keeps. Whatever the policy, r is clipped to
// [1, min(L, d, max_rank, the worker's limit)].
struct RankPolicy {
  enum class Kind {
    kFixed,     // r = value
    kFraction,  // r = ceil(value · L), 0 < value <= 1
    kEnergy,    // smallest r with Σ_{i<=r} σ_i² >= value · ||X||_F², 0 < value <= 1
  };
  Kind kind = Kind::kEnergy;
  double value = 0.99;
  // Upper bound on r; 0 means none.
  int64_t max_rank = 0;

  static RankPolicy Fixed(int64_t r, int64_t max_rank = 0) {
    return {Kind::kFixed, static_cast<double>(r), max_rank};
  }
  static RankPolicy Fraction(double fraction, int64_t max_rank = 0) {
    return {Kind::kFraction, fraction, max_rank};
  }
  static RankPolicy Energy(double tau, int64_t max_rank = 0) {
    return {Kind::kEnergy, tau, max_rank};
  }
};

// INVALID_ARGUMENT unless the value fits the kind and max_rank >= 0.
absl::Status ValidateRankPolicy(const RankPolicy& policy);
// "fixed 64", "fraction 0.25", "energy 0.99", with " max 128" when bounded.
std::string RankPolicyString(const RankPolicy& policy);
// Parses what RankPolicyString writes.
absl::StatusOr<RankPolicy> ParseRankPolicy(absl::string_view text);

// Scale c of the principal tokens X̃ = c·U_rᵀX; a model is trained with one of them.
enum class KeyScale {
  kNone,        // c = 1 (default)
  kInvSqrtLen,  // c = 1/sqrt(L)
};

struct AttentionConfig {
  int64_t d_model = 0;
  int64_t num_heads = 0;
  // Key/value heads; 0 means num_heads. Must divide num_heads.
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  // Softmax scale; 0 means 1/sqrt(head_dim).
  float scale = 0.0f;
  KeyScale key_scale = KeyScale::kNone;
  // Rank policy of requests that set none; nullopt: the worker's default (energy 0.99).
  std::optional<RankPolicy> default_rank;
};

class LayerSpec {
 public:
  enum class Kind { kAttention, kLinear };

  // An attention layer from weights the caller holds (copied). `weights` maps the names above to
  // views. INVALID_ARGUMENT naming the offending tensor or field ("k_proj.weight has shape [64,32],
  // want [64,48]") when a required tensor is missing, a name is unknown, a shape disagrees with
  // `config`, the dtypes differ, or the id is not 1-128 characters of [A-Za-z0-9._:/-].
  static absl::StatusOr<LayerSpec> Attention(std::string id, const AttentionConfig& config,
                                             const std::map<std::string, TensorView>& weights);
  // The same, taking ownership of `weights` (no copy).
  static absl::StatusOr<LayerSpec> Attention(std::string id, const AttentionConfig& config,
                                             std::map<std::string, Tensor> weights);

  // A linear layer y = x·Wᵀ + b from `weight` [n, d] and an optional `bias` [n] (copied).
  static absl::StatusOr<LayerSpec> Linear(std::string id, const TensorView& weight,
                                          const std::optional<TensorView>& bias = std::nullopt,
                                          std::optional<RankPolicy> default_rank = std::nullopt);
  static absl::StatusOr<LayerSpec> Linear(std::string id, Tensor weight,
                                          std::optional<Tensor> bias = std::nullopt,
                                          std::optional<RankPolicy> default_rank = std::nullopt);

  // A layer stored as a .safetensors file, in the format of the `atp` CLI: the tensor names above
  // (F32, F16 or BF16; {q,k,v,o}_proj.* make an attention layer, weight and bias a linear one)
  // and `__metadata__` with num_heads (required for attention), num_kv_heads (default num_heads),
  // head_dim (default q_proj.weight rows / num_heads), key_scale ("none" | "inv_sqrt_len"), scale
  // and default_rank ("energy 0.99", "fixed 64 max 128", ...). NOT_FOUND when the file does not
  // exist; otherwise INVALID_ARGUMENT in one line naming `path` and what was wrong (a malformed
  // or truncated file, a bad metadata value, a weight of the wrong shape).
  static absl::StatusOr<LayerSpec> FromSafetensors(std::string id, const std::string& path);

  // The same layer under another id (the weights are shared, not copied; the digest, which does
  // not cover the id, is the same).
  absl::StatusOr<LayerSpec> Renamed(std::string id) const;

  LayerSpec(const LayerSpec&) = default;
  LayerSpec& operator=(const LayerSpec&) = default;
  LayerSpec(LayerSpec&&) noexcept = default;
  LayerSpec& operator=(LayerSpec&&) noexcept = default;

  const std::string& id() const;
  Kind kind() const;
  // For kAttention, with num_kv_heads and scale resolved.
  const AttentionConfig& attention() const;
  // For kLinear.
  const std::optional<RankPolicy>& linear_default_rank() const;
  // The weights by name.
  const std::map<std::string, Tensor>& weights() const;
  // Sum of the weights' bytes.
  uint64_t weight_bytes() const;
  // The content digest the worker keys the layer by (lowercase hex SHA-256, see
  // atp.v1.LayerHeader).
  const std::string& digest() const;

  // (For linear maps of the layer) in_features and out_features of the map selected by `weight`:
  // "" for a linear layer, "q_proj", "k_proj", "v_proj", "o_proj" for an attention layer.
  // NOT_FOUND naming the prefix otherwise.
  absl::StatusOr<std::pair<int64_t, int64_t>> LinearShape(absl::string_view weight) const;
  // Whether the map selected by `weight` has a bias.
  bool HasBias(absl::string_view weight) const;

  struct Data;  // internal

 private:
  explicit LayerSpec(std::shared_ptr<const Data> data) : data_(std::move(data)) {}
  static absl::StatusOr<LayerSpec> Build(Data data);

  std::shared_ptr<const Data> data_;
};

}  // namespace atp::client

#endif  // ATP_CLIENT_LAYER_H_
