// One compute request as the SDK moves it around: the wire header, the caller's input views, the
// deadline, and the completion that hands the result back. Built by offloader.cc from a typed
// request, run by a ClientCore (one worker) and replayed by a Pool. Not thread-safe: owned by one
// party at a time (passed by unique_ptr).
#ifndef ATP_CLIENT_SRC_OP_CALL_H_
#define ATP_CLIENT_SRC_OP_CALL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "atp/client/ops.h"
#include "atp/client/tensor.h"
#include "atp/v1/worker.pb.h"

namespace atp::client::internal {

// How an attempt (or the whole call) ended.
struct OpOutcome {
  absl::Status status;
  // The worker answered this request with `status` (an in-band error); false when the transport
  // failed (stream broken, worker unreachable, call cancelled or expired).
  bool in_band = false;
  // On success: the output tensors in the order of the response header.
  std::vector<Tensor> outputs;
  bool factored = false;
  int64_t rank = 0;
  double captured_energy = 0.0;
  CallInfo info;
};

struct OpCall {
  // The request header without request_id and timeout_ms (set per attempt).
  atp::v1::RequestHeader header;
  // The inputs in payload order: {x}, or {u, c} for a factored input.
  std::vector<TensorView> inputs;
  // The layer the op uses ("" for decompose), to re-register it on NOT_FOUND.
  std::string layer_id;
  absl::Time deadline = absl::InfiniteFuture();
  bool wait_for_ready = false;
  absl::Time submitted = absl::Now();
  // Attempts made so far (over all workers).
  int attempts = 0;
  // The layer was registered again after a NOT_FOUND (done at most once per call).
  bool reregistered = false;
  // Arrival order in a pool (replays keep their place).
  uint64_t sequence = 0;
  // Bytes of the inputs' payloads.
  uint64_t input_bytes() const {
    uint64_t n = 0;
    for (const TensorView& v : inputs) n += v.byte_size();
    return n;
  }
  // The final completion: runs exactly once.
  absl::AnyInvocable<void(OpOutcome)> finish;
  // Set by whoever submits an attempt (a Pool, or the Client itself): the runner hands the call
  // back through it with the attempt's outcome, so that it can be finished or replayed. Taken
  // (moved out) before it runs.
  absl::AnyInvocable<void(std::unique_ptr<OpCall>, OpOutcome)> on_attempt;
};

// Ends a call: fills the outcome's attempts and round trip and runs call->finish.
inline void FinishCall(std::unique_ptr<OpCall> call, OpOutcome outcome) {
  outcome.info.attempts = call->attempts;
  outcome.info.round_trip_time = absl::Now() - call->submitted;
  auto finish = std::move(call->finish);
  call.reset();  // nothing of the call outlives its completion
  finish(std::move(outcome));
}

// Runs call->on_attempt(call, outcome), taking the callback out of the call first.
inline void CompleteAttempt(std::unique_ptr<OpCall> call, OpOutcome outcome) {
  auto on_attempt = std::move(call->on_attempt);
  on_attempt(std::move(call), std::move(outcome));
}

}  // namespace atp::client::internal

#endif  // ATP_CLIENT_SRC_OP_CALL_H_
