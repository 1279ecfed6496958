#include "cpu/attention_cpu.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "cpu/principal_bases_cpu.h"

namespace atp::kernels::cpu {
namespace {

// Inputs are finite, but large ones can overflow f32 on the way; NaN never leaves an op.
absl::Status CheckFiniteOutput(const float* y, int64_t n, absl::string_view op) {
  if (const int64_t i = FirstNonFinite(y, n); i >= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, " overflowed f32 (a non-finite value at flat index ", i,
                     "): the input or the weights are too large"));
  }
  return absl::OkStatus();
}

// The attention core shared by ATP and exact attention: for every head h and block of query rows,
// O_h = softmax(s·Q_h·K_gᵀ)·V_g with g = h / (H / H_kv), over `keys` rows of K and V (all of them,
// or the causal prefix). Tasks (head, block) go to the backend's threads, each with its own score
// buffer; ctx.Check() runs between groups of heads, on the calling thread.
struct Core {
  const float* q;  // [L, H·d_h]
  const float* k;  // [n_keys, H_kv·d_h]
  const float* v;  // [n_keys, H_kv·d_h]
  int64_t length;
  int64_t keys;
  bool causal;
  float* out;  // [L, H·d_h]
};

absl::Status AttentionCore(const AttentionConfig& config, const Core& core, int64_t block,
                           const ExecContext& ctx, const CpuEnv& env) {
  const int64_t heads = config.num_heads;
  const int64_t dh = config.head_dim;
  const int64_t group = heads / config.kv_heads();
  const int64_t q_dim = heads * dh;
  const int64_t kv_dim = config.kv_heads() * dh;
  const float scale = config.resolved_scale();
  const int64_t blocks = (core.length + block - 1) / block;
  // Below about 2^22 multiply-adds a thread costs more than it saves (as for the GEMMs): small
  // calls stay on the calling thread.
  constexpr int64_t kMinParallelWork = int64_t{1} << 22;
  const int64_t work = 2 * heads * core.length * core.keys * dh;
  const int workers = work < kMinParallelWork ? 1 : std::max(1, env.threads);
  std::vector<std::vector<float>> scores(static_cast<size_t>(workers));
  // Enough heads per group to keep every thread busy, few enough to check the context often.
  const int64_t heads_per_group = std::min<int64_t>(heads, workers);
  for (int64_t h0 = 0; h0 < heads; h0 += heads_per_group) {
    if (auto s = ctx.Check(); !s.ok()) return s;
    const int64_t group_heads = std::min(heads_per_group, heads - h0);
    ParallelForDynamic(group_heads * blocks, workers, [&](int worker, int64_t task) {
      const int64_t h = h0 + task / blocks;
      const int64_t g = h / group;
      const int64_t i0 = (task % blocks) * block;
      const int64_t rows = std::min(block, core.length - i0);
      // Causal: the block's queries see keys [0, i0 + rows) at most; softmax masks the rest.
      const int64_t n = core.causal ? std::min(core.keys, i0 + rows) : core.keys;
      std::vector<float>& s = scores[worker];
      s.resize(static_cast<size_t>(rows * n));
      Gemm(false, true, rows, n, dh, scale, core.q + i0 * q_dim + h * dh, q_dim, core.k + g * dh,
           kv_dim, 0.0f, s.data(), n);
      if (core.causal) {
        SoftmaxRows(s.data(), rows, n, n, [i0](int64_t i) { return i0 + i + 1; });
      } else {
        SoftmaxRows(s.data(), rows, n, n);
      }
      Gemm(false, false, rows, dh, n, 1.0f, s.data(), n, core.v + g * dh, kv_dim, 0.0f,
           core.out + i0 * q_dim + h * dh, q_dim);
    });
  }
  return ctx.Check();
}

// y = O·W_Oᵀ + b_O as the op's output tensor.
absl::StatusOr<Tensor> OutputProjection(const LinearF32& o, const float* heads_out, int64_t length,
                                        int64_t q_dim, DType dtype, absl::string_view op,
                                        const CpuEnv& env) {
  Buffer y = NewBuffer(env, length * o.out);
  Linear(env, heads_out, length, q_dim, o.w, o.out, o.b, y.get());
  if (auto s = CheckFiniteOutput(y.get(), length * o.out, op); !s.ok()) return s;
  return ToTensor(y.get(), {length, o.out}, dtype);
}

}  // namespace

int64_t ExactAttentionBlockRows(int64_t length) {
  // Up to 256 query rows, and about 2^21 scores (8 MiB) per block at most. Each block's score GEMM
  // repacks the keys of its head, so blocks must be tall to amortise that; measured at d_h = 64 on
  // 2 cores: 256 rows beat 128 by 10–20% and 32 by 40% at L = 8192.
  constexpr int64_t kBlockScores = int64_t{1} << 21;
  return std::clamp<int64_t>(kBlockScores / std::max<int64_t>(length, 1), 32, 256);
}

absl::StatusOr<AtpAttentionResult> AtpAttentionCpu(const AttentionConfig& config,
                                                   const AttentionWeightsF32& w,
                                                   const AtpAttentionArgs& args,
                                                   const ExecContext& ctx, const CpuEnv& env) {
  const int64_t L = args.x.dim(0);
  const int64_t d = config.d_model;
  const int64_t q_dim = config.num_heads * config.head_dim;
  const int64_t kv_dim = config.kv_heads() * config.head_dim;
  const F32Input x(args.x);

  BasesRequest request;
  request.x = x.data();
  request.length = L;
  request.width = d;
  request.rank = args.rank.value_or(config.default_rank);
  request.max_rank = args.max_rank;
  request.seed = args.seed;
  absl::StatusOr<BasesF32> bases = ComputePrincipalBases(request, ctx, env);
  if (!bases.ok()) return bases.status();
  if (auto s = ctx.Check(); !s.ok()) return s;
  const int64_t r = bases->rank;

  // Principal tokens X̃ = c·Σ·Vᵀ (= c·UᵀX) and the bias weights c·Uᵀ1 of K̃ = X̃·W_Kᵀ + (c·Uᵀ1)·b_Kᵀ.
  const double c = config.key_scale == KeyScale::kInvSqrtLen ? 1.0 / std::sqrt(double(L)) : 1.0;
  std::vector<float> tokens(static_cast<size_t>(r * d));
  for (int64_t i = 0; i < r; ++i) {
    const float scale = static_cast<float>(c * bases->s[i]);
    for (int64_t k = 0; k < d; ++k) tokens[i * d + k] = scale * bases->vt[i * d + k];
  }
  std::vector<double> column_sums(static_cast<size_t>(r), 0.0);
  for (int64_t j = 0; j < L; ++j) {
    for (int64_t i = 0; i < r; ++i) column_sums[i] += bases->u[j * r + i];
  }
  auto project_tokens = [&](const LinearF32& map) {
    Buffer out = NewBuffer(env, r * kv_dim);
    ParallelGemm(env, false, true, r, kv_dim, d, 1.0f, tokens.data(), d, map.w, d, 0.0f, out.get(),
                 kv_dim);
    if (map.b != nullptr) {
      for (int64_t i = 0; i < r; ++i) {
        const float weight = static_cast<float>(c * column_sums[i]);
        for (int64_t k = 0; k < kv_dim; ++k) out[i * kv_dim + k] += weight * map.b[k];
      }
    }
    return out;
  };
  const Buffer keys = project_tokens(w.k);
  const Buffer values = project_tokens(w.v);
  if (auto s = ctx.Check(); !s.ok()) return s;

  Buffer q = NewBuffer(env, L * q_dim);
  Linear(env, x.data(), L, d, w.q.w, q_dim, w.q.b, q.get());

  Buffer heads_out = NewBuffer(env, L * q_dim);
  // r keys only: blocks of 256 queries keep the scores small and the tasks many.
  const Core core{q.get(), keys.get(), values.get(), L, r, /*causal=*/false, heads_out.get()};
  if (auto s = AttentionCore(config, core, 256, ctx, env); !s.ok()) return s;

  absl::StatusOr<Tensor> y =
      OutputProjection(w.o, heads_out.get(), L, q_dim, args.output_dtype, "ATP attention", env);
  if (!y.ok()) return y.status();
  AtpAttentionResult result;
  result.y = *std::move(y);
  result.rank = r;
  result.captured_energy = bases->captured_energy;
  return result;
}

absl::StatusOr<Tensor> ExactAttentionCpu(const AttentionConfig& config,
                                         const AttentionWeightsF32& w,
                                         const ExactAttentionArgs& args, const ExecContext& ctx,
                                         const CpuEnv& env) {
  const int64_t L = args.x.dim(0);
  const int64_t d = config.d_model;
  const int64_t q_dim = config.num_heads * config.head_dim;
  const int64_t kv_dim = config.kv_heads() * config.head_dim;
  if (auto s = ctx.Check(); !s.ok()) return s;
  const F32Input x(args.x);

  Buffer q = NewBuffer(env, L * q_dim);
  Buffer k = NewBuffer(env, L * kv_dim);
  Buffer v = NewBuffer(env, L * kv_dim);
  Linear(env, x.data(), L, d, w.q.w, q_dim, w.q.b, q.get());
  Linear(env, x.data(), L, d, w.k.w, kv_dim, w.k.b, k.get());
  Linear(env, x.data(), L, d, w.v.w, kv_dim, w.v.b, v.get());

  Buffer heads_out = NewBuffer(env, L * q_dim);
  const Core core{q.get(), k.get(), v.get(), L, L, args.causal, heads_out.get()};
  if (auto s = AttentionCore(config, core, ExactAttentionBlockRows(L), ctx, env); !s.ok()) {
    return s;
  }
  return OutputProjection(w.o, heads_out.get(), L, q_dim, args.output_dtype, "exact attention",
                          env);
}

}  // namespace atp::kernels::cpu
