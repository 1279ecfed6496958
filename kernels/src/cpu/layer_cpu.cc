#include "cpu/layer_cpu.h"

#include "absl/strings/str_cat.h"

namespace atp::kernels::cpu {

CpuLayer::CpuLayer(LayerSpec spec) : spec_(std::move(spec)) {
  for (const auto& [name, tensor] : spec_.weights) resident_bytes_ += tensor.byte_size();
  for (const auto& [name, tensor] : spec_.weights) {
    const size_t dot = name.rfind('.');
    const std::string prefix = dot == std::string::npos ? "" : name.substr(0, dot);
    const std::string field = dot == std::string::npos ? name : name.substr(dot + 1);
    if (field != "weight") continue;
    LinearF32 map;
    map.w = F32Of(name);
    map.out = tensor.dim(0);
    map.in = tensor.dim(1);
    const std::string bias = prefix.empty() ? "bias" : absl::StrCat(prefix, ".bias");
    if (spec_.weights.count(bias) > 0) map.b = F32Of(bias);
    maps_[name] = map;
  }
}

const float* CpuLayer::F32Of(const std::string& name) {
  const Tensor& t = spec_.weights.at(name);
  if (t.dtype() == DType::kF32) return t.data_as<float>();
  std::vector<float>& copy = copies_.emplace_back(static_cast<size_t>(t.num_elements()));
  ConvertToF32(t.dtype(), t.data(), copy.data(), copy.size());
  resident_bytes_ += copy.size() * sizeof(float);
  return copy.data();
}

const LinearF32* CpuLayer::linear(const std::string& weight_name) const {
  auto it = maps_.find(weight_name);
  return it == maps_.end() ? nullptr : &it->second;
}

AttentionWeightsF32 CpuLayer::attention() const {
  return {maps_.at("q_proj.weight"), maps_.at("k_proj.weight"), maps_.at("v_proj.weight"),
          maps_.at("o_proj.weight")};
}

}  // namespace atp::kernels::cpu
