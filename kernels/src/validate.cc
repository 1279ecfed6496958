// Validation of op arguments (the Validate* functions of the op headers). Every backend calls these
// before it computes, so a bad input gets the same message whichever backend serves it.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "atp/kernels/attention.h"
#include "atp/kernels/lowrank_linear.h"
#include "atp/kernels/principal_bases.h"
#include "validate_util.h"

namespace atp::kernels {

absl::Status CheckDType(DType dtype, absl::string_view what) {
  switch (dtype) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
      return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(what, " has dtype ", static_cast<int>(dtype),
                                                 ", want f32 (1), f16 (2) or bf16 (3)"));
}

absl::Status CheckInputTensor(const TensorView& view, int want_rank, absl::string_view what) {
  if (auto s = CheckDType(view.dtype, what); !s.ok()) return s;
  if (auto s = CheckRank(view, want_rank, what); !s.ok()) return s;
  return CheckFinite(view, what);
}

absl::Status CheckMaxRank(int64_t max_rank) {
  if (max_rank < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("backend max rank is ", max_rank, ", want >= 0 (0 = no limit)"));
  }
  return absl::OkStatus();
}

absl::Status ValidatePrincipalBases(const PrincipalBasesArgs& args) {
  if (auto s = CheckInputTensor(args.x, 2, "x"); !s.ok()) return s;
  if (auto s = ValidateRankPolicy(args.rank); !s.ok()) return s;
  if (auto s = CheckMaxRank(args.max_rank); !s.ok()) return s;
  switch (args.method) {
    case DecomposeMethod::kAuto:
    case DecomposeMethod::kExact:
    case DecomposeMethod::kRandomized:
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("decompose method is ",
                                                     static_cast<int>(args.method),
                                                     ", want auto, exact or randomized"));
  }
  return CheckDType(args.output_dtype, "output dtype");
}

namespace {

absl::Status CheckSequence(const AttentionConfig& config, const TensorView& x) {
  if (auto s = CheckDType(x.dtype, "x"); !s.ok()) return s;
  if (auto s = CheckRank(x, 2, "x"); !s.ok()) return s;
  if (x.dim(1) != config.d_model) {
    return absl::InvalidArgumentError(absl::StrCat("x has shape ", ShapeString(x.shape),
                                                   ", want [L, ", config.d_model,
                                                   "] (d_model of the layer)"));
  }
  return CheckFinite(x, "x");
}

}  // namespace

absl::Status ValidateAtpAttention(const AttentionConfig& config, const AtpAttentionArgs& args) {
  if (auto s = ValidateAttentionConfig(config); !s.ok()) return s;
  if (auto s = CheckSequence(config, args.x); !s.ok()) return s;
  if (args.rank.has_value()) {
    if (auto s = ValidateRankPolicy(*args.rank); !s.ok()) return s;
  }
  if (auto s = CheckMaxRank(args.max_rank); !s.ok()) return s;
  return CheckDType(args.output_dtype, "output dtype");
}

absl::Status ValidateExactAttention(const AttentionConfig& config, const ExactAttentionArgs& args) {
  if (auto s = ValidateAttentionConfig(config); !s.ok()) return s;
  if (auto s = CheckSequence(config, args.x); !s.ok()) return s;
  return CheckDType(args.output_dtype, "output dtype");
}

absl::Status ValidateLowRankLinear(const LayerSpec& layer, const LowRankLinearArgs& args) {
  absl::StatusOr<LinearWeightNames> names = FindLinearWeight(layer, args.weight);
  if (!names.ok()) return names.status();
  const Tensor& w = layer.weights.find(names->weight)->second;
  if (w.rank() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(names->weight, " has shape ", ShapeString(w.shape()), ", want [n, d]"));
  }
  const int64_t d = w.dim(1);
  if (args.factored_input) {
    if (auto s = CheckDType(args.u.dtype, "u"); !s.ok()) return s;
    if (auto s = CheckRank(args.u, 2, "u"); !s.ok()) return s;
    if (auto s = CheckDType(args.c.dtype, "c"); !s.ok()) return s;
    if (auto s = CheckRank(args.c, 2, "c"); !s.ok()) return s;
    const int64_t r = args.u.dim(1);
    if (args.c.dim(0) != r || args.c.dim(1) != d) {
      return absl::InvalidArgumentError(absl::StrCat(
          "c has shape ", ShapeString(args.c.shape), ", want [", r, ", ", d, "] (rank of u ",
          ShapeString(args.u.shape), ", in_features of ", names->weight, ")"));
    }
    if (auto s = CheckMaxRank(args.max_rank); !s.ok()) return s;
    if (args.max_rank > 0 && r > args.max_rank) {
      return absl::InvalidArgumentError(
          absl::StrCat("factored input has rank ", r, ", want <= the max rank ", args.max_rank));
    }
    if (auto s = CheckFinite(args.u, "u"); !s.ok()) return s;
    if (auto s = CheckFinite(args.c, "c"); !s.ok()) return s;
  } else {
    if (auto s = CheckDType(args.x.dtype, "x"); !s.ok()) return s;
    if (auto s = CheckRank(args.x, 2, "x"); !s.ok()) return s;
    if (args.x.dim(1) != d) {
      return absl::InvalidArgumentError(absl::StrCat("x has shape ", ShapeString(args.x.shape),
                                                     ", want [L, ", d, "] (in_features of ",
                                                     names->weight, ")"));
    }
    if (args.rank.has_value()) {
      if (auto s = ValidateRankPolicy(*args.rank); !s.ok()) return s;
    }
    if (auto s = CheckMaxRank(args.max_rank); !s.ok()) return s;
    if (auto s = CheckFinite(args.x, "x"); !s.ok()) return s;
  }
  return CheckDType(args.output_dtype, "output dtype");
}

}  // namespace atp::kernels
