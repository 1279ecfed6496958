#include "convert.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "atp/wire/layer_digest.h"

namespace atp::service {
namespace {

// nullopt for a RankPolicy message with nothing set.
absl::StatusOr<std::optional<kernels::RankPolicy>> ToRankPolicy(const atp::v1::RankPolicy& p,
                                                                absl::string_view what) {
  kernels::RankPolicy out;
  out.max_rank = p.max_rank();
  switch (p.policy_case()) {
    case atp::v1::RankPolicy::kFixed:
      out.kind = kernels::RankPolicy::Kind::kFixed;
      out.value = p.fixed();
      break;
    case atp::v1::RankPolicy::kFraction:
      out.kind = kernels::RankPolicy::Kind::kFraction;
      out.value = p.fraction();
      break;
    case atp::v1::RankPolicy::kEnergy:
      out.kind = kernels::RankPolicy::Kind::kEnergy;
      out.value = p.energy();
      break;
    case atp::v1::RankPolicy::POLICY_NOT_SET:
      if (p.max_rank() == 0) return std::optional<kernels::RankPolicy>();
      return absl::InvalidArgumentError(
          absl::StrCat(what, " sets max_rank but no policy; want one of fixed, fraction, energy"));
  }
  if (absl::Status s = kernels::ValidateRankPolicy(out); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", s.message()));
  }
  return std::optional<kernels::RankPolicy>(out);
}

atp::v1::RankPolicy FromRankPolicy(const kernels::RankPolicy& p) {
  atp::v1::RankPolicy out;
  switch (p.kind) {
    case kernels::RankPolicy::Kind::kFixed:
      out.set_fixed(static_cast<uint32_t>(p.value));
      break;
    case kernels::RankPolicy::Kind::kFraction:
      out.set_fraction(p.value);
      break;
    case kernels::RankPolicy::Kind::kEnergy:
      out.set_energy(p.value);
      break;
  }
  out.set_max_rank(static_cast<uint32_t>(p.max_rank));
  return out;
}

absl::StatusOr<wire::TensorLayout> CheckInput(const atp::v1::TensorHeader& h,
                                              const WorkerLimits& limits, absl::string_view role) {
  return wire::CheckTensorHeader(h, limits.max_tensor_bytes, role);
}

atp::v1::TensorHeader ToTensorHeader(const wire::TensorLayout& t) {
  atp::v1::TensorHeader h;
  h.set_name(t.name);
  h.set_dtype(t.dtype);
  for (int64_t d : t.shape) h.add_shape(d);
  h.set_byte_size(t.byte_size);
  h.set_crc32c(t.crc32c);
  return h;
}

bool IsLowerHex64(absl::string_view s) {
  if (s.size() != 64) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

}  // namespace

absl::StatusOr<ComputePlan> ToComputePlan(const atp::v1::RequestHeader& header,
                                          const WorkerLimits& limits) {
  ComputePlan plan;
  plan.request_id = header.request_id();
  const atp::v1::RankPolicy* rank = nullptr;
  switch (header.op_case()) {
    case atp::v1::RequestHeader::kAtpAttention:
      plan.op = Op::kAtpAttention;
      plan.layer_id = header.atp_attention().layer_id();
      if (header.atp_attention().has_rank()) rank = &header.atp_attention().rank();
      break;
    case atp::v1::RequestHeader::kExactAttention:
      plan.op = Op::kExactAttention;
      plan.layer_id = header.exact_attention().layer_id();
      plan.causal = header.exact_attention().causal();
      break;
    case atp::v1::RequestHeader::kLowrankLinear: {
      const auto& op = header.lowrank_linear();
      plan.op = Op::kLowRankLinear;
      plan.layer_id = op.layer_id();
      plan.weight = op.weight();
      if (op.has_rank()) rank = &op.rank();
      if (op.output_form() != atp::v1::OUTPUT_FORM_DENSE &&
          op.output_form() != atp::v1::OUTPUT_FORM_FACTORED) {
        return absl::InvalidArgumentError(absl::StrCat(
            "lowrank_linear.output_form is ", op.output_form(), ", want DENSE or FACTORED"));
      }
      plan.factored_output = op.output_form() == atp::v1::OUTPUT_FORM_FACTORED;
      break;
    }
    case atp::v1::RequestHeader::kDecompose: {
      const auto& op = header.decompose();
      plan.op = Op::kDecompose;
      if (op.has_rank()) rank = &op.rank();
      switch (op.method()) {
        case atp::v1::DECOMPOSE_METHOD_AUTO:
          plan.method = kernels::DecomposeMethod::kAuto;
          break;
        case atp::v1::DECOMPOSE_METHOD_EXACT:
          plan.method = kernels::DecomposeMethod::kExact;
          break;
        case atp::v1::DECOMPOSE_METHOD_RANDOMIZED:
          plan.method = kernels::DecomposeMethod::kRandomized;
          break;
        default:
          return absl::InvalidArgumentError(absl::StrCat("decompose.method is ", op.method(),
                                                         ", want AUTO, EXACT or RANDOMIZED"));
      }
      break;
    }
    case atp::v1::RequestHeader::OP_NOT_SET:
      return absl::InvalidArgumentError(
          "request sets no operation, want one of atp_attention, exact_attention, "
          "lowrank_linear, decompose");
  }
  if (plan.op != Op::kDecompose && plan.layer_id.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(OpName(plan.op), " sets no layer_id"));
  }
  if (rank != nullptr) {
    auto policy = ToRankPolicy(*rank, "rank");
    if (!policy.ok()) return policy.status();
    plan.rank = *policy;
  }
  switch (header.input().form_case()) {
    case atp::v1::TensorSpec::kDense: {
      auto x = CheckInput(header.input().dense(), limits, "x");
      if (!x.ok()) return x.status();
      plan.inputs.push_back(*std::move(x));
      break;
    }
    case atp::v1::TensorSpec::kFactored: {
      if (plan.op != Op::kLowRankLinear) {
        return absl::InvalidArgumentError(absl::StrCat(
            OpName(plan.op), " takes a dense input x; only lowrank_linear takes a factored one"));
      }
      auto u = CheckInput(header.input().factored().u(), limits, "u");
      if (!u.ok()) return u.status();
      auto c = CheckInput(header.input().factored().c(), limits, "c");
      if (!c.ok()) return c.status();
      plan.factored_input = true;
      plan.inputs.push_back(*std::move(u));
      plan.inputs.push_back(*std::move(c));
      break;
    }
    case atp::v1::TensorSpec::FORM_NOT_SET:
      return absl::InvalidArgumentError(
          "request sets no input, want input.dense or input.factored");
  }
  switch (header.output_dtype()) {
    case atp::v1::DTYPE_UNSPECIFIED:
      break;
    case atp::v1::DTYPE_F32:
    case atp::v1::DTYPE_F16:
    case atp::v1::DTYPE_BF16:
      plan.output_dtype = static_cast<kernels::DType>(header.output_dtype());
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("output_dtype is ", header.output_dtype(),
                                                     ", want F32, F16, BF16 or UNSPECIFIED"));
  }
  plan.timeout_ms = header.timeout_ms();
  const uint32_t want_chunk = header.response_chunk_bytes();
  plan.response_chunk_bytes =
      want_chunk == 0 ? limits.chunk_bytes : std::min(want_chunk, limits.chunk_bytes);
  return plan;
}

absl::StatusOr<LayerPlan> ToLayerPlan(const atp::v1::LayerHeader& header,
                                      const WorkerLimits& limits) {
  LayerPlan plan;
  if (absl::Status s = ValidateLayerId(header.layer_id()); !s.ok()) return s;
  plan.layer_id = header.layer_id();
  plan.replace = header.replace();
  switch (header.config_case()) {
    case atp::v1::LayerHeader::kAttention: {
      const auto& a = header.attention();
      plan.spec.kind = kernels::LayerSpec::Kind::kAttention;
      kernels::AttentionConfig& c = plan.spec.attention;
      c.d_model = a.d_model();
      c.num_heads = a.num_heads();
      c.num_kv_heads = a.num_kv_heads();
      c.head_dim = a.head_dim();
      c.scale = a.scale();
      switch (a.key_scale()) {
        case atp::v1::KEY_SCALE_NONE:
          c.key_scale = kernels::KeyScale::kNone;
          break;
        case atp::v1::KEY_SCALE_INV_SQRT_LEN:
          c.key_scale = kernels::KeyScale::kInvSqrtLen;
          break;
        default:
          return absl::InvalidArgumentError(absl::StrCat("attention.key_scale is ", a.key_scale(),
                                                         ", want NONE or INV_SQRT_LEN"));
      }
      if (a.has_default_rank()) {
        auto policy = ToRankPolicy(a.default_rank(), "attention.default_rank");
        if (!policy.ok()) return policy.status();
        if (policy->has_value()) c.default_rank = **policy;
      }
      if (absl::Status s = kernels::ValidateAttentionConfig(c); !s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("attention config: ", s.message()));
      }
      plan.digest_config = wire::AttentionDigestConfig(c.d_model, c.num_heads, c.num_kv_heads,
                                                       c.head_dim, c.scale, a.key_scale());
      break;
    }
    case atp::v1::LayerHeader::kLinear:
      plan.spec.kind = kernels::LayerSpec::Kind::kLinear;
      if (header.linear().has_default_rank()) {
        auto policy = ToRankPolicy(header.linear().default_rank(), "linear.default_rank");
        if (!policy.ok()) return policy.status();
        if (policy->has_value()) plan.spec.linear_default_rank = **policy;
      }
      plan.digest_config = std::string(wire::kLinearDigestConfig);
      break;
    case atp::v1::LayerHeader::CONFIG_NOT_SET:
      return absl::InvalidArgumentError(
          absl::StrCat("layer \"", plan.layer_id, "\" sets no config, want attention or linear"));
  }
  for (int i = 0; i < header.tensors_size(); ++i) {
    const auto& h = header.tensors(i);
    auto t = wire::CheckTensorHeader(h, limits.max_tensor_bytes,
                                     h.name().empty() ? absl::StrCat("tensor ", i) : h.name());
    if (!t.ok()) return t.status();
    plan.payload_bytes += t->byte_size;
    plan.tensors.push_back(*std::move(t));
  }
  if (absl::Status s = ValidateLayerTensors(plan.spec, plan.tensors); !s.ok()) return s;
  if (!header.digest().empty() && !IsLowerHex64(header.digest())) {
    return absl::InvalidArgumentError(absl::StrCat("digest \"", header.digest().substr(0, 80),
                                                   "\" is not 64 lowercase hex digits (SHA-256)"));
  }
  plan.claimed_digest = header.digest();
  return plan;
}

atp::v1::ResponseHeader MakeResponseHeader(uint64_t request_id, const absl::Status& status,
                                           const ComputeOutput* output,
                                           const std::vector<uint32_t>& crcs,
                                           const TimingRecord& timing) {
  atp::v1::ResponseHeader h;
  h.set_request_id(request_id);
  h.set_code(static_cast<int32_t>(status.code()));
  h.set_message(std::string(status.message()));
  if (status.ok() && output != nullptr) {
    for (size_t i = 0; i < output->outputs.size(); ++i) {
      const NamedTensor& t = output->outputs[i];
      auto* o = h.add_outputs();
      o->set_name(t.name);
      o->set_dtype(static_cast<atp::v1::DType>(t.tensor.dtype()));
      for (int64_t d : t.tensor.shape()) o->add_shape(d);
      o->set_byte_size(t.tensor.byte_size());
      o->set_crc32c(i < crcs.size() ? crcs[i] : 0);
    }
    h.set_factored(output->factored);
    h.set_rank(static_cast<uint32_t>(output->rank));
    h.set_captured_energy(output->captured_energy);
  }
  h.mutable_timing()->set_receive_us(timing.receive_us);
  h.mutable_timing()->set_queue_us(timing.queue_us);
  h.mutable_timing()->set_compute_us(timing.compute_us);
  return h;
}

atp::v1::LayerInfo ToLayerInfo(const LayerEntry& entry) {
  atp::v1::LayerInfo info;
  info.set_layer_id(entry.id);
  info.set_digest(entry.digest);
  const kernels::LayerSpec& spec = entry.spec();
  if (spec.kind == kernels::LayerSpec::Kind::kAttention) {
    const kernels::AttentionConfig& c = spec.attention;
    auto* a = info.mutable_attention();
    a->set_d_model(static_cast<uint32_t>(c.d_model));
    a->set_num_heads(static_cast<uint32_t>(c.num_heads));
    a->set_num_kv_heads(static_cast<uint32_t>(c.kv_heads()));
    a->set_head_dim(static_cast<uint32_t>(c.head_dim));
    a->set_scale(c.resolved_scale());
    a->set_key_scale(c.key_scale == kernels::KeyScale::kInvSqrtLen ? atp::v1::KEY_SCALE_INV_SQRT_LEN
                                                                   : atp::v1::KEY_SCALE_NONE);
    *a->mutable_default_rank() = FromRankPolicy(c.default_rank);
  } else {
    *info.mutable_linear()->mutable_default_rank() = FromRankPolicy(spec.linear_default_rank);
  }
  for (const auto& t : entry.tensors) *info.add_tensors() = ToTensorHeader(t);
  info.set_resident_bytes(entry.resident_bytes);
  return info;
}

atp::v1::ServerInfo ToServerInfo(const ServerDescription& d, const WorkerLimits& limits) {
  atp::v1::ServerInfo info;
  info.set_version(d.version);
  info.set_backend(d.backend);
  info.set_device(d.device);
  auto* l = info.mutable_limits();
  l->set_max_tensor_bytes(limits.max_tensor_bytes);
  l->set_max_sequence_length(static_cast<uint32_t>(limits.max_sequence_length));
  l->set_max_rank(static_cast<uint32_t>(limits.max_rank));
  l->set_chunk_bytes(limits.chunk_bytes);
  l->set_max_inflight_requests(static_cast<uint32_t>(limits.max_inflight_requests));
  l->set_max_inflight_per_stream(static_cast<uint32_t>(limits.max_inflight_per_stream));
  l->set_max_resident_layer_bytes(limits.max_resident_layer_bytes);
  l->set_max_queue_depth(static_cast<uint32_t>(limits.max_queue_depth));
  l->set_max_inflight_bytes(limits.max_inflight_bytes);
  for (Op op : {Op::kAtpAttention, Op::kExactAttention, Op::kLowRankLinear, Op::kDecompose}) {
    info.add_operations(std::string(OpName(op)));
  }
  info.set_requires_token(d.requires_token);
  return info;
}

atp::v1::Statistics ToStatistics(const StatsSnapshot& s) {
  atp::v1::Statistics out;
  for (const OpSnapshot& o : s.ops) {
    auto* p = out.add_ops();
    p->set_op(o.op);
    p->set_requests(o.requests);
    p->set_errors(o.errors);
    p->set_bytes_in(o.bytes_in);
    p->set_bytes_out(o.bytes_out);
    p->set_receive_seconds(o.receive_seconds);
    p->set_queue_seconds(o.queue_seconds);
    p->set_compute_seconds(o.compute_seconds);
  }
  out.set_queue_depth(static_cast<uint32_t>(s.queue_depth));
  out.set_inflight_requests(static_cast<uint32_t>(s.inflight_requests));
  out.set_resident_layers(static_cast<uint32_t>(s.resident_layers));
  out.set_resident_layer_bytes(s.resident_layer_bytes);
  out.set_uptime_seconds(s.uptime_seconds);
  for (const auto& [code, n] : s.errors_by_code) (*out.mutable_errors_by_code())[code] = n;
  return out;
}

}  // namespace atp::service
