#include "compute_plan.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace atp::service {
namespace {

std::string ShapeText(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

absl::Status CheckMatrix(const wire::TensorLayout& t, absl::string_view what) {
  if (t.shape.size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " has shape ", ShapeText(t.shape), ", want 2 dimensions"));
  }
  return absl::OkStatus();
}

absl::Status CheckLength(int64_t length, const WorkerLimits& limits, absl::string_view what) {
  if (length > limits.max_sequence_length) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, " has L = ", length, " tokens, more than the limit of ",
                     limits.max_sequence_length, " (max_sequence_length)"));
  }
  return absl::OkStatus();
}

uint64_t ElementBytes(const ComputePlan& plan) {
  const int dtype = plan.output_dtype.has_value() ? static_cast<int>(*plan.output_dtype)
                                                  : static_cast<int>(plan.inputs[0].dtype);
  return static_cast<uint64_t>(wire::DTypeBytes(dtype));
}

const kernels::TensorView& View(const kernels::TensorView& t) { return t; }

kernels::DType OutputDType(const ComputePlan& plan, const kernels::TensorView& input) {
  return plan.output_dtype.value_or(input.dtype);
}

}  // namespace

absl::StatusOr<uint64_t> AdmitPlan(const ComputePlan& plan, const kernels::LayerSpec* layer,
                                   const WorkerLimits& limits) {
  if (plan.rank.has_value()) {
    if (absl::Status s = kernels::ValidateRankPolicy(*plan.rank); !s.ok()) return s;
  }
  const uint64_t out_elem = ElementBytes(plan);
  switch (plan.op) {
    case Op::kAtpAttention:
    case Op::kExactAttention: {
      if (layer->kind != kernels::LayerSpec::Kind::kAttention) {
        return absl::InvalidArgumentError(absl::StrCat("layer \"", plan.layer_id,
                                                       "\" is a linear layer; ", OpName(plan.op),
                                                       " needs an attention layer"));
      }
      const wire::TensorLayout& x = plan.inputs[0];
      if (absl::Status s = CheckMatrix(x, "x"); !s.ok()) return s;
      if (x.shape[1] != layer->attention.d_model) {
        return absl::InvalidArgumentError(
            absl::StrCat("x has shape ", ShapeText(x.shape), ", want [L,", layer->attention.d_model,
                         "] (d_model of layer \"", plan.layer_id, "\")"));
      }
      if (absl::Status s = CheckLength(x.shape[0], limits, "x"); !s.ok()) return s;
      return static_cast<uint64_t>(x.shape[0]) * x.shape[1] * out_elem;
    }
    case Op::kLowRankLinear: {
      if (layer == nullptr) return absl::InternalError("lowrank_linear without a layer");
      auto names = kernels::FindLinearWeight(*layer, plan.weight);
      if (!names.ok()) {
        return absl::Status(names.status().code(), absl::StrCat("layer \"", plan.layer_id,
                                                                "\": ", names.status().message()));
      }
      const kernels::Tensor& w = layer->weights.at(names->weight);
      const int64_t n = w.dim(0);
      const int64_t d = w.dim(1);
      const bool has_bias = layer->weights.count(names->bias) > 0;
      int64_t length = 0;
      int64_t rank_bound = 0;
      if (plan.factored_input) {
        const wire::TensorLayout& u = plan.inputs[0];
        const wire::TensorLayout& c = plan.inputs[1];
        if (absl::Status s = CheckMatrix(u, "u"); !s.ok()) return s;
        if (absl::Status s = CheckMatrix(c, "c"); !s.ok()) return s;
        if (u.dtype != c.dtype) {
          return absl::InvalidArgumentError(absl::StrCat(
              "u has dtype ", kernels::DTypeName(static_cast<kernels::DType>(u.dtype)),
              " and c has dtype ", kernels::DTypeName(static_cast<kernels::DType>(c.dtype)),
              ", want the same"));
        }
        if (c.shape[0] != u.shape[1] || c.shape[1] != d) {
          return absl::InvalidArgumentError(absl::StrCat(
              "c has shape ", ShapeText(c.shape), ", want [", u.shape[1], ",", d, "] (r of u ",
              ShapeText(u.shape), ", in_features of ", names->weight, ")"));
        }
        length = u.shape[0];
        rank_bound = u.shape[1];
        if (rank_bound > limits.max_rank) {
          return absl::ResourceExhaustedError(absl::StrCat("u has rank r = ", rank_bound,
                                                           ", more than the limit of ",
                                                           limits.max_rank, " (max_rank)"));
        }
      } else {
        const wire::TensorLayout& x = plan.inputs[0];
        if (absl::Status s = CheckMatrix(x, "x"); !s.ok()) return s;
        if (x.shape[1] != d) {
          return absl::InvalidArgumentError(absl::StrCat(
              "x has shape ", ShapeText(x.shape), ", want [L,", d, "] (in_features of ",
              names->weight, " of layer \"", plan.layer_id, "\")"));
        }
        length = x.shape[0];
        const kernels::RankPolicy policy = plan.rank.value_or(layer->linear_default_rank);
        rank_bound = kernels::RankUpperBound(policy, length, d, limits.max_rank);
      }
      if (absl::Status s = CheckLength(length, limits, plan.factored_input ? "u" : "x"); !s.ok()) {
        return s;
      }
      if (!plan.factored_output) return static_cast<uint64_t>(length) * n * out_elem;
      const uint64_t r1 = static_cast<uint64_t>(rank_bound) + (has_bias ? 1 : 0);
      return (static_cast<uint64_t>(length) * r1 + r1 * static_cast<uint64_t>(n)) * out_elem;
    }
    case Op::kDecompose: {
      const wire::TensorLayout& x = plan.inputs[0];
      if (absl::Status s = CheckMatrix(x, "x"); !s.ok()) return s;
      if (absl::Status s = CheckLength(x.shape[0], limits, "x"); !s.ok()) return s;
      const kernels::RankPolicy policy = plan.rank.value_or(kernels::RankPolicy{});
      const uint64_t r = kernels::RankUpperBound(policy, x.shape[0], x.shape[1], limits.max_rank);
      return (static_cast<uint64_t>(x.shape[0]) * r + r * static_cast<uint64_t>(x.shape[1])) *
                 out_elem +
             r * sizeof(float);
    }
    case Op::kRegisterLayer:
      break;
  }
  return absl::InternalError("AdmitPlan: not a compute operation");
}

absl::StatusOr<ComputeOutput> RunPlan(kernels::Backend& backend, const kernels::LayerHandle* layer,
                                      const ComputePlan& plan,
                                      const std::vector<kernels::TensorView>& inputs,
                                      const WorkerLimits& limits, const kernels::ExecContext& ctx) {
  ComputeOutput out;
  switch (plan.op) {
    case Op::kAtpAttention: {
      kernels::AtpAttentionArgs args;
      args.x = View(inputs[0]);
      args.rank = plan.rank;
      args.max_rank = limits.max_rank;
      args.output_dtype = OutputDType(plan, inputs[0]);
      auto r = backend.AtpAttention(*layer, args, ctx);
      if (!r.ok()) return r.status();
      out.rank = r->rank;
      out.captured_energy = r->captured_energy;
      out.outputs.push_back({"y", std::move(r->y)});
      return out;
    }
    case Op::kExactAttention: {
      kernels::ExactAttentionArgs args;
      args.x = View(inputs[0]);
      args.causal = plan.causal;
      args.output_dtype = OutputDType(plan, inputs[0]);
      auto r = backend.ExactAttention(*layer, args, ctx);
      if (!r.ok()) return r.status();
      out.outputs.push_back({"y", std::move(*r)});
      return out;
    }
    case Op::kLowRankLinear: {
      kernels::LowRankLinearArgs args;
      args.weight = plan.weight;
      args.factored_input = plan.factored_input;
      if (plan.factored_input) {
        args.u = View(inputs[0]);
        args.c = View(inputs[1]);
      } else {
        args.x = View(inputs[0]);
      }
      args.rank = plan.rank;
      args.max_rank = limits.max_rank;
      args.factored_output = plan.factored_output;
      args.output_dtype = OutputDType(plan, inputs[0]);
      auto r = backend.LowRankLinear(*layer, args, ctx);
      if (!r.ok()) return r.status();
      out.rank = r->rank;
      out.captured_energy = r->captured_energy;
      out.factored = r->factored;
      if (r->factored) {
        out.outputs.push_back({"u", std::move(r->u)});
        out.outputs.push_back({"c", std::move(r->c)});
      } else {
        out.outputs.push_back({"y", std::move(r->y)});
      }
      return out;
    }
    case Op::kDecompose: {
      kernels::PrincipalBasesArgs args;
      args.x = View(inputs[0]);
      args.rank = plan.rank.value_or(kernels::RankPolicy{});
      args.method = plan.method;
      args.max_rank = limits.max_rank;
      args.output_dtype = OutputDType(plan, inputs[0]);
      auto r = backend.Decompose(args, ctx);
      if (!r.ok()) return r.status();
      out.rank = r->rank;
      out.captured_energy = r->captured_energy;
      out.outputs.push_back({"u", std::move(r->u)});
      out.outputs.push_back({"s", std::move(r->s)});
      out.outputs.push_back({"vt", std::move(r->vt)});
      return out;
    }
    case Op::kRegisterLayer:
      break;
  }
  return absl::InternalError("RunPlan: not a compute operation");
}

}  // namespace atp::service
