// Test helpers that drive a real atp-worker with the generated gRPC stub: an in-process
// WorkerServer on 127.0.0.1 (port chosen by the OS) with the CPU backend, random layers and
// tensors, layer upload, and a hand-driven Compute stream that can send well-formed or broken
// messages and reassembles responses (checking their CRC-32C).
#ifndef ATP_TESTS_SERVICE_WORKER_HARNESS_H_
#define ATP_TESTS_SERVICE_WORKER_HARNESS_H_

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "atp/kernels/backend.h"
#include "atp/service/worker_options.h"
#include "atp/service/worker_server.h"
#include "atp/v1/worker.grpc.pb.h"

namespace atp::service::testing {

// listen 127.0.0.1:0, no metrics endpoint, quiet logs.
WorkerOptions LoopbackOptions();

class TestWorker {
 public:
  // Starts a worker with the CPU backend; fails the test (and returns nullptr) if it cannot.
  static std::unique_ptr<TestWorker> Start(const WorkerOptions& options = LoopbackOptions());

  WorkerServer& server() { return *server_; }
  std::string target() const;
  // A stub on a plaintext channel to the worker.
  atp::v1::Worker::Stub& stub() { return *stub_; }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }
  std::unique_ptr<WorkerServer> Release() { return std::move(server_); }

 private:
  std::unique_ptr<WorkerServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<atp::v1::Worker::Stub> stub_;
};

// A context with a deadline (every test call has one) and optionally a bearer token.
void Prepare(grpc::ClientContext* context, absl::Duration deadline = absl::Seconds(60),
             const std::string& token = "");

kernels::Tensor RandomTensor(kernels::DType dtype, const kernels::Shape& shape, uint64_t seed,
                             float scale = 1.0f);
kernels::LayerSpec RandomAttentionLayer(int64_t d_model, int64_t heads, int64_t kv_heads,
                                        int64_t head_dim, bool bias, uint64_t seed,
                                        kernels::DType dtype = kernels::DType::kF32);
kernels::LayerSpec RandomLinearLayer(int64_t n, int64_t d, bool bias, uint64_t seed,
                                     kernels::DType dtype = kernels::DType::kF32);
kernels::LayerSpec CloneSpec(const kernels::LayerSpec& spec);

// The LayerHeader of `spec` (tensors in name order) with its digest when `with_digest`.
atp::v1::LayerHeader MakeLayerHeader(const std::string& layer_id, const kernels::LayerSpec& spec,
                                     bool with_digest);
std::string LayerDigestOf(const kernels::LayerSpec& spec);

struct UploadOptions {
  uint64_t chunk_bytes = 64 * 1024;
  bool send_digest = true;
  bool replace = false;
  std::string token;
};

// Registers `spec` as `layer_id` through the RegisterLayer stream.
absl::StatusOr<atp::v1::RegisterLayerResponse> RegisterLayer(atp::v1::Worker::Stub& stub,
                                                             const std::string& layer_id,
                                                             const kernels::LayerSpec& spec,
                                                             const UploadOptions& options = {});

atp::v1::TensorHeader HeaderOf(const std::string& name, const kernels::Tensor& t);

// A response as the client sees it.
struct Response {
  atp::v1::ResponseHeader header;
  absl::Status status;  // the in-band status
  std::vector<kernels::Tensor> outputs;
};

// One Compute stream, driven message by message.
class ComputeSession {
 public:
  explicit ComputeSession(atp::v1::Worker::Stub& stub, absl::Duration deadline = absl::Seconds(60),
                          const std::string& token = "");
  ~ComputeSession();

  bool Send(const atp::v1::ComputeRequest& request);
  bool SendHeader(const atp::v1::RequestHeader& header);
  bool SendChunk(uint64_t request_id, uint32_t tensor_index, uint64_t offset,
                 absl::string_view data);
  // All chunks of `t` as tensor `tensor_index` of request `request_id`.
  bool SendTensor(uint64_t request_id, uint32_t tensor_index, const kernels::Tensor& t,
                  uint64_t chunk_bytes = 256 * 1024);
  // Header, then every input's chunks.
  bool SendRequest(const atp::v1::RequestHeader& header,
                   const std::vector<const kernels::Tensor*>& inputs,
                   uint64_t chunk_bytes = 256 * 1024);
  void WritesDone();
  // Reads one whole response (header and output chunks); an error when the stream ended or a chunk
  // is inconsistent.
  absl::StatusOr<Response> Read();
  grpc::Status Finish();
  grpc::ClientContext& context() { return context_; }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<atp::v1::ComputeRequest, atp::v1::ComputeResponse>>
      stream_;
  bool finished_ = false;
};

// Request headers for each op on the given inputs.
atp::v1::RequestHeader AtpAttentionRequest(uint64_t id, const std::string& layer_id,
                                           const kernels::Tensor& x,
                                           std::optional<uint32_t> fixed_rank = std::nullopt);
atp::v1::RequestHeader ExactAttentionRequest(uint64_t id, const std::string& layer_id,
                                             const kernels::Tensor& x, bool causal);
atp::v1::RequestHeader DecomposeRequest(uint64_t id, const kernels::Tensor& x, uint32_t fixed_rank);
atp::v1::RequestHeader LowRankDenseRequest(uint64_t id, const std::string& layer_id,
                                           const std::string& weight, const kernels::Tensor& x,
                                           uint32_t fixed_rank, bool factored_output);
atp::v1::RequestHeader LowRankFactoredRequest(uint64_t id, const std::string& layer_id,
                                              const std::string& weight, const kernels::Tensor& u,
                                              const kernels::Tensor& c, bool factored_output);

// Header + inputs on a fresh stream, one response, then the stream's end.
absl::StatusOr<Response> RunOne(atp::v1::Worker::Stub& stub, const atp::v1::RequestHeader& header,
                                const std::vector<const kernels::Tensor*>& inputs);

// Byte-for-byte equality of two tensors (dtype, shape and payload).
bool SameBits(const kernels::Tensor& a, const kernels::Tensor& b);

struct RawCallResult {
  grpc::Status status;
  std::vector<std::string> responses;
};

// Calls a method with raw bytes as the request (unary, or one message then half-close for
// streaming methods); returns the final status and the response messages' bytes.
RawCallResult CallWithBytes(const std::shared_ptr<grpc::Channel>& channel,
                            const std::string& method, const std::string& bytes, bool streaming);

// GetStatistics, waiting (bounded) until `done(stats)` holds; returns the last statistics.
atp::v1::Statistics WaitForStatistics(atp::v1::Worker::Stub& stub,
                                      const std::function<bool(const atp::v1::Statistics&)>& done,
                                      absl::Duration timeout = absl::Seconds(20));

// A GET of http://127.0.0.1:port/path over a plain socket: the whole response, headers included.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path);

}  // namespace atp::service::testing

#endif  // ATP_TESTS_SERVICE_WORKER_HARNESS_H_
