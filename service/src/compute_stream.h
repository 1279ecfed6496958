// The Compute stream: many requests in flight on one bidirectional stream, answered in order.
//
// Per request: the header is admitted or refused before any payload (in-band status); the input
// chunks are reassembled into preallocated tensors with their CRC-32C checked; the complete
// request goes to the executor; the response header and output chunks go back in request order,
// the chunks sent straight from the output tensors. Per-request errors are in-band and leave the
// stream's other requests alone; a message that is not a ComputeRequest, or a chunk for no
// request, ends the stream with INVALID_ARGUMENT after the requests already complete are answered.
//
// Thread-safety: each stream is one reactor whose state is guarded by its own mutex; gRPC threads
// (reads, writes) and the executor thread (results) meet there.
#ifndef ATP_SERVICE_COMPUTE_STREAM_H_
#define ATP_SERVICE_COMPUTE_STREAM_H_

#include <grpcpp/grpcpp.h>

#include "call_tracker.h"
#include "worker_core.h"

namespace atp::service {

// Creates the reactor of one Compute call; gRPC owns it until OnDone.
grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* StartComputeStream(
    WorkerCore* core, CallTracker* tracker, grpc::CallbackServerContext* context);

}  // namespace atp::service

#endif  // ATP_SERVICE_COMPUTE_STREAM_H_
