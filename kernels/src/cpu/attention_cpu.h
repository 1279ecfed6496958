// ATP attention and exact attention on the CPU (DESIGN.md §1). Private to kernels/src/cpu/; the
// backend validates the arguments first. Thread-safe.
#ifndef ATP_KERNELS_SRC_CPU_ATTENTION_CPU_H_
#define ATP_KERNELS_SRC_CPU_ATTENTION_CPU_H_

#include "absl/status/statusor.h"
#include "atp/kernels/attention.h"
#include "atp/kernels/exec_context.h"
#include "atp/kernels/layer.h"
#include "cpu/cpu_util.h"
#include "cpu/layer_cpu.h"

namespace atp::kernels::cpu {

// Q from every token, K̃ and Ṽ from the r principal tokens, per-head softmax over r keys, output
// projection. `args` must have passed ValidateAtpAttention.
absl::StatusOr<AtpAttentionResult> AtpAttentionCpu(const AttentionConfig& config,
                                                   const AttentionWeightsF32& weights,
                                                   const AtpAttentionArgs& args,
                                                   const ExecContext& ctx, const CpuEnv& env);

// Softmax over all L keys (or the causal prefix), blocked over queries: per head and block of
// queries one GEMM for the scores, a row softmax, one GEMM for the values. `args` must have passed
// ValidateExactAttention.
absl::StatusOr<Tensor> ExactAttentionCpu(const AttentionConfig& config,
                                         const AttentionWeightsF32& weights,
                                         const ExactAttentionArgs& args, const ExecContext& ctx,
                                         const CpuEnv& env);

// Rows per query block of exact attention for L keys (the score block is rows × L floats).
int64_t ExactAttentionBlockRows(int64_t length);

}  // namespace atp::kernels::cpu

#endif  // ATP_KERNELS_SRC_CPU_ATTENTION_CPU_H_
