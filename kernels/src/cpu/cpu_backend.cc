// The CPU backend: every op of DESIGN.md §1 with OpenBLAS and LAPACKE, f32 arithmetic (f64 where
// precision needs it). Each call validates its arguments, converts inputs to f32, computes and
// converts the outputs to the requested dtype.
#include <cblas.h>
#include <sched.h>
#include <unistd.h>

#include <fstream>
#include <new>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>

#include "absl/strings/str_cat.h"
#include "atp/kernels/backend.h"
#include "cpu/attention_cpu.h"
#include "cpu/cpu_util.h"
#include "cpu/layer_cpu.h"
#include "cpu/lowrank_linear_cpu.h"
#include "cpu/principal_bases_cpu.h"

namespace atp::kernels {
namespace {

using cpu::CpuEnv;
using cpu::CpuLayer;

absl::Status OutOfMemory(absl::string_view what) {
  return absl::ResourceExhaustedError(absl::StrCat("out of host memory while computing ", what));
}

absl::Status NoThreads(absl::string_view what, const std::system_error& e) {
  return absl::ResourceExhaustedError(
      absl::StrCat("could not start a thread while computing ", what, ": ", e.what()));
}

// Reads "Name:  123 kB" from /proc/meminfo; 0 when absent.
uint64_t MemInfoBytes(const std::string& text, absl::string_view name) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(std::string(name) + ":", 0) == 0) {
      std::istringstream fields(line.substr(name.size() + 1));
      uint64_t kib = 0;
      fields >> kib;
      return kib * 1024;
    }
  }
  return 0;
}

// Cores this process may run on (its affinity mask, which containers narrow), at least 1.
int UsableCores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos && colon + 2 <= line.size()) return line.substr(colon + 2);
    }
  }
  return "CPU";
}

absl::StatusOr<const CpuLayer*> AsCpuLayer(const LayerHandle& layer) {
  const auto* cpu_layer = dynamic_cast<const CpuLayer*>(&layer);
  if (cpu_layer == nullptr) {
    return absl::InvalidArgumentError("layer handle was not loaded by the cpu backend");
  }
  return cpu_layer;
}

absl::StatusOr<const CpuLayer*> AsAttentionLayer(const LayerHandle& layer) {
  absl::StatusOr<const CpuLayer*> cpu_layer = AsCpuLayer(layer);
  if (cpu_layer.ok() && (*cpu_layer)->spec().kind != LayerSpec::Kind::kAttention) {
    return absl::InvalidArgumentError("layer is a linear layer, want an attention layer");
  }
  return cpu_layer;
}

// Bytes of the f32 copies that loading `spec` adds (f16/bf16 weights are widened).
uint64_t F32CopyBytes(const LayerSpec& spec) {
  uint64_t bytes = 0;
  for (const auto& [name, tensor] : spec.weights) {
    if (tensor.dtype() != DType::kF32) bytes += static_cast<uint64_t>(tensor.num_elements()) * 4;
  }
  return bytes;
}

class CpuBackend : public Backend {
 public:
  explicit CpuBackend(const CpuBackendOptions& options) {
    // OpenBLAS single-threaded, the backend's own threads split the work (see cpu/cpu_util.h).
    openblas_set_num_threads(1);
    env_.threads = options.threads > 0 ? options.threads : UsableCores();
    env_.poison = options.poison_outputs;
    description_ = absl::StrCat(CpuModel(), " x", std::thread::hardware_concurrency(), " (",
                                env_.threads, " threads, ", openblas_get_config(), ")");
  }

  std::string name() const override { return "cpu"; }
  std::string device_description() const override { return description_; }

  absl::StatusOr<std::unique_ptr<LayerHandle>> LoadLayer(LayerSpec spec) override {
    if (auto s = ValidateLayerSpec(spec); !s.ok()) return s;
    const uint64_t extra = F32CopyBytes(spec);
    if (const uint64_t free = memory().free_bytes; extra > free) {
      return absl::ResourceExhaustedError(
          absl::StrCat("loading the layer needs ", extra, " bytes for f32 copies of its weights, ",
                       free, " bytes of host memory are available"));
    }
    try {
      return std::make_unique<CpuLayer>(std::move(spec));
    } catch (const std::bad_alloc&) {
      return absl::ResourceExhaustedError("out of host memory while loading the layer");
    }
  }

  absl::StatusOr<PrincipalBases> Decompose(const PrincipalBasesArgs& args,
                                           const ExecContext& ctx) override {
    if (auto s = ValidatePrincipalBases(args); !s.ok()) return s;
    try {
      const cpu::F32Input x(args.x);
      cpu::BasesRequest request;
      request.x = x.data();
      request.length = args.x.dim(0);
      request.width = args.x.dim(1);
      request.rank = args.rank;
      request.method = args.method;
      request.max_rank = args.max_rank;
      request.seed = args.seed;
      absl::StatusOr<cpu::BasesF32> bases = cpu::ComputePrincipalBases(request, ctx, env_);
      if (!bases.ok()) return bases.status();
      const int64_t r = bases->rank;
      PrincipalBases out;
      out.rank = r;
      out.captured_energy = bases->captured_energy;
      out.total_energy = bases->total_energy;
      out.u = cpu::ToTensor(bases->u.data(), {request.length, r}, args.output_dtype);
      out.vt = cpu::ToTensor(bases->vt.data(), {r, request.width}, args.output_dtype);
      const std::vector<float> s(bases->s.begin(), bases->s.end());
      out.s = cpu::ToTensor(s.data(), {r}, DType::kF32);
      return out;
    } catch (const std::bad_alloc&) {
      return OutOfMemory("the principal bases");
    } catch (const std::system_error& e) {
      return NoThreads("the principal bases", e);
    }
  }

  absl::StatusOr<AtpAttentionResult> AtpAttention(const LayerHandle& layer,
                                                  const AtpAttentionArgs& args,
                                                  const ExecContext& ctx) override {
    absl::StatusOr<const CpuLayer*> l = AsAttentionLayer(layer);
    if (!l.ok()) return l.status();
    const AttentionConfig& config = (*l)->spec().attention;
    if (auto s = ValidateAtpAttention(config, args); !s.ok()) return s;
    try {
      return cpu::AtpAttentionCpu(config, (*l)->attention(), args, ctx, env_);
    } catch (const std::bad_alloc&) {
      return OutOfMemory("ATP attention");
    } catch (const std::system_error& e) {
      return NoThreads("ATP attention", e);
    }
  }

  absl::StatusOr<Tensor> ExactAttention(const LayerHandle& layer, const ExactAttentionArgs& args,
                                        const ExecContext& ctx) override {
    absl::StatusOr<const CpuLayer*> l = AsAttentionLayer(layer);
    if (!l.ok()) return l.status();
    const AttentionConfig& config = (*l)->spec().attention;
    if (auto s = ValidateExactAttention(config, args); !s.ok()) return s;
    try {
      return cpu::ExactAttentionCpu(config, (*l)->attention(), args, ctx, env_);
    } catch (const std::bad_alloc&) {
      return OutOfMemory("exact attention");
    } catch (const std::system_error& e) {
      return NoThreads("exact attention", e);
    }
  }

  absl::StatusOr<LowRankLinearResult> LowRankLinear(const LayerHandle& layer,
                                                    const LowRankLinearArgs& args,
                                                    const ExecContext& ctx) override {
    absl::StatusOr<const CpuLayer*> l = AsCpuLayer(layer);
    if (!l.ok()) return l.status();
    const LayerSpec& spec = (*l)->spec();
    if (auto s = ValidateLowRankLinear(spec, args); !s.ok()) return s;
    // ValidateLowRankLinear found the weight, so FindLinearWeight succeeds.
    const std::string weight = FindLinearWeight(spec, args.weight)->weight;
    const RankPolicy& default_rank = spec.kind == LayerSpec::Kind::kAttention
                                         ? spec.attention.default_rank
                                         : spec.linear_default_rank;
    try {
      return cpu::LowRankLinearCpu(*(*l)->linear(weight), default_rank, args, ctx, env_);
    } catch (const std::bad_alloc&) {
      return OutOfMemory("low-rank linear");
    } catch (const std::system_error& e) {
      return NoThreads("low-rank linear", e);
    }
  }

  MemoryInfo memory() const override {
    MemoryInfo info;
    std::ifstream in("/proc/meminfo");
    if (in) {
      std::stringstream text;
      text << in.rdbuf();
      info.total_bytes = MemInfoBytes(text.str(), "MemTotal");
      info.free_bytes = MemInfoBytes(text.str(), "MemAvailable");
    }
    if (info.total_bytes == 0) {
      const long page = sysconf(_SC_PAGESIZE);
      info.total_bytes = static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) * page;
      info.free_bytes = static_cast<uint64_t>(sysconf(_SC_AVPHYS_PAGES)) * page;
    }
    return info;
  }

  absl::Status health() const override { return absl::OkStatus(); }

 private:
  CpuEnv env_;
  std::string description_;
};

}  // namespace

std::unique_ptr<Backend> CreateCpuBackend(const CpuBackendOptions& options) {
  return std::make_unique<CpuBackend>(options);
}

}  // namespace atp::kernels
