// A compute request in plain terms, the checks that admit it before its payload arrives, and its
// execution on a backend. convert.h builds a ComputePlan from the wire header; the Compute stream
// admits it with AdmitPlan, fills the inputs and runs it with RunPlan on the executor. No protobuf
// or gRPC here. Thread-safe: plain values and pure functions (RunPlan is as thread-safe as the
// backend).
#ifndef ATP_SERVICE_COMPUTE_PLAN_H_
#define ATP_SERVICE_COMPUTE_PLAN_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "atp/kernels/backend.h"
#include "atp/wire/tensor_header.h"
#include "stats.h"

namespace atp::service {

// The limits a worker enforces (and advertises in ServerInfo.limits).
struct WorkerLimits {
  uint64_t max_tensor_bytes = 0;
  int64_t max_sequence_length = 0;
  int64_t max_rank = 0;
  uint32_t chunk_bytes = 0;
  int max_inflight_requests = 0;
  int max_inflight_per_stream = 0;
  uint64_t max_resident_layer_bytes = 0;
  int max_queue_depth = 0;
  uint64_t max_inflight_bytes = 0;
};

struct ComputePlan {
  uint64_t request_id = 0;
  Op op = Op::kDecompose;
  // Empty for decompose.
  std::string layer_id;
  // nullopt: the layer's default policy (decompose: energy 0.99).
  std::optional<kernels::RankPolicy> rank;
  kernels::DecomposeMethod method = kernels::DecomposeMethod::kAuto;
  bool causal = false;
  // lowrank_linear: the weight prefix ("" or "q_proj", ...).
  std::string weight;
  bool factored_input = false;
  bool factored_output = false;
  // nullopt: the input's dtype.
  std::optional<kernels::DType> output_dtype;
  // Checked headers of the inputs in payload order: {x} or {u, c}.
  std::vector<wire::TensorLayout> inputs;
  uint32_t timeout_ms = 0;
  uint32_t response_chunk_bytes = 0;
};

// Checks a plan against its layer (nullptr for decompose) and the limits, from headers only, and
// returns an upper bound of the bytes of its outputs. INVALID_ARGUMENT for shapes, dtypes or a
// layer of the wrong kind; RESOURCE_EXHAUSTED for L or r beyond the limits; NOT_FOUND for an
// unknown weight prefix. Each message names the offending value and what was expected.
absl::StatusOr<uint64_t> AdmitPlan(const ComputePlan& plan, const kernels::LayerSpec* layer,
                                   const WorkerLimits& limits);

struct NamedTensor {
  std::string name;
  kernels::Tensor tensor;
};

struct ComputeOutput {
  // y; or u and c (factored lowrank_linear); or u, s, vt (decompose).
  std::vector<NamedTensor> outputs;
  bool factored = false;
  int64_t rank = 0;
  double captured_energy = 0.0;
};

// Runs an admitted plan. `inputs` follow plan.inputs. The backend checks `ctx` before and between
// its steps.
absl::StatusOr<ComputeOutput> RunPlan(kernels::Backend& backend, const kernels::LayerHandle* layer,
                                      const ComputePlan& plan,
                                      const std::vector<kernels::TensorView>& inputs,
                                      const WorkerLimits& limits, const kernels::ExecContext& ctx);

}  // namespace atp::service

#endif  // ATP_SERVICE_COMPUTE_PLAN_H_
