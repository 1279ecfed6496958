// The atp.v1.Worker gRPC service: a thin layer over WorkerCore. Every method uses the raw
// (ByteBuffer) callback API so that payload chunks are decoded without a copy into protobuf and
// undecodable messages get INVALID_ARGUMENT from us rather than a transport error. Handlers check
// the bearer token first, validate and convert, and hand backend work to the executor.
// Thread-safe.
#ifndef ATP_SERVICE_WORKER_SERVICE_H_
#define ATP_SERVICE_WORKER_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include "atp/v1/worker.grpc.pb.h"
#include "call_tracker.h"
#include "worker_core.h"

namespace atp::service {

using RawWorkerService = atp::v1::Worker::WithRawCallbackMethod_GetServerInfo<
    atp::v1::Worker::WithRawCallbackMethod_RegisterLayer<
        atp::v1::Worker::WithRawCallbackMethod_ListLayers<
            atp::v1::Worker::WithRawCallbackMethod_RemoveLayer<
                atp::v1::Worker::WithRawCallbackMethod_Compute<
                    atp::v1::Worker::WithRawCallbackMethod_GetStatistics<
                        atp::v1::Worker::Service>>>>>>;

class WorkerService final : public RawWorkerService {
 public:
  // `core` and `tracker` must outlive the service.
  WorkerService(WorkerCore* core, CallTracker* tracker) : core_(core), tracker_(tracker) {}

  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  grpc::ServerReadReactor<grpc::ByteBuffer>* RegisterLayer(grpc::CallbackServerContext* context,
                                                           grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ListLayers(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* RemoveLayer(grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Compute(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* GetStatistics(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;

 private:
  WorkerCore* const core_;
  CallTracker* const tracker_;
};

}  // namespace atp::service

#endif  // ATP_SERVICE_WORKER_SERVICE_H_
