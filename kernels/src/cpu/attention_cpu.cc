#include "cpu/attention_cpu.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "cpu/principal_bases_cpu.h"

namespace atp::kernels::cpu {
namespace {

// Inputs are finite, but large ones can overflow f32 on the way; NaN never leaves an op.
absl::Status CheckFiniteOutput(const std::vector<float>& y, absl::string_view op) {
  for (size_t i = 0; i < y.size(); ++i) {
    if (!std::isfinite(y[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, " overflowed f32 (a non-finite value at flat index ", i,
                       "): the input or the weights are too large"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

int64_t ExactAttentionBlockRows(int64_t length) {
  // About 2^20 scores (4 MiB) per block: big enough for efficient GEMMs, small enough to stay in
  // the last-level cache between the score GEMM, the softmax and the value GEMM.
  constexpr int64_t kBlockScores = int64_t{1} << 20;
  return std::clamp<int64_t>(kBlockScores / std::max<int64_t>(length, 1), 32, 512);
}

absl::StatusOr<AtpAttentionResult> AtpAttentionCpu(const AttentionConfig& config,
                                                   const AttentionWeightsF32& w,
                                                   const AtpAttentionArgs& args,
                                                   const ExecContext& ctx, const CpuEnv& env) {
  const int64_t L = args.x.dim(0);
  const int64_t d = config.d_model;
  const int64_t heads = config.num_heads;
  const int64_t dh = config.head_dim;
  const int64_t group = heads / config.kv_heads();
  const int64_t q_dim = heads * dh;
  const int64_t kv_dim = config.kv_heads() * dh;
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
  std::vector<float> ones_weight(static_cast<size_t>(r));
  for (int64_t i = 0; i < r; ++i) {
    double sum = 0.0;
    for (int64_t j = 0; j < L; ++j) sum += bases->u[j * r + i];
    ones_weight[i] = static_cast<float>(c * sum);
  }
  auto project_tokens = [&](const LinearF32& map) {
    std::vector<float> out = NewBuffer(env, r * kv_dim);
    Gemm(false, true, r, kv_dim, d, 1.0f, tokens.data(), d, map.w, d, 0.0f, out.data(), kv_dim);
    if (map.b != nullptr) {
      for (int64_t i = 0; i < r; ++i) {
        for (int64_t k = 0; k < kv_dim; ++k) out[i * kv_dim + k] += ones_weight[i] * map.b[k];
      }
    }
    return out;
  };
  const std::vector<float> keys = project_tokens(w.k);
  const std::vector<float> values = project_tokens(w.v);
  if (auto s = ctx.Check(); !s.ok()) return s;

  std::vector<float> q = NewBuffer(env, L * q_dim);
  Linear(x.data(), L, d, w.q.w, q_dim, w.q.b, q.data());
  if (auto s = ctx.Check(); !s.ok()) return s;

  const float scale = config.resolved_scale();
  std::vector<float> heads_out = NewBuffer(env, L * q_dim);
  std::vector<float> scores(static_cast<size_t>(L * r));
  for (int64_t h = 0; h < heads; ++h) {
    const int64_t g = h / group;
    Gemm(false, true, L, r, dh, scale, q.data() + h * dh, q_dim, keys.data() + g * dh, kv_dim, 0.0f,
         scores.data(), r);
    SoftmaxRows(scores.data(), L, r, r, env);
    Gemm(false, false, L, dh, r, 1.0f, scores.data(), r, values.data() + g * dh, kv_dim, 0.0f,
         heads_out.data() + h * dh, q_dim);
    if (auto s = ctx.Check(); !s.ok()) return s;
  }

  std::vector<float> y = NewBuffer(env, L * d);
  Linear(heads_out.data(), L, q_dim, w.o.w, d, w.o.b, y.data());
  if (auto s = CheckFiniteOutput(y, "ATP attention"); !s.ok()) return s;

  AtpAttentionResult result;
  result.y = ToTensor(y, {L, d}, args.output_dtype);
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
  const int64_t heads = config.num_heads;
  const int64_t dh = config.head_dim;
  const int64_t group = heads / config.kv_heads();
  const int64_t q_dim = heads * dh;
  const int64_t kv_dim = config.kv_heads() * dh;
  if (auto s = ctx.Check(); !s.ok()) return s;
  const F32Input x(args.x);

  std::vector<float> q = NewBuffer(env, L * q_dim);
  std::vector<float> k = NewBuffer(env, L * kv_dim);
  std::vector<float> v = NewBuffer(env, L * kv_dim);
  Linear(x.data(), L, d, w.q.w, q_dim, w.q.b, q.data());
  Linear(x.data(), L, d, w.k.w, kv_dim, w.k.b, k.data());
  Linear(x.data(), L, d, w.v.w, kv_dim, w.v.b, v.data());
  if (auto s = ctx.Check(); !s.ok()) return s;

  const float scale = config.resolved_scale();
  const int64_t block = ExactAttentionBlockRows(L);
  std::vector<float> heads_out = NewBuffer(env, L * q_dim);
  std::vector<float> scores(static_cast<size_t>(std::min(block, L) * L));
  for (int64_t h = 0; h < heads; ++h) {
    const int64_t g = h / group;
    for (int64_t i0 = 0; i0 < L; i0 += block) {
      const int64_t rows = std::min(block, L - i0);
      // Causal: the block's queries see keys [0, i0 + rows) at most; softmax masks the rest.
      const int64_t keys = args.causal ? i0 + rows : L;
      Gemm(false, true, rows, keys, dh, scale, q.data() + i0 * q_dim + h * dh, q_dim,
           k.data() + g * dh, kv_dim, 0.0f, scores.data(), keys);
      if (args.causal) {
        SoftmaxRows(scores.data(), rows, keys, keys, env, [i0](int64_t i) { return i0 + i + 1; });
      } else {
        SoftmaxRows(scores.data(), rows, keys, keys, env);
      }
      Gemm(false, false, rows, dh, keys, 1.0f, scores.data(), keys, v.data() + g * dh, kv_dim, 0.0f,
           heads_out.data() + i0 * q_dim + h * dh, q_dim);
    }
    if (auto s = ctx.Check(); !s.ok()) return s;
  }

  std::vector<float> y = NewBuffer(env, L * d);
  Linear(heads_out.data(), L, q_dim, w.o.w, d, w.o.b, y.data());
  if (auto s = CheckFiniteOutput(y, "exact attention"); !s.ok()) return s;
  return ToTensor(y, {L, d}, args.output_dtype);
}

}  // namespace atp::kernels::cpu
