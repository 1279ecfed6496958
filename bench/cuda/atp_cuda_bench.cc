// atp_cuda_bench: the CUDA backend's device layer on the H200, per stage, with CUDA events.
//
// bf16, d = 4096 (32 heads x 128), one sequence, non-causal. Prints one JSON object per line
// (to stdout and --json FILE): the cuBLAS bf16 GEMM peak, exact layers (projections, cuDNN core,
// output), ATP layers for each (L, r) per stage, principal-basis variants at --variant-length
// with their accuracy against an f64 reference, and small-factorisation latencies. Times are
// medians over --iters runs after --warmup runs. bench/cuda/run_all.sh runs it beside the
// PyTorch anchors (anchors.py) and bench/cuda/summarize.py makes the tables.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "atp/kernels/layer.h"
#include "cuda/basis.h"
#include "cuda/blas.h"
#include "cuda/cuda_status.h"
#include "cuda/device_context.h"
#include "cuda/device_kernels.h"
#include "cuda/layer_ops.h"
#include "cuda/sdpa_engine.h"

namespace atp::kernels::cuda {
namespace {

struct Flags {
  std::vector<int64_t> lengths = {4096, 16384, 32768, 65536};
  std::vector<int64_t> ranks = {256, 512, 1024};
  int64_t d_model = 4096;
  int64_t heads = 32;
  int64_t head_dim = 128;
  int warmup = 2;
  int iters = 5;
  int64_t variant_length = 16384;
  int64_t variant_rank = 512;
  bool peak = true, layers = true, variants = true, micro = true;
  std::vector<std::string> variant_names;  // empty: all basis variants
  std::string json;
};

std::ofstream* json_out = nullptr;

void Emit(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  if (json_out) *json_out << line << "\n" << std::flush;
}

std::string Num(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  return buf;
}

double Median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Errors end the current section (reported as a JSON line), not the run.
struct BenchError {
  std::string message;
};

void Check(const absl::Status& st, const char* what) {
  if (!st.ok()) throw BenchError{absl::StrCat(what, ": ", st.ToString())};
}

void Section(const char* name, const std::function<void()>& body) {
  try {
    body();
  } catch (const BenchError& e) {
    std::fprintf(stderr, "atp_cuda_bench: %s: %s\n", name, e.message.c_str());
    std::string msg = e.message;
    std::replace(msg.begin(), msg.end(), '"', '\'');
    Emit(absl::StrCat("{\"kind\":\"error\",\"section\":\"", name, "\",\"message\":\"", msg, "\"}"));
  }
}
void CheckCuda(cudaError_t e, const char* what) { Check(CudaStatus(e, what), what); }

// Records an event at each stage mark; durations between consecutive marks.
class StageTimer {
 public:
  explicit StageTimer(cudaStream_t stream) : stream_(stream) {}
  ~StageTimer() {
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
  }
  void Start() {
    names_.clear();
    used_ = 0;
    Record("start");
  }
  void Mark(const char* name) { Record(name); }
  // stage -> ms, plus "total".
  std::map<std::string, double> Stop() {
    CheckCuda(cudaEventSynchronize(events_[used_ - 1]), "event sync");
    std::map<std::string, double> out;
    for (int i = 1; i < used_; ++i) {
      float ms = 0;
      CheckCuda(cudaEventElapsedTime(&ms, events_[i - 1], events_[i]), "elapsed");
      out[names_[i]] += ms;
    }
    float total = 0;
    CheckCuda(cudaEventElapsedTime(&total, events_[0], events_[used_ - 1]), "elapsed");
    out["total"] = total;
    return out;
  }

 private:
  void Record(const char* name) {
    if (used_ == static_cast<int>(events_.size())) {
      cudaEvent_t e;
      CheckCuda(cudaEventCreate(&e), "event");
      events_.push_back(e);
    }
    CheckCuda(cudaEventRecord(events_[used_], stream_), "record");
    names_.push_back(name);
    ++used_;
  }
  cudaStream_t stream_;
  std::vector<cudaEvent_t> events_;
  std::vector<std::string> names_;
  int used_ = 0;
};

using Body = std::function<absl::Status(const StageMark& mark)>;

// Runs body warmup + iters times; per-stage medians.
std::map<std::string, double> Measure(DeviceContext& ctx, const Flags& f, const Body& body,
                                      int iters = -1) {
  StageTimer timer(ctx.stream());
  std::map<std::string, std::vector<double>> samples;
  const int n = iters > 0 ? iters : f.iters;
  for (int i = 0; i < f.warmup + n; ++i) {
    timer.Start();
    Check(body([&](const char* s) { timer.Mark(s); }), "measured body");
    timer.Mark("end");
    std::map<std::string, double> t = timer.Stop();
    if (i < f.warmup) continue;
    for (auto& [k, v] : t) samples[k].push_back(v);
  }
  std::map<std::string, double> out;
  for (auto& [k, v] : samples) out[k] = Median(v);
  return out;
}

std::string StagesJson(const std::map<std::string, double>& t) {
  std::vector<std::string> parts;
  for (auto& [k, v] : t) parts.push_back(absl::StrCat("\"", k, "\":", Num(v)));
  return absl::StrCat("{", absl::StrJoin(parts, ","), "}");
}

DeviceBuffer Alloc(DeviceContext& ctx, DevType t, int64_t n) {
  absl::StatusOr<DeviceBuffer> b = ctx.Alloc(t, n);
  Check(b.status(), "alloc");
  return *std::move(b);
}

DeviceBuffer Gaussian(DeviceContext& ctx, DevType t, int64_t n, uint64_t seed, double scale) {
  DeviceBuffer b = Alloc(ctx, t, n);
  CheckCuda(LaunchFillGaussian(t, b.get(), n, seed, 0, ctx.stream()), "gaussian");
  if (scale != 1.0) {
    CheckCuda(LaunchScaleRows(t, b.get(), n, 1, n, nullptr, scale, ctx.stream()), "scale");
  }
  return b;
}

// Activations with a decaying spectrum: a rank-128 component with singular values falling by
// 0.97 per index over N(0, 0.3²) noise; bf16.
DeviceBuffer Activations(DeviceContext& ctx, int64_t L, int64_t d, uint64_t seed) {
  const int64_t k = 128;
  DeviceBuffer g = Gaussian(ctx, DevType::kF32, L * k, seed, 1.0);
  DeviceBuffer h = Gaussian(ctx, DevType::kF32, k * d, seed + 1, 1.0 / std::sqrt(double(k)));
  std::vector<double> s(k);
  for (int64_t i = 0; i < k; ++i) s[i] = 3.0 * std::pow(0.97, double(i));
  DeviceBuffer sd = Alloc(ctx, DevType::kF64, k);
  Check(ctx.CopyToDevice(sd.get(), s.data(), k * sizeof(double)), "copy");
  CheckCuda(LaunchScaleRows(DevType::kF32, h.get(), d, k, d, sd.as<double>(), 1.0, ctx.stream()),
            "scale");
  DeviceBuffer x = Gaussian(ctx, DevType::kF32, L * d, seed + 2, 0.3);
  Check(Gemm(ctx, false, false, L, d, k, 1.0, ConstMat{DevType::kF32, g.get(), k},
             ConstMat{DevType::kF32, h.get(), d}, 1.0, Mat{DevType::kF32, x.get(), d}),
        "gemm");
  DeviceBuffer out = Alloc(ctx, DevType::kBF16, L * d);
  CheckCuda(LaunchConvert(DevType::kF32, x.get(), DevType::kBF16, out.get(), L * d, ctx.stream()),
            "convert");
  Check(ctx.Synchronize(), "sync");
  return out;
}

DeviceLayer MakeLayer(DeviceContext& ctx, const Flags& f) {
  DeviceLayer layer;
  layer.kind = LayerSpec::Kind::kAttention;
  layer.attention.d_model = f.d_model;
  layer.attention.num_heads = f.heads;
  layer.attention.num_kv_heads = f.heads;
  layer.attention.head_dim = f.head_dim;
  const int64_t hd = f.heads * f.head_dim;
  const std::pair<const char*, std::pair<int64_t, int64_t>> maps[] = {{"q_proj", {hd, f.d_model}},
                                                                      {"k_proj", {hd, f.d_model}},
                                                                      {"v_proj", {hd, f.d_model}},
                                                                      {"o_proj", {f.d_model, hd}}};
  uint64_t seed = 1000;
  for (auto& [name, shape] : maps) {
    DeviceLinear lin;
    lin.type = DevType::kBF16;
    lin.rows = shape.first;
    lin.cols = shape.second;
    absl::StatusOr<DeviceBuffer> w = DeviceBuffer::Malloc(lin.rows * lin.cols * 2);
    Check(w.status(), "weights");
    lin.weight = *std::move(w);
    CheckCuda(LaunchFillGaussian(DevType::kBF16, lin.weight.get(), lin.rows * lin.cols, seed++, 0,
                                 ctx.stream()),
              "weights");
    CheckCuda(LaunchScaleRows(DevType::kBF16, lin.weight.get(), lin.rows * lin.cols, 1,
                              lin.rows * lin.cols, nullptr, 1.0 / std::sqrt(double(lin.cols)),
                              ctx.stream()),
              "weights");
    layer.linears.emplace(name, std::move(lin));
  }
  Check(ctx.Synchronize(), "sync");
  return layer;
}

void Peak(DeviceContext& ctx, const Flags& f) {
  const int64_t n = 8192;
  DeviceBuffer a = Gaussian(ctx, DevType::kBF16, n * n, 1, 1.0);
  DeviceBuffer b = Gaussian(ctx, DevType::kBF16, n * n, 2, 1.0);
  DeviceBuffer c = Alloc(ctx, DevType::kBF16, n * n);
  auto t = Measure(
      ctx, f,
      [&](const StageMark& mark) {
        ATP_RETURN_IF_ERROR(
            Gemm(ctx, false, false, n, n, n, 1.0, ConstMat{DevType::kBF16, a.get(), n},
                 ConstMat{DevType::kBF16, b.get(), n}, 0.0, Mat{DevType::kBF16, c.get(), n}));
        mark("gemm");
        return absl::OkStatus();
      },
      10);
  const double tflops = 2.0 * n * n * n / (t["gemm"] * 1e-3) / 1e12;
  Emit(absl::StrCat("{\"kind\":\"peak\",\"what\":\"cublas_bf16_gemm_8192\",\"ms\":", Num(t["gemm"]),
                    ",\"tflops\":", Num(tflops), "}"));
  // Device copy bandwidth: 4 GiB read + written.
  const int64_t bytes = int64_t{2} << 30;
  DeviceBuffer src = Alloc(ctx, DevType::kF32, bytes / 4);
  DeviceBuffer dst = Alloc(ctx, DevType::kF32, bytes / 4);
  CheckCuda(cudaMemsetAsync(src.get(), 1, bytes, ctx.stream()), "memset");
  auto tc = Measure(ctx, f, [&](const StageMark& mark) {
    ATP_CUDA(cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice, ctx.stream()));
    mark("copy");
    return absl::OkStatus();
  });
  Emit(absl::StrCat("{\"kind\":\"peak\",\"what\":\"device_copy\",\"ms\":", Num(tc["copy"]),
                    ",\"tbps\":", Num(2.0 * bytes / (tc["copy"] * 1e-3) / 1e12), "}"));
}

void Layers(DeviceContext& ctx, const Flags& f, const DeviceLayer& layer) {
  const int64_t d = f.d_model;
  const int64_t hd = f.heads * f.head_dim;
  const bool cudnn = ctx.sdpa() != nullptr;
  for (int64_t L : f.lengths) {
    Section(absl::StrCat("layers L=", L).c_str(), [&] {
      DeviceBuffer x = Activations(ctx, L, d, 7 + L);
      DeviceBuffer y = Alloc(ctx, DevType::kBF16, L * d);
      const ConstMat xm{DevType::kBF16, x.get(), d};
      const Mat ym{DevType::kBF16, y.get(), d};
      const int iters = L >= 65536 ? 3 : -1;
      // Exact layer with the cuDNN core (the own core without cuDNN, only up to L = 16384).
      if (cudnn || L <= 16384) {
        auto t = Measure(
            ctx, f,
            [&](const StageMark& mark) {
              return ExactAttentionLayer(ctx, layer, xm, L, false, ym, CoreImpl::kAuto, mark);
            },
            iters);
        const double core_flops = 4.0 * L * L * hd;
        Emit(absl::StrCat("{\"kind\":\"exact_layer\",\"L\":", L, ",\"stages\":", StagesJson(t),
                          ",\"core_tflops\":", Num(core_flops / (t["core"] * 1e-3) / 1e12), "}"));
      }
      for (int64_t r : f.ranks) {
        BasisOptions options;
        options.policy = RankPolicy::Fixed(r);
        auto t = Measure(
            ctx, f,
            [&](const StageMark& mark) {
              absl::StatusOr<AtpLayerInfo> info =
                  AtpAttentionLayer(ctx, layer, xm, L, options, ym, CoreImpl::kAuto, mark);
              return info.status();
            },
            iters);
        double basis = 0;
        for (const char* s : {"gram", "subspace_products", "subspace_checks", "subspace_cholqr",
                              "subspace", "rayleigh_ritz", "eig", "ritz_vectors", "bases"}) {
          basis += t.count(s) ? t[s] : 0.0;
        }
        Emit(absl::StrCat("{\"kind\":\"atp_layer\",\"L\":", L, ",\"r\":", r,
                          ",\"stages\":", StagesJson(t), ",\"basis\":", Num(basis),
                          ",\"core_tflops\":", Num(4.0 * L * r * hd / (t["core"] * 1e-3) / 1e12),
                          "}"));
      }
    });
  }
}

// ‖X − X V Vᵀ‖_F² = ‖X‖² − ‖X Vᵀ_rows‖² with vt [r, d] orthonormal rows, in f64.
double ResidualSq(DeviceContext& ctx, const DeviceBuffer& x64, int64_t L, int64_t d,
                  const DeviceBasis& b, double total) {
  const int64_t r = b.rank;
  DeviceBuffer v64 = Alloc(ctx, DevType::kF64, r * d);
  CheckCuda(LaunchConvert(b.type, b.vt.get(), DevType::kF64, v64.get(), r * d, ctx.stream()),
            "v64");
  DeviceBuffer z = Alloc(ctx, DevType::kF64, L * r);
  Check(Gemm(ctx, false, true, L, r, d, 1.0, ConstMat{DevType::kF64, x64.get(), d},
             ConstMat{DevType::kF64, v64.get(), d}, 0.0, Mat{DevType::kF64, z.get(), r}),
        "xv");
  DeviceBuffer sq = Alloc(ctx, DevType::kF64, 1);
  CheckCuda(LaunchRowReduce(DevType::kF64, z.get(), L * r, 1, L * r, nullptr,
                            RowReduce::kSumSquares, sq.as<double>(), ctx.stream()),
            "norm");
  double captured = 0;
  Check(ctx.CopyToHost(&captured, sq.get(), sizeof(double)), "copy");
  return std::max(total - captured, 0.0);
}

void Variants(DeviceContext& ctx, const Flags& f) {
  const int64_t L = f.variant_length, d = f.d_model, r = f.variant_rank;
  DeviceBuffer x = Activations(ctx, L, d, 7 + L);
  const ConstMat xm{DevType::kBF16, x.get(), d};
  // The f64 reference: the exact basis of the same bf16 input.
  BasisOptions exact;
  exact.policy = RankPolicy::Fixed(r);
  exact.method = DecomposeMethod::kExact;
  exact.need_u = false;
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<DeviceBasis> ref = ComputePrincipalBases(ctx, xm, L, d, exact);
  Check(ref.status(), "exact basis");
  const double exact_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  DeviceBuffer x64 = Alloc(ctx, DevType::kF64, L * d);
  CheckCuda(LaunchConvert(DevType::kBF16, x.get(), DevType::kF64, x64.get(), L * d, ctx.stream()),
            "x64");
  double optimum_sq = ref->total_energy;
  for (double s : ref->sigma) optimum_sq -= s * s;
  Emit(absl::StrCat("{\"kind\":\"basis_reference\",\"L\":", L, ",\"r\":", r,
                    ",\"ms\":", Num(exact_ms), ",\"sigma1\":", Num(ref->sigma[0]), ",\"sigma_r\":",
                    Num(ref->sigma[r - 1]), ",\"captured\":", Num(ref->captured_energy), "}"));

  struct Variant {
    std::string name;
    std::function<void(BasisOptions&)> set;
  };
  const std::vector<Variant> variants = {
      {"default", [](BasisOptions&) {}},
      {"p3",  // 3 products (NOTES v12: within the 1% rule at r = 512, not at r = 1024)
       [](BasisOptions& o) { o.power_iterations = 3; }},
      {"p3_f065",  // and fraction 0.65 (rejected on the flatter noise of L >= 32768)
       [](BasisOptions& o) {
         o.power_iterations = 3;
         o.shift_fraction = 0.65;
       }},
      {"unshifted4", [](BasisOptions& o) { o.shift_fraction = 0; }},
      {"unshifted5",
       [](BasisOptions& o) {
         o.shift_fraction = 0;
         o.power_iterations = 5;
       }},
      {"shifted5", [](BasisOptions& o) { o.power_iterations = 5; }},
      {"rejected",  // an absurd shift, always rejected: the unshifted fallback's time and accuracy
       [](BasisOptions& o) { o.shift_fraction = 1e6; }},
      {"cusolver_potrf", [](BasisOptions& o) { o.own_cholesky = false; }},
      {"syevd", [](BasisOptions& o) { o.eig = EigSolver::kSyevd; }},
      {"final1", [](BasisOptions& o) { o.cholqr_passes_final = 1; }},
      {"fixed2",
       [](BasisOptions& o) {
         o.power_iterations = 2;
         o.adaptive_tolerance = 0;
       }},
      {"fixed3",
       [](BasisOptions& o) {
         o.power_iterations = 3;
         o.adaptive_tolerance = 0;
       }},
      {"fixed5",
       [](BasisOptions& o) {
         o.power_iterations = 5;
         o.adaptive_tolerance = 0;
       }},
      {"fixed3_cusolver_potrf",
       [](BasisOptions& o) {
         o.power_iterations = 3;
         o.adaptive_tolerance = 0;
         o.own_cholesky = false;
       }},
      {"max6", [](BasisOptions& o) { o.power_iterations = 6; }},
      {"iter_split1", [](BasisOptions& o) { o.iteration_split = 1; }},
      {"rough0", [](BasisOptions& o) { o.rough_products = 0; }},  // the default before v13
      {"rough2", [](BasisOptions& o) { o.rough_products = 2; }},
      {"rough3", [](BasisOptions& o) { o.rough_products = 3; }},
      {"rr_split2", [](BasisOptions& o) { o.rayleigh_ritz_split = 2; }},
      {"oversample32", [](BasisOptions& o) { o.oversampling = 32; }},
      {"oversample64", [](BasisOptions& o) { o.oversampling = 64; }},
      {"two_final_passes", [](BasisOptions& o) { o.final_newton_schulz = false; }},
      {"fast",
       [](BasisOptions& o) {
         o.power_iterations = 2;
         o.adaptive_tolerance = 0;
         o.iteration_split = 1;
         o.rayleigh_ritz_split = 2;
         o.oversampling = 16;
       }},
  };
  for (const Variant& v : variants) {
    if (!f.variant_names.empty() &&
        std::find(f.variant_names.begin(), f.variant_names.end(), v.name) ==
            f.variant_names.end()) {
      continue;
    }
    Section(absl::StrCat("variant ", v.name).c_str(), [&] {
      BasisOptions o;
      o.policy = RankPolicy::Fixed(r);
      o.method = DecomposeMethod::kRandomized;
      o.need_u = false;
      v.set(o);
      DeviceBasis last;
      auto t = Measure(ctx, f, [&](const StageMark& mark) {
        o.mark = mark;
        absl::StatusOr<DeviceBasis> b = ComputePrincipalBases(ctx, xm, L, d, o);
        if (b.ok()) last = *std::move(b);
        return b.status();
      });
      double sigma_err = 0;
      for (int64_t i = 0; i < r; ++i) {
        sigma_err = std::max(sigma_err, std::abs(last.sigma[i] / ref->sigma[i] - 1.0));
      }
      const double resid = ResidualSq(ctx, x64, L, d, last, ref->total_energy);
      Emit(absl::StrCat(
          "{\"kind\":\"basis_variant\",\"name\":\"", v.name, "\",\"L\":", L, ",\"r\":", r,
          ",\"stages\":", StagesJson(t), ",\"sigma_max_rel_err\":", Num(sigma_err),
          ",\"reconstruction_vs_optimum\":", Num(std::sqrt(resid / std::max(optimum_sq, 1e-300))),
          ",\"products\":", last.products, ",\"cholqr_passes\":", last.cholqr_passes,
          ",\"newton_schulz_steps\":", last.newton_schulz_steps, ",\"shift\":", Num(last.shift),
          ",\"shift_rejected\":", last.shift_rejected ? "true" : "false", "}"));
    });
  }

  // Where the ATP layer's Q projection overlaps the basis.
  const DeviceLayer layer = MakeLayer(ctx, f);
  DeviceBuffer y = Alloc(ctx, DevType::kBF16, L * d);
  for (auto [name, at] : {std::pair{"beside_eigensolve", BasisOptions::BesideAt::kEigensolve},
                          std::pair{"beside_first_product", BasisOptions::BesideAt::kFirstProduct},
                          std::pair{"after_the_basis", BasisOptions::BesideAt::kNever}}) {
    Section(absl::StrCat("layer variant ", name).c_str(), [&] {
      BasisOptions o;
      o.policy = RankPolicy::Fixed(r);
      o.beside_at = at;
      auto t = Measure(ctx, f, [&](const StageMark& mark) {
        return AtpAttentionLayer(ctx, layer, xm, L, o, Mat{DevType::kBF16, y.get(), d},
                                 CoreImpl::kAuto, mark)
            .status();
      });
      Emit(absl::StrCat("{\"kind\":\"layer_variant\",\"name\":\"", name, "\",\"L\":", L,
                        ",\"r\":", r, ",\"stages\":", StagesJson(t), "}"));
    });
  }
}

void Micro(DeviceContext& ctx, const Flags& f) {
  for (int64_t n : {int64_t{320}, int64_t{576}, int64_t{1088}}) {
    std::map<std::string, double> row;
    for (DevType t : {DevType::kF32, DevType::kF64}) {
      const std::string suffix = t == DevType::kF64 ? "_f64" : "_f32";
      // A random SPD matrix A = BᵀB / n + I.
      DeviceBuffer b = Gaussian(ctx, t, 2 * n * n, 5, 1.0);
      DeviceBuffer a0 = Alloc(ctx, t, n * n);
      Check(Gemm(ctx, true, false, n, n, 2 * n, 1.0 / n, ConstMat{t, b.get(), n},
                 ConstMat{t, b.get(), n}, 0.0, Mat{t, a0.get(), n}),
            "spd");
      DeviceBuffer a = Alloc(ctx, t, n * n);
      DeviceBuffer w = Alloc(ctx, t, n);
      DeviceBuffer y = Gaussian(ctx, t, 4096 * n, 6, 1.0);
      DeviceBuffer y2 = Alloc(ctx, t, 4096 * n);
      DeviceBuffer info = Alloc(ctx, DevType::kF32, 4);
      struct Op {
        std::string name;
        std::function<absl::Status()> run;
      };
      const std::vector<Op> ops = {
          {"potrf", [&] { return Potrf(ctx, t, n, a.get(), info.as<int>()); }},
          {"potrf_own",
           [&] {
             ATP_CUDA(cudaMemsetAsync(info.get(), 0, sizeof(int), ctx.stream()));
             return Potrf(ctx, t, n, a.get(), info.as<int>(), /*own=*/true);
           }},
          {"syevd",
           [&] {
             return SymmetricEigen(ctx, EigSolver::kSyevd, t, n, a.get(), w.get(), info.as<int>());
           }},
          {"resident",
           [&] {
             return SymmetricEigen(ctx, EigSolver::kResident, t, n, a.get(), w.get(),
                                   info.as<int>());
           }},
          {"syrk_4096",
           [&] {
             // The Gram step of a CholeskyQR pass on a 4096 x n block (d = 4096).
             return GramUpper(ctx, t, n, 4096, /*columns=*/true, y.get(), a.get());
           }},
          {"trsm_4096",
           [&] {
             // Its solve, y ← y·R⁻¹, with R = the Cholesky factor of a0 (the input a0 is SPD,
             // not triangular, but the solve's cost does not depend on the values).
             return SolveCholeskyFactor(ctx, t, n, a.get(), /*columns=*/true, 4096, y.get());
           }},
          {"trsm_own_4096",
           [&] {
             // The same solve by the own strip kernel (f64; cuBLAS for f32).
             return SolveCholeskyFactor(ctx, t, n, a.get(), /*columns=*/true, 4096, y.get(),
                                        /*own=*/true);
           }},
          {"trtri",
           [&] {
             // R⁻¹ in place (cuSOLVER), the other way to apply a Cholesky factor: one GEMM.
             const cudaDataType_t ct = t == DevType::kF64 ? CUDA_R_64F : CUDA_R_32F;
             size_t device_bytes = 0, host_bytes = 0;
             ATP_CUSOLVER(cusolverDnXtrtri_bufferSize(ctx.cusolver(), CUBLAS_FILL_MODE_UPPER,
                                                      CUBLAS_DIAG_NON_UNIT, n, ct, a.get(), n,
                                                      &device_bytes, &host_bytes));
             ATP_ASSIGN_OR_RETURN(DeviceBuffer work, ctx.Alloc(std::max<size_t>(device_bytes, 1)));
             std::vector<char> host_work(host_bytes);
             ATP_CUSOLVER(cusolverDnXtrtri(ctx.cusolver(), CUBLAS_FILL_MODE_UPPER,
                                           CUBLAS_DIAG_NON_UNIT, n, ct, a.get(), n, work.get(),
                                           device_bytes, host_bytes ? host_work.data() : nullptr,
                                           host_bytes, info.as<int>()));
             return absl::OkStatus();
           }},
          {"gemm_4096",
           [&] {
             // y·R⁻¹ as a GEMM with the explicit inverse (written to y2).
             return Gemm(ctx, false, false, 4096, n, n, 1.0, ConstMat{t, y.get(), n},
                         ConstMat{t, a.get(), n}, 0.0, Mat{t, y2.get(), n});
           }},
          {"syevd_values",
           [&] {
             return SymmetricEigen(ctx, EigSolver::kSyevd, t, n, a.get(), w.get(), info.as<int>(),
                                   false);
           }},

      };
      for (const Op& op : ops) {
        Section(absl::StrCat("micro ", op.name, suffix, " n=", n).c_str(), [&] {
          auto tm = Measure(ctx, f, [&](const StageMark& mark) {
            ATP_CUDA(cudaMemcpyAsync(a.get(), a0.get(), n * n * DevTypeSize(t),
                                     cudaMemcpyDeviceToDevice, ctx.stream()));
            mark("copy");
            ATP_RETURN_IF_ERROR(op.run());
            mark("op");
            return absl::OkStatus();
          });
          row[op.name + suffix] = tm["op"];
        });
      }
    }
    Emit(absl::StrCat("{\"kind\":\"small_factorisation\",\"n\":", n, ",\"ms\":", StagesJson(row),
                      "}"));
  }
}

std::vector<int64_t> ParseList(const std::string& s) {
  std::vector<int64_t> out;
  for (absl::string_view part : absl::StrSplit(s, ',')) {
    int64_t v;
    if (absl::SimpleAtoi(part, &v)) out.push_back(v);
  }
  return out;
}

int Main(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--lengths")
      f.lengths = ParseList(value());
    else if (a == "--ranks")
      f.ranks = ParseList(value());
    else if (a == "--iters")
      f.iters = std::atoi(value().c_str());
    else if (a == "--warmup")
      f.warmup = std::atoi(value().c_str());
    else if (a == "--variant-length")
      f.variant_length = std::atoll(value().c_str());
    else if (a == "--variant-rank")
      f.variant_rank = std::atoll(value().c_str());
    else if (a == "--variants")
      f.variant_names = absl::StrSplit(value(), ',', absl::SkipEmpty());
    else if (a == "--json")
      f.json = value();
    else if (a == "--only") {
      const std::string what = value();
      f.peak = what.find("peak") != std::string::npos;
      f.layers = what.find("layers") != std::string::npos;
      f.variants = what.find("variants") != std::string::npos;
      f.micro = what.find("micro") != std::string::npos;
    } else {
      std::fprintf(stderr,
                   "usage: atp_cuda_bench [--lengths 4096,16384] [--ranks 256,512] [--iters N] "
                   "[--warmup N] [--variant-length L] [--variant-rank r] [--variants a,b] "
                   "[--only peak,layers,variants,micro] [--json FILE]\n");
      return 2;
    }
  }
  std::ofstream json;
  if (!f.json.empty()) {
    json.open(f.json);
    json_out = &json;
  }
  absl::StatusOr<std::unique_ptr<DeviceContext>> ctx = DeviceContext::Create(0);
  Check(ctx.status(), "device");
  DeviceContext& c = **ctx;
  SdpaEngine* sdpa = c.sdpa();
  Emit(absl::StrCat("{\"kind\":\"device\",\"name\":\"", c.Description(), "\",\"cudnn\":\"",
                    sdpa ? sdpa->Version() : std::string(c.sdpa_status().message()), "\"}"));
  if (f.peak) Section("peak", [&] { Peak(c, f); });
  if (f.micro) Section("micro", [&] { Micro(c, f); });
  if (f.variants) Section("variants", [&] { Variants(c, f); });
  if (f.layers) {
    Section("layers", [&] {
      DeviceLayer layer = MakeLayer(c, f);
      Layers(c, f, layer);
    });
  }
  return 0;
}

}  // namespace
}  // namespace atp::kernels::cuda

int main(int argc, char** argv) { return atp::kernels::cuda::Main(argc, argv); }
