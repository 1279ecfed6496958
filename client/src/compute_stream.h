// One Compute stream of a ClientCore: runs one or several requests on a worker, pipelined (up to a
// window of requests in flight), each answered in order.
//
// Input payloads are sent straight from the caller's buffers: each chunk message is a small
// prefix slice (atp_wire's chunk encoding) followed by a slice that points into the caller's
// tensor, with no copy. gRPC may hold those slices until the bytes have left the socket, so a
// request's outcome is handed back only once its answer has arrived (or the stream has ended) AND
// gRPC has released every slice of its input: then the caller may free its buffers. Output chunks
// are written once, straight into the result tensors (TensorAssembler checks order and CRC-32C).
// Included only by client_core.cc.
#ifndef ATP_CLIENT_SRC_COMPUTE_STREAM_H_
#define ATP_CLIENT_SRC_COMPUTE_STREAM_H_

#include <grpcpp/generic/generic_stub.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "live_calls.h"
#include "op_call.h"
#include "timer_queue.h"

namespace atp::client::internal {

struct ComputeStreamConfig {
  // For messages: "worker 127.0.0.1:50051".
  std::string target;
  // "Bearer <token>", or empty.
  std::string authorization;
  absl::Time deadline = absl::InfiniteFuture();
  bool wait_for_ready = false;
  // Largest data of one chunk sent.
  uint32_t chunk_bytes = 1u << 20;
  // Requests in flight on the stream.
  int window = 1;
  // Largest result tensor accepted (0: no limit).
  uint64_t max_result_bytes = 0;
};

// Starts a stream that runs `calls` in order. `on_item` runs exactly once per call, with the
// call and its outcome, on a gRPC or timer thread. When `live` is closed the calls fail at once
// with CANCELLED.
void StartComputeStream(grpc::GenericStub* stub, LiveCalls* live, std::shared_ptr<TimerQueue> timer,
                        const ComputeStreamConfig& config,
                        std::vector<std::unique_ptr<OpCall>> calls,
                        std::function<void(std::unique_ptr<OpCall>, OpOutcome)> on_item);

// The method path of Compute, for the generic stub.
inline constexpr const char kComputeMethod[] = "/atp.v1.Worker/Compute";
inline constexpr const char kRegisterLayerMethod[] = "/atp.v1.Worker/RegisterLayer";

}  // namespace atp::client::internal

#endif  // ATP_CLIENT_SRC_COMPUTE_STREAM_H_
