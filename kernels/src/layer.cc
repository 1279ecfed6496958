#include "atp/kernels/layer.h"

#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"

namespace atp::kernels {
namespace {

absl::Status CheckPositive(int64_t value, absl::string_view name) {
  if (value < 1) {
    return absl::InvalidArgumentError(absl::StrCat(name, " is ", value, ", want >= 1"));
  }
  return absl::OkStatus();
}

// Checks that `weights[name]` exists (or may be absent when optional) with exactly `want`.
absl::Status CheckWeight(const WeightMap& weights, const std::string& name, const Shape& want,
                         bool optional, std::set<std::string>* seen) {
  auto it = weights.find(name);
  if (it == weights.end()) {
    if (optional) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("layer is missing ", name, ", want shape ", ShapeString(want)));
  }
  seen->insert(name);
  const Tensor& t = it->second;
  if (t.shape() != want) {
    return absl::InvalidArgumentError(absl::StrCat(name, " has shape ", ShapeString(t.shape()),
                                                   ", want ", ShapeString(want)));
  }
  return CheckFinite(t.view(), name);
}

}  // namespace

absl::string_view KeyScaleName(KeyScale scale) {
  return scale == KeyScale::kInvSqrtLen ? "inv_sqrt_len" : "none";
}

float AttentionConfig::resolved_scale() const {
  if (scale > 0.0f) return scale;
  return 1.0f / std::sqrt(static_cast<float>(head_dim));
}

absl::Status ValidateAttentionConfig(const AttentionConfig& config) {
  if (auto s = CheckPositive(config.d_model, "d_model"); !s.ok()) return s;
  if (auto s = CheckPositive(config.num_heads, "num_heads"); !s.ok()) return s;
  if (auto s = CheckPositive(config.head_dim, "head_dim"); !s.ok()) return s;
  if (config.num_kv_heads < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_kv_heads is ", config.num_kv_heads, ", want >= 1 (0 = num_heads)"));
  }
  if (config.num_heads % config.kv_heads() != 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_kv_heads is ", config.kv_heads(),
                                                   ", want a divisor of num_heads ",
                                                   config.num_heads));
  }
  if (!std::isfinite(config.scale) || config.scale < 0.0f) {
    return absl::InvalidArgumentError(
        absl::StrCat("scale is ", config.scale, ", want a finite value >= 0 (0 = 1/sqrt(head_dim))"));
  }
  return ValidateRankPolicy(config.default_rank);
}

absl::Status ValidateLayerSpec(const LayerSpec& spec) {
  std::set<std::string> seen;
  if (spec.kind == LayerSpec::Kind::kAttention) {
    const AttentionConfig& c = spec.attention;
    if (auto s = ValidateAttentionConfig(c); !s.ok()) return s;
    const int64_t q_rows = c.num_heads * c.head_dim;
    const int64_t kv_rows = c.kv_heads() * c.head_dim;
    struct Proj {
      const char* name;
      int64_t rows, cols;
    };
    const Proj projs[] = {{"q_proj", q_rows, c.d_model},
                          {"k_proj", kv_rows, c.d_model},
                          {"v_proj", kv_rows, c.d_model},
                          {"o_proj", c.d_model, q_rows}};
    for (const Proj& p : projs) {
      if (auto s = CheckWeight(spec.weights, absl::StrCat(p.name, ".weight"), {p.rows, p.cols},
                               /*optional=*/false, &seen);
          !s.ok()) {
        return s;
      }
      if (auto s = CheckWeight(spec.weights, absl::StrCat(p.name, ".bias"), {p.rows},
                               /*optional=*/true, &seen);
          !s.ok()) {
        return s;
      }
    }
  } else {
    if (auto s = ValidateRankPolicy(spec.linear_default_rank); !s.ok()) return s;
    auto it = spec.weights.find("weight");
    if (it == spec.weights.end()) {
      return absl::InvalidArgumentError("linear layer is missing weight, want shape [n, d]");
    }
    if (it->second.rank() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "weight has shape ", ShapeString(it->second.shape()), ", want 2 dimensions [n, d]"));
    }
    const int64_t n = it->second.dim(0);
    const int64_t d = it->second.dim(1);
    if (auto s = CheckWeight(spec.weights, "weight", {n, d}, false, &seen); !s.ok()) return s;
    if (auto s = CheckWeight(spec.weights, "bias", {n}, true, &seen); !s.ok()) return s;
  }
  for (const auto& [name, tensor] : spec.weights) {
    if (seen.count(name) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer has an unknown tensor \"", name, "\"",
                       spec.kind == LayerSpec::Kind::kAttention
                           ? ", want {q,k,v,o}_proj.{weight,bias}"
                           : ", want weight and bias"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<LinearWeightNames> FindLinearWeight(const LayerSpec& spec,
                                                   absl::string_view prefix) {
  LinearWeightNames names;
  if (prefix.empty()) {
    names = {"weight", "bias"};
  } else {
    names = {absl::StrCat(prefix, ".weight"), absl::StrCat(prefix, ".bias")};
  }
  if (spec.weights.find(names.weight) == spec.weights.end()) {
    return absl::NotFoundError(absl::StrCat("layer has no linear weight \"", names.weight,
                                            "\" (weight prefix \"", prefix, "\")"));
  }
  return names;
}

}  // namespace atp::kernels
