#include "atp/client/layer.h"

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "atp/formats/layer_file.h"
#include "atp/formats/safetensors.h"
#include "atp/wire/layer_digest.h"

namespace atp::client {

struct LayerSpec::Data {
  std::string id;
  Kind kind = Kind::kAttention;
  AttentionConfig attention;
  std::optional<RankPolicy> linear_default_rank;
  // While building; moved into shared_weights once validated.
  std::map<std::string, Tensor> weights;
  // Shared by renamed copies.
  std::shared_ptr<const std::map<std::string, Tensor>> shared_weights;
  uint64_t weight_bytes = 0;
  std::string digest;
};

namespace {

constexpr const char* kAttentionMaps[] = {"q_proj", "k_proj", "v_proj", "o_proj"};

absl::Status CheckLayerId(absl::string_view id) {
  if (id.empty() || id.size() > 128) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer id \"", id, "\" has ", id.size(), " characters, want 1 to 128"));
  }
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == ':' || c == '/' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layer id \"", id, "\" contains '", std::string(1, c), "', want [A-Za-z0-9._:/-]"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckShape(const std::string& layer, const std::string& name, const Tensor& t,
                        const Shape& want) {
  if (t.shape() != want) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": ", name, " has shape ",
                                                   ShapeString(t.shape()), ", want ",
                                                   ShapeString(want)));
  }
  return absl::OkStatus();
}

absl::Status ValidateAttention(const LayerSpec::Data& d) {
  const AttentionConfig& c = d.attention;
  auto positive = [&](int64_t v, const char* field) -> absl::Status {
    if (v < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer ", d.id, ": ", field, " is ", v, ", want >= 1"));
    }
    return absl::OkStatus();
  };
  if (auto s = positive(c.d_model, "d_model"); !s.ok()) return s;
  if (auto s = positive(c.num_heads, "num_heads"); !s.ok()) return s;
  if (auto s = positive(c.head_dim, "head_dim"); !s.ok()) return s;
  if (c.num_kv_heads < 1 || c.num_heads % c.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", d.id, ": num_kv_heads is ",
                                                   c.num_kv_heads, ", want a divisor of num_heads ",
                                                   c.num_heads));
  }
  if (!std::isfinite(c.scale) || c.scale <= 0.0f) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", d.id, ": scale is ", c.scale, ", want a finite value > 0"));
  }
  if (c.default_rank) {
    if (auto s = ValidateRankPolicy(*c.default_rank); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer ", d.id, ": default_rank: ", s.message()));
    }
  }
  const int64_t q_rows = c.num_heads * c.head_dim;
  const int64_t kv_rows = c.num_kv_heads * c.head_dim;
  const std::map<std::string, Shape> want = {
      {"q_proj.weight", {q_rows, c.d_model}},  {"q_proj.bias", {q_rows}},
      {"k_proj.weight", {kv_rows, c.d_model}}, {"k_proj.bias", {kv_rows}},
      {"v_proj.weight", {kv_rows, c.d_model}}, {"v_proj.bias", {kv_rows}},
      {"o_proj.weight", {c.d_model, q_rows}},  {"o_proj.bias", {c.d_model}},
  };
  for (const auto& [name, tensor] : d.weights) {
    auto it = want.find(name);
    if (it == want.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer ", d.id, ": unknown tensor \"", name,
                       "\" in an attention layer, want {q,k,v,o}_proj.weight and optional .bias"));
    }
    if (auto s = CheckShape(d.id, name, tensor, it->second); !s.ok()) return s;
  }
  for (const char* map : kAttentionMaps) {
    const std::string name = absl::StrCat(map, ".weight");
    if (!d.weights.contains(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer ", d.id, ": attention layer lacks ", name));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateLinear(const LayerSpec::Data& d) {
  auto w = d.weights.find("weight");
  if (w == d.weights.end()) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", d.id, ": linear layer lacks weight"));
  }
  if (w->second.rank() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", d.id, ": weight has shape ",
                                                   ShapeString(w->second.shape()),
                                                   ", want [out_features, in_features]"));
  }
  for (const auto& [name, tensor] : d.weights) {
    if (name == "weight") continue;
    if (name != "bias") {
      return absl::InvalidArgumentError(absl::StrCat("layer ", d.id, ": unknown tensor \"", name,
                                                     "\" in a linear layer, want weight, bias"));
    }
    if (auto s = CheckShape(d.id, name, tensor, {w->second.dim(0)}); !s.ok()) return s;
  }
  if (d.linear_default_rank) {
    if (auto s = ValidateRankPolicy(*d.linear_default_rank); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer ", d.id, ": default_rank: ", s.message()));
    }
  }
  return absl::OkStatus();
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

DType FromFormats(formats::DType dtype) {
  switch (dtype) {
    case formats::DType::kF32:
      return DType::kF32;
    case formats::DType::kF16:
      return DType::kF16;
    case formats::DType::kBF16:
      return DType::kBF16;
  }
  return DType::kF32;
}

absl::StatusOr<std::map<std::string, Tensor>> CopyWeights(
    const std::string& id, const std::map<std::string, TensorView>& views) {
  std::map<std::string, Tensor> out;
  for (const auto& [name, view] : views) {
    if (auto s = CheckTensorView(view, -1, absl::StrCat("layer ", id, ": ", name)); !s.ok()) {
      return s;
    }
    out.emplace(name, Tensor::CopyOf(view));
  }
  return out;
}

}  // namespace

absl::Status ValidateRankPolicy(const RankPolicy& policy) {
  if (policy.max_rank < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank policy max_rank is ", policy.max_rank, ", want >= 0"));
  }
  switch (policy.kind) {
    case RankPolicy::Kind::kFixed:
      if (!(policy.value >= 1) || policy.value != std::floor(policy.value) ||
          policy.value > 4294967295.0) {
        return absl::InvalidArgumentError(
            absl::StrCat("fixed rank is ", policy.value, ", want an integer >= 1"));
      }
      break;
    case RankPolicy::Kind::kFraction:
    case RankPolicy::Kind::kEnergy:
      if (!(policy.value > 0 && policy.value <= 1)) {
        return absl::InvalidArgumentError(absl::StrCat(
            policy.kind == RankPolicy::Kind::kFraction ? "rank fraction" : "rank energy", " is ",
            policy.value, ", want a value in (0, 1]"));
      }
      break;
  }
  return absl::OkStatus();
}

std::string RankPolicyString(const RankPolicy& policy) {
  return formats::RankPolicyString(ToFormats(policy));
}

absl::StatusOr<RankPolicy> ParseRankPolicy(absl::string_view text) {
  absl::StatusOr<formats::RankPolicy> policy = formats::ParseRankPolicy(text);
  if (!policy.ok()) return policy.status();
  return FromFormats(*policy);
}

absl::StatusOr<LayerSpec> LayerSpec::Build(Data data) {
  if (auto s = CheckLayerId(data.id); !s.ok()) return s;
  std::vector<wire::DigestTensor> digest_tensors;
  for (const auto& [name, t] : data.weights) {
    data.weight_bytes += t.byte_size();
    digest_tensors.push_back(wire::DigestTensor{
        name, static_cast<int>(t.dtype()), t.shape(),
        absl::MakeConstSpan(static_cast<const uint8_t*>(t.data()), t.byte_size())});
  }
  if (data.kind == Kind::kAttention) {
    AttentionConfig& c = data.attention;
    if (c.num_kv_heads == 0) c.num_kv_heads = c.num_heads;
    if (c.scale == 0.0f && c.head_dim > 0) {
      c.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    }
    if (auto s = ValidateAttention(data); !s.ok()) return s;
    data.digest = wire::LayerDigest(
        digest_tensors,
        wire::AttentionDigestConfig(c.d_model, c.num_heads, c.num_kv_heads, c.head_dim, c.scale,
                                    c.key_scale == KeyScale::kInvSqrtLen ? 1 : 0));
  } else {
    if (auto s = ValidateLinear(data); !s.ok()) return s;
    data.digest = wire::LayerDigest(digest_tensors, wire::kLinearDigestConfig);
  }
  data.shared_weights =
      std::make_shared<const std::map<std::string, Tensor>>(std::move(data.weights));
  data.weights.clear();
  return LayerSpec(std::make_shared<const Data>(std::move(data)));
}

absl::StatusOr<LayerSpec> LayerSpec::Attention(std::string id, const AttentionConfig& config,
                                               const std::map<std::string, TensorView>& weights) {
  absl::StatusOr<std::map<std::string, Tensor>> copies = CopyWeights(id, weights);
  if (!copies.ok()) return copies.status();
  return Attention(std::move(id), config, *std::move(copies));
}

absl::StatusOr<LayerSpec> LayerSpec::Attention(std::string id, const AttentionConfig& config,
                                               std::map<std::string, Tensor> weights) {
  Data d;
  d.id = std::move(id);
  d.kind = Kind::kAttention;
  d.attention = config;
  d.weights = std::move(weights);
  return Build(std::move(d));
}

absl::StatusOr<LayerSpec> LayerSpec::Linear(std::string id, const TensorView& weight,
                                            const std::optional<TensorView>& bias,
                                            std::optional<RankPolicy> default_rank) {
  std::map<std::string, TensorView> views = {{"weight", weight}};
  if (bias) views.emplace("bias", *bias);
  absl::StatusOr<std::map<std::string, Tensor>> copies = CopyWeights(id, views);
  if (!copies.ok()) return copies.status();
  Data d;
  d.id = std::move(id);
  d.kind = Kind::kLinear;
  d.linear_default_rank = default_rank;
  d.weights = *std::move(copies);
  return Build(std::move(d));
}

absl::StatusOr<LayerSpec> LayerSpec::Linear(std::string id, Tensor weight,
                                            std::optional<Tensor> bias,
                                            std::optional<RankPolicy> default_rank) {
  Data d;
  d.id = std::move(id);
  d.kind = Kind::kLinear;
  d.linear_default_rank = default_rank;
  d.weights.emplace("weight", std::move(weight));
  if (bias) d.weights.emplace("bias", *std::move(bias));
  return Build(std::move(d));
}

absl::StatusOr<LayerSpec> LayerSpec::FromSafetensors(std::string id, const std::string& path) {
  absl::StatusOr<formats::SafetensorsReader> file = formats::SafetensorsReader::Open(path);
  if (!file.ok()) return file.status();
  absl::StatusOr<formats::LayerConfig> config =
      formats::InterpretLayerFile(path, file->metadata(), file->tensors());
  if (!config.ok()) return config.status();
  Data d;
  d.id = std::move(id);
  for (const formats::TensorEntry& entry : file->tensors()) {
    Tensor t(FromFormats(entry.dtype), entry.shape);
    if (auto s = file->Read(entry, t.data()); !s.ok()) return s;
    d.weights.emplace(entry.name, std::move(t));
  }
  std::optional<RankPolicy> default_rank;
  if (config->default_rank) default_rank = FromFormats(*config->default_rank);
  if (config->kind == formats::LayerConfig::Kind::kAttention) {
    d.kind = Kind::kAttention;
    d.attention.d_model = config->d_model;
    d.attention.num_heads = config->num_heads;
    d.attention.num_kv_heads = config->num_kv_heads;
    d.attention.head_dim = config->head_dim;
    d.attention.scale = config->scale;
    d.attention.key_scale = config->key_scale == formats::KeyScale::kInvSqrtLen
                                ? KeyScale::kInvSqrtLen
                                : KeyScale::kNone;
    d.attention.default_rank = default_rank;
  } else {
    d.kind = Kind::kLinear;
    d.linear_default_rank = default_rank;
  }
  absl::StatusOr<LayerSpec> spec = Build(std::move(d));
  if (!spec.ok()) {
    return absl::Status(spec.status().code(), absl::StrCat(path, ": ", spec.status().message()));
  }
  return spec;
}

const std::string& LayerSpec::id() const { return data_->id; }
LayerSpec::Kind LayerSpec::kind() const { return data_->kind; }
const AttentionConfig& LayerSpec::attention() const { return data_->attention; }
const std::optional<RankPolicy>& LayerSpec::linear_default_rank() const {
  return data_->linear_default_rank;
}
const std::map<std::string, Tensor>& LayerSpec::weights() const { return *data_->shared_weights; }

absl::StatusOr<LayerSpec> LayerSpec::Renamed(std::string id) const {
  if (auto s = CheckLayerId(id); !s.ok()) return s;
  auto d = std::make_shared<Data>();
  d->id = std::move(id);
  d->kind = data_->kind;
  d->attention = data_->attention;
  d->linear_default_rank = data_->linear_default_rank;
  d->shared_weights = data_->shared_weights;
  d->weight_bytes = data_->weight_bytes;
  d->digest = data_->digest;
  return LayerSpec(std::move(d));
}
uint64_t LayerSpec::weight_bytes() const { return data_->weight_bytes; }
const std::string& LayerSpec::digest() const { return data_->digest; }

absl::StatusOr<std::pair<int64_t, int64_t>> LayerSpec::LinearShape(absl::string_view weight) const {
  const std::string name = weight.empty() ? "weight" : absl::StrCat(weight, ".weight");
  auto it = data_->shared_weights->find(name);
  if (it == data_->shared_weights->end()) {
    return absl::NotFoundError(
        absl::StrCat("layer ", data_->id, " has no linear map \"", weight, "\" (no ", name, ")"));
  }
  return std::make_pair(it->second.dim(1), it->second.dim(0));
}

bool LayerSpec::HasBias(absl::string_view weight) const {
  return data_->shared_weights->contains(weight.empty() ? std::string("bias")
                                                        : absl::StrCat(weight, ".bias"));
}

}  // namespace atp::client
