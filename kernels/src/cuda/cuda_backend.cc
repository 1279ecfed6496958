// The CUDA backend: every op of DESIGN.md §1 on one CUDA device, behind the Backend seam.
//
// Calls are serialised by one mutex and run on one stream of a DeviceContext (the seam allows
// this: see backend.h). Inputs arrive as host tensors and are copied to the device; layer weights
// stay resident in their registered dtype (biases in f32). Errors of CUDA and its libraries become
// absl::Status in cuda_status.cc; a sticky device error makes health() FAILED_PRECONDITION and
// every later call fail fast with it.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "atp/kernels/backend.h"
#include "cuda/basis.h"
#include "cuda/cuda_status.h"
#include "cuda/device_context.h"
#include "cuda/device_kernels.h"
#include "cuda/layer_ops.h"

namespace atp::kernels {
namespace {

using cuda::ConstMat;
using cuda::DevType;
using cuda::DeviceBuffer;
using cuda::DeviceContext;
using cuda::Mat;

// Scratch memory the pool keeps between calls; the rest goes back to the device after each call
// so that memory() (and the worker's admission) sees it.
constexpr size_t kPoolKeepBytes = size_t{2} << 30;

absl::Status Launched(cudaError_t err, const char* what) {
  return DeviceContext::Launched(err, what);
}

class CudaLayer : public LayerHandle {
 public:
  CudaLayer(LayerSpec spec, cuda::DeviceLayer layer, int device)
      : spec_(std::move(spec)), layer_(std::move(layer)), device_(device) {}
  ~CudaLayer() override {
    // The weights are plain cudaMalloc buffers of this device.
    (void)cudaSetDevice(device_);
    layer_.linears.clear();
  }
  const LayerSpec& spec() const override { return spec_; }
  uint64_t resident_bytes() const override { return layer_.bytes; }
  const cuda::DeviceLayer& device_layer() const { return layer_; }
  int device() const { return device_; }

 private:
  LayerSpec spec_;
  cuda::DeviceLayer layer_;
  int device_;
};

// A host tensor on the device, in its own dtype.
absl::StatusOr<DeviceBuffer> Upload(DeviceContext& ctx, const TensorView& view) {
  ATP_ASSIGN_OR_RETURN(DeviceBuffer buffer, ctx.Alloc(view.byte_size()));
  ATP_RETURN_IF_ERROR(ctx.CopyToDevice(buffer.get(), view.data, view.byte_size()));
  return buffer;
}

// The dtype a GEMM with `io` operands writes before the final conversion to `out`.
DevType GemmOutputType(DevType io, DType out) {
  const DevType want = cuda::DevTypeOf(out);
  return (want == io || want == DevType::kF32) ? want : DevType::kF32;
}

// Copies a device matrix of type `have` to a new host tensor of dtype `out`, converting on the
// device; INVALID_ARGUMENT when a value is not finite (an overflow: inputs are finite).
absl::StatusOr<Tensor> Download(DeviceContext& ctx, const void* data, DevType have, Shape shape,
                                DType out, const char* what) {
  Tensor t(out, std::move(shape));
  const int64_t n = t.num_elements();
  const DevType want = cuda::DevTypeOf(out);
  DeviceBuffer converted;
  const void* src = data;
  if (have != want) {
    ATP_ASSIGN_OR_RETURN(converted, ctx.Alloc(want, n));
    ATP_RETURN_IF_ERROR(
        Launched(cuda::LaunchConvert(have, data, want, converted.get(), n, ctx.stream()),
                 "convert output"));
    src = converted.get();
  }
  ATP_ASSIGN_OR_RETURN(DeviceBuffer flag, ctx.Alloc(sizeof(int)));
  ATP_CUDA(cudaMemsetAsync(flag.get(), 0, sizeof(int), ctx.stream()));
  ATP_RETURN_IF_ERROR(
      Launched(cuda::LaunchFlagNonFinite(want, src, n, flag.as<int>(), ctx.stream()), "check"));
  int non_finite = 0;
  ATP_CUDA(cudaMemcpyAsync(t.data(), src, t.byte_size(), cudaMemcpyDeviceToHost, ctx.stream()));
  ATP_RETURN_IF_ERROR(ctx.CopyToHost(&non_finite, flag.get(), sizeof(int)));
  if (non_finite != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " overflowed ", DTypeName(out),
                     " (a non-finite value): the input or the weights are too large"));
  }
  return t;
}

class CudaBackend : public Backend {
 public:
  explicit CudaBackend(std::unique_ptr<DeviceContext> ctx)
      : device_(ctx->device()), description_(ctx->Description()), ctx_(std::move(ctx)) {}
  ~CudaBackend() override {
    absl::MutexLock lock(&mu_);
    (void)ctx_->MakeCurrent();
    ctx_.reset();
  }

  std::string name() const override { return "cuda"; }
  std::string device_description() const override { return description_; }

  absl::StatusOr<std::unique_ptr<LayerHandle>> LoadLayer(LayerSpec spec) override {
    ATP_RETURN_IF_ERROR(ValidateLayerSpec(spec));
    absl::MutexLock lock(&mu_);
    ATP_RETURN_IF_ERROR(Begin());
    const uint64_t need = cuda::LayerDeviceBytes(spec);
    const uint64_t free_bytes = ctx_->memory().free_bytes;
    if (need > free_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("CUDA device ", device_, " has ", free_bytes, " bytes free, the layer needs ",
                       need));
    }
    absl::StatusOr<cuda::DeviceLayer> layer = cuda::UploadLayer(*ctx_, spec);
    if (!layer.ok()) return Finish(layer.status());
    return std::unique_ptr<LayerHandle>(
        std::make_unique<CudaLayer>(std::move(spec), *std::move(layer), device_));
  }

  absl::StatusOr<PrincipalBases> Decompose(const PrincipalBasesArgs& args,
                                           const ExecContext& ectx) override {
    ATP_RETURN_IF_ERROR(ValidatePrincipalBases(args));
    ATP_RETURN_IF_ERROR(ectx.Check());
    absl::MutexLock lock(&mu_);
    ATP_RETURN_IF_ERROR(Begin());
    return Finish(DecomposeLocked(args, ectx));
  }

  absl::StatusOr<AtpAttentionResult> AtpAttention(const LayerHandle& layer,
                                                  const AtpAttentionArgs& args,
                                                  const ExecContext& ectx) override {
    ATP_ASSIGN_OR_RETURN(const CudaLayer* l, AsCudaLayer(layer, /*attention=*/true));
    ATP_RETURN_IF_ERROR(ValidateAtpAttention(l->spec().attention, args));
    ATP_RETURN_IF_ERROR(ectx.Check());
    absl::MutexLock lock(&mu_);
    ATP_RETURN_IF_ERROR(Begin());
    return Finish(AtpLocked(*l, args, ectx));
  }

  absl::StatusOr<Tensor> ExactAttention(const LayerHandle& layer, const ExactAttentionArgs& args,
                                        const ExecContext& ectx) override {
    ATP_ASSIGN_OR_RETURN(const CudaLayer* l, AsCudaLayer(layer, /*attention=*/true));
    ATP_RETURN_IF_ERROR(ValidateExactAttention(l->spec().attention, args));
    ATP_RETURN_IF_ERROR(ectx.Check());
    absl::MutexLock lock(&mu_);
    ATP_RETURN_IF_ERROR(Begin());
    return Finish(ExactLocked(*l, args, ectx));
  }

  absl::StatusOr<LowRankLinearResult> LowRankLinear(const LayerHandle& layer,
                                                    const LowRankLinearArgs& args,
                                                    const ExecContext& ectx) override {
    ATP_ASSIGN_OR_RETURN(const CudaLayer* l, AsCudaLayer(layer, /*attention=*/false));
    ATP_RETURN_IF_ERROR(ValidateLowRankLinear(l->spec(), args));
    ATP_RETURN_IF_ERROR(ectx.Check());
    absl::MutexLock lock(&mu_);
    ATP_RETURN_IF_ERROR(Begin());
    return Finish(LowRankLocked(*l, args, ectx));
  }

  MemoryInfo memory() const override {
    absl::MutexLock lock(&mu_);
    const cuda::DeviceMemoryInfo info = ctx_->memory();
    return MemoryInfo{info.total_bytes, info.free_bytes};
  }

  absl::Status health() const override { return cuda::StickyErrorStatus(device_); }

 private:
  absl::StatusOr<const CudaLayer*> AsCudaLayer(const LayerHandle& layer, bool attention) const {
    const auto* l = dynamic_cast<const CudaLayer*>(&layer);
    if (l == nullptr || l->device() != device_) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer handle was not loaded by this cuda backend (device ", device_, ")"));
    }
    if (attention && l->spec().kind != LayerSpec::Kind::kAttention) {
      return absl::InvalidArgumentError("layer is a linear layer, want an attention layer");
    }
    return l;
  }

  // Fails fast after a sticky error; makes the device current on this thread.
  absl::Status Begin() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ATP_RETURN_IF_ERROR(cuda::StickyErrorStatus(device_));
    return ctx_->MakeCurrent();
  }

  // After a call: on failure, finds out whether the device is still usable (a sticky error is
  // recorded by the translation); returns scratch memory to the device.
  template <typename T>
  T Finish(T result) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!result.ok()) {
      (void)cuda::CudaStatus(cudaStreamSynchronize(ctx_->stream()), "stream after a failed call");
      (void)cudaGetLastError();
    }
    ctx_->TrimPool(kPoolKeepBytes);
    return result;
  }

  static cuda::BasisOptions BasisFor(const RankPolicy& policy, int64_t max_rank, uint64_t seed) {
    cuda::BasisOptions o;
    o.policy = policy;
    o.backend_max_rank = max_rank;
    o.seed = seed;
    return o;
  }

  absl::StatusOr<PrincipalBases> DecomposeLocked(const PrincipalBasesArgs& args,
                                                 const ExecContext& ectx)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const int64_t L = args.x.dim(0), d = args.x.dim(1);
    ATP_ASSIGN_OR_RETURN(DeviceBuffer x, Upload(*ctx_, args.x));
    cuda::BasisOptions o = BasisFor(args.rank, args.max_rank, args.seed);
    o.method = args.method;
    const DevType xt = cuda::DevTypeOf(args.x.dtype);
    ATP_ASSIGN_OR_RETURN(cuda::DeviceBasis b,
                         cuda::ComputePrincipalBases(*ctx_, ConstMat{xt, x.get(), d}, L, d, o));
    ATP_RETURN_IF_ERROR(ectx.Check());
    const int64_t r = b.rank;
    PrincipalBases out;
    out.rank = r;
    out.captured_energy = b.captured_energy;
    out.total_energy = b.total_energy;
    ATP_ASSIGN_OR_RETURN(DeviceBuffer u, ctx_->Alloc(b.type, L * r));
    ATP_RETURN_IF_ERROR(Launched(
        cuda::LaunchTransposeConvert(b.type, b.ut.get(), r, L, b.type, u.get(), ctx_->stream()),
        "transpose u"));
    ATP_ASSIGN_OR_RETURN(out.u, Download(*ctx_, u.get(), b.type, {L, r}, args.output_dtype, "u"));
    ATP_ASSIGN_OR_RETURN(out.vt,
                         Download(*ctx_, b.vt.get(), b.type, {r, d}, args.output_dtype, "vt"));
    out.s = Tensor(DType::kF32, {r});
    for (int64_t i = 0; i < r; ++i) out.s.data_as<float>()[i] = static_cast<float>(b.sigma[i]);
    return out;
  }

  absl::StatusOr<AtpAttentionResult> AtpLocked(const CudaLayer& layer,
                                               const AtpAttentionArgs& args,
                                               const ExecContext& ectx)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const AttentionConfig& c = layer.spec().attention;
    const int64_t L = args.x.dim(0), d = c.d_model;
    const DevType io = cuda::DevTypeOf(args.x.dtype);
    ATP_ASSIGN_OR_RETURN(DeviceBuffer x, Upload(*ctx_, args.x));
    const DevType yt = GemmOutputType(io, args.output_dtype);
    ATP_ASSIGN_OR_RETURN(DeviceBuffer y, ctx_->Alloc(yt, L * d));
    const cuda::BasisOptions o =
        BasisFor(args.rank.value_or(c.default_rank), args.max_rank, args.seed);
    ATP_ASSIGN_OR_RETURN(
        cuda::AtpLayerInfo info,
        cuda::AtpAttentionLayer(*ctx_, layer.device_layer(), ConstMat{io, x.get(), d}, L, o,
                                Mat{yt, y.get(), d}, cuda::CoreImpl::kAuto));
    ATP_RETURN_IF_ERROR(ectx.Check());
    AtpAttentionResult result;
    result.rank = info.rank;
    result.captured_energy = info.captured_energy;
    ATP_ASSIGN_OR_RETURN(result.y,
                         Download(*ctx_, y.get(), yt, {L, d}, args.output_dtype, "ATP attention"));
    return result;
  }

  absl::StatusOr<Tensor> ExactLocked(const CudaLayer& layer, const ExactAttentionArgs& args,
                                     const ExecContext& ectx) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const int64_t L = args.x.dim(0), d = layer.spec().attention.d_model;
    const DevType io = cuda::DevTypeOf(args.x.dtype);
    ATP_ASSIGN_OR_RETURN(DeviceBuffer x, Upload(*ctx_, args.x));
    const DevType yt = GemmOutputType(io, args.output_dtype);
    ATP_ASSIGN_OR_RETURN(DeviceBuffer y, ctx_->Alloc(yt, L * d));
    ATP_RETURN_IF_ERROR(cuda::ExactAttentionLayer(*ctx_, layer.device_layer(),
                                                  ConstMat{io, x.get(), d}, L, args.causal,
                                                  Mat{yt, y.get(), d}, cuda::CoreImpl::kAuto));
    ATP_RETURN_IF_ERROR(ectx.Check());
    return Download(*ctx_, y.get(), yt, {L, d}, args.output_dtype, "exact attention");
  }

  absl::StatusOr<LowRankLinearResult> LowRankLocked(const CudaLayer& layer,
                                                    const LowRankLinearArgs& args,
                                                    const ExecContext& ectx)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const LayerSpec& spec = layer.spec();
    const cuda::DeviceLinear& lin = layer.device_layer().linears.at(args.weight);
    const int64_t n = lin.rows, d = lin.cols;
    LowRankLinearResult result;
    int64_t L = 0, r = 0;
    DevType io;
    DeviceBuffer u, c;  // X ≈ U·C: u [L, r], c [r, d], both of type io
    if (args.factored_input) {
      L = args.u.dim(0);
      r = args.u.dim(1);
      io = args.u.dtype == args.c.dtype ? cuda::DevTypeOf(args.u.dtype) : DevType::kF32;
      for (auto [view, dst] : {std::pair{&args.u, &u}, std::pair{&args.c, &c}}) {
        ATP_ASSIGN_OR_RETURN(DeviceBuffer raw, Upload(*ctx_, *view));
        const DevType have = cuda::DevTypeOf(view->dtype);
        if (have == io) {
          *dst = std::move(raw);
        } else {
          ATP_ASSIGN_OR_RETURN(*dst, ctx_->Alloc(io, view->num_elements()));
          ATP_RETURN_IF_ERROR(Launched(cuda::LaunchConvert(have, raw.get(), io, dst->get(),
                                                           view->num_elements(), ctx_->stream()),
                                       "convert factors"));
        }
      }
    } else {
      L = args.x.dim(0);
      io = cuda::DevTypeOf(args.x.dtype);
      ATP_ASSIGN_OR_RETURN(DeviceBuffer x, Upload(*ctx_, args.x));
      const RankPolicy& default_rank = spec.kind == LayerSpec::Kind::kAttention
                                           ? spec.attention.default_rank
                                           : spec.linear_default_rank;
      const cuda::BasisOptions o =
          BasisFor(args.rank.value_or(default_rank), args.max_rank, args.seed);
      ATP_ASSIGN_OR_RETURN(cuda::DeviceBasis b,
                           cuda::ComputePrincipalBases(*ctx_, ConstMat{io, x.get(), d}, L, d, o));
      r = b.rank;
      result.captured_energy = b.captured_energy;
      ATP_ASSIGN_OR_RETURN(u, ctx_->Alloc(io, L * r));
      ATP_RETURN_IF_ERROR(Launched(
          cuda::LaunchTransposeConvert(b.type, b.ut.get(), r, L, io, u.get(), ctx_->stream()),
          "transpose u"));
      // C = Σ·Vᵀ, scaled in the basis' precision before rounding to io.
      ATP_ASSIGN_OR_RETURN(DeviceBuffer sv, ctx_->Alloc(b.type, r * d));
      ATP_RETURN_IF_ERROR(Launched(cuda::LaunchCopy2D(b.type, b.vt.get(), d, b.type, sv.get(), d,
                                                      r, d, 1.0, ctx_->stream()),
                                   "copy vt"));
      ATP_RETURN_IF_ERROR(Launched(cuda::LaunchScaleRows(b.type, sv.get(), d, r, d,
                                                         b.sigma_dev.as<double>(), 1.0,
                                                         ctx_->stream()),
                                   "sigma vt"));
      ATP_ASSIGN_OR_RETURN(c, ctx_->Alloc(io, r * d));
      ATP_RETURN_IF_ERROR(
          Launched(cuda::LaunchConvert(b.type, sv.get(), io, c.get(), r * d, ctx_->stream()),
                   "c to io"));
    }
    result.rank = r;
    ATP_RETURN_IF_ERROR(ectx.Check());

    // C·Wᵀ [r, n] in f32.
    ATP_ASSIGN_OR_RETURN(DeviceBuffer cw, ctx_->Alloc(DevType::kF32, r * n));
    ATP_RETURN_IF_ERROR(cuda::ApplyLinear(*ctx_, lin, ConstMat{io, c.get(), d}, r, nullptr,
                                          Mat{DevType::kF32, cw.get(), n},
                                          /*with_bias=*/false));
    const DType out = args.output_dtype;
    const bool has_bias = !lin.bias.empty();
    if (args.factored_output) {
      const int64_t r2 = has_bias ? r + 1 : r;
      const DevType f32 = DevType::kF32;
      ATP_ASSIGN_OR_RETURN(DeviceBuffer u2, ctx_->Alloc(f32, L * r2));
      ATP_RETURN_IF_ERROR(Launched(
          cuda::LaunchCopy2D(io, u.get(), r, f32, u2.get(), r2, L, r, 1.0, ctx_->stream()),
          "copy u"));
      ATP_ASSIGN_OR_RETURN(DeviceBuffer c2, ctx_->Alloc(f32, r2 * n));
      ATP_RETURN_IF_ERROR(Launched(
          cuda::LaunchCopy2D(f32, cw.get(), n, f32, c2.get(), n, r, n, 1.0, ctx_->stream()),
          "copy cw"));
      if (has_bias) {
        ATP_RETURN_IF_ERROR(Launched(cuda::LaunchFill2D(f32, u2.as<float>() + r, r2, L, 1, 1.0,
                                                        ctx_->stream()),
                                     "ones column"));
        ATP_RETURN_IF_ERROR(Launched(cuda::LaunchCopy2D(f32, lin.bias.get(), n, f32,
                                                        c2.as<float>() + r * n, n, 1, n, 1.0,
                                                        ctx_->stream()),
                                     "bias row"));
      }
      result.factored = true;
      ATP_ASSIGN_OR_RETURN(result.u, Download(*ctx_, u2.get(), f32, {L, r2}, out, "u"));
      ATP_ASSIGN_OR_RETURN(result.c, Download(*ctx_, c2.get(), f32, {r2, n}, out, "c"));
      return result;
    }
    // Y = U·(C·Wᵀ) + 1·bᵀ.
    ATP_ASSIGN_OR_RETURN(DeviceBuffer cw_io, ctx_->Alloc(io, r * n));
    ATP_RETURN_IF_ERROR(Launched(
        cuda::LaunchConvert(DevType::kF32, cw.get(), io, cw_io.get(), r * n, ctx_->stream()),
        "cw to io"));
    const DevType yt = GemmOutputType(io, out);
    ATP_ASSIGN_OR_RETURN(DeviceBuffer y, ctx_->Alloc(yt, L * n));
    ATP_RETURN_IF_ERROR(cuda::Gemm(*ctx_, false, false, L, n, r, 1.0, ConstMat{io, u.get(), r},
                                   ConstMat{io, cw_io.get(), n}, 0.0, Mat{yt, y.get(), n}));
    if (has_bias) {
      ATP_RETURN_IF_ERROR(Launched(cuda::LaunchAddRowOuter(yt, y.get(), n, L, n, nullptr,
                                                           lin.bias.as<float>(), ctx_->stream()),
                                   "bias"));
    }
    result.factored = false;
    ATP_ASSIGN_OR_RETURN(result.y, Download(*ctx_, y.get(), yt, {L, n}, out, "low-rank linear"));
    return result;
  }

  const int device_;
  const std::string description_;
  mutable absl::Mutex mu_;
  std::unique_ptr<DeviceContext> ctx_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

bool CudaBackendCompiled() { return true; }

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int device) {
  ATP_ASSIGN_OR_RETURN(std::unique_ptr<DeviceContext> ctx, DeviceContext::Create(device));
  return std::unique_ptr<Backend>(std::make_unique<CudaBackend>(std::move(ctx)));
}

}  // namespace atp::kernels
