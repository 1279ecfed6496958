#include "wire_convert.h"

#include "atp/wire/tensor_header.h"

namespace atp::client::internal {

atp::v1::DType ToWireDType(DType dtype) { return static_cast<atp::v1::DType>(dtype); }

atp::v1::RankPolicy ToWireRankPolicy(const RankPolicy& policy) {
  atp::v1::RankPolicy out;
  switch (policy.kind) {
    case RankPolicy::Kind::kFixed:
      out.set_fixed(static_cast<uint32_t>(policy.value));
      break;
    case RankPolicy::Kind::kFraction:
      out.set_fraction(policy.value);
      break;
    case RankPolicy::Kind::kEnergy:
      out.set_energy(policy.value);
      break;
  }
  out.set_max_rank(static_cast<uint32_t>(policy.max_rank));
  return out;
}

atp::v1::TensorHeader ToTensorHeader(absl::string_view name, const TensorView& view) {
  return wire::MakeTensorHeader(name, ToWireDType(view.dtype), view.shape, view.bytes());
}

atp::v1::LayerHeader ToLayerHeader(const LayerSpec& spec) {
  atp::v1::LayerHeader header;
  header.set_layer_id(spec.id());
  if (spec.kind() == LayerSpec::Kind::kAttention) {
    const AttentionConfig& c = spec.attention();
    atp::v1::AttentionConfig* a = header.mutable_attention();
    a->set_d_model(static_cast<uint32_t>(c.d_model));
    a->set_num_heads(static_cast<uint32_t>(c.num_heads));
    a->set_num_kv_heads(static_cast<uint32_t>(c.num_kv_heads));
    a->set_head_dim(static_cast<uint32_t>(c.head_dim));
    a->set_scale(c.scale);
    a->set_key_scale(c.key_scale == KeyScale::kInvSqrtLen ? atp::v1::KEY_SCALE_INV_SQRT_LEN
                                                          : atp::v1::KEY_SCALE_NONE);
    if (c.default_rank) *a->mutable_default_rank() = ToWireRankPolicy(*c.default_rank);
  } else {
    atp::v1::LinearConfig* l = header.mutable_linear();
    if (spec.linear_default_rank()) {
      *l->mutable_default_rank() = ToWireRankPolicy(*spec.linear_default_rank());
    }
  }
  for (const auto& [name, tensor] : spec.weights()) {
    *header.add_tensors() = ToTensorHeader(name, tensor.view());
  }
  header.set_digest(spec.digest());
  return header;
}

ServerInfo FromServerInfo(const atp::v1::ServerInfo& info) {
  ServerInfo out;
  out.version = info.version();
  out.backend = info.backend();
  out.device = info.device();
  const atp::v1::Limits& l = info.limits();
  out.limits.max_tensor_bytes = l.max_tensor_bytes();
  out.limits.max_sequence_length = l.max_sequence_length();
  out.limits.max_rank = l.max_rank();
  out.limits.chunk_bytes = l.chunk_bytes();
  out.limits.max_inflight_requests = l.max_inflight_requests();
  out.limits.max_inflight_per_stream = l.max_inflight_per_stream();
  out.limits.max_resident_layer_bytes = l.max_resident_layer_bytes();
  out.limits.max_queue_depth = l.max_queue_depth();
  out.limits.max_inflight_bytes = l.max_inflight_bytes();
  out.operations.assign(info.operations().begin(), info.operations().end());
  out.requires_token = info.requires_token();
  return out;
}

WorkerStatistics FromStatistics(const atp::v1::Statistics& stats) {
  WorkerStatistics out;
  for (const atp::v1::OpStatistics& op : stats.ops()) {
    WorkerStatistics::Op& o = out.ops[op.op()];
    o.requests = op.requests();
    o.errors = op.errors();
    o.bytes_in = op.bytes_in();
    o.bytes_out = op.bytes_out();
    o.receive_seconds = op.receive_seconds();
    o.queue_seconds = op.queue_seconds();
    o.compute_seconds = op.compute_seconds();
  }
  out.queue_depth = stats.queue_depth();
  out.inflight_requests = stats.inflight_requests();
  out.resident_layers = stats.resident_layers();
  out.resident_layer_bytes = stats.resident_layer_bytes();
  out.uptime_seconds = stats.uptime_seconds();
  for (const auto& [code, n] : stats.errors_by_code()) out.errors_by_code[code] = n;
  return out;
}

}  // namespace atp::client::internal
