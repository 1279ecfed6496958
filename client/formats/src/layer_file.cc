#include "atp/formats/layer_file.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace atp::formats {
namespace {

constexpr const char* kAttentionNames[] = {"q_proj.weight", "q_proj.bias",   "k_proj.weight",
                                           "k_proj.bias",   "v_proj.weight", "v_proj.bias",
                                           "o_proj.weight", "o_proj.bias"};

bool IsAttentionName(absl::string_view name) {
  for (const char* n : kAttentionNames) {
    if (name == n) return true;
  }
  return false;
}

bool IsLinearName(absl::string_view name) { return name == "weight" || name == "bias"; }

absl::Status MetadataError(absl::string_view path, absl::string_view key, absl::string_view value,
                           absl::string_view want) {
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": __metadata__ ", key, " is \"", value, "\", want ", want));
}

// Reads metadata `key` as an integer >= 1; `*out` is left alone when the key is absent.
absl::Status ReadPositiveInt(const Metadata& metadata, absl::string_view key,
                             absl::string_view path, int64_t* out) {
  auto it = metadata.find(key);
  if (it == metadata.end()) return absl::OkStatus();
  int64_t v;
  if (!absl::SimpleAtoi(it->second, &v) || v < 1) {
    return MetadataError(path, key, it->second, "an integer >= 1");
  }
  *out = v;
  return absl::OkStatus();
}

absl::Status ReadDefaultRank(const Metadata& metadata, absl::string_view path,
                             std::optional<RankPolicy>* out) {
  auto it = metadata.find("default_rank");
  if (it == metadata.end()) return absl::OkStatus();
  absl::StatusOr<RankPolicy> policy = ParseRankPolicy(it->second);
  if (!policy.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": __metadata__ default_rank: ", policy.status().message()));
  }
  *out = *policy;
  return absl::OkStatus();
}

// The layer's main weight (q_proj.weight or weight): present and 2-D.
absl::StatusOr<const TensorEntry*> FindMatrix(absl::string_view path,
                                              absl::Span<const TensorEntry> tensors,
                                              absl::string_view name, absl::string_view want) {
  for (const TensorEntry& t : tensors) {
    if (t.name != name) continue;
    if (t.shape.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": ", name, " has shape ", ShapeString(t.shape), ", want 2 dimensions ", want));
    }
    return &t;
  }
  return absl::InvalidArgumentError(absl::StrCat(path, " is missing ", name, ", want ", want));
}

absl::Status InterpretAttention(absl::string_view path, const Metadata& md,
                                absl::Span<const TensorEntry> tensors, LayerConfig* c) {
  absl::StatusOr<const TensorEntry*> q =
      FindMatrix(path, tensors, "q_proj.weight", "[num_heads*head_dim, d_model]");
  if (!q.ok()) return q.status();
  c->d_model = (*q)->shape[1];
  if (md.find("num_heads") == md.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": __metadata__ has no num_heads, want the number of query heads"));
  }
  if (auto s = ReadPositiveInt(md, "num_heads", path, &c->num_heads); !s.ok()) return s;
  c->num_kv_heads = c->num_heads;
  if (auto s = ReadPositiveInt(md, "num_kv_heads", path, &c->num_kv_heads); !s.ok()) return s;
  if (md.find("head_dim") != md.end()) {
    if (auto s = ReadPositiveInt(md, "head_dim", path, &c->head_dim); !s.ok()) return s;
  } else {
    const int64_t q_rows = (*q)->shape[0];
    if (q_rows % c->num_heads != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": q_proj.weight has ", q_rows, " rows, not a multiple of num_heads ",
                       c->num_heads, "; set head_dim in __metadata__"));
    }
    c->head_dim = q_rows / c->num_heads;
  }
  if (c->num_heads % c->num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": __metadata__ num_kv_heads is ",
                                                   c->num_kv_heads,
                                                   ", want a divisor of num_heads ", c->num_heads));
  }
  if (auto it = md.find("key_scale"); it != md.end()) {
    if (it->second == "none") {
      c->key_scale = KeyScale::kNone;
    } else if (it->second == "inv_sqrt_len") {
      c->key_scale = KeyScale::kInvSqrtLen;
    } else {
      return MetadataError(path, "key_scale", it->second, "none or inv_sqrt_len");
    }
  }
  if (auto it = md.find("scale"); it != md.end()) {
    double scale;
    // The upper bound keeps the value finite as a float.
    if (!absl::SimpleAtod(it->second, &scale) || !std::isfinite(scale) || scale <= 0 ||
        scale > 3.4e38) {
      return MetadataError(path, "scale", it->second, "a finite number > 0");
    }
    c->scale = static_cast<float>(scale);
  }
  return ReadDefaultRank(md, path, &c->default_rank);
}

std::string FormatDouble(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

}  // namespace

absl::StatusOr<RankPolicy> ParseRankPolicy(absl::string_view text) {
  const std::vector<absl::string_view> words = absl::StrSplit(text, ' ', absl::SkipWhitespace());
  auto bad = [&]() {
    return absl::InvalidArgumentError(
        absl::StrCat("rank policy \"", text,
                     "\" is not one of \"energy T\", \"fixed N\", \"fraction F\" (each optionally "
                     "followed by \"max N\")"));
  };
  if (words.size() != 2 && words.size() != 4) return bad();
  RankPolicy policy;
  if (words[0] == "energy") {
    policy.kind = RankPolicy::Kind::kEnergy;
  } else if (words[0] == "fixed") {
    policy.kind = RankPolicy::Kind::kFixed;
  } else if (words[0] == "fraction") {
    policy.kind = RankPolicy::Kind::kFraction;
  } else {
    return bad();
  }
  if (!absl::SimpleAtod(words[1], &policy.value) || !std::isfinite(policy.value)) return bad();
  if (words.size() == 4 && (words[2] != "max" || !absl::SimpleAtoi(words[3], &policy.max_rank))) {
    return bad();
  }
  if (policy.max_rank < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max rank is ", policy.max_rank, ", want >= 0 (0 = no bound)"));
  }
  switch (policy.kind) {
    case RankPolicy::Kind::kFixed:
      if (!(policy.value >= 1) || policy.value != std::floor(policy.value)) {
        return absl::InvalidArgumentError(
            absl::StrCat("fixed rank is ", policy.value, ", want an integer >= 1"));
      }
      if (policy.value > static_cast<double>(kMaxFixedRank)) {
        return absl::InvalidArgumentError(
            absl::StrCat("fixed rank is ", policy.value, ", want at most ", kMaxFixedRank));
      }
      break;
    case RankPolicy::Kind::kFraction:
      if (!(policy.value > 0 && policy.value <= 1)) {
        return absl::InvalidArgumentError(
            absl::StrCat("rank fraction is ", policy.value, ", want 0 < fraction <= 1"));
      }
      break;
    case RankPolicy::Kind::kEnergy:
      if (!(policy.value > 0 && policy.value <= 1)) {
        return absl::InvalidArgumentError(
            absl::StrCat("rank energy is ", policy.value, ", want 0 < energy <= 1"));
      }
      break;
  }
  return policy;
}

std::string RankPolicyString(const RankPolicy& policy) {
  std::string out;
  switch (policy.kind) {
    case RankPolicy::Kind::kFixed:
      out = absl::StrCat("fixed ", static_cast<int64_t>(policy.value));
      break;
    case RankPolicy::Kind::kFraction:
      out = absl::StrCat("fraction ", policy.value);
      break;
    case RankPolicy::Kind::kEnergy:
      out = absl::StrCat("energy ", policy.value);
      break;
  }
  if (policy.max_rank > 0) absl::StrAppend(&out, " max ", policy.max_rank);
  return out;
}

absl::string_view KeyScaleName(KeyScale scale) {
  return scale == KeyScale::kInvSqrtLen ? "inv_sqrt_len" : "none";
}

absl::StatusOr<LayerConfig> InterpretLayerFile(absl::string_view path, const Metadata& metadata,
                                               absl::Span<const TensorEntry> tensors) {
  bool any_attention = false, any_linear = false;
  for (const TensorEntry& t : tensors) {
    if (IsAttentionName(t.name)) any_attention = true;
    if (IsLinearName(t.name)) any_linear = true;
  }
  if (any_attention && any_linear) {
    return absl::InvalidArgumentError(absl::StrCat(
        path,
        " mixes attention tensors (*_proj.*) with linear tensors (weight, bias), want one "
        "kind of layer"));
  }
  if (!any_attention && !any_linear) {
    std::vector<std::string> names;
    for (const TensorEntry& t : tensors) names.push_back(t.name);
    std::sort(names.begin(), names.end());
    if (names.size() > 8) {
      names.resize(8);
      names.push_back("...");
    }
    return absl::InvalidArgumentError(absl::StrCat(
        path,
        " holds no layer: want q_proj.weight, k_proj.weight, v_proj.weight, o_proj.weight "
        "(attention) or weight (linear), found ",
        names.empty() ? "no tensors" : absl::StrJoin(names, ", ")));
  }
  for (const TensorEntry& t : tensors) {
    for (int64_t d : t.shape) {
      if (d < 1) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": ", t.name, " has shape ",
                                                       ShapeString(t.shape),
                                                       ", want every dimension >= 1"));
      }
    }
  }

  LayerConfig config;
  if (any_linear) {
    config.kind = LayerConfig::Kind::kLinear;
    absl::StatusOr<const TensorEntry*> w =
        FindMatrix(path, tensors, "weight", "[out_features, in_features]");
    if (!w.ok()) return w.status();
    if (auto s = ReadDefaultRank(metadata, path, &config.default_rank); !s.ok()) return s;
    return config;
  }
  config.kind = LayerConfig::Kind::kAttention;
  if (auto s = InterpretAttention(path, metadata, tensors, &config); !s.ok()) return s;
  return config;
}

Metadata LayerMetadata(const LayerConfig& config) {
  Metadata md;
  if (config.kind == LayerConfig::Kind::kAttention) {
    md["num_heads"] = absl::StrCat(config.num_heads);
    md["num_kv_heads"] =
        absl::StrCat(config.num_kv_heads > 0 ? config.num_kv_heads : config.num_heads);
    md["head_dim"] = absl::StrCat(config.head_dim);
    md["key_scale"] = std::string(KeyScaleName(config.key_scale));
    if (config.scale > 0) md["scale"] = FormatDouble(config.scale);
  }
  if (config.default_rank.has_value()) {
    md["default_rank"] = RankPolicyString(*config.default_rank);
  }
  return md;
}

}  // namespace atp::formats
