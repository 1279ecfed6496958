// Placeholder while the CPU backend is written (issue: foundation).
#include "atp/kernels/backend.h"

namespace atp::kernels {
namespace {

class CpuLayer : public LayerHandle {
 public:
  explicit CpuLayer(LayerSpec spec) : spec_(std::move(spec)) {}
  const LayerSpec& spec() const override { return spec_; }
  uint64_t resident_bytes() const override { return 0; }

 private:
  LayerSpec spec_;
};

class CpuBackend : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  std::string device_description() const override { return "CPU"; }
  absl::StatusOr<std::unique_ptr<LayerHandle>> LoadLayer(LayerSpec spec) override {
    if (auto s = ValidateLayerSpec(spec); !s.ok()) return s;
    return std::make_unique<CpuLayer>(std::move(spec));
  }
  absl::StatusOr<PrincipalBases> Decompose(const PrincipalBasesArgs&,
                                           const ExecContext&) override {
    return absl::UnimplementedError("Decompose");
  }
  absl::StatusOr<AtpAttentionResult> AtpAttention(const LayerHandle&, const AtpAttentionArgs&,
                                                  const ExecContext&) override {
    return absl::UnimplementedError("AtpAttention");
  }
  absl::StatusOr<Tensor> ExactAttention(const LayerHandle&, const ExactAttentionArgs&,
                                        const ExecContext&) override {
    return absl::UnimplementedError("ExactAttention");
  }
  absl::StatusOr<LowRankLinearResult> LowRankLinear(const LayerHandle&, const LowRankLinearArgs&,
                                                    const ExecContext&) override {
    return absl::UnimplementedError("LowRankLinear");
  }
  MemoryInfo memory() const override { return {}; }
  absl::Status health() const override { return absl::OkStatus(); }
};

}  // namespace

std::unique_ptr<Backend> CreateCpuBackend(const CpuBackendOptions&) {
  return std::make_unique<CpuBackend>();
}

}  // namespace atp::kernels
