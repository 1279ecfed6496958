// Low-rank linear on the CPU (DESIGN.md §1): Y = U·(C·Wᵀ) + 1·bᵀ with X ≈ U·C from a
// decomposition of a dense input or given as factors. Private to kernels/src/cpu/. Thread-safe.
#ifndef ATP_KERNELS_SRC_CPU_LOWRANK_LINEAR_CPU_H_
#define ATP_KERNELS_SRC_CPU_LOWRANK_LINEAR_CPU_H_

#include "absl/status/statusor.h"
#include "atp/kernels/exec_context.h"
#include "atp/kernels/lowrank_linear.h"
#include "atp/kernels/rank_policy.h"
#include "cpu/cpu_util.h"
#include "cpu/layer_cpu.h"

namespace atp::kernels::cpu {

// `args` must have passed ValidateLowRankLinear; `default_rank` is the layer's policy for a dense
// input that sets none.
absl::StatusOr<LowRankLinearResult> LowRankLinearCpu(const LinearF32& map,
                                                     const RankPolicy& default_rank,
                                                     const LowRankLinearArgs& args,
                                                     const ExecContext& ctx, const CpuEnv& env);

}  // namespace atp::kernels::cpu

#endif  // ATP_KERNELS_SRC_CPU_LOWRANK_LINEAR_CPU_H_
