#include "atp/cli/layer_file.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "atp/formats/layer_file.h"

namespace atp::cli {
namespace {

using kernels::KeyScale;
using kernels::LayerSpec;
using kernels::RankPolicy;

RankPolicy FromFormats(const formats::RankPolicy& policy) {
  RankPolicy out;
  switch (policy.kind) {
    case formats::RankPolicy::Kind::kFixed:
      out.kind = RankPolicy::Kind::kFixed;
      break;
    case formats::RankPolicy::Kind::kFraction:
      out.kind = RankPolicy::Kind::kFraction;
      break;
    case formats::RankPolicy::Kind::kEnergy:
      out.kind = RankPolicy::Kind::kEnergy;
      break;
  }
  out.value = policy.value;
  out.max_rank = policy.max_rank;
  return out;
}

formats::RankPolicy ToFormats(const RankPolicy& policy) {
  formats::RankPolicy out;
  switch (policy.kind) {
    case RankPolicy::Kind::kFixed:
      out.kind = formats::RankPolicy::Kind::kFixed;
      break;
    case RankPolicy::Kind::kFraction:
      out.kind = formats::RankPolicy::Kind::kFraction;
      break;
    case RankPolicy::Kind::kEnergy:
      out.kind = formats::RankPolicy::Kind::kEnergy;
      break;
  }
  out.value = policy.value;
  out.max_rank = policy.max_rank;
  return out;
}

}  // namespace

absl::StatusOr<RankPolicy> ParseRankPolicy(absl::string_view text) {
  absl::StatusOr<formats::RankPolicy> policy = formats::ParseRankPolicy(text);
  if (!policy.ok()) return policy.status();
  return FromFormats(*policy);
}

absl::StatusOr<LayerSpec> ReadLayerFile(const std::string& path) {
  absl::StatusOr<formats::SafetensorsReader> file = formats::SafetensorsReader::Open(path);
  if (!file.ok()) return file.status();
  absl::StatusOr<formats::LayerConfig> config =
      formats::InterpretLayerFile(path, file->metadata(), file->tensors());
  if (!config.ok()) return config.status();
  absl::StatusOr<kernels::WeightMap> weights = ReadTensors(*file);
  if (!weights.ok()) return weights.status();

  LayerSpec spec;
  RankPolicy default_rank;
  if (config->default_rank) default_rank = FromFormats(*config->default_rank);
  if (config->kind == formats::LayerConfig::Kind::kLinear) {
    spec.kind = LayerSpec::Kind::kLinear;
    spec.linear_default_rank = default_rank;
  } else {
    spec.kind = LayerSpec::Kind::kAttention;
    kernels::AttentionConfig& c = spec.attention;
    c.d_model = config->d_model;
    c.num_heads = config->num_heads;
    c.num_kv_heads = config->num_kv_heads;
    c.head_dim = config->head_dim;
    c.scale = config->scale;
    c.key_scale = config->key_scale == formats::KeyScale::kInvSqrtLen ? KeyScale::kInvSqrtLen
                                                                      : KeyScale::kNone;
    c.default_rank = default_rank;
  }
  spec.weights = *std::move(weights);
  if (auto s = kernels::ValidateLayerSpec(spec); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  }
  return spec;
}

Metadata LayerMetadata(const LayerSpec& spec) {
  formats::LayerConfig config;
  if (spec.kind == LayerSpec::Kind::kLinear) {
    config.kind = formats::LayerConfig::Kind::kLinear;
    config.default_rank = ToFormats(spec.linear_default_rank);
    return formats::LayerMetadata(config);
  }
  const kernels::AttentionConfig& c = spec.attention;
  config.kind = formats::LayerConfig::Kind::kAttention;
  config.d_model = c.d_model;
  config.num_heads = c.num_heads;
  config.num_kv_heads = c.kv_heads();
  config.head_dim = c.head_dim;
  config.key_scale = c.key_scale == KeyScale::kInvSqrtLen ? formats::KeyScale::kInvSqrtLen
                                                          : formats::KeyScale::kNone;
  config.scale = c.scale;
  config.default_rank = ToFormats(c.default_rank);
  return formats::LayerMetadata(config);
}

absl::Status WriteLayerFile(const std::string& path, const LayerSpec& spec) {
  if (auto s = kernels::ValidateLayerSpec(spec); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("cannot write ", path, ": ", s.message()));
  }
  return WriteSafetensors(path, spec.weights, LayerMetadata(spec));
}

}  // namespace atp::cli
