#include "cpu/lowrank_linear_cpu.h"

#include <cmath>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "cpu/principal_bases_cpu.h"

namespace atp::kernels::cpu {
namespace {

absl::Status CheckFiniteOutput(const float* y, int64_t n) {
  if (const int64_t i = FirstNonFinite(y, n); i >= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("low-rank linear overflowed f32 (a non-finite value at flat index ", i,
                     "): the input or the weights are too large"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<LowRankLinearResult> LowRankLinearCpu(const LinearF32& map,
                                                     const RankPolicy& default_rank,
                                                     const LowRankLinearArgs& args,
                                                     const ExecContext& ctx, const CpuEnv& env) {
  if (auto s = ctx.Check(); !s.ok()) return s;
  const int64_t d = map.in;
  const int64_t n = map.out;
  LowRankLinearResult result;

  // The factors X ≈ U·C: borrowed (factored input) or from the decomposition (dense input).
  int64_t L = 0;
  int64_t r = 0;
  std::optional<F32Input> u_in, c_in;
  std::vector<float> c_dense;
  BasesF32 bases;
  const float* u = nullptr;
  const float* c = nullptr;
  if (args.factored_input) {
    L = args.u.dim(0);
    r = args.u.dim(1);
    u_in.emplace(args.u);
    c_in.emplace(args.c);
    u = u_in->data();
    c = c_in->data();
  } else {
    L = args.x.dim(0);
    const F32Input x(args.x);
    BasesRequest request;
    request.x = x.data();
    request.length = L;
    request.width = d;
    request.rank = args.rank.value_or(default_rank);
    request.max_rank = args.max_rank;
    request.seed = args.seed;
    absl::StatusOr<BasesF32> computed = ComputePrincipalBases(request, ctx, env);
    if (!computed.ok()) return computed.status();
    bases = *std::move(computed);
    r = bases.rank;
    c_dense.resize(static_cast<size_t>(r * d));
    for (int64_t i = 0; i < r; ++i) {
      const float s = static_cast<float>(bases.s[i]);
      for (int64_t k = 0; k < d; ++k) c_dense[i * d + k] = s * bases.vt[i * d + k];
    }
    u = bases.u.data();
    c = c_dense.data();
    result.captured_energy = bases.captured_energy;
  }
  result.rank = r;
  if (auto s = ctx.Check(); !s.ok()) return s;

  // C·Wᵀ [r, n], with the bias as an extra row when the output stays factored.
  const bool bias_row = args.factored_output && map.b != nullptr;
  const int64_t rows_c = bias_row ? r + 1 : r;
  Buffer cw = NewBuffer(env, rows_c * n);
  ParallelGemm(env, false, true, r, n, d, 1.0f, c, d, map.w, d, 0.0f, cw.get(), n);
  if (bias_row) std::memcpy(cw.get() + r * n, map.b, sizeof(float) * n);
  if (auto s = CheckFiniteOutput(cw.get(), rows_c * n); !s.ok()) return s;

  if (args.factored_output) {
    const int64_t cols_u = bias_row ? r + 1 : r;
    // U' is the largest tensor of this path (it can be hundreds of MiB when the worker relays a
    // factored activation): write it once, straight into the result.
    Tensor u_out(args.output_dtype, {L, cols_u});
    const size_t elem = DTypeSize(args.output_dtype);
    auto* out = static_cast<std::byte*>(u_out.data());
    const float one = 1.0f;
    for (int64_t j = 0; j < L; ++j) {
      std::byte* row = out + static_cast<size_t>(j * cols_u) * elem;
      ConvertFromF32(u + j * r, args.output_dtype, row, static_cast<size_t>(r));
      if (bias_row) ConvertFromF32(&one, args.output_dtype, row + r * elem, 1);
    }
    result.factored = true;
    result.u = std::move(u_out);
    result.c = ToTensor(cw.get(), {rows_c, n}, args.output_dtype);
    return result;
  }

  Buffer y = NewBuffer(env, L * n);
  float beta = 0.0f;
  if (map.b != nullptr) {
    for (int64_t j = 0; j < L; ++j) std::memcpy(y.get() + j * n, map.b, sizeof(float) * n);
    beta = 1.0f;
  }
  ParallelGemm(env, false, false, L, n, r, 1.0f, u, r, cw.get(), n, beta, y.get(), n);
  if (auto s = CheckFiniteOutput(y.get(), L * n); !s.ok()) return s;
  result.y = ToTensor(y.get(), {L, n}, args.output_dtype);
  return result;
}

}  // namespace atp::kernels::cpu
