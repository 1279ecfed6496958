#include "cuda/layer_ops.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cuda/cuda_status.h"
#include "cuda/device_kernels.h"

namespace atp::kernels::cuda {
namespace {

// The own attention path keeps its score block (f32, all heads of a query chunk) under this.
constexpr size_t kScoreBudgetBytes = size_t{512} << 20;

absl::Status Launched(cudaError_t err, const char* what) {
  return DeviceContext::Launched(err, what);
}

const char* const kAttentionMaps[] = {"q_proj", "k_proj", "v_proj", "o_proj"};

absl::StatusOr<const DeviceLinear*> Find(const DeviceLayer& layer, const char* name) {
  auto it = layer.linears.find(name);
  if (it == layer.linears.end()) {
    return absl::InvalidArgumentError(absl::StrCat("layer has no ", name, " weight"));
  }
  return &it->second;
}

char* Offset(void* p, int64_t elements, DevType t) {
  return static_cast<char*>(p) + elements * static_cast<int64_t>(DevTypeSize(t));
}
const char* Offset(const void* p, int64_t elements, DevType t) {
  return static_cast<const char*>(p) + elements * static_cast<int64_t>(DevTypeSize(t));
}

absl::Status FallbackCore(DeviceContext& ctx, const SdpaArgs& a) {
  const DevType io = a.type;
  const int64_t h = a.heads, hk = a.kv_heads, dh = a.head_dim;
  const int64_t rep = h / hk;
  const int64_t per_query = h * a.lk * static_cast<int64_t>(sizeof(float));
  const int64_t chunk = std::clamp<int64_t>(
      static_cast<int64_t>(kScoreBudgetBytes) / std::max<int64_t>(per_query, 1), 1, a.lq);
  ATP_ASSIGN_OR_RETURN(DeviceBuffer scores, ctx.Alloc(DevType::kF32, h * chunk * a.lk));
  DeviceBuffer probs_half;
  if (io != DevType::kF32) {
    ATP_ASSIGN_OR_RETURN(probs_half, ctx.Alloc(io, h * chunk * a.lk));
  }
  void* probs = io == DevType::kF32 ? scores.get() : probs_half.get();
  for (int64_t q0 = 0; q0 < a.lq; q0 += chunk) {
    const int64_t lc = std::min(chunk, a.lq - q0);
    for (int64_t g = 0; g < hk; ++g) {
      // S_h = Q_h Kᵀ_g for the rep heads of group g (K shared: stride 0).
      ATP_RETURN_IF_ERROR(
          Gemm(ctx, false, true, lc, a.lk, dh, 1.0,
               ConstMat{io, Offset(a.q, q0 * a.q_ld + g * rep * dh, io), a.q_ld},
               ConstMat{io, Offset(a.k, g * dh, io), a.k_ld}, 0.0,
               Mat{DevType::kF32, Offset(scores.get(), g * rep * lc * a.lk, DevType::kF32), a.lk},
               rep, dh, 0, lc * a.lk));
    }
    ATP_RETURN_IF_ERROR(Launched(LaunchSoftmaxRows(scores.as<float>(), h * lc, a.lk, lc, q0,
                                                   a.scale, a.causal, io, probs, ctx.stream()),
                                 "softmax"));
    for (int64_t g = 0; g < hk; ++g) {
      ATP_RETURN_IF_ERROR(Gemm(ctx, false, false, lc, dh, a.lk, 1.0,
                               ConstMat{io, Offset(probs, g * rep * lc * a.lk, io), a.lk},
                               ConstMat{io, Offset(a.v, g * dh, io), a.v_ld}, 0.0,
                               Mat{io, Offset(a.o, q0 * a.o_ld + g * rep * dh, io), a.o_ld}, rep,
                               lc * a.lk, 0, dh));
    }
  }
  return absl::OkStatus();
}

// A weight in the io type: the resident buffer itself, or a converted scratch copy.
absl::StatusOr<ConstMat> WeightAs(DeviceContext& ctx, const DeviceLinear& lin, DevType io,
                                  DeviceBuffer* scratch) {
  if (lin.type == io) return ConstMat{io, lin.weight.get(), lin.cols};
  ATP_ASSIGN_OR_RETURN(*scratch, ctx.Alloc(io, lin.rows * lin.cols));
  ATP_RETURN_IF_ERROR(Launched(LaunchConvert(lin.type, lin.weight.get(), io, scratch->get(),
                                             lin.rows * lin.cols, ctx.stream()),
                               "convert weight"));
  return ConstMat{io, scratch->get(), lin.cols};
}

}  // namespace

DevType DevTypeOf(DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return DevType::kF16;
    case DType::kBF16:
      return DevType::kBF16;
    case DType::kF32:
    default:
      return DevType::kF32;
  }
}

uint64_t LayerDeviceBytes(const LayerSpec& spec) {
  uint64_t bytes = 0;
  for (const auto& [name, t] : spec.weights) {
    const bool is_bias =
        name == "bias" || (name.size() > 5 && name.substr(name.size() - 5) == ".bias");
    const uint64_t raw = is_bias ? t.num_elements() * sizeof(float) : t.byte_size();
    bytes += (raw + 255) & ~uint64_t{255};
  }
  return bytes;
}

absl::StatusOr<DeviceLayer> UploadLayer(DeviceContext& ctx, const LayerSpec& spec) {
  DeviceLayer layer;
  layer.kind = spec.kind;
  layer.attention = spec.attention;
  std::vector<std::string> prefixes;
  if (spec.kind == LayerSpec::Kind::kAttention) {
    prefixes.assign(std::begin(kAttentionMaps), std::end(kAttentionMaps));
  } else {
    prefixes.push_back("");
  }
  for (const std::string& prefix : prefixes) {
    ATP_ASSIGN_OR_RETURN(LinearWeightNames names, FindLinearWeight(spec, prefix));
    const Tensor& w = spec.weights.find(names.weight)->second;
    DeviceLinear lin;
    lin.type = DevTypeOf(w.dtype());
    lin.rows = w.dim(0);
    lin.cols = w.dim(1);
    ATP_ASSIGN_OR_RETURN(lin.weight, DeviceBuffer::Malloc(w.byte_size()));
    ATP_CUDA(cudaMemcpy(lin.weight.get(), w.data(), w.byte_size(), cudaMemcpyHostToDevice));
    layer.bytes += w.byte_size();
    auto bias_it = spec.weights.find(names.bias);
    if (bias_it != spec.weights.end()) {
      const Tensor bias = Tensor::CopyOf(bias_it->second.view(), DType::kF32);
      ATP_ASSIGN_OR_RETURN(lin.bias, DeviceBuffer::Malloc(bias.byte_size()));
      ATP_CUDA(cudaMemcpy(lin.bias.get(), bias.data(), bias.byte_size(), cudaMemcpyHostToDevice));
      layer.bytes += bias.byte_size();
    }
    layer.linears.emplace(prefix, std::move(lin));
  }
  return layer;
}

absl::Status ApplyLinear(DeviceContext& ctx, const DeviceLinear& lin, ConstMat x, int64_t rows,
                         const float* row_coef, Mat y, bool with_bias) {
  DeviceBuffer converted;
  ATP_ASSIGN_OR_RETURN(ConstMat w, WeightAs(ctx, lin, x.type, &converted));
  ATP_RETURN_IF_ERROR(Gemm(ctx, false, true, rows, lin.rows, lin.cols, 1.0, x, w, 0.0, y));
  if (with_bias && !lin.bias.empty()) {
    ATP_RETURN_IF_ERROR(Launched(LaunchAddRowOuter(y.type, y.data, y.ld, rows, lin.rows, row_coef,
                                                   lin.bias.as<float>(), ctx.stream()),
                                 "bias"));
  }
  return absl::OkStatus();
}

absl::Status AttentionCore(DeviceContext& ctx, const SdpaArgs& args, CoreImpl impl,
                           CoreImpl* used) {
  if (impl != CoreImpl::kFallback && args.type != DevType::kF32) {
    SdpaEngine* engine = ctx.sdpa();
    absl::Status st = engine != nullptr ? engine->Run(ctx, args) : ctx.sdpa_status();
    if (st.ok()) {
      if (used) *used = CoreImpl::kCudnn;
      return st;
    }
    if (impl == CoreImpl::kCudnn || !(absl::IsUnimplemented(st) || engine == nullptr)) return st;
  } else if (impl == CoreImpl::kCudnn) {
    return absl::UnimplementedError("cuDNN SDPA takes f16/bf16 only");
  }
  if (used) *used = CoreImpl::kFallback;
  return FallbackCore(ctx, args);
}

namespace {

// The attention core's arguments for a layer: q and o packed [lq, H·d_h], k and v packed
// [lk, H_kv·d_h].
SdpaArgs CoreArgs(const AttentionConfig& c, DevType io, const void* q, const void* k, const void* v,
                  void* o, int64_t lq, int64_t lk, bool causal) {
  SdpaArgs a;
  a.type = io;
  a.q = q;
  a.k = k;
  a.v = v;
  a.o = o;
  a.lq = lq;
  a.lk = lk;
  a.heads = c.num_heads;
  a.kv_heads = c.kv_heads();
  a.head_dim = c.head_dim;
  a.q_ld = a.o_ld = c.num_heads * c.head_dim;
  a.k_ld = a.v_ld = c.kv_heads() * c.head_dim;
  a.scale = c.resolved_scale();
  a.causal = causal;
  return a;
}

}  // namespace

absl::Status ExactAttentionLayer(DeviceContext& ctx, const DeviceLayer& layer, ConstMat x,
                                 int64_t length, bool causal, Mat y, CoreImpl impl,
                                 const StageMark& mark) {
  const AttentionConfig& c = layer.attention;
  const DevType io = x.type;
  const int64_t hq = c.num_heads * c.head_dim;
  const int64_t hkv = c.kv_heads() * c.head_dim;
  ATP_ASSIGN_OR_RETURN(const DeviceLinear* wq, Find(layer, "q_proj"));
  ATP_ASSIGN_OR_RETURN(const DeviceLinear* wk, Find(layer, "k_proj"));
  ATP_ASSIGN_OR_RETURN(const DeviceLinear* wv, Find(layer, "v_proj"));
  ATP_ASSIGN_OR_RETURN(const DeviceLinear* wo, Find(layer, "o_proj"));
  ATP_ASSIGN_OR_RETURN(DeviceBuffer q, ctx.Alloc(io, length * hq));
  ATP_ASSIGN_OR_RETURN(DeviceBuffer k, ctx.Alloc(io, length * hkv));
  ATP_ASSIGN_OR_RETURN(DeviceBuffer v, ctx.Alloc(io, length * hkv));
  ATP_RETURN_IF_ERROR(ApplyLinear(ctx, *wq, x, length, nullptr, Mat{io, q.get(), hq}));
  ATP_RETURN_IF_ERROR(ApplyLinear(ctx, *wk, x, length, nullptr, Mat{io, k.get(), hkv}));
  ATP_RETURN_IF_ERROR(ApplyLinear(ctx, *wv, x, length, nullptr, Mat{io, v.get(), hkv}));
  if (mark) mark("projections");
  ATP_ASSIGN_OR_RETURN(DeviceBuffer o, ctx.Alloc(io, length * hq));
  const SdpaArgs a = CoreArgs(c, io, q.get(), k.get(), v.get(), o.get(), length, length, causal);
  ATP_RETURN_IF_ERROR(AttentionCore(ctx, a, impl));
  if (mark) mark("core");
  ATP_RETURN_IF_ERROR(ApplyLinear(ctx, *wo, ConstMat{io, o.get(), hq}, length, nullptr, y));
  if (mark) mark("output");
  return absl::OkStatus();
}

absl::StatusOr<AtpLayerInfo> AtpAttentionLayer(DeviceContext& ctx, const DeviceLayer& layer,
                                               ConstMat x, int64_t length,
                                               const BasisOptions& basis_options, Mat y,
                                               CoreImpl impl, const StageMark& mark) {
  const AttentionConfig& c = layer.attention;
  const DevType io = x.type;
  const int64_t d = c.d_model;
  const int64_t hq = c.num_heads * c.head_dim;
  const int64_t hkv = c.kv_heads() * c.head_dim;
  ATP_ASSIGN_OR_RETURN(const DeviceLinear* wq, Find(layer, "q_proj"));
  ATP_ASSIGN_OR_RETURN(const DeviceLinear* wk, Find(layer, "k_proj"));
  ATP_ASSIGN_OR_RETURN(const DeviceLinear* wv, Find(layer, "v_proj"));
  ATP_ASSIGN_OR_RETURN(const DeviceLinear* wo, Find(layer, "o_proj"));

  // Q = X·W_Qᵀ runs on the side stream beside the latency-bound part of the basis (its k x k
  // eigensolve, see BasisOptions::beside); the core waits for it. Q is allocated on the main
  // stream, which frees it.
  ATP_ASSIGN_OR_RETURN(DeviceBuffer q, ctx.Alloc(io, length * hq));
  bool forked = false;
  struct Join {
    DeviceContext& ctx;
    bool& forked;
    ~Join() {
      if (forked) (void)ctx.JoinSide();
    }
  } join{ctx, forked};

  // Principal bases: only the eigen side is needed (Σ Vᵀ when L >= d; Uᵀ X otherwise).
  BasisOptions bo = basis_options;
  bo.need_u = false;
  bo.need_v = false;
  if (!bo.mark && mark) bo.mark = mark;
  auto project_q = [&] { return ApplyLinear(ctx, *wq, x, length, nullptr, Mat{io, q.get(), hq}); };
  bo.beside = [&]() -> absl::Status {
    forked = true;
    SideStreamScope side(ctx);
    return project_q();
  };
  ATP_ASSIGN_OR_RETURN(DeviceBasis basis, ComputePrincipalBases(ctx, x, length, d, bo));
  if (!forked) ATP_RETURN_IF_ERROR(project_q());  // the basis did not call beside (kNever)
  const int64_t r = basis.rank;
  const double key_scale =
      c.key_scale == KeyScale::kInvSqrtLen ? 1.0 / std::sqrt(static_cast<double>(length)) : 1.0;

  // Principal tokens X̃ = c·Uᵀ X [r, d] in the io type and the bias weights c·Uᵀ1.
  ATP_ASSIGN_OR_RETURN(DeviceBuffer tokens, ctx.Alloc(io, r * d));
  if (!basis.vt.empty()) {
    ATP_ASSIGN_OR_RETURN(DeviceBuffer scaled, ctx.Alloc(basis.type, r * d));
    ATP_RETURN_IF_ERROR(Launched(LaunchCopy2D(basis.type, basis.vt.get(), d, basis.type,
                                              scaled.get(), d, r, d, 1.0, ctx.stream()),
                                 "copy vt"));
    ATP_RETURN_IF_ERROR(
        Launched(LaunchScaleRows(basis.type, scaled.get(), d, r, d, basis.sigma_dev.as<double>(),
                                 key_scale, ctx.stream()),
                 "scale tokens"));
    ATP_RETURN_IF_ERROR(
        Launched(LaunchConvert(basis.type, scaled.get(), io, tokens.get(), r * d, ctx.stream()),
                 "tokens to io"));
  } else {
    // L < d: X̃ = c·Uᵀ X, with Uᵀ in two parts of the io type for accuracy (or f32 when io is).
    ATP_ASSIGN_OR_RETURN(DeviceBuffer acc, ctx.Alloc(DevType::kF32, r * d));
    if (io == DevType::kF32) {
      ATP_ASSIGN_OR_RETURN(DeviceBuffer ut32, ctx.Alloc(DevType::kF32, r * length));
      ATP_RETURN_IF_ERROR(Launched(LaunchConvert(basis.type, basis.ut.get(), DevType::kF32,
                                                 ut32.get(), r * length, ctx.stream()),
                                   "ut to f32"));
      ATP_RETURN_IF_ERROR(Gemm(ctx, false, false, r, d, length, key_scale,
                               ConstMat{DevType::kF32, ut32.get(), length}, x, 0.0,
                               Mat{DevType::kF32, acc.get(), d}));
    } else {
      ATP_ASSIGN_OR_RETURN(DeviceBuffer hi, ctx.Alloc(io, r * length));
      ATP_ASSIGN_OR_RETURN(DeviceBuffer lo, ctx.Alloc(io, r * length));
      ATP_RETURN_IF_ERROR(Launched(LaunchSplit(basis.type, basis.ut.get(), io, hi.get(), lo.get(),
                                               nullptr, 2, r * length, ctx.stream()),
                                   "split ut"));
      ATP_RETURN_IF_ERROR(Gemm(ctx, false, false, r, d, length, key_scale,
                               ConstMat{io, lo.get(), length}, x, 0.0,
                               Mat{DevType::kF32, acc.get(), d}));
      ATP_RETURN_IF_ERROR(Gemm(ctx, false, false, r, d, length, key_scale,
                               ConstMat{io, hi.get(), length}, x, 1.0,
                               Mat{DevType::kF32, acc.get(), d}));
    }
    ATP_RETURN_IF_ERROR(
        Launched(LaunchConvert(DevType::kF32, acc.get(), io, tokens.get(), r * d, ctx.stream()),
                 "tokens to io"));
  }
  // (A copy from pageable host memory has left the host buffer when cudaMemcpyAsync returns.)
  std::vector<float> coef(static_cast<size_t>(r));
  for (int64_t i = 0; i < r; ++i) coef[i] = static_cast<float>(key_scale * basis.u_sums[i]);
  ATP_ASSIGN_OR_RETURN(DeviceBuffer coef_dev, ctx.Alloc(DevType::kF32, r));
  ATP_RETURN_IF_ERROR(ctx.CopyToDevice(coef_dev.get(), coef.data(), r * sizeof(float)));
  if (mark) mark("principal_tokens");

  ATP_ASSIGN_OR_RETURN(DeviceBuffer k, ctx.Alloc(io, r * hkv));
  ATP_ASSIGN_OR_RETURN(DeviceBuffer v, ctx.Alloc(io, r * hkv));
  const ConstMat xt{io, tokens.get(), d};
  ATP_RETURN_IF_ERROR(ApplyLinear(ctx, *wk, xt, r, coef_dev.as<float>(), Mat{io, k.get(), hkv}));
  ATP_RETURN_IF_ERROR(ApplyLinear(ctx, *wv, xt, r, coef_dev.as<float>(), Mat{io, v.get(), hkv}));
  if (mark) mark("projections");

  if (forked) {
    forked = false;
    ATP_RETURN_IF_ERROR(ctx.JoinSide());
  }
  ATP_ASSIGN_OR_RETURN(DeviceBuffer o, ctx.Alloc(io, length * hq));
  const SdpaArgs a = CoreArgs(c, io, q.get(), k.get(), v.get(), o.get(), length, r, false);
  AtpLayerInfo info;
  ATP_RETURN_IF_ERROR(AttentionCore(ctx, a, impl, &info.core));
  if (mark) mark("core");
  ATP_RETURN_IF_ERROR(ApplyLinear(ctx, *wo, ConstMat{io, o.get(), hq}, length, nullptr, y));
  if (mark) mark("output");
  info.rank = r;
  info.captured_energy = basis.captured_energy;
  return info;
}

}  // namespace atp::kernels::cuda
