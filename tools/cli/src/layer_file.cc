#include "atp/cli/layer_file.h"

#include <cmath>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace atp::cli {
namespace {

using kernels::KeyScale;
using kernels::LayerSpec;
using kernels::RankPolicy;

constexpr const char* kAttentionNames[] = {"q_proj.weight", "q_proj.bias",   "k_proj.weight",
                                           "k_proj.bias",   "v_proj.weight", "v_proj.bias",
                                           "o_proj.weight", "o_proj.bias"};

bool IsAttentionName(absl::string_view name) {
  for (const char* n : kAttentionNames) {
    if (name == n) return true;
  }
  return false;
}

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

absl::Status ReadDefaultRank(const Metadata& metadata, absl::string_view path, RankPolicy* out) {
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
  if (words.size() == 4) {
    if (words[2] != "max" || !absl::SimpleAtoi(words[3], &policy.max_rank)) return bad();
  }
  if (auto s = kernels::ValidateRankPolicy(policy); !s.ok()) return s;
  if (policy.kind == RankPolicy::Kind::kFixed && policy.value > 1e15) {
    return absl::InvalidArgumentError(
        absl::StrCat("fixed rank is ", policy.value, ", want at most 1e15"));
  }
  return policy;
}

absl::StatusOr<LayerSpec> LayerFromSafetensors(SafetensorsFile file, absl::string_view path) {
  LayerSpec spec;
  bool any_attention = false, any_linear = false;
  for (const auto& [name, tensor] : file.tensors) {
    if (IsAttentionName(name)) any_attention = true;
    if (name == "weight" || name == "bias") any_linear = true;
  }
  if (any_attention && any_linear) {
    return absl::InvalidArgumentError(absl::StrCat(
        path,
        " mixes attention tensors (*_proj.*) with linear tensors (weight, bias), want one "
        "kind of layer"));
  }
  if (!any_attention && !any_linear) {
    std::vector<std::string> names;
    for (const auto& [name, tensor] : file.tensors) {
      if (names.size() == 8) {
        names.push_back("...");
        break;
      }
      names.push_back(name);
    }
    return absl::InvalidArgumentError(absl::StrCat(
        path,
        " holds no layer: want q_proj.weight, k_proj.weight, v_proj.weight, o_proj.weight "
        "(attention) or weight (linear), found ",
        names.empty() ? "no tensors" : absl::StrJoin(names, ", ")));
  }

  const Metadata& md = file.metadata;
  if (any_linear) {
    spec.kind = LayerSpec::Kind::kLinear;
    if (auto s = ReadDefaultRank(md, path, &spec.linear_default_rank); !s.ok()) return s;
  } else {
    spec.kind = LayerSpec::Kind::kAttention;
    kernels::AttentionConfig& c = spec.attention;
    auto q = file.tensors.find("q_proj.weight");
    if (q == file.tensors.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, " is missing q_proj.weight, want [num_heads*head_dim, d_model]"));
    }
    if (q->second.rank() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": q_proj.weight has shape ", kernels::ShapeString(q->second.shape()),
                       ", want 2 dimensions [num_heads*head_dim, d_model]"));
    }
    c.d_model = q->second.dim(1);
    if (md.find("num_heads") == md.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": __metadata__ has no num_heads, want the number of query heads"));
    }
    if (auto s = ReadPositiveInt(md, "num_heads", path, &c.num_heads); !s.ok()) return s;
    c.num_kv_heads = c.num_heads;
    if (auto s = ReadPositiveInt(md, "num_kv_heads", path, &c.num_kv_heads); !s.ok()) return s;
    if (md.find("head_dim") != md.end()) {
      if (auto s = ReadPositiveInt(md, "head_dim", path, &c.head_dim); !s.ok()) return s;
    } else {
      const int64_t q_rows = q->second.dim(0);
      if (q_rows % c.num_heads != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": q_proj.weight has ", q_rows, " rows, not a multiple of num_heads ",
            c.num_heads, "; set head_dim in __metadata__"));
      }
      c.head_dim = q_rows / c.num_heads;
    }
    if (c.num_heads % c.num_kv_heads != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": __metadata__ num_kv_heads is ", c.num_kv_heads,
                       ", want a divisor of num_heads ", c.num_heads));
    }
    if (auto it = md.find("key_scale"); it != md.end()) {
      if (it->second == "none") {
        c.key_scale = KeyScale::kNone;
      } else if (it->second == "inv_sqrt_len") {
        c.key_scale = KeyScale::kInvSqrtLen;
      } else {
        return MetadataError(path, "key_scale", it->second, "none or inv_sqrt_len");
      }
    }
    if (auto it = md.find("scale"); it != md.end()) {
      double scale;
      if (!absl::SimpleAtod(it->second, &scale) || !std::isfinite(scale) || scale <= 0 ||
          scale > 3.4e38) {
        return MetadataError(path, "scale", it->second, "a finite number > 0");
      }
      c.scale = static_cast<float>(scale);
    }
    if (auto s = ReadDefaultRank(md, path, &c.default_rank); !s.ok()) return s;
  }
  spec.weights = std::move(file.tensors);
  if (auto s = kernels::ValidateLayerSpec(spec); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  }
  return spec;
}

absl::StatusOr<LayerSpec> ReadLayerFile(const std::string& path) {
  absl::StatusOr<SafetensorsFile> file = ReadSafetensors(path);
  if (!file.ok()) return file.status();
  return LayerFromSafetensors(*std::move(file), path);
}

Metadata LayerMetadata(const LayerSpec& spec) {
  Metadata md;
  if (spec.kind == LayerSpec::Kind::kLinear) {
    md["default_rank"] = kernels::RankPolicyString(spec.linear_default_rank);
    return md;
  }
  const kernels::AttentionConfig& c = spec.attention;
  md["num_heads"] = absl::StrCat(c.num_heads);
  md["num_kv_heads"] = absl::StrCat(c.kv_heads());
  md["head_dim"] = absl::StrCat(c.head_dim);
  md["key_scale"] = std::string(kernels::KeyScaleName(c.key_scale));
  if (c.scale > 0) md["scale"] = FormatDouble(c.scale);
  md["default_rank"] = kernels::RankPolicyString(c.default_rank);
  return md;
}

absl::Status WriteLayerFile(const std::string& path, const LayerSpec& spec) {
  if (auto s = kernels::ValidateLayerSpec(spec); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("cannot write ", path, ": ", s.message()));
  }
  return WriteSafetensors(path, spec.weights, LayerMetadata(spec));
}

}  // namespace atp::cli
