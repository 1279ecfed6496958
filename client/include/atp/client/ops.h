// The operations a worker runs (DESIGN.md §1), their requests and results, and what a worker says
// about itself. Plain values.
//
// Inputs are TensorViews of the caller's memory, sent without copying: they must stay valid until
// the call has finished (a synchronous call returned, an asynchronous call's callback ran).
#ifndef ATP_CLIENT_OPS_H_
#define ATP_CLIENT_OPS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/time/time.h"
#include "atp/client/layer.h"
#include "atp/client/tensor.h"

namespace atp::client {

// Where one call went and what it cost.
struct CallInfo {
  // The worker that answered ("127.0.0.1:50051").
  std::string worker;
  // Attempts made (1 unless the request was replayed on another worker or after re-registering its
  // layer).
  int attempts = 0;
  // Payload bytes sent and received by the successful attempt.
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  // The worker's view: header to last input byte, waiting in its queue, compute.
  absl::Duration receive_time;
  absl::Duration queue_time;
  absl::Duration compute_time;
  // Submission to result, on the client, over all attempts.
  absl::Duration round_trip_time;
};

// ATP attention of an attention layer on x [L, d_model]; y [L, d_model].
struct AtpAttentionRequest {
  std::string layer_id;
  TensorView x;
  // nullopt: the layer's default policy.
  std::optional<RankPolicy> rank;
  // nullopt: x's dtype.
  std::optional<DType> output_dtype;
};

// Exact softmax attention over all L keys (the reference and fallback); y [L, d_model].
struct ExactAttentionRequest {
  std::string layer_id;
  TensorView x;
  bool causal = false;
  std::optional<DType> output_dtype;
};

struct AttentionResult {
  Tensor y;
  // r used (0 for exact attention) and Σ_{i<=r} σ_i² / ||X||_F².
  int64_t rank = 0;
  double captured_energy = 0.0;
  CallInfo info;
};

// Low-rank linear Y = X·Wᵀ + b of one linear map of a layer. The input is dense x [L, d]
// (decomposed on the worker with the rank policy) or factored X = U·C (u [L, r], c [r, d], used as
// given, e.g. the factored output of the previous layer).
struct LowRankLinearRequest {
  std::string layer_id;
  // Which map: "" for a linear layer, "q_proj" ... "o_proj" for one of an attention layer.
  std::string weight;
  std::variant<TensorView, FactoredTensorView> input;
  // For a dense input; nullopt: the layer's default policy.
  std::optional<RankPolicy> rank;
  // Return Y factored as U'·C' (U' = [U, 1] and C' = [C·Wᵀ; bᵀ] with a bias): L·(r+1) + (r+1)·n
  // numbers instead of L·n.
  bool factored_output = false;
  std::optional<DType> output_dtype;
};

struct LowRankLinearResult {
  bool factored = false;
  // The dense output [L, n] (when !factored).
  Tensor y;
  // The factored output (when factored).
  FactoredTensor y_factored;
  int64_t rank = 0;
  // Captured energy of the decomposition of a dense input; 0 for a factored input.
  double captured_energy = 0.0;
  CallInfo info;
};

enum class DecomposeMethod {
  kAuto,        // exact where cheap, randomized otherwise
  kExact,       // full SVD
  kRandomized,  // randomized block subspace iteration with Rayleigh–Ritz
};

// Principal bases of x [L, d]: u [L, r], s [r] (f32, descending), vt [r, d], sign rule applied.
struct DecomposeRequest {
  TensorView x;
  RankPolicy rank;
  DecomposeMethod method = DecomposeMethod::kAuto;
  std::optional<DType> output_dtype;
};

struct DecomposeResult {
  Tensor u;
  Tensor s;
  Tensor vt;
  int64_t rank = 0;
  double captured_energy = 0.0;
  CallInfo info;
};

// What a worker accepts (atp.v1.Limits).
struct WorkerLimits {
  uint64_t max_tensor_bytes = 0;
  uint32_t max_sequence_length = 0;
  uint32_t max_rank = 0;
  uint32_t chunk_bytes = 0;
  uint32_t max_inflight_requests = 0;
  uint32_t max_inflight_per_stream = 0;
  uint64_t max_resident_layer_bytes = 0;
  uint32_t max_queue_depth = 0;
  uint64_t max_inflight_bytes = 0;
};

struct ServerInfo {
  std::string version;
  // "cpu" or "cuda".
  std::string backend;
  std::string device;
  WorkerLimits limits;
  std::vector<std::string> operations;
  bool requires_token = false;
};

// A layer as a worker holds it.
struct RegisteredLayer {
  std::string layer_id;
  std::string digest;
  uint64_t resident_bytes = 0;
  // True when the worker already held this id with this digest.
  bool already_registered = false;
};

// A worker's counters since it started (atp.v1.Statistics).
struct WorkerStatistics {
  struct Op {
    uint64_t requests = 0;
    uint64_t errors = 0;
    uint64_t bytes_in = 0;
    uint64_t bytes_out = 0;
    double receive_seconds = 0.0;
    double queue_seconds = 0.0;
    double compute_seconds = 0.0;
  };
  // By op name: "atp_attention", "exact_attention", "lowrank_linear", "decompose",
  // "register_layer".
  std::map<std::string, Op> ops;
  uint32_t queue_depth = 0;
  uint32_t inflight_requests = 0;
  uint32_t resident_layers = 0;
  uint64_t resident_layer_bytes = 0;
  double uptime_seconds = 0.0;
  // Errors by google.rpc.Code name ("DEADLINE_EXCEEDED").
  std::map<std::string, uint64_t> errors_by_code;
};

// Readiness of a worker as its grpc.health.v1 service reports it for "atp.v1.Worker".
enum class Readiness {
  kUnknown,     // not connected yet, or unreachable
  kServing,     // ready for requests
  kNotServing,  // draining, or its device is unhealthy
};
absl::string_view ReadinessName(Readiness readiness);

}  // namespace atp::client

#endif  // ATP_CLIENT_OPS_H_
